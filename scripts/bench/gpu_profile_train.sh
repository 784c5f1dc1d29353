#!/usr/bin/env bash
# Where a koth training step spends its GPU time: one `koth bench train` step under Nsight
# Compute, timing every kernel (gpu__time_duration only: no replay, caches left alone), then a
# table of kernel families by total time. The sum of kernel times beside the step's wall time
# (from `koth bench train` without the profiler) says whether the step is launch-bound.
#
#   scripts/bench/gpu_profile_train.sh KOTH_BINARY OUT_DIR [BATCH]     (on the GPU host)
#
# Writes OUT_DIR/ncu-train-B<batch>.csv.xz (every kernel, in launch order) and prints the table.
# Give it 5 minutes: under the profiler a B=4 step of the 0.6B shape takes ~20 s and printing
# the report of two steps' kernels takes longer (a 70-second limit cut it on 2026-12-05).
set -uo pipefail
koth=$1 out=$2 batch=${3:-4}
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
[ -n "$ncu" ] || { echo "gpu_profile_train: no ncu on this host" >&2; exit 1; }
csv=$out/ncu-train-B$batch.csv
timeout 300 "$ncu" --clock-control none --cache-control none --metrics gpu__time_duration.sum \
  --csv --page raw --print-units base \
  "$koth" bench train --config fixtures/bench/qwen3-0.6b.json --batch "$batch" --seq 2048 \
  --iters 1 --warmup 1 --device cuda --dtype bf16 >"$csv.raw" 2>&1
rc=$?
python3 - "$csv.raw" "$csv" <<'PY'
import csv, io, re, sys, collections
raw = open(sys.argv[1], errors="replace").read()
start = raw.find('"ID"')
if start < 0:
    print("gpu_profile_train: no ncu table in the output; its tail:\n" + raw[-3000:])
    sys.exit(1)
rows = list(csv.DictReader(io.StringIO(raw[start:])))
for r in rows:
    r["gpu__time_duration.sum"] = (r.get("gpu__time_duration.sum") or "").replace(",", "")
rows = [r for r in rows if r["gpu__time_duration.sum"].replace(".", "", 1).isdigit()]
open(sys.argv[2], "w").write(raw[start:])
def family(name):
    name = re.sub(r"<.*", "", name)
    return re.sub(r"\(.*", "", name)[:90]
# The second of the two steps (warm-up, timed) is what the table shows: kernels after the midpoint
# of the launch order are a fair split only if both steps launch the same kernels, so split by
# the AdamW launch that ends each step.
ends = [i for i, r in enumerate(rows) if "adamw" in r["Kernel Name"].lower()]
step = rows[ends[0] + 1 : ends[1] + 1] if len(ends) >= 2 else rows
tot = collections.Counter(); cnt = collections.Counter()
for r in step:
    ns = float(r["gpu__time_duration.sum"])
    tot[family(r["Kernel Name"])] += ns; cnt[family(r["Kernel Name"])] += 1
total = sum(tot.values())
print(f"kernels in one step: {len(step)}, total kernel time {total/1e6:.1f} ms")
for k, v in tot.most_common(45):
    print(f"{v/1e6:9.2f} ms {100*v/total:5.1f}% {cnt[k]:6d}x  {k}")
PY
xz -f "$csv"; rm -f "$csv.raw"
exit $rc
