#!/usr/bin/env bash
# The GPU measurements of docs/BENCHMARKS.md, on the GPU host, from the repository root with
# .dist/koth.xz built by scripts/cuda-build.sh. Results go to $OUT (default ./gpu-out).
#
#   scripts/bench/gpu-run.sh [score|train|all]     (default all)
#
# `score`: the golden agreement of the CUDA build with the CPU (f32, bf16) and paired scoring
# of the Qwen3-0.6B shape beside PyTorch eager; `train`: one training step of the same shape,
# koth beside PyTorch, at several batch shapes. Each phase fits in one 10-minute call.
set -uo pipefail
phase=${1:-all}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
if [ ! -x /tmp/koth ]; then
  python3 -c "import lzma,shutil;shutil.copyfileobj(lzma.open('.dist/koth.xz'),open('/tmp/koth','wb'))" && chmod +x /tmp/koth || exit 1
fi
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch,transformers;print('torch',torch.__version__,'transformers',transformers.__version__)" | tee -a "$OUT/gpu.txt"
cfg=fixtures/bench/qwen3-0.6b.json

if [ "$phase" = score ] || [ "$phase" = all ]; then
  echo "== golden agreement, CUDA vs CPU"
  python3 scripts/bench/gpu_golden_check.py /tmp/koth | tee "$OUT/golden.jsonl"
  echo "golden rc=${PIPESTATUS[0]}"
  echo "== paired scoring, koth (candle), Qwen3-0.6B shape, bf16, B=8, T=2048"
  for chunk in 64 512; do
    /tmp/koth bench score --config $cfg --batch 8 --seq 2048 --device cuda --dtype bf16 \
      --iters 5 --warmup 2 --logits-chunk-mib $chunk --json | tee "$OUT/score-koth-chunk$chunk.json"
  done
  echo "== paired scoring, PyTorch eager, same shape, lm_head chunk 32 and 512"
  for chunk in 32 512; do
    python3 scripts/bench/torch_paired_score.py --config $cfg --batch 8 --seq 2048 --chunk $chunk \
      --iters 5 --warmup 2 | tee "$OUT/score-torch-chunk$chunk.json"
  done
fi

if [ "$phase" = train ] || [ "$phase" = all ]; then
  echo "== training step, Qwen3-0.6B shape: koth bf16 weights + f32 master copies and AdamW moments; PyTorch f32 master + bf16 autocast, fused AdamW"
  for shape in "1 2048" "4 512" "4 2048"; do
    set -- $shape
    timeout 150 /tmp/koth bench train --config $cfg --batch $1 --seq $2 --device cuda --dtype bf16 \
      --iters 3 --warmup 1 --json | tee "$OUT/train-koth-b$1-t$2.json"
    echo "koth train b$1 t$2 rc=${PIPESTATUS[0]}"
    python3 scripts/bench/torch_train_step.py --config $cfg --batch $1 --seq $2 \
      --iters 5 --warmup 2 | tee "$OUT/train-torch-b$1-t$2.json"
  done
fi
