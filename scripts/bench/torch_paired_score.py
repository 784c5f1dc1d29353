#!/usr/bin/env python3
"""PyTorch reference for koth's paired-scoring benchmark (run on the GPU host, same call).

Builds two random-weight models from a Hugging Face config (king and challenger), scores the
same random token batches with both, per-token NLL through a chunked lm_head in float32 (as
Teutonic does), and prints paired tokens/s: B*T tokens counted once per king+challenger pair.
"""
import argparse, json, time

import torch
import transformers


def per_token_nll(model, ids, chunk):
    hidden = model.model(input_ids=ids).last_hidden_state[:, :-1, :]
    targets = ids[:, 1:]
    B, T1, H = hidden.shape
    out = torch.empty(B, T1, dtype=torch.float32, device=ids.device)
    w = model.lm_head.weight
    for s in range(0, T1, chunk):
        logits = (hidden[:, s:s + chunk, :] @ w.T).float()
        out[:, s:s + chunk] = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets[:, s:s + chunk].reshape(-1), reduction="none"
        ).view(B, -1)
    return out


def delta_rule_path(model):
    """Which gated-delta-rule implementation transformers' DeltaNet layers took (Qwen3.5 and
    Qwen3-Next): flash-linear-attention's Triton kernels when `fla` is installed, else its own
    pure-torch chunked loop. None for models without DeltaNet layers.

    transformers 5.17 resolves its kernels at call time, so no attribute of the layer names the
    choice. Called after the timed passes, this says whether they loaded fla's delta-rule ops
    (this script never imports fla itself)."""
    if not any("GatedDeltaNet" in type(m).__name__ for m in model.modules()):
        return None
    import sys
    loaded = sorted(m for m in sys.modules if m.startswith("fla.ops.gated_delta_rule"))
    if loaded:
        return f"fla ({loaded[0]} loaded by the forward)"
    import importlib.util
    importable = importlib.util.find_spec("fla") is not None
    return f"torch (fla {'importable but not loaded' if importable else 'not importable'})"


def experts_path(model):
    """transformers' experts backend for a mixture of experts (`eager`, `grouped_mm`, ...): how
    its expert GEMMs ran. None for dense models or a transformers without the interface."""
    get = getattr(model, "get_experts_implementation", None)
    if get is None or getattr(model.config, "num_experts", None) in (None, 0):
        return None
    try:
        return get()
    except Exception as e:  # the interface changed: say so rather than fail the benchmark
        return f"unknown ({type(e).__name__})"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--chunk", type=int, default=512)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args()
    cfg = transformers.AutoConfig.for_model(**json.load(open(a.config)))
    torch.manual_seed(0)
    models = []
    for _ in range(2):
        # Built on the GPU in bf16 (initialising billions of f32 weights on the host takes
        # minutes); older transformers without the dtype argument build on the host.
        try:
            with torch.device("cuda"):
                m = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
        except TypeError:
            m = transformers.AutoModelForCausalLM.from_config(cfg)
        m = m.to(device="cuda", dtype=torch.bfloat16).eval()
        models.append(m)
    g = torch.Generator(device="cuda").manual_seed(1)
    batches = [torch.randint(0, cfg.vocab_size, (a.batch, a.seq), device="cuda", generator=g) for _ in range(4)]
    times = []
    with torch.inference_mode():
        for i in range(a.warmup + a.iters):
            ids = batches[i % len(batches)]
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for m in models:
                per_token_nll(m, ids, a.chunk)
            torch.cuda.synchronize()
            if i >= a.warmup:
                times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    tok = a.batch * a.seq
    print(json.dumps({
        "impl": f"pytorch-eager {torch.__version__} transformers {transformers.__version__}",
        "delta_rule": delta_rule_path(models[0]),
        "experts": experts_path(models[0]),
        "batch": a.batch, "seq": a.seq, "chunk": a.chunk,
        "median_pair_s": med, "paired_tokens_per_s": tok / med,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
    }))


if __name__ == "__main__":
    main()
