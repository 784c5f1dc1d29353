#!/usr/bin/env bash
# Where any `koth bench` run spends its GPU time: the run under Nsight Compute timing every
# kernel (gpu__time_duration only: no replay, caches left alone), then a table of kernel
# families by total time and launch count. Keep the run small (one iteration, no warm-up, no
# --torch): the profiler serialises every launch.
#
#   scripts/bench/gpu_profile.sh KOTH OUT_DIR NAME -- BENCH ARGS...     (on the GPU host)
#   e.g. scripts/bench/gpu_profile.sh /tmp/koth out hybrid -- score --config \
#          fixtures/bench/qwen3.5-1b.json --batch 2 --seq 2048 --iters 1 --warmup 0 --device cuda --dtype bf16
#
# Writes OUT_DIR/ncu-NAME.csv (every kernel, in launch order) and prints the table.
set -uo pipefail
koth=$1 out=$2 name=$3
shift 3
[ "${1:-}" = "--" ] && shift
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda*/bin/ncu 2>/dev/null | head -n 1)
[ -n "$ncu" ] || { echo "gpu_profile: no ncu on this host" >&2; exit 1; }
csv=$out/ncu-$name.csv
timeout "${KOTH_PROFILE_TIMEOUT:-240}" "$ncu" --clock-control none --cache-control none \
  --metrics gpu__time_duration.sum --csv --page raw --print-units base \
  "$koth" bench "$@" >"$csv.raw" 2>&1
python3 - "$csv.raw" "$csv" <<'PY'
import csv, io, os, re, sys, collections
raw = open(sys.argv[1], errors="replace").read()
start = raw.find('"ID"')
if start < 0:
    print("gpu_profile: no ncu table in the output; its tail:\n" + raw[-3000:])
    sys.exit(1)
open(sys.argv[2], "w").write(raw[start:])
rows = list(csv.DictReader(io.StringIO(raw[start:])))
# KOTH_PROFILE_STEP=adamw: keep the kernels of the second optimizer step only (after the first
# AdamW launch, up to the second), the timed step of a `bench train --warmup 1 --iters 1` run.
if os.environ.get("KOTH_PROFILE_STEP") == "adamw":
    ends = [i for i, r in enumerate(rows) if "adamw" in r["Kernel Name"].lower()]
    if len(ends) >= 2:
        rows = rows[ends[0] + 1 : ends[1] + 1]
tot = collections.Counter(); cnt = collections.Counter()
for r in rows:
    v = (r.get("gpu__time_duration.sum") or "").replace(",", "")
    if not v.replace(".", "", 1).isdigit():
        continue
    # koth's kernels are demangled as "void <unnamed>::rmsnorm_bwd<…>(…)": strip the return
    # type and the namespace before cutting at the template or argument list.
    name = r["Kernel Name"].replace("(anonymous namespace)::", "").replace("<unnamed>::", "")
    name = re.sub(r"^void ", "", name)
    fam = re.sub(r"\(.*", "", re.sub(r"<.*", "", name))[:90] or name[:90]
    tot[fam] += float(v); cnt[fam] += 1
total = sum(tot.values())
print(f"kernels: {sum(cnt.values())}, total kernel time {total/1e6:.1f} ms")
for k, v in tot.most_common(40):
    print(f"{v/1e6:9.2f} ms {100*v/total:5.1f}% {cnt[k]:6d}x  {k}")
PY
rm -f "$csv.raw"
