#!/usr/bin/env python3
"""On the GPU host: does the CUDA scoring path agree with the CPU on head shapes the golden
fixtures do not have?

The golden fixtures' gated DeltaNet heads are 16 wide, which the delta-rule kernel serves with one
lane per state column. Real Qwen3.5 heads are 128 wide (four lanes per column, shuffle sums). For
each `fixtures/bench/qwen3.5-check-*.json` (key heads of 128 and of 192, value heads of 128 and of
80, one and two key heads), a seeded random model scores 2 × 300 random tokens (not a whole number
of the kernel's 16-token tiles) with `koth model nll` on the CPU and on CUDA; f32 must agree within
1e-4 per token, bf16 within 2e-2 on a row's mean (the golden check's tolerances).

    python3 scripts/bench/gpu_shape_check.py KOTH
"""
import json, pathlib, subprocess, sys, tempfile

import numpy as np

koth = sys.argv[1] if len(sys.argv) > 1 else "./koth"
tol = {"f32": 1e-4, "bf16": 2e-2}
ok = True
with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    for config in sorted(pathlib.Path("fixtures/bench").glob("qwen3.5-check-*.json")):
        cfg = json.load(open(config))
        model = tmp / config.stem
        subprocess.run([koth, "model", "init", "--config", str(config), "--seed", "1", "--out", str(model),
                        "--dtype", "f32"], check=True, stdout=subprocess.DEVNULL)
        ids = tmp / f"{config.stem}-ids.npy"
        np.save(ids, np.random.default_rng(5).integers(0, cfg["vocab_size"], size=(2, 300), dtype=np.int64))
        out = {}
        for dev in ["cpu", "cuda"]:
            for dt in ["f32", "bf16"]:
                path = tmp / f"{config.stem}-{dev}-{dt}.npy"
                subprocess.run([koth, "model", "nll", "--model", str(model), "--ids", str(ids), "--out", str(path),
                                "--device", dev, "--dtype", dt], check=True, stdout=subprocess.DEVNULL)
                out[(dev, dt)] = np.load(path).astype(np.float64)
        for dt in ["f32", "bf16"]:
            a, b = out[("cpu", dt)], out[("cuda", dt)]
            token = float(np.abs(a - b).max())
            mean = float(np.abs(a.mean(axis=1) - b.mean(axis=1)).max())
            passed = (token if dt == "f32" else mean) <= tol[dt]
            ok &= passed
            print(json.dumps({"check": "CUDA vs CPU, wide DeltaNet heads", "config": config.name, "dtype": dt,
                              "key_head_dim": cfg["linear_key_head_dim"],
                              "value_head_dim": cfg["linear_value_head_dim"],
                              "max_abs_token": token, "max_abs_row_mean": mean, "tolerance": tol[dt],
                              "pass": passed}))
sys.exit(0 if ok else 1)
