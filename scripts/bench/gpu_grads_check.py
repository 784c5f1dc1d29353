#!/usr/bin/env python3
"""On the GPU host: do the GPU kernels' gradients equal the composite path's?

For every folder of fixtures/hf-golden, runs `koth model grads` on CUDA through `--path kernels`
(koth-kernels: fused cross-entropy, RMSNorm, RoPE, SwiGLU with their backward; fused attention in
half precision) and through `--path composite` (candle's differentiable ops), and prints each
dtype's largest relative difference ||g_kernels - g_composite|| / ||g_composite|| over the
parameters. bf16 is reported for information only: the two paths round differently in bf16
(attention runs through cuDNN's fused kernel on the kernel path only), and on the MoE fixture one
rounding can flip a router choice.

f32 is held to 1e-4 relative (the acceptance bound), and the script exits non-zero when it is
missed. It passes when the whole gradient (every parameter as one vector) agrees within 1e-4
and so does every tensor, except a tensor whose difference between the paths is no larger than
the composite path's own difference between CUDA and the CPU on that tensor: the f32 rounding
of that tensor, measured in the same run. Such tensors are listed (`within_rounding`), and
`pass_every_tensor_1e-4` keeps the literal per-tensor verdict. The case: a tensor whose gradient
is a near-cancelling sum (the Qwen3.5 MoE fixture's layer-0 `A_log`, 7e-5 of the gradient's
norm) moves by more between two correct f32 implementations than the bound allows
(docs/BENCHMARKS.md, and `grad_conditioning.py` for transformers' own f32).
"""
import json, os, pathlib, subprocess, sys, tempfile

import numpy as np
from safetensors.numpy import load_file

koth = sys.argv[1] if len(sys.argv) > 1 else "./koth"
root = pathlib.Path("fixtures/hf-golden")
tol = {"f32": 1e-4, "bf16": None}
ok = True


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


with tempfile.TemporaryDirectory() as tmp:
    only = os.environ.get("KOTH_GRADS_ONLY", "")  # a substring of the fixture names to run
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and only in p.name):
        exp = load_file(str(folder / "expected.safetensors"))
        ids = pathlib.Path(tmp) / f"{folder.name}-ids.npy"
        np.save(ids, exp["input_ids"].astype(np.int64))
        golden = load_file(str(folder / "grads.safetensors"))
        for dt in ["f32", "bf16"]:
            got = {}
            runs = [("kernels", "cuda"), ("composite", "cuda")] + ([("composite", "cpu")] if dt == "f32" else [])
            for path, device in runs:
                out = pathlib.Path(tmp) / f"{folder.name}-{dt}-{path}-{device}.safetensors"
                subprocess.run([koth, "model", "grads", "--model", str(folder), "--ids", str(ids),
                                "--out", str(out), "--device", device, "--dtype", dt,
                                "--path", path], check=True, stdout=subprocess.DEVNULL)
                key = path if device == "cuda" else "composite-cpu"
                got[key] = {k: v.astype(np.float64) for k, v in load_file(str(out)).items()}
            per_tensor = {n: rel(got["kernels"][n], ref) for n, ref in got["composite"].items()}
            worst_name = max(per_tensor, key=per_tensor.get)
            worst = per_tensor[worst_name]
            if worst == 0.0:  # no parameter differs
                worst_name = None
            worst_golden = max(rel(got["kernels"][n], golden[n].astype(np.float64)) for n in per_tensor)
            diff2 = sum(float(np.sum((got["kernels"][n] - r) ** 2)) for n, r in got["composite"].items())
            grad_norm = max(sum(float(np.sum(r ** 2)) for r in got["composite"].values()), 1e-60) ** 0.5
            whole = diff2 ** 0.5 / grad_norm
            line = {"model": folder.name, "dtype": dt,
                    "max_rel_kernels_vs_composite": worst, "worst_tensor": worst_name,
                    "max_rel_kernels_vs_transformers": worst_golden, "rel_whole_gradient": whole,
                    "tolerance": tol[dt]}
            if tol[dt] is None:
                line["pass"] = True
            else:
                # The composite path's own CUDA-vs-CPU difference: the f32 rounding of each tensor.
                floor = {n: rel(got["composite"][n], got["composite-cpu"][n]) for n in per_tensor}
                over = {n: r for n, r in per_tensor.items() if r > tol[dt]}
                within_rounding = [{"tensor": n, "rel_kernels_vs_composite": r,
                                    "rel_composite_cuda_vs_cpu": floor[n],
                                    "norm_share": float(np.linalg.norm(got["composite"][n]) / grad_norm)}
                                   for n, r in over.items() if r <= floor[n]]
                line["max_rel_composite_cuda_vs_cpu"] = max(floor.values())
                line["within_rounding"] = within_rounding
                line["pass_every_tensor_1e-4"] = not over
                line["pass"] = whole <= tol[dt] and len(within_rounding) == len(over)
            ok &= line["pass"]
            print(json.dumps(line))
sys.exit(0 if ok else 1)
