#!/usr/bin/env python3
"""hf_continue.py under torchrun with FSDP: a `[train] command` for a miner with several GPUs.

    [train]
    device = "cuda"
    dtype = "bf16"
    command = "torchrun --standalone --nproc-per-node 8 examples/trainers/hf_fsdp.py"

koth starts torchrun in a process group of its own (its time limit kills every rank) with the
attempt's inputs in environment variables, which torchrun passes on to every rank (the list is
in docs/MINING.md and at the top of hf_continue.py). Each rank loads the king, wraps every decoder
layer and then the whole model with PyTorch's FSDP (`fully_shard`: parameters, gradients and
AdamW state sharded over the ranks; bf16 compute with f32 reduction when KOTH_DTYPE is bf16),
and trains on its share of each step's windows: KOTH_BATCH_SIZE is the global batch, split
evenly over the ranks. At the end the full state dict is gathered to rank 0's CPU memory, and
rank 0 saves it in Hugging Face layout like hf_continue.py (the king's dtype, tensor names,
config.json and tokenizer files; no code).

Gathering the full state dict needs the whole model in rank 0's CPU memory: for a king larger
than that, save a sharded checkpoint with torch.distributed.checkpoint and convert it to
safetensors shards (model-NNNNN-of-NNNNN.safetensors + model.safetensors.index.json) instead.
On a machine without GPUs it runs with the gloo backend on the CPU (a smoke test of the
mechanics, not a way to train).
"""

import os
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_continue import env, king_dtype, lr_at, save_like_king  # noqa: E402


def main():
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = env("KOTH_DEVICE").startswith("cuda") and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if cuda else "gloo")

    king_dir = env("KOTH_KING_DIR")
    out_dir = env("KOTH_OUTPUT_DIR")
    seq_len = env("KOTH_SEQ_LEN", int)
    steps = env("KOTH_STEPS", int)
    batch = env("KOTH_BATCH_SIZE", int)
    accum = env("KOTH_GRAD_ACCUM", int)
    lr, min_lr = env("KOTH_LR", float), env("KOTH_MIN_LR", float)
    warmup = env("KOTH_WARMUP_STEPS", int)
    clip, weight_decay = env("KOTH_CLIP", float), env("KOTH_WEIGHT_DECAY", float)
    if batch % world:
        sys.exit(f"hf_fsdp.py: KOTH_BATCH_SIZE {batch} does not split over {world} ranks")
    per_rank = batch // world
    torch.manual_seed(env("KOTH_SEED", int) * 1_000_003 + env("KOTH_ATTEMPT", int))

    tokens = np.fromfile(env("KOTH_TRAIN_TOKENS"), dtype="<u4")
    if tokens.size == 0 or tokens.size % seq_len:
        sys.exit(f"hf_fsdp.py: {tokens.size} training tokens is not a whole number of {seq_len}-token windows")
    windows = torch.from_numpy(tokens.reshape(-1, seq_len).astype(np.int64))

    stored = king_dtype(king_dir)
    model = AutoModelForCausalLM.from_pretrained(king_dir, dtype=torch.float32).to(device)
    bf16 = cuda and env("KOTH_DTYPE") == "bf16"
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    # Every decoder layer is one FSDP unit (the classes transformers keeps whole), then the root.
    units = set(getattr(model, "_no_split_modules", None) or [])
    for module in model.modules():
        if type(module).__name__ in units:
            fully_shard(module, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    if rank == 0:
        print(f"hf_fsdp.py: {world} ranks on {device.type}, {windows.shape[0]} windows of {seq_len} tokens, "
              f"{steps} steps of {batch}x{accum} (per rank {per_rank})", flush=True)

    started = time.time()
    row = 0
    for step in range(steps):
        rate = lr_at(step, lr, min_lr, warmup, steps)
        for group in optimizer.param_groups:
            group["lr"] = rate
        optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=device)
        for _ in range(accum):
            idx = (torch.arange(per_rank) + row + rank * per_rank) % windows.shape[0]
            row += batch
            ids = windows[idx].to(device)
            loss = model(input_ids=ids, labels=ids).loss / accum
            loss.backward()
            total += loss.detach()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip > 0 else float("inf"))
        optimizer.step()
        dist.all_reduce(total)
        if rank == 0:
            norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
            print(f"step {step + 1}/{steps} loss {total.item() / world:.4f} lr {rate:.3e} "
                  f"grad-norm {norm.item():.3f} ({time.time() - started:.1f} s)", flush=True)

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        plain = AutoModelForCausalLM.from_pretrained(king_dir, dtype=torch.float32)
        plain.load_state_dict(state)
        save_like_king(plain, king_dir, out_dir, stored)
        print(f"hf_fsdp.py: saved to {out_dir}: {sorted(os.listdir(out_dir))}", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
