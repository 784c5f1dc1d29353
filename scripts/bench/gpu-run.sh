#!/usr/bin/env bash
# The GPU measurements of docs/BENCHMARKS.md, in one go, on the GPU host, from the repository
# root with .dist/koth.xz built by scripts/cuda-build.sh. Results go to $OUT (default ./gpu-out).
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
python3 -c "import lzma,shutil;shutil.copyfileobj(lzma.open('.dist/koth.xz'),open('/tmp/koth','wb'))" && chmod +x /tmp/koth || exit 1
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
cfg=fixtures/bench/qwen3-0.6b.json
echo "== golden agreement, CUDA vs CPU"
python3 scripts/bench/gpu_golden_check.py /tmp/koth | tee "$OUT/golden.jsonl"
echo "== paired scoring, koth (candle), Qwen3-0.6B shape, bf16, B=8, T=2048"
/tmp/koth bench score --config $cfg --batch 8 --seq 2048 --device cuda --dtype bf16 \
  --iters 5 --warmup 2 --json | tee "$OUT/score-koth.json"
echo "== paired scoring, PyTorch eager, same shape, lm_head chunk 512"
python3 scripts/bench/torch_paired_score.py --config $cfg --batch 8 --seq 2048 --chunk 512 \
  --iters 5 --warmup 2 | tee "$OUT/score-torch.json"
echo "== training step, Qwen3-0.6B shape: koth bf16 weights + f32 AdamW moments; PyTorch f32 master + bf16 autocast, fused AdamW"
for shape in "1 512" "2 512" "1 1024"; do
  set -- $shape
  /tmp/koth bench train --config $cfg --batch $1 --seq $2 --device cuda --dtype bf16 \
    --iters 3 --warmup 1 --json | tee "$OUT/train-koth-b$1-t$2.json"
  python3 scripts/bench/torch_train_step.py --config $cfg --batch $1 --seq $2 \
    --iters 5 --warmup 2 | tee "$OUT/train-torch-b$1-t$2.json"
done
python3 scripts/bench/torch_train_step.py --config $cfg --batch 4 --seq 2048 \
  --iters 5 --warmup 2 | tee "$OUT/train-torch-b4-t2048.json"
