#!/usr/bin/env python3
"""Continue training the king with Hugging Face transformers + PyTorch: a `[train] command` for koth.

    [train]
    command = "python3 examples/trainers/hf_continue.py"

koth runs this with the attempt's inputs in environment variables (docs/MINING.md lists them
all); nothing here is hard-wired:

    KOTH_KING_DIR       the king's checkpoint (Hugging Face layout; read it, never write it)
    KOTH_OUTPUT_DIR     an empty directory: the challenger goes here
    KOTH_TRAIN_TOKENS   the training windows, little-endian uint32, KOTH_TRAIN_WINDOWS x KOTH_SEQ_LEN
                        (never a token of the miner's held-out windows)
    KOTH_SEQ_LEN, KOTH_SEED, KOTH_ATTEMPT, KOTH_DEVICE, KOTH_DTYPE
    KOTH_LR, KOTH_MIN_LR, KOTH_WARMUP_STEPS, KOTH_STEPS, KOTH_BATCH_SIZE, KOTH_GRAD_ACCUM,
    KOTH_WEIGHT_DECAY, KOTH_CLIP   the [train] hyper-parameters of miner.toml

It loads the king with AutoModelForCausalLM, runs AdamW with linear warmup then cosine decay to
KOTH_MIN_LR over KOTH_STEPS optimizer steps of KOTH_BATCH_SIZE x KOTH_GRAD_ACCUM windows, and saves
the result in Hugging Face layout: safetensors weights in the king's dtype and tensor names,
the king's config.json byte for byte (the validator locks the architecture keys), the king's
tokenizer files; nothing else, and never a .py file (the validator refuses code).
"""

import json
import math
import os
import shutil
import struct
import sys
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM

# Files a checkpoint may hold besides its weights (koth_core::checkpoint::ALLOWED_NAMES).
METADATA = {
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
}
TORCH_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def env(name, cast=str):
    value = os.environ.get(name)
    if value is None or value == "":
        sys.exit(f"hf_continue.py: {name} is not set (run me as koth's [train] command)")
    try:
        return cast(value)
    except ValueError:
        sys.exit(f"hf_continue.py: {name}={value!r} is not a {cast.__name__}")


def king_dtype(king_dir):
    """The dtype the king's weights are stored in (the challenger keeps it: the validator
    checks every tensor's dtype against the king's)."""
    names = sorted(f for f in os.listdir(king_dir) if f.endswith(".safetensors"))
    with open(os.path.join(king_dir, names[0]), "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    if len(dtypes) != 1 or next(iter(dtypes)) not in TORCH_DTYPES:
        sys.exit(f"hf_continue.py: the king's weights have dtypes {sorted(dtypes)}; expected one of {sorted(TORCH_DTYPES)}")
    return TORCH_DTYPES[dtypes.pop()]


def lr_at(step, lr, min_lr, warmup, steps):
    """Linear warmup to lr, then cosine decay to min_lr (koth's built-in schedule)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def save_like_king(model, king_dir, out_dir, dtype):
    """Hugging Face layout, the king's dtype, the king's metadata files; nothing else."""
    model.to(dtype).save_pretrained(out_dir, safe_serialization=True)
    for name in os.listdir(out_dir):
        weights = name.endswith(".safetensors") or name == "model.safetensors.index.json"
        if not weights and name not in os.listdir(king_dir):
            os.remove(os.path.join(out_dir, name))
    for name in os.listdir(king_dir):
        if name in METADATA:
            shutil.copyfile(os.path.join(king_dir, name), os.path.join(out_dir, name))


def main():
    king_dir = env("KOTH_KING_DIR")
    out_dir = env("KOTH_OUTPUT_DIR")
    seq_len = env("KOTH_SEQ_LEN", int)
    steps = env("KOTH_STEPS", int)
    batch = env("KOTH_BATCH_SIZE", int)
    accum = env("KOTH_GRAD_ACCUM", int)
    lr, min_lr = env("KOTH_LR", float), env("KOTH_MIN_LR", float)
    warmup = env("KOTH_WARMUP_STEPS", int)
    clip, weight_decay = env("KOTH_CLIP", float), env("KOTH_WEIGHT_DECAY", float)
    seed = env("KOTH_SEED", int) * 1_000_003 + env("KOTH_ATTEMPT", int)
    want_cuda = env("KOTH_DEVICE").startswith("cuda")
    device = torch.device("cuda" if want_cuda and torch.cuda.is_available() else "cpu")
    if want_cuda and device.type != "cuda":
        sys.exit("hf_continue.py: KOTH_DEVICE asks for CUDA but torch sees no GPU")
    torch.manual_seed(seed)

    tokens = np.fromfile(env("KOTH_TRAIN_TOKENS"), dtype="<u4")
    if tokens.size == 0 or tokens.size % seq_len:
        sys.exit(f"hf_continue.py: {tokens.size} training tokens is not a whole number of {seq_len}-token windows")
    windows = torch.from_numpy(tokens.reshape(-1, seq_len).astype(np.int64))

    stored = king_dtype(king_dir)
    # Train in f32 on the CPU; on a GPU, bf16 weights when the miner asks for bf16.
    compute = torch.bfloat16 if device.type == "cuda" and env("KOTH_DTYPE") == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(king_dir, dtype=compute).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    print(f"hf_continue.py: {sum(p.numel() for p in model.parameters())} parameters on {device}, "
          f"{windows.shape[0]} windows of {seq_len} tokens, {steps} steps of {batch}x{accum}", flush=True)

    started = time.time()
    row = 0
    for step in range(steps):
        rate = lr_at(step, lr, min_lr, warmup, steps)
        for group in optimizer.param_groups:
            group["lr"] = rate
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(accum):
            idx = torch.arange(row, row + batch) % windows.shape[0]
            row += batch
            ids = windows[idx].to(device)
            loss = model(input_ids=ids, labels=ids).loss / accum
            loss.backward()
            total += loss.item()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip > 0 else float("inf"))
        optimizer.step()
        print(f"step {step + 1}/{steps} loss {total:.4f} lr {rate:.3e} grad-norm {norm.item():.3f} "
              f"({time.time() - started:.1f} s)", flush=True)

    save_like_king(model.cpu(), king_dir, out_dir, stored)
    print(f"hf_continue.py: saved to {out_dir}: {sorted(os.listdir(out_dir))}", flush=True)


if __name__ == "__main__":
    main()
