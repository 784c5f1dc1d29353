#!/usr/bin/env python3
"""PyTorch reference for koth's training-step benchmark (run on the GPU host, same call).

A random-weight model from a Hugging Face config, f32 master weights, bf16 autocast, fused AdamW
(the H100 anchor in docs/BENCHMARKS.md: 34,692 tok/s at B=4, T=2048 for the Qwen3-0.6B shape) — one optimizer step
per batch, loss = mean next-token cross-entropy. Prints tokens/s (B*T per step) and peak memory.
"""
import argparse, json, time

import torch
import transformers


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args()
    cfg = transformers.AutoConfig.for_model(**json.load(open(a.config)))
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).to(device="cuda").train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
    g = torch.Generator(device="cuda").manual_seed(1)
    batches = [torch.randint(0, cfg.vocab_size, (a.batch, a.seq), device="cuda", generator=g)
               for _ in range(4)]
    times = []
    for i in range(a.warmup + a.iters):
        ids = batches[i % len(batches)]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    print(json.dumps({
        "impl": f"pytorch-eager {torch.__version__} transformers {transformers.__version__}",
        "batch": a.batch, "seq": a.seq, "median_step_s": med,
        "tokens_per_s": a.batch * a.seq / med,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
    }))


if __name__ == "__main__":
    main()
