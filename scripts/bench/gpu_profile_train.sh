#!/usr/bin/env bash
# Where a koth training step spends its GPU time: one `koth bench train` step under Nsight
# Compute, timing every kernel (gpu__time_duration only: no replay, caches left alone), then a
# table of kernel families by total time. The sum of kernel times beside the step's wall time
# (from `koth bench train` without the profiler) says whether the step is launch-bound.
#
#   scripts/bench/gpu_profile_train.sh KOTH_BINARY OUT_DIR [BATCH]     (on the GPU host)
#
# Writes OUT_DIR/ncu-train-B<batch>.csv (every kernel, in launch order) and prints the table of
# the timed step (scripts/bench/gpu_profile.sh with KOTH_PROFILE_STEP=adamw).
# Give it 5 minutes: under the profiler a B=4 step of the 0.6B shape takes ~20 s and printing
# the report of two steps' kernels takes longer (a 70-second limit cut it on 2026-12-05).
set -uo pipefail
koth=$1 out=$2 batch=${3:-4}
KOTH_PROFILE_STEP=adamw KOTH_PROFILE_TIMEOUT=${KOTH_PROFILE_TIMEOUT:-300} \
  exec "$(dirname "$0")/gpu_profile.sh" "$koth" "$out" "train-B$batch" -- \
  train --config fixtures/bench/qwen3-0.6b.json --batch "$batch" --seq 2048 \
  --iters 1 --warmup 1 --device cuda --dtype bf16
