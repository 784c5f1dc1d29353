#!/usr/bin/env bash
# A miner's own trainer on the GPU host: examples/trainers/hf_fsdp.py under torchrun (FSDP, one
# rank per GPU) as `[train] command`, through `koth miner once` against a devnet network, with
# the validator running beside it. The network is made on any machine first and carried:
#
#   koth devnet --workspace /tmp/fsdpnet --duration 3s --miners 1 --port 18080   # (CPU machine)
#   cp -r /tmp/fsdpnet .gpu-carry/                                               # carried as .gpu-carry
#   scripts/bench/gpu_fsdp_miner.sh KOTH                                          # (GPU host)
#
# The workspace's store is addressed by absolute path, so it is put back at /tmp/fsdpnet.
set -uo pipefail
koth=$1
ws=/tmp/fsdpnet
repo=$(pwd)
rm -rf "$ws" && cp -r .gpu-carry/fsdpnet "$ws" && mkdir -p "$ws/logs"
gpus=$(nvidia-smi -L | wc -l)
python3 - "$ws/miner-1.toml" "$gpus" "$repo" <<'PY'
import sys
path, gpus, repo = sys.argv[1:]
s = open(path).read()
s = s.replace('device = "cpu"', 'device = "cuda"').replace('dtype = "f32"', 'dtype = "bf16"')
cmd = f"python3 -m torch.distributed.run --standalone --nproc-per-node {gpus} {repo}/examples/trainers/hf_fsdp.py"
s = s.replace("[train]\n", f'[train]\ncommand = "{cmd}"\ntime_limit_s = 600\n')
open(path, "w").write(s)
print(s[s.index("[train]"):])
PY
cd "$ws"
"$koth" validator run --config validator.toml >logs/validator-gpu.log 2>&1 &
validator=$!
sleep 3
timeout 300 "$koth" miner once --config miner-1.toml
rc=$?
sleep 3
"$koth" validator status --config validator.toml
kill "$validator"
tail -5 logs/validator-gpu.log
exit $rc
