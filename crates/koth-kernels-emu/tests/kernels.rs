//! koth's CUDA kernels, run under the host emulator (see the crate docs), against the CPU
//! references in koth-model: the arithmetic and layout every GPU run relies on, checked
//! without a GPU.
//!
//! The delta-rule kernels come first: their one-lane path (16-wide heads) ran on a GPU against
//! the golden fixtures, but their 4- and 8-lane paths (Qwen3.5's 128-wide heads) and the
//! backward had not been compared with anything before these tests.

use std::ffi::c_void;
use std::ptr::null_mut;

use candle_core::{DType, Device, IndexOp, Tensor, Var};
use koth_kernels_emu::{ffi, BF16, F32};
use koth_model::deltanet::{causal_conv1d_silu, recurrent_gated_delta_rule_f64};
use koth_model::ops::{centered_rms_norm, gated_rms_norm, rms_norm, OpPath, Rope};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

mod common;
use common::*;

/// A gated DeltaNet's heads and sequence.
#[derive(Debug, Clone, Copy)]
struct Delta {
    b: usize,
    t: usize,
    hk: usize,
    hv: usize,
    dk: usize,
    dv: usize,
}

impl Delta {
    fn channels(&self) -> usize {
        2 * self.hk * self.dk + self.hv * self.dv
    }
}

/// Packed [B, T, C] q/k/v activations, g [B, T, Hv] (log decay) and beta.
struct DeltaInputs {
    packed: Vec<f32>,
    g: Vec<f32>,
    beta: Vec<f32>,
}

fn delta_inputs(s: Delta, seed: u64) -> DeltaInputs {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    DeltaInputs {
        packed: uniform(&mut rng, s.b * s.t * s.channels(), -1.0, 1.0),
        g: uniform(&mut rng, s.b * s.t * s.hv, -1.5, -0.02),
        beta: uniform(&mut rng, s.b * s.t * s.hv, 0.05, 0.95),
    }
}

/// q, k [B, T, Hv, dk] (each value head with its key head's vectors) and v [B, T, Hv, dv] from
/// the packed activations, in f64.
fn per_value_head(s: Delta, packed: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let c = s.channels();
    let rep = s.hv / s.hk;
    let (mut q, mut k, mut v) = (Vec::new(), Vec::new(), Vec::new());
    for bt in 0..s.b * s.t {
        let row = &packed[bt * c..(bt + 1) * c];
        for h in 0..s.hv {
            let hk = h / rep;
            q.extend(row[hk * s.dk..(hk + 1) * s.dk].iter().map(|&x| x as f64));
            let k0 = s.hk * s.dk + hk * s.dk;
            k.extend(row[k0..k0 + s.dk].iter().map(|&x| x as f64));
            let v0 = 2 * s.hk * s.dk + h * s.dv;
            v.extend(row[v0..v0 + s.dv].iter().map(|&x| x as f64));
        }
    }
    (q, k, v)
}

/// The f64 recurrence on the packed activations, g and beta: out [B, T, Hv, dv].
fn delta_reference(s: Delta, packed: &[f32], g: &[f32], beta: &[f32]) -> Vec<f64> {
    let (q, k, v) = per_value_head(s, packed);
    recurrent_gated_delta_rule_f64(
        &q,
        &k,
        &v,
        &f64s(g),
        &f64s(beta),
        (s.b, s.t, s.hv, s.dk, s.dv),
    )
}

/// `koth_gdr_fwd` on shape `s`: `inputs` are the addresses of the packed activations
/// [B, T, C], g and beta [B, T, Hv]. With `normalize`, q and k are L2-normalised in the kernel
/// (eps 1e-6) and q scaled by 1/sqrt(dk), the scoring kernel; without, they are taken as given.
/// `out` [B, T, Hv, dv] and `ckpt` may be 0 (not written).
///
/// # Safety
///
/// Every non-zero address is a live host buffer of the size the shape gives (`ckpt` as
/// `koth_gdr_bwd_sizes` gives), of `dtype` where the kernel reads or writes it in that dtype.
unsafe fn gdr_fwd(
    s: Delta,
    dtype: i32,
    [packed, g, beta]: [u64; 3],
    out: u64,
    ckpt: u64,
    normalize: bool,
) -> i32 {
    let (eps, q_scale) = if normalize {
        (1e-6, 1.0 / (s.dk as f32).sqrt())
    } else {
        (0.0, 1.0)
    };
    // SAFETY: the caller's.
    unsafe {
        ffi::koth_gdr_fwd(
            dtype,
            packed,
            s.channels() as i64,
            g,
            beta,
            out,
            s.b as i32,
            s.t as i32,
            s.hk as i32,
            s.hv as i32,
            s.dk as i32,
            s.dv as i32,
            eps,
            q_scale,
            normalize as i32,
            ckpt,
            null_mut(),
        )
    }
}

/// The scoring kernel (q and k normalised in the kernel) in f32 against the f64 recurrence.
fn delta_forward_f32(s: Delta) {
    let x = delta_inputs(s, 7 + s.dk as u64);
    let mut out = vec![f32::NAN; s.b * s.t * s.hv * s.dv];
    let inputs = [&x.packed, &x.g, &x.beta].map(|v| v.as_ptr() as u64);
    // SAFETY: every buffer has the size its shape gives; the emulator runs synchronously.
    let code = unsafe { gdr_fwd(s, F32, inputs, out.as_mut_ptr() as u64, 0, true) };
    assert_eq!(code, 0, "koth_gdr_fwd");
    let want = delta_reference(s, &x.packed, &x.g, &x.beta);
    assert_close(&format!("delta rule f32 {s:?}"), &out, &want, 2e-5);
}

#[test]
fn delta_rule_forward_one_lane_per_column() {
    // 16-wide heads: one lane per state column; two column blocks, the second partial; a key
    // head shared by two value heads; tiles of 16 tokens and a partial last one.
    delta_forward_f32(Delta {
        b: 2,
        t: 37,
        hk: 2,
        hv: 4,
        dk: 16,
        dv: 40,
    });
}

#[test]
fn delta_rule_forward_four_lanes_per_column() {
    // Qwen3.5's 128-wide heads: four lanes per column, 32 state rows each; two key heads each
    // shared by two value heads, as in the 0.92B benchmark shape (8 over 16).
    delta_forward_f32(Delta {
        b: 1,
        t: 35,
        hk: 2,
        hv: 4,
        dk: 128,
        dv: 40,
    });
}

#[test]
fn delta_rule_forward_eight_lanes_with_padded_rows() {
    // 192-wide heads: eight lanes of 32 rows hold 256, the last 64 padding.
    delta_forward_f32(Delta {
        b: 1,
        t: 20,
        hk: 1,
        hv: 1,
        dk: 192,
        dv: 32,
    });
}

#[test]
fn delta_rule_forward_bf16_rounds_once() {
    let s = Delta {
        b: 1,
        t: 33,
        hk: 1,
        hv: 2,
        dk: 128,
        dv: 24,
    };
    let x = delta_inputs(s, 11);
    let (packed, beta) = (to_bf16(&x.packed), to_bf16(&x.beta));
    let mut out = vec![0u16; s.b * s.t * s.hv * s.dv];
    let inputs = [
        packed.as_ptr() as u64,
        x.g.as_ptr() as u64,
        beta.as_ptr() as u64,
    ];
    // SAFETY: as in delta_forward_f32, with bf16 activations (g stays f32).
    let code = unsafe { gdr_fwd(s, BF16, inputs, out.as_mut_ptr() as u64, 0, true) };
    assert_eq!(code, 0);
    // The reference sees the same bf16 inputs; the kernel's only other rounding is the output's.
    let want = delta_reference(s, &from_bf16(&packed), &x.g, &from_bf16(&beta));
    let got = from_bf16(&out);
    for (i, (&a, &r)) in got.iter().zip(&want).enumerate() {
        let e = (a as f64 - r).abs();
        assert!(
            e <= r.abs() / 256.0 + 1e-5,
            "bf16 output {i}: kernel {a}, reference {r} (more than the output's rounding)"
        );
    }
}

/// q and k of every row L2-normalised in f64 and rounded to f32, q scaled by 1/sqrt(dk): the
/// training op's input.
fn normalised(s: Delta, packed: &[f32]) -> Vec<f32> {
    let c = s.channels();
    let mut out = packed.to_vec();
    for row in out.chunks_mut(c) {
        for head in 0..2 * s.hk {
            let x = &mut row[head * s.dk..(head + 1) * s.dk];
            let norm = x.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
            let scale = if head < s.hk {
                1.0 / (s.dk as f64).sqrt()
            } else {
                1.0
            };
            x.iter_mut()
                .for_each(|a| *a = (*a as f64 / norm * scale) as f32);
        }
    }
    out
}

/// The gradients of sum(out * dout) by candle's autograd through the step-by-step recurrence
/// in f64, with q and k taken as given (the training op's contract): (dq, dk) [B, T, Hk, dk],
/// dv [B, T, Hv, dv], dg and dbeta [B, T, Hv].
fn delta_grads_autograd(
    s: Delta,
    packed: &[f32],
    g: &[f32],
    beta: &[f32],
    dout: &[f32],
) -> [Vec<f64>; 5] {
    let dev = Device::Cpu;
    let c = s.channels();
    let t64 = |x: Vec<f64>, shape: &[usize]| Tensor::from_vec(x, shape, &dev).unwrap();
    let cols = |lo: usize, n: usize| -> Vec<f64> {
        packed
            .chunks(c)
            .flat_map(|row| row[lo..lo + n].iter().map(|&x| x as f64))
            .collect()
    };
    let q = Var::from_tensor(&t64(cols(0, s.hk * s.dk), &[s.b, s.t, s.hk, s.dk])).unwrap();
    let k = Var::from_tensor(&t64(
        cols(s.hk * s.dk, s.hk * s.dk),
        &[s.b, s.t, s.hk, s.dk],
    ))
    .unwrap();
    let v = Var::from_tensor(&t64(
        cols(2 * s.hk * s.dk, s.hv * s.dv),
        &[s.b, s.t, s.hv, s.dv],
    ))
    .unwrap();
    let gv = Var::from_tensor(&t64(f64s(g), &[s.b, s.t, s.hv])).unwrap();
    let bv = Var::from_tensor(&t64(f64s(beta), &[s.b, s.t, s.hv])).unwrap();
    let rep: Vec<u32> = (0..s.hv).map(|h| (h / (s.hv / s.hk)) as u32).collect();
    let rep = Tensor::new(rep.as_slice(), &dev).unwrap();
    let qh = q.as_tensor().index_select(&rep, 2).unwrap();
    let kh = k.as_tensor().index_select(&rep, 2).unwrap();
    let mut state = Tensor::zeros((s.b, s.hv, s.dk, s.dv), DType::F64, &dev).unwrap();
    let mut outs = Vec::new();
    for ti in 0..s.t {
        let qt = qh.i((.., ti)).unwrap().unsqueeze(3).unwrap(); // [B, Hv, dk, 1]
        let kt = kh.i((.., ti)).unwrap().unsqueeze(3).unwrap();
        let vt = v.as_tensor().i((.., ti)).unwrap(); // [B, Hv, dv]
        let decay = gv.as_tensor().i((.., ti)).unwrap().exp().unwrap();
        let bt = bv.as_tensor().i((.., ti)).unwrap().unsqueeze(2).unwrap(); // [B, Hv, 1]
        state = state
            .broadcast_mul(&decay.reshape((s.b, s.hv, 1, 1)).unwrap())
            .unwrap();
        let u = state.broadcast_mul(&kt).unwrap().sum(2).unwrap(); // [B, Hv, dv]
        let d = (vt - u).unwrap().broadcast_mul(&bt).unwrap();
        state = (state + kt.broadcast_mul(&d.unsqueeze(2).unwrap()).unwrap()).unwrap();
        outs.push(state.broadcast_mul(&qt).unwrap().sum(2).unwrap());
    }
    let out = Tensor::stack(&outs, 1).unwrap(); // [B, T, Hv, dv]
    let dout = t64(f64s(dout), &[s.b, s.t, s.hv, s.dv]);
    let loss = (out * dout).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    [&q, &k, &v, &gv, &bv].map(|x| grad_f64(&grads, x))
}

/// The training op's forward (checkpoints only) and backward kernels against autograd.
fn delta_backward(s: Delta) {
    let x = delta_inputs(s, 23 + s.dk as u64);
    let packed = normalised(s, &x.packed);
    let c = s.channels();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let dout = uniform(&mut rng, s.b * s.t * s.hv * s.dv, -1.0, 1.0);
    let mut sizes = [0i64; 4];
    // SAFETY: writes four i64.
    let code = unsafe {
        ffi::koth_gdr_bwd_sizes(
            s.b as i32,
            s.t as i32,
            s.hv as i32,
            s.dk as i32,
            s.dv as i32,
            sizes.as_mut_ptr(),
        )
    };
    assert_eq!(code, 0);
    // NaN everywhere a kernel should write, so that an element it misses shows.
    let buf = |n: i64| vec![f32::NAN; n as usize];
    let (mut ckpt, mut scratch) = (buf(sizes[0]), buf(sizes[1]));
    let (mut part_q, mut part_k) = (buf(sizes[2]), buf(sizes[2]));
    let (mut part_b, mut part_g) = (buf(sizes[3]), buf(sizes[3]));
    let mut dpacked = vec![f32::NAN; s.b * s.t * c];
    let (mut dbeta, mut dg) = (
        vec![f32::NAN; s.b * s.t * s.hv],
        vec![f32::NAN; s.b * s.t * s.hv],
    );
    let dims = (s.b as i32, s.t as i32, s.hk as i32, s.hv as i32);
    // SAFETY: buffers sized by koth_gdr_bwd_sizes and the shape, as gated_delta_rule_backward
    // in koth-kernels sizes them; the emulator runs synchronously.
    unsafe {
        let inputs = [&packed, &x.g, &x.beta].map(|v| v.as_ptr() as u64);
        let code = gdr_fwd(s, F32, inputs, 0, ckpt.as_mut_ptr() as u64, false);
        assert_eq!(code, 0, "koth_gdr_fwd (checkpoints)");
        let code = ffi::koth_gdr_bwd(
            packed.as_ptr() as u64,
            c as i64,
            x.g.as_ptr() as u64,
            x.beta.as_ptr() as u64,
            dout.as_ptr() as u64,
            ckpt.as_ptr() as u64,
            scratch.as_mut_ptr() as u64,
            dpacked.as_mut_ptr() as u64,
            part_q.as_mut_ptr() as u64,
            part_k.as_mut_ptr() as u64,
            part_b.as_mut_ptr() as u64,
            part_g.as_mut_ptr() as u64,
            dbeta.as_mut_ptr() as u64,
            dg.as_mut_ptr() as u64,
            dims.0,
            dims.1,
            dims.2,
            dims.3,
            s.dk as i32,
            s.dv as i32,
            null_mut(),
        );
        assert_eq!(code, 0, "koth_gdr_bwd");
    }
    let [wq, wk, wv, wg, wb] = delta_grads_autograd(s, &packed, &x.g, &x.beta, &dout);
    let cols = |lo: usize, n: usize| -> Vec<f32> {
        dpacked
            .chunks(c)
            .flat_map(|row| row[lo..lo + n].to_vec())
            .collect()
    };
    let tol = 5e-5;
    assert_close(&format!("dq {s:?}"), &cols(0, s.hk * s.dk), &wq, tol);
    assert_close(
        &format!("dk {s:?}"),
        &cols(s.hk * s.dk, s.hk * s.dk),
        &wk,
        tol,
    );
    assert_close(
        &format!("dv {s:?}"),
        &cols(2 * s.hk * s.dk, s.hv * s.dv),
        &wv,
        tol,
    );
    assert_close(&format!("dg {s:?}"), &dg, &wg, tol);
    assert_close(&format!("dbeta {s:?}"), &dbeta, &wb, tol);
}

#[test]
fn delta_rule_backward_one_lane_across_checkpoints() {
    // 150 tokens: three 64-token chunks, the last partial; two column blocks; shared key heads.
    delta_backward(Delta {
        b: 2,
        t: 150,
        hk: 2,
        hv: 4,
        dk: 16,
        dv: 40,
    });
}

#[test]
fn delta_rule_backward_four_lanes_per_column() {
    delta_backward(Delta {
        b: 1,
        t: 70,
        hk: 1,
        hv: 2,
        dk: 128,
        dv: 36,
    });
}

#[test]
fn delta_rule_refuses_shapes_it_cannot_hold() {
    let mut sizes = [0i64; 4];
    // SAFETY: writes four i64 at most; the forward returns before touching a buffer.
    unsafe {
        assert_eq!(
            ffi::koth_gdr_bwd_sizes(1, 4, 1, 257, 8, sizes.as_mut_ptr()),
            -2
        );
        let code = ffi::koth_gdr_fwd(
            F32,
            0,
            0,
            0,
            0,
            0,
            1,
            4,
            2,
            3,
            16,
            8,
            1e-6,
            0.25,
            1,
            0,
            null_mut(),
        );
        assert_eq!(code, -3, "3 value heads over 2 key heads");
    }
}

#[test]
fn short_convolution_and_silu_match_the_cpu_op() {
    let (b, t, c, k) = (2, 9, 37, 4);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x = uniform(&mut rng, b * t * c, -2.0, 2.0);
    let w = uniform(&mut rng, c * k, -1.0, 1.0);
    for dtype in [DType::F32, DType::BF16] {
        let got = run_typed(dtype, &[&x, &w], b * t * c, |code, p, out| {
            // SAFETY: x [B, T, C], w [C, K] and out [B, T, C] of the dtype `code` names.
            unsafe {
                ffi::koth_conv_silu(
                    code,
                    p[0],
                    p[1],
                    out,
                    b as i32,
                    t as i32,
                    c as i32,
                    k as i32,
                    null_mut(),
                )
            }
        });
        let want =
            causal_conv1d_silu(&cpu(&x, &[b, t, c], dtype), &cpu(&w, &[c, 1, k], dtype)).unwrap();
        assert_same_rounding("conv + silu", &got, &host(&want), dtype);
    }
}

#[test]
fn gated_and_centred_norms_match_the_cpu_ops() {
    // 72 columns: not a multiple of the warp; 11 rows: a partial last block of 8 rows.
    let (rows, cols, eps) = (11, 72, 1e-6);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x = uniform(&mut rng, rows * cols, -3.0, 3.0);
    let z = uniform(&mut rng, rows * cols, -3.0, 3.0);
    let w = uniform(&mut rng, cols, -0.5, 1.5);
    for dtype in [DType::F32, DType::BF16] {
        let got = run_typed(dtype, &[&x, &z, &w], rows * cols, |code, p, out| {
            // SAFETY: x, z, out [rows, cols] and w [cols] of the dtype `code` names.
            unsafe {
                ffi::koth_gated_rmsnorm(
                    code,
                    p[0],
                    p[1],
                    p[2],
                    out,
                    rows as i64,
                    cols as i32,
                    eps,
                    null_mut(),
                )
            }
        });
        let want = gated_rms_norm(
            &cpu(&x, &[rows, cols], dtype),
            &cpu(&z, &[rows, cols], dtype),
            &cpu(&w, &[cols], dtype),
            eps as f64,
        )
        .unwrap();
        assert_same_rounding("gated rmsnorm", &got, &host(&want), dtype);

        let got = run_typed(dtype, &[&x, &w], rows * cols, |code, p, out| {
            rmsnorm_centered_fwd(code, p, out, rows, cols, eps)
        });
        let want = centered_rms_norm(
            &cpu(&x, &[rows, cols], dtype),
            &cpu(&w, &[cols], dtype),
            eps as f64,
            OpPath::Composite,
        )
        .unwrap();
        assert_same_rounding("centred rmsnorm", &got, &host(&want), dtype);
    }
}

/// Bytes per element of a kernel dtype code.
fn elem_bytes(code: i32) -> usize {
    if code == F32 {
        4
    } else {
        2
    }
}

#[test]
fn gated_attention_norm_rope_and_gate_match_the_composite() {
    // Qwen3.5's heads (256 wide, RoPE on the first 64: partners in the same lane) and a shape
    // whose partners sit in other lanes (96 wide, RoPE on 32).
    for (d, rot) in [(256usize, 64usize), (96, 32)] {
        let (b, t, heads, theta, eps) = (2usize, 5usize, 3usize, 1e4f64, 1e-6f32);
        let rows = b * t * heads;
        let mut rng = ChaCha8Rng::seed_from_u64(d as u64 + 40);
        // q_proj's output: [B, T, H, 2D], query then gate in every head.
        let qg = uniform(&mut rng, rows * 2 * d, -2.0, 2.0);
        let w = uniform(&mut rng, d, -0.5, 0.5);
        let out = uniform(&mut rng, rows * d, -1.0, 1.0);
        for dtype in [DType::F32, DType::BF16] {
            let rope = Rope::new(theta, rot, t, dtype, &Device::Cpu).unwrap();
            let (cos, sin) = rope.half_tables();
            let (cos, sin) = (host(cos), host(sin));
            let got = run_typed(dtype, &[&qg, &w, &cos, &sin], rows * d, |code, p, y| {
                // SAFETY: rows of d read 2d apart from qg [rows, 2d]; w [d]; tables [t, rot/2];
                // y [rows, d].
                unsafe {
                    ffi::koth_centered_norm_rope(
                        code,
                        p[0],
                        2 * d as i64,
                        p[1],
                        p[2],
                        p[3],
                        y,
                        rows as i64,
                        heads as i32,
                        t as i32,
                        d as i32,
                        rot as i32,
                        eps,
                        null_mut(),
                    )
                }
            });
            // The composite path of koth-model's hybrid: norm, then RoPE on [B, H, T, rot].
            let q = cpu(&qg, &[b, t, heads, 2 * d], dtype)
                .narrow(3, 0, d)
                .unwrap();
            let normed =
                centered_rms_norm(&q, &cpu(&w, &[d], dtype), eps as f64, OpPath::Composite)
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .contiguous()
                    .unwrap();
            let rotated = rope
                .apply(
                    &normed.narrow(3, 0, rot).unwrap().contiguous().unwrap(),
                    OpPath::Composite,
                )
                .unwrap();
            let want = Tensor::cat(&[&rotated, &normed.narrow(3, rot, d - rot).unwrap()], 3)
                .unwrap()
                .transpose(1, 2)
                .unwrap();
            assert_same_rounding(
                &format!("norm + rope d={d} rot={rot}"),
                &got,
                &host(&want),
                dtype,
            );

            let got = run_typed(dtype, &[&out, &qg], rows * d, |code, p, y| {
                // SAFETY: out and y [rows, d]; the gate rows start d elements into qg's rows of 2d.
                let gate = p[1] + (d * elem_bytes(code)) as u64;
                unsafe {
                    ffi::koth_sigmoid_gate(
                        code,
                        p[0],
                        gate,
                        2 * d as i64,
                        y,
                        rows as i64,
                        d as i32,
                        null_mut(),
                    )
                }
            });
            let gate = cpu(&qg, &[rows, 2 * d], dtype)
                .narrow(1, d, d)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            let sig = ((gate.neg().unwrap().exp().unwrap() + 1.0).unwrap())
                .recip()
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let want = (cpu(&out, &[rows, d], dtype) * sig).unwrap();
            assert_same_rounding(&format!("sigmoid gate d={d}"), &got, &host(&want), dtype);
        }
    }
}

#[test]
fn delta_gates_match_the_composite() {
    let (n_tok, hv) = (37usize, 16usize);
    let mut rng = ChaCha8Rng::seed_from_u64(50);
    // Wide enough for softplus's two regimes and a sigmoid near 0 and 1.
    let a = uniform(&mut rng, n_tok * hv, -12.0, 12.0);
    let b = uniform(&mut rng, n_tok * hv, -8.0, 8.0);
    let a_log = uniform(&mut rng, hv, -1.0, 2.5);
    let dt_bias = uniform(&mut rng, hv, -1.0, 1.0);
    for dtype in [DType::F32, DType::BF16] {
        let mut g = vec![f32::NAN; n_tok * hv];
        let a_t = cpu(&a, &[n_tok, hv], dtype);
        let b_t = cpu(&b, &[n_tok, hv], dtype);
        // The kernel takes A_log and dt_bias in f32, as the model's own dtype converts them.
        let a_log_m = host(&cpu(&a_log, &[hv], dtype));
        let dt_bias_m = host(&cpu(&dt_bias, &[hv], dtype));
        let beta = run_typed(
            dtype,
            &[&host(&a_t), &host(&b_t)],
            n_tok * hv,
            |code, p, beta| {
                // SAFETY: a, b, beta [n, hv] of `code`'s dtype; A_log and dt_bias [hv] f32; g [n, hv].
                unsafe {
                    ffi::koth_delta_gates(
                        code,
                        p[0],
                        p[1],
                        a_log_m.as_ptr() as u64,
                        dt_bias_m.as_ptr() as u64,
                        g.as_mut_ptr() as u64,
                        beta,
                        (n_tok * hv) as i64,
                        hv as i32,
                        null_mut(),
                    )
                }
            },
        );
        let (want_g, want_beta) = koth_model::deltanet::gates(
            &a_t,
            &b_t,
            &cpu(&a_log, &[hv], dtype),
            &cpu(&dt_bias, &[hv], dtype),
        )
        .unwrap();
        assert_same_rounding("log decay g", &g, &host(&want_g), DType::F32);
        assert_same_rounding("beta", &beta, &host(&want_beta), dtype);
    }
}

/// A fused residual add + norm kernel (x, d, w, sum, y, rows, cols, eps, stream).
type AddNorm =
    unsafe extern "C" fn(i32, u64, u64, u64, u64, u64, i64, i32, f32, *mut c_void) -> i32;

/// The one-step norm kernel of that pair, as a launch on (dtype, [sum, w], out).
type NormAlone = fn(i32, &[u64], u64, usize, usize, f32) -> i32;

/// `fused` against the two steps of the composite (the dtype's add, then `reference`'s norm),
/// and bit for bit against the one-step kernel `alone` applied to the same sum.
fn check_add_norm(
    what: &str,
    fused: AddNorm,
    alone: NormAlone,
    reference: fn(&Tensor, &Tensor, f64, OpPath) -> koth_model::Result<Tensor>,
) {
    // 11 rows (a partial block of 8), 72 columns (not a multiple of the warp).
    let (rows, cols, eps) = (11usize, 72usize, 1e-6f32);
    let mut rng = ChaCha8Rng::seed_from_u64(70);
    let x = uniform(&mut rng, rows * cols, -3.0, 3.0);
    let d = uniform(&mut rng, rows * cols, -3.0, 3.0);
    let w = uniform(&mut rng, cols, -0.5, 0.5);
    for dtype in [DType::F32, DType::BF16] {
        let mut sum = Vec::new();
        let normed = run_typed(dtype, &[&x, &d, &w], rows * cols, |code, p, out| {
            // The sum comes back through its own buffer, of the dtype.
            let mut s = vec![0u8; rows * cols * elem_bytes(code)];
            // SAFETY: x, d, out and s [rows, cols] and w [cols] of `code`'s dtype.
            let rc = unsafe {
                fused(
                    code,
                    p[0],
                    p[1],
                    p[2],
                    s.as_mut_ptr() as u64,
                    out,
                    rows as i64,
                    cols as i32,
                    eps,
                    null_mut(),
                )
            };
            sum = if code == F32 {
                s.chunks(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            } else {
                s.chunks(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect()
            };
            rc
        });
        // The two steps of the composite: the dtype's add, then the norm.
        let want_sum = (cpu(&x, &[rows, cols], dtype) + cpu(&d, &[rows, cols], dtype)).unwrap();
        let want_sum_host = host(&want_sum);
        assert!(
            same_bits(&sum, &want_sum_host),
            "{what} {dtype:?}: the residual sum differs from the dtype's add"
        );
        let want = reference(
            &want_sum,
            &cpu(&w, &[cols], dtype),
            eps as f64,
            OpPath::Composite,
        )
        .unwrap();
        assert_same_rounding(what, &normed, &host(&want), dtype);
        // And bit for bit the one-step kernel applied to that sum.
        let one_step = run_typed(dtype, &[&want_sum_host, &w], rows * cols, |code, p, out| {
            alone(code, p, out, rows, cols, eps)
        });
        assert!(
            same_bits(&normed, &one_step),
            "{what} {dtype:?}: the fused norm differs from the one-step kernel on the same sum"
        );
    }
}

#[test]
fn residual_add_and_centred_norm_match_the_two_steps() {
    check_add_norm(
        "add + centred rmsnorm",
        ffi::koth_add_rmsnorm_centered_fwd,
        rmsnorm_centered_fwd,
        centered_rms_norm,
    );
}

#[test]
fn residual_add_and_plain_norm_match_the_two_steps() {
    check_add_norm(
        "add + rmsnorm",
        ffi::koth_add_rmsnorm_fwd,
        rmsnorm_fwd,
        rms_norm,
    );
}
