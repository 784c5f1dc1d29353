#!/usr/bin/env python3
"""On the GPU host: does the CUDA build of `koth model nll` agree with its CPU result?

For every folder of fixtures/hf-golden, runs `koth model nll` on the golden input ids with
--device cpu (f32) and --device cuda (f32 and bf16; the CUDA default path, koth's GPU kernels), and prints the largest absolute difference
of each CUDA run from the CPU run and from transformers' golden `nll`. Exits non-zero when a
difference exceeds its tolerance: CUDA f32 vs CPU f32 within 1e-4 per token; CUDA bf16 vs CPU
bf16 within 2e-2 on a row's mean NLL (a duel window's loss, what a verdict is computed from; the
CPU suite's bf16 tolerance, `bf16_scoring_stays_close_to_f32`, is on the mean too). The bf16
per-token difference is printed beside it: one bf16 rounding can flip a near-tie (a MoE router
choice), which moves single tokens by more than it moves a window.
"""
import json, pathlib, subprocess, sys, tempfile

import os

import numpy as np
from safetensors.numpy import load_file

koth = sys.argv[1] if len(sys.argv) > 1 else "./koth"
root = pathlib.Path("fixtures/hf-golden")
tol = {"f32": 1e-4, "bf16": 2e-2}
rows, ok = [], True
with tempfile.TemporaryDirectory() as tmp:
    only = os.environ.get("KOTH_GOLDEN_ONLY", "")  # a substring of the fixture names to run
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and only in p.name):
        exp = load_file(str(folder / "expected.safetensors"))
        ids = pathlib.Path(tmp) / f"{folder.name}-ids.npy"
        np.save(ids, exp["input_ids"].astype(np.int64))
        out = {}
        # CUDA runs take the default scoring path there: koth's GPU kernels (--path auto).
        for dev, dt in [("cpu", "f32"), ("cpu", "bf16"), ("cuda", "f32"), ("cuda", "bf16")]:
            path = pathlib.Path(tmp) / f"{folder.name}-{dev}-{dt}.npy"
            subprocess.run([koth, "model", "nll", "--model", str(folder), "--ids", str(ids),
                            "--out", str(path), "--device", dev, "--dtype", dt], check=True,
                           stdout=subprocess.DEVNULL)
            out[(dev, dt)] = np.load(path).astype(np.float64)
        cpu = out[("cpu", "f32")]
        for dt in ["f32", "bf16"]:
            cuda = out[("cuda", dt)]
            d_same = float(np.abs(cuda - out[("cpu", dt)]).max())
            d_mean = float(np.abs(cuda.mean(axis=1) - out[("cpu", dt)].mean(axis=1)).max())
            passed = (d_same if dt == "f32" else d_mean) <= tol[dt]
            ok &= passed
            rows.append({"model": folder.name, "dtype": dt,
                         "max_abs_cuda_vs_cpu_same_dtype": d_same,
                         "max_abs_row_mean_cuda_vs_cpu_same_dtype": d_mean,
                         "max_abs_cuda_vs_cpu_f32": float(np.abs(cuda - cpu).max()),
                         "max_abs_cuda_vs_transformers": float(np.abs(cuda - exp["nll"]).max()),
                         "tolerance": tol[dt], "tolerance_on": "token" if dt == "f32" else "row mean",
                         "pass": passed})
        rows.append({"model": folder.name, "dtype": "cpu-f32",
                     "max_abs_vs_transformers": float(np.abs(cpu - exp["nll"]).max())})
for r in rows:
    print(json.dumps(r))
sys.exit(0 if ok else 1)
