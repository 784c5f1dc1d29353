#!/usr/bin/env bash
# The GPU measurements of docs/BENCHMARKS.md, on the GPU host, from the repository root with
# .dist/koth.xz built by scripts/cuda-build.sh. Every number comes with PyTorch's on the same
# GPU in the same call (`koth bench … --torch`). Results: $OUT (default ./gpu-out), one JSON line
# per measurement in $OUT/bench-<UTC date>-<phase>.json (commit them into docs/bench/).
#
#   scripts/bench/gpu-run.sh [check|score|hybrid|train|all|pending|quick|hybrid-fla|h100|h200|h200-refresh|verify|train-ab|scale|moe-batched]   (default all)
#
# `check`: the golden set on CUDA against the CPU, the kernels' gradients against the
# composites', and a verdict twice on the GPU plus its replay (plain and pooled). `score`: paired
# scoring, Qwen3-0.6B shape at B=8 T=2048 (also challenger-only, as a pooled duel scores) and
# B=2 T=8192, and the Qwen3-1.7B shape. `hybrid`: a Qwen3.5-shaped 0.92B model beside
# transformers (its torch delta rule, then fla's kernels when carried in .whl/), and its training
# step with and without the delta-rule backward kernel. `train`: training steps at B=1,
# 4 and 8 (T=2048). Each phase fits in one 10-minute call. `pending`: the checks of the kernels
# that have not run on a GPU yet, a per-kernel profile of the hybrid's scoring, and the 1.7B
# number (run it before `hybrid`). `scale`: the Qwen3-30B-A3B shape on
# one GPU (docs/SCALE.md). `hybrid-fla`: the hybrid beside transformers+fla, and its training
# steps with and without activation checkpointing. `moe-batched`: the experts as padded batched GEMMs (KOTH_MOE_BATCHED=1),
# then the per-expert loop (KOTH_MOE_GROUPED=0), beside the default grouped GEMMs of `scale`.
set -uo pipefail
phase=${1:-all}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
stamp=$(date -u +%Y-%m-%dT%H%M)
if [ ! -x /tmp/koth ]; then
  python3 -c "import lzma,shutil;shutil.copyfileobj(lzma.open('.dist/koth.xz'),open('/tmp/koth','wb'))" && chmod +x /tmp/koth || exit 1
fi
cudnn_lib=$(python3 -c "import nvidia.cudnn,os;print(os.path.join(list(nvidia.cudnn.__path__)[0],'lib'))")
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:$cudnn_lib:${LD_LIBRARY_PATH:-}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch,transformers;print('torch',torch.__version__,'transformers',transformers.__version__,'cudnn',torch.backends.cudnn.version())"
} | tee "$OUT/gpu.txt"
status=0
record() { # phase: append stdout JSON lines of the command to the phase's file
  local file="$OUT/bench-$stamp-$1.json"; shift
  "$@" | tee -a "$file"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || { echo "FAILED (rc=$rc): $*"; status=1; }
}
# Each step's start time, into the phase's log (which also takes the steps' stderr).
log="$OUT/$phase-$stamp.log"
step() { echo "== $(date -u +%T) $1" | tee -a "$log"; }
# The 0.92B hybrid's paired score beside transformers on flash-linear-attention's Triton kernels,
# when they are carried as wheels (.whl/, docs/GPU.md); the reference's JSON names the delta rule
# it bound. fla compiles its kernels on first use: 240 s (140 s was too little on 2026-12-05).
fla_score() {
  ls .whl/fla_core-*.whl >/dev/null 2>&1 || return 0
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/fla-site \
    .whl/fla_core-*.whl .whl/flash_linear_attention-*.whl 2>>"$log" &&
    PYTHONPATH=/tmp/fla-site timeout 240 /tmp/koth bench score --config fixtures/bench/qwen3.5-1b.json --batch 8 \
      --seq 2048 --iters 3 --warmup 2 --device cuda --dtype bf16 --torch --json 2>>"$log" | tee -a "$OUT/bench-$stamp-hybrid.json"
}
# hybrid_train LIMIT ARGS…: one `bench train` of the 0.92B hybrid at T=2048 with ARGS (batch,
# --checkpoint), cut at LIMIT seconds.
hybrid_train() {
  timeout "$1" /tmp/koth bench train --config fixtures/bench/qwen3.5-1b.json "${@:2}" --seq 2048 --iters 3 \
    --warmup 1 --device cuda --dtype bf16 --json 2>>"$log" | tee -a "$OUT/bench-$stamp-hybrid-train.json"
}

if [ "$phase" = check ] || [ "$phase" = all ]; then
  echo "== golden set: CUDA (koth's kernels) vs CPU, f32 and bf16"
  record check python3 scripts/bench/gpu_golden_check.py /tmp/koth
  echo "== CUDA vs CPU on real Qwen3.5 head widths (the golden fixtures' heads are 16 wide)"
  record check python3 scripts/bench/gpu_shape_check.py /tmp/koth
  echo "== gradients: --path kernels vs --path composite on CUDA"
  record check python3 scripts/bench/gpu_grads_check.py /tmp/koth
  echo "== training steps: CUDA (hand-written backward, multi-tensor norm and AdamW) vs CPU"
  record check python3 scripts/bench/gpu_train_check.py /tmp/koth
  echo "== a verdict twice on the GPU, then koth duel replay"
  record check bash scripts/bench/gpu_duel_determinism.sh /tmp/koth "$OUT"
fi

bench() { record "$1" /tmp/koth bench "${@:2}" --device cuda --dtype bf16 --torch --json; }
if [ "$phase" = score ] || [ "$phase" = all ]; then
  echo "== paired scoring (king + challenger), koth beside PyTorch eager, bf16"
  bench score score --config fixtures/bench/qwen3-0.6b.json --batch 8 --seq 2048 --iters 5 --warmup 2
  echo "== king-loss reuse: only the challenger scored per batch (a pooled duel), beside PyTorch's paired scoring"
  bench score score --config fixtures/bench/qwen3-0.6b.json --batch 8 --seq 2048 --iters 5 --warmup 2 --reuse-king
  bench score score --config fixtures/bench/qwen3-0.6b.json --batch 2 --seq 8192 --iters 5 --warmup 2
  bench score score --config fixtures/bench/qwen3-1.7b.json --batch 8 --seq 2048 --iters 3 --warmup 1
fi

if [ "$phase" = hybrid ] || [ "$phase" = all ]; then
  echo "== Qwen3.5-shaped 0.92B: paired scoring beside transformers on its pure-torch delta rule"
  timeout 150 /tmp/koth bench score --config fixtures/bench/qwen3.5-1b.json --batch 8 --seq 2048 --iters 3 \
    --warmup 2 --device cuda --dtype bf16 --torch --json | tee -a "$OUT/bench-$stamp-hybrid.json"
  echo "== the same beside transformers on fla's kernels, when carried"
  fla_score
  echo "== Qwen3.5 0.92B training step: the chunked composite, then the delta-rule backward kernel (B=2, T=2048)"
  hybrid_train 80 --batch 2
  KOTH_GDR_BACKWARD=kernel hybrid_train 80 --batch 2
fi

if [ "$phase" = hybrid-fla ]; then
  # For one call (~8 min): the hybrid's paired score beside transformers on fla's kernels (the
  # stronger reference), then its training step with activation checkpointing by layer (the
  # default on CUDA) at B=2 and B=4, and at B=2 with the whole graph kept (--checkpoint off).
  fla_score
  for args in "--batch 2" "--batch 4" "--batch 2 --checkpoint off"; do
    hybrid_train 80 $args
  done
fi

if [ "$phase" = h100 ]; then
  # What an 80 GB H100 checks while no H200 is lent (one call, at most ~9 min): the golden set on
  # CUDA with this build's kernels, the hybrid's training step with and without activation
  # checkpointing, and the 30B-A3B shape cut to 12 of its 48 layers (two models fit in 80 GB):
  # the planner, paired scoring beside transformers, the per-expert loop, two stages.
  record check timeout 100 python3 scripts/bench/gpu_golden_check.py /tmp/koth
  for args in "--batch 2" "--batch 4" "--batch 2 --checkpoint off"; do
    hybrid_train 60 $args
  done
  cfg=fixtures/bench/qwen3-30b-a3b-12layers.json
  /tmp/koth model plan --config $cfg --gpus 1 --gpu-mem 79GiB --batch 8 --seq 2048 --json | tee "$OUT/plan-$stamp-30b-a3b-12layers.json"
  timeout 150 /tmp/koth bench score --config $cfg --batch 8 --seq 2048 --iters 3 --warmup 1 --device cuda \
    --dtype bf16 --torch --json | tee -a "$OUT/bench-$stamp-scale.json"
  # The per-expert loop for comparison (the default is the grouped GEMM), then two stages on
  # the default (the placed models share the one-stage models' stacked experts).
  KOTH_MOE_GROUPED=0 timeout 150 /tmp/koth bench score --config $cfg --batch 8 --seq 2048 --iters 3 --warmup 1 \
    --device cuda --dtype bf16 --json | tee -a "$OUT/bench-$stamp-scale.json"
  timeout 150 /tmp/koth bench score --config $cfg --batch 8 --seq 2048 --iters 3 --warmup 1 --stages 2 \
    --device cuda --dtype bf16 --json | tee -a "$OUT/bench-$stamp-scale.json"
fi

if [ "$phase" = quick ]; then
  # For a short lease (one call, ~6 min): the Qwen3.5 kernels against the CPU, then the hybrid's
  # paired score beside transformers' torch path.
  record check timeout 90 env KOTH_GOLDEN_ONLY=qwen35 python3 scripts/bench/gpu_golden_check.py /tmp/koth
  record check timeout 60 python3 scripts/bench/gpu_shape_check.py /tmp/koth
  timeout 150 /tmp/koth bench score --config fixtures/bench/qwen3.5-1b.json --batch 8 --seq 2048 --iters 3 \
    --warmup 2 --device cuda --dtype bf16 --torch --json | tee -a "$OUT/bench-$stamp-hybrid.json"
fi

if [ "$phase" = pending ]; then
  # What the 2026-12-05 calls could not finish (one call, at most ~9 min; the hybrid's training
  # steps and the fla comparison are in `hybrid`, a call of its own).
  # First the kernels that have not run on a GPU yet, against the CPU (see docs/GPU.md; their
  # arithmetic already passes under the host emulator, crates/koth-kernels-emu).
  echo "== Qwen3.5 on CUDA vs CPU: golden fixtures, then real head widths"
  # Each with a time limit, so that a hang cannot spend the call.
  record check timeout 90 env KOTH_GOLDEN_ONLY=qwen35 python3 scripts/bench/gpu_golden_check.py /tmp/koth
  record check timeout 60 python3 scripts/bench/gpu_shape_check.py /tmp/koth
  echo "== the delta-rule backward kernel (opt-in until this passes): its gradients vs the composite's"
  record check timeout 90 env KOTH_GRADS_ONLY=qwen35 KOTH_GDR_BACKWARD=kernel python3 scripts/bench/gpu_grads_check.py /tmp/koth
  echo "== where the hybrid's scoring time goes (every kernel timed; B=2, one iteration)"
  KOTH_PROFILE_TIMEOUT=120 bash scripts/bench/gpu_profile.sh /tmp/koth "$OUT" hybrid-score -- score \
    --config fixtures/bench/qwen3.5-1b.json --batch 2 --seq 2048 --iters 1 --warmup 0 --device cuda --dtype bf16
  echo "== Qwen3-1.7B shape, paired (the models are drawn on 16 threads, PyTorch's on the GPU)"
  timeout 280 /tmp/koth bench score --config fixtures/bench/qwen3-1.7b.json --batch 8 --seq 2048 --iters 3 \
    --warmup 1 --device cuda --dtype bf16 --torch --json | tee -a "$OUT/bench-$stamp-score.json"
fi

if [ "$phase" = scale ]; then
  # docs/SCALE.md's list for one H200 (one call; about 4 min on 2026-12-05): the planner's
  # prediction, then one draw of the pair placed as two virtual stages on the one GPU, which
  # `bench score` times both ways (the placed models and, sharing their tensors, the one-stage
  # models: `one_stage` in the JSON), checks bit for bit against each other, and follows with
  # transformers in the same call.
  # The experts run as cuBLAS grouped GEMMs (the default on CUDA; transformers' JSON names its
  # own experts backend). Drawing the 48-layer pair once instead of twice saves minutes. Each
  # step's stderr and start time go to $OUT/scale-$stamp.log.
  # On an 80 GB H100: KOTH_SCALE_CONFIG=fixtures/bench/qwen3-30b-a3b-12layers.json
  # KOTH_SCALE_GPU_MEM=79GiB (the shape cut to 12 layers, so that both models fit).
  cfg=${KOTH_SCALE_CONFIG:-fixtures/bench/qwen3-30b-a3b.json}
  gpu_mem=${KOTH_SCALE_GPU_MEM:-139GiB}
  # (The per-expert loop's golden check is `check`'s and `h100`'s.)
  step "the MoE golden fixtures on CUDA vs CPU with the grouped GEMM"
  record check timeout 60 env KOTH_MOE_GROUPED=1 KOTH_GOLDEN_ONLY=moe python3 scripts/bench/gpu_golden_check.py /tmp/koth 2>>"$log"
  step "Qwen3-30B-A3B shape: the planner, for the batch one stage scores"
  /tmp/koth model plan --config $cfg --gpus 1 --gpu-mem $gpu_mem --batch 8 --seq 2048 --json > "$OUT/plan-$stamp-$(basename $cfg .json).json" 2>>"$log"
  step "two virtual stages and one stage from one draw (grouped GEMMs, shared tensors), then transformers"
  timeout 500 /tmp/koth bench score --config $cfg --batch 8 --seq 2048 --iters 3 --warmup 1 --stages 2 \
    --device cuda --dtype bf16 --torch --json 2>>"$log" | tee -a "$OUT/bench-$stamp-scale.json"
  step "done"
fi

if [ "$phase" = moe-batched ]; then
  # The alternatives to the default grouped GEMM, for comparison with `scale`'s one-stage row:
  # the experts as padded batched GEMMs (KOTH_MOE_BATCHED=1 with KOTH_MOE_GROUPED=0; opt-in,
  # half the grouped GEMM's rate on the H200), its golden check first, then the per-expert loop
  # (KOTH_MOE_GROUPED=0).
  cfg=${KOTH_SCALE_CONFIG:-fixtures/bench/qwen3-30b-a3b.json}
  record check timeout 90 env KOTH_MOE_GROUPED=0 KOTH_MOE_BATCHED=1 KOTH_GOLDEN_ONLY=moe python3 scripts/bench/gpu_golden_check.py /tmp/koth
  KOTH_MOE_GROUPED=0 KOTH_MOE_BATCHED=1 timeout 220 /tmp/koth bench score --config $cfg --batch 8 \
    --seq 2048 --iters 3 --warmup 1 --device cuda --dtype bf16 --json | tee -a "$OUT/bench-$stamp-scale.json"
  KOTH_MOE_GROUPED=0 timeout 220 /tmp/koth bench score --config $cfg --batch 8 \
    --seq 2048 --iters 3 --warmup 1 --device cuda --dtype bf16 --json | tee -a "$OUT/bench-$stamp-scale.json"
fi

if [ "$phase" = h200 ]; then
  # What the H200 still owed after 2026-12-05's H100 calls (one call, at most ~9.5 min), most
  # needed first: the Qwen3-1.7B shape paired beside PyTorch (issue 14), the hybrid beside
  # transformers on fla's kernels (issue 20), then the hybrid's checkpointed training step at
  # B=4 and, with 139 GB, the whole graph at B=2.
  step "Qwen3-1.7B shape, paired, beside PyTorch"
  timeout 200 /tmp/koth bench score --config fixtures/bench/qwen3-1.7b.json --batch 8 --seq 2048 --iters 3 \
    --warmup 1 --device cuda --dtype bf16 --torch --json 2>>"$log" | tee -a "$OUT/bench-$stamp-score.json"
  step "Qwen3.5 0.92B, paired, beside transformers on fla's kernels"
  fla_score
  for args in "--batch 4" "--batch 2 --checkpoint off"; do
    step "Qwen3.5 0.92B training step $args"
    hybrid_train 70 $args
  done
  step "done"
fi

if [ "$phase" = h200-refresh ]; then
  # The H200's correctness checks and the 0.6B rows again with this build (one call, at most
  # ~9.5 min), most needed first: a verdict twice plus its replay, the golden set, the
  # gradients, then the 0.6B paired / pooled / long-window scores and the B=4 and B=8 steps.
  step "a verdict twice on the GPU, then koth duel replay"
  record check timeout 120 bash scripts/bench/gpu_duel_determinism.sh /tmp/koth "$OUT" 2>>"$log"
  step "golden set: CUDA vs CPU"
  record check timeout 120 python3 scripts/bench/gpu_golden_check.py /tmp/koth 2>>"$log"
  step "gradients: kernels vs composite"
  record check timeout 60 python3 scripts/bench/gpu_grads_check.py /tmp/koth 2>>"$log"
  step "0.6B paired, pooled and long-window scores beside PyTorch"
  for args in "--batch 8 --seq 2048" "--batch 8 --seq 2048 --reuse-king" "--batch 2 --seq 8192"; do
    timeout 60 /tmp/koth bench score --config fixtures/bench/qwen3-0.6b.json $args --iters 5 --warmup 2 \
      --device cuda --dtype bf16 --torch --json 2>>"$log" | tee -a "$OUT/bench-$stamp-score.json"
  done
  step "0.6B training steps beside PyTorch"
  for b in 4 8; do
    timeout 60 /tmp/koth bench train --config fixtures/bench/qwen3-0.6b.json --batch $b --seq 2048 --iters 5 \
      --warmup 2 --device cuda --dtype bf16 --torch --json 2>>"$log" | tee -a "$OUT/bench-$stamp-train.json"
  done
  step "done"
fi

if [ "$phase" = verify ]; then
  # This build's training paths and placement on any GPU (one call, at most ~7.5 min), most
  # needed first: training steps on CUDA against the CPU for every golden family (the MoE and
  # hybrids checkpointed by layer on CUDA, the whole graph on the CPU); two virtual stages of
  # the 30B-A3B shape cut to 12 layers on the default grouped GEMMs (the stages share the
  # one-stage models' stacked experts); the 0.92B hybrid's checkpointed step at B=4 and B=2
  # (its head in segments across sequences); then a verdict twice plus its replay.
  step "training steps, CUDA vs CPU, every golden family"
  record check timeout 180 python3 scripts/bench/gpu_train_check.py /tmp/koth 2>>"$log"
  step "30B-A3B shape at 12 layers, two virtual stages, grouped GEMMs"
  timeout 150 /tmp/koth bench score --config fixtures/bench/qwen3-30b-a3b-12layers.json --batch 8 --seq 2048 \
    --iters 3 --warmup 1 --stages 2 --device cuda --dtype bf16 --json 2>>"$log" | tee -a "$OUT/bench-$stamp-scale.json"
  for b in 4 2; do
    step "Qwen3.5 0.92B training step, B=$b, checkpointed"
    hybrid_train 70 --batch $b
  done
  step "a verdict twice on the GPU, then koth duel replay"
  record check timeout 120 bash scripts/bench/gpu_duel_determinism.sh /tmp/koth "$OUT" 2>>"$log"
  step "done"
fi

if [ "$phase" = train-ab ]; then
  # The 0.6B training step with this build beside a former build carried as .dist/old/koth.xz
  # (one call, ~4 min): B=4 and B=8, each with PyTorch in the same call, then the training-step
  # check against the CPU for every golden family with this build.
  python3 -c "import lzma,shutil;shutil.copyfileobj(lzma.open('.dist/old/koth.xz'),open('/tmp/koth-old','wb'))" && chmod +x /tmp/koth-old
  for b in 4 8; do
    timeout 90 /tmp/koth bench train --config fixtures/bench/qwen3-0.6b.json --batch $b --seq 2048 --iters 5 \
      --warmup 2 --device cuda --dtype bf16 --torch --json | tee -a "$OUT/bench-$stamp-train.json"
    timeout 60 /tmp/koth-old bench train --config fixtures/bench/qwen3-0.6b.json --batch $b --seq 2048 --iters 5 \
      --warmup 2 --device cuda --dtype bf16 --json | tee -a "$OUT/bench-$stamp-train-old.json"
  done
  record check timeout 150 python3 scripts/bench/gpu_train_check.py /tmp/koth
fi

if [ "$phase" = train ] || [ "$phase" = all ]; then
  echo "== training step, koth (bf16 weights, f32 master + moments, fused AdamW kernel) beside PyTorch (f32 master, bf16 autocast, fused AdamW)"
  for b in 1 4 8; do
    bench train train --config fixtures/bench/qwen3-0.6b.json --batch $b --seq 2048 --iters 5 --warmup 2
  done
fi
exit $status
