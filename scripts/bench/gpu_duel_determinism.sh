#!/usr/bin/env bash
# On the GPU host: is a verdict computed twice on the GPU bit-identical, and does `koth duel
# replay` reproduce it there? King and challenger are two seeded random models of the Qwen3-0.6B
# layer shape (8 layers, the devnet's 4096-token vocabulary, bf16), dueled on the devnet-mini
# holdout with the sequential rule, through the default CUDA scoring path (koth's kernels); then
# the same with king-loss reuse (a reign pool of 8 batches of 16 windows of 256 tokens: the
# devnet-mini holdout holds only 78 windows of 512, fewer than the pool's 128; only the challenger
# is scored per duel).
#
#   scripts/bench/gpu_duel_determinism.sh KOTH OUTDIR
set -euo pipefail
koth=$1
out=$2
work=$(mktemp -d)
cfg=fixtures/bench/qwen3-8l-v4096.json
"$koth" model init --config $cfg --seed 1 --out "$work/king" --dtype bf16 >/dev/null
"$koth" model init --config $cfg --seed 2 --out "$work/challenger" --dtype bf16 >/dev/null
for run in 1 2; do
  "$koth" duel run --king "$work/king" --challenger "$work/challenger" \
    --bundle fixtures/devnet-mini/holdout-bundle.json --seed-material gpu-determinism \
    --seq-len 512 --n-max 64 --min-n 16 --batch-size 16 --relative-delta 0.001 \
    --device cuda --dtype bf16 --out "$work/verdict-$run.json" >/dev/null
done
cp "$work/verdict-1.json" "$out/determinism-verdict.json"
# Everything but the wall-clock time must be equal, bit for bit (floats are written exactly).
strip() { python3 -c "import json,sys;v=json.load(open(sys.argv[1]));v.pop('wall_time_s',None);print(json.dumps(v,sort_keys=True))" "$1"; }
if [ "$(strip "$work/verdict-1.json")" = "$(strip "$work/verdict-2.json")" ]; then
  echo '{"check":"verdict twice on the GPU","identical":true}'
else
  echo '{"check":"verdict twice on the GPU","identical":false}'
  diff <(python3 -m json.tool "$work/verdict-1.json") <(python3 -m json.tool "$work/verdict-2.json") | head -20
  exit 1
fi
"$koth" duel replay "$work/verdict-1.json" && echo '{"check":"koth duel replay on the GPU","reproduced":true}'

for run in 1 2; do
  "$koth" duel run --king "$work/king" --challenger "$work/challenger" \
    --bundle fixtures/devnet-mini/holdout-bundle.json --seed-material gpu-determinism \
    --king-pool-batches 8 --king-pool-seed crowning-block \
    --seq-len 256 --n-max 64 --min-n 16 --batch-size 16 --relative-delta 0.001 \
    --device cuda --dtype bf16 --out "$work/pooled-$run.json" >/dev/null
done
cp "$work/pooled-1.json" "$out/determinism-pooled-verdict.json"
if [ "$(strip "$work/pooled-1.json")" = "$(strip "$work/pooled-2.json")" ]; then
  echo '{"check":"pooled verdict twice on the GPU","identical":true}'
else
  echo '{"check":"pooled verdict twice on the GPU","identical":false}'
  exit 1
fi
"$koth" duel replay "$work/pooled-1.json" && echo '{"check":"koth duel replay of the pooled verdict on the GPU (pool rebuilt, digest checked)","reproduced":true}'
