#!/usr/bin/env python3
"""How far an f32 gradient moves between two correct implementations, on the CPU with transformers.

The GPU gradient check (gpu_grads_check.py) holds koth's kernels path to its composite path
within 1e-4 relative, tensor by tensor. On the Qwen3.5 MoE fixture one tensor misses it: layer
0's `A_log`, whose gradient is a near-cancelling sum (its norm is 7e-5 of the whole gradient's).
This script shows that the bound is below that tensor's f32 resolution for any implementation:
it backpropagates transformers' own model (f32, CPU) through two formulations of the same mean
cross-entropy, `F.cross_entropy` and logsumexp minus the gathered logit, and through f64, and
prints each comparison's three largest per-tensor relative differences.

  python3 scripts/bench/grad_conditioning.py [fixtures/hf-golden/qwen35moe-tiny]

Needs torch, transformers (5.2 or later, for qwen3_5_moe) and safetensors; no GPU.
"""
import sys

import numpy as np
import torch
import transformers
from safetensors.numpy import load_file

folder = sys.argv[1] if len(sys.argv) > 1 else "fixtures/hf-golden/qwen35moe-tiny"
ids = torch.tensor(load_file(f"{folder}/expected.safetensors")["input_ids"].astype(np.int64))


def grads(dtype, loss_form):
    # The eager experts: torch's grouped_mm has no f64.
    m = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, experts_implementation="eager")
    hidden = m.model(input_ids=ids).last_hidden_state[:, :-1]
    logits = hidden @ m.lm_head.weight.T
    targets = ids[:, 1:]
    if loss_form == "cross_entropy":
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    else:  # logsumexp minus the target's logit: the same function, rounded differently
        loss = (torch.logsumexp(logits, -1) - logits.gather(-1, targets[..., None])[..., 0]).mean()
    loss.backward()
    return {n: p.grad.double().numpy() for n, p in m.named_parameters() if p.grad is not None}


def worst(a, b):
    rel = sorted(((float(np.linalg.norm(a[n] - b[n]) / max(np.linalg.norm(b[n]), 1e-30)), n) for n in b), reverse=True)
    return ", ".join(f"{n} {r:.2e}" for r, n in rel[:3])


f32 = grads(torch.float32, "cross_entropy")
print("f32, cross_entropy vs logsumexp-gather:", worst(grads(torch.float32, "logsumexp"), f32))
print("f32 vs f64 (cross_entropy):            ", worst(f32, grads(torch.float64, "cross_entropy")))
