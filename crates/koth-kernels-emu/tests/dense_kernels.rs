//! The dense transformer's kernels (cross-entropy over the head, RMSNorm, q/k-norm + RoPE,
//! SwiGLU, AdamW, the gradient norm, the embedding's backward) under the host emulator,
//! against f64 references, candle's autograd and koth-model's ops. These kernels have run on
//! the H200 (docs/BENCHMARKS.md); here they are held to their arithmetic on every CI run.

use std::ffi::c_void;
use std::ptr::null_mut;

use candle_core::{DType, Var};
use koth_kernels_emu::{ffi, BF16, F32};
use koth_model::ops::{rms_norm, OpPath};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

mod common;
use common::*;

/// logsumexp(row) - row[target] and softmax(row) - onehot(target), in f64.
fn cross_entropy_f64(row: &[f32], target: usize) -> (f64, Vec<f64>) {
    let m = row.iter().fold(f64::MIN, |m, &x| m.max(x as f64));
    let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
    let grad = row
        .iter()
        .enumerate()
        .map(|(j, &x)| (x as f64 - lse).exp() - if j == target { 1.0 } else { 0.0 })
        .collect();
    (lse - row[target] as f64, grad)
}

#[test]
fn cross_entropy_rows_match_log_softmax() {
    // 1,000 logits take the 16-byte loads; 999 the scalar path.
    for v in [1000usize, 999] {
        let rows = 3;
        let mut rng = ChaCha8Rng::seed_from_u64(v as u64);
        let logits = uniform(&mut rng, rows * v, -8.0, 8.0);
        let targets: Vec<u32> = (0..rows).map(|r| (r * 331 % v) as u32).collect();
        let want: Vec<(f64, Vec<f64>)> = (0..rows)
            .map(|r| cross_entropy_f64(&logits[r * v..(r + 1) * v], targets[r] as usize))
            .collect();
        let want_nll: Vec<f64> = want.iter().map(|w| w.0).collect();

        let mut nll = vec![f32::NAN; rows];
        // SAFETY: logits [rows, v], targets and nll [rows].
        let code = unsafe {
            ffi::koth_ce_fwd(
                F32,
                logits.as_ptr() as u64,
                rows as i64,
                v as i64,
                v as i32,
                targets.as_ptr() as u64,
                nll.as_mut_ptr() as u64,
                null_mut(),
            )
        };
        assert_eq!(code, 0);
        assert_close(&format!("nll over {v} logits"), &nll, &want_nll, 1e-6);

        // The training kernel: loss and gradient in one pass, in place, scaled by g.
        let g = 0.25f32;
        let mut inplace = logits.clone();
        let mut nll2 = vec![f32::NAN; rows];
        // SAFETY: as above; the logits are overwritten by their gradient.
        let code = unsafe {
            ffi::koth_ce_fwd_bwd(
                F32,
                inplace.as_mut_ptr() as u64,
                rows as i64,
                v as i64,
                v as i32,
                targets.as_ptr() as u64,
                g,
                nll2.as_mut_ptr() as u64,
                null_mut(),
            )
        };
        assert_eq!(code, 0);
        assert_close("nll (fused)", &nll2, &want_nll, 1e-6);
        let want_grad: Vec<f64> = want
            .iter()
            .flat_map(|w| w.1.iter().map(|x| x * g as f64))
            .collect();
        assert_close("logit gradient (fused)", &inplace, &want_grad, 1e-7);

        // The autograd op's backward: a gradient per row, into a separate buffer.
        let grads: Vec<f32> = (0..rows).map(|r| 0.5 + r as f32).collect();
        let mut out = vec![f32::NAN; rows * v];
        // SAFETY: logits and out [rows, v], targets and grads [rows].
        let code = unsafe {
            ffi::koth_ce_bwd(
                F32,
                logits.as_ptr() as u64,
                out.as_mut_ptr() as u64,
                rows as i64,
                v as i64,
                v as i32,
                targets.as_ptr() as u64,
                grads.as_ptr() as u64,
                null_mut(),
            )
        };
        assert_eq!(code, 0);
        let want_grad: Vec<f64> = want
            .iter()
            .zip(&grads)
            .flat_map(|(w, &g)| w.1.iter().map(move |x| x * g as f64))
            .collect();
        assert_close("logit gradient", &out, &want_grad, 1e-6);
    }
}

#[test]
fn sum_of_squares_over_tensors_of_two_sizes() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let tensors = [
        uniform(&mut rng, 3, -1.0, 1.0),
        uniform(&mut rng, 70_001, -1.0, 1.0),
        uniform(&mut rng, 1000, -4.0, 4.0),
    ];
    // SumSqTensor: a pointer and an i64.
    #[repr(C)]
    struct Record {
        x: *const c_void,
        n: i64,
    }
    // SAFETY: no arguments.
    assert_eq!(unsafe { ffi::koth_sumsq_record_bytes() } as usize, 16);
    let records: Vec<Record> = tensors
        .iter()
        .map(|t| Record {
            x: t.as_ptr().cast(),
            n: t.len() as i64,
        })
        .collect();
    let blocks = 4;
    let mut part = vec![f32::NAN; tensors.len() * blocks];
    let mut out = [f32::NAN];
    // SAFETY: the records point at live f32 slices; part holds count * blocks floats.
    let code = unsafe {
        ffi::koth_sumsq_multi(
            F32,
            records.as_ptr() as u64,
            records.len() as i32,
            blocks as i32,
            part.as_mut_ptr() as u64,
            out.as_mut_ptr() as u64,
            null_mut(),
        )
    };
    assert_eq!(code, 0);
    let want: f64 = tensors.iter().flatten().map(|&x| (x as f64).powi(2)).sum();
    assert!(
        ((out[0] as f64 - want) / want).abs() < 1e-6,
        "sum of squares {} against {want}",
        out[0]
    );
}

#[test]
fn rms_norm_forward_and_backward_match_the_composite() {
    // 19 rows over blocks of 8 rows (a partial last one) and 72 columns.
    let (rows, cols, eps) = (19usize, 72usize, 1e-6f32);
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let x = uniform(&mut rng, rows * cols, -2.0, 2.0);
    let w = uniform(&mut rng, cols, 0.5, 1.5);
    let dy = uniform(&mut rng, rows * cols, -1.0, 1.0);
    for dtype in [DType::F32, DType::BF16] {
        let got = run_typed(dtype, &[&x, &w], rows * cols, |code, p, out| {
            rmsnorm_fwd(code, p, out, rows, cols, eps)
        });
        let want = rms_norm(
            &cpu(&x, &[rows, cols], dtype),
            &cpu(&w, &[cols], dtype),
            eps as f64,
            OpPath::Composite,
        )
        .unwrap();
        assert_same_rounding("rmsnorm", &got, &host(&want), dtype);
    }

    // Backward in f32 against autograd through the composite.
    let mut y = vec![f32::NAN; rows * cols];
    let mut rstd = vec![f32::NAN; rows];
    let rows_per_block = 8i64;
    let parts = (rows as u64).div_ceil(rows_per_block as u64) as usize;
    let (mut dx, mut dw, mut dw_part) = (
        vec![f32::NAN; rows * cols],
        vec![f32::NAN; cols],
        vec![f32::NAN; parts * cols],
    );
    // SAFETY: every buffer holds what its shape gives; dw_part holds parts * cols floats.
    unsafe {
        let code = ffi::koth_rmsnorm_fwd(
            F32,
            x.as_ptr() as u64,
            w.as_ptr() as u64,
            y.as_mut_ptr() as u64,
            rstd.as_mut_ptr() as u64,
            rows as i64,
            cols as i32,
            eps,
            null_mut(),
        );
        assert_eq!(code, 0);
        let code = ffi::koth_rmsnorm_bwd(
            F32,
            x.as_ptr() as u64,
            w.as_ptr() as u64,
            dy.as_ptr() as u64,
            rstd.as_ptr() as u64,
            dx.as_mut_ptr() as u64,
            dw.as_mut_ptr() as u64,
            dw_part.as_mut_ptr() as u64,
            rows as i64,
            cols as i32,
            rows_per_block,
            null_mut(),
        );
        assert_eq!(code, 0);
    }
    let xv = Var::from_tensor(&cpu(&x, &[rows, cols], DType::F64)).unwrap();
    let wv = Var::from_tensor(&cpu(&w, &[cols], DType::F64)).unwrap();
    let out = rms_norm(
        xv.as_tensor(),
        wv.as_tensor(),
        eps as f64,
        OpPath::Composite,
    )
    .unwrap();
    let loss = (out * cpu(&dy, &[rows, cols], DType::F64))
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    assert_close("rmsnorm dx", &dx, &grad_f64(&grads, &xv), 1e-5);
    assert_close("rmsnorm dw", &dw, &grad_f64(&grads, &wv), 1e-5);
}

#[test]
fn qk_norm_and_rope_match_a_direct_evaluation() {
    // Head widths of one and of four pairs per lane (64 and 256), and one not a multiple of 64.
    for d in [64usize, 96, 256] {
        let (batch, seq, heads, eps) = (2usize, 5usize, 3usize, 1e-6f32);
        let rows = batch * seq * heads;
        let half = d / 2;
        let mut rng = ChaCha8Rng::seed_from_u64(d as u64);
        let x = uniform(&mut rng, rows * d, -2.0, 2.0);
        let w = uniform(&mut rng, d, 0.5, 1.5);
        let angles: Vec<f64> = (0..seq * half)
            .map(|i| (i / half) as f64 * 0.3 / (1.0 + (i % half) as f64))
            .collect();
        let cos: Vec<f32> = angles.iter().map(|a| a.cos() as f32).collect();
        let sin: Vec<f32> = angles.iter().map(|a| a.sin() as f32).collect();
        let mut y = vec![f32::NAN; rows * d];
        let run = |x: &[f32], w: u64, sign: f32, y: &mut [f32]| {
            // SAFETY: x, y [rows, d]; w [d] or null; cos, sin [seq, d/2].
            let code = unsafe {
                ffi::koth_norm_rope(
                    F32,
                    x.as_ptr() as u64,
                    w,
                    cos.as_ptr() as u64,
                    sin.as_ptr() as u64,
                    y.as_mut_ptr() as u64,
                    rows as i64,
                    heads as i32,
                    seq as i32,
                    d as i32,
                    eps,
                    sign,
                    null_mut(),
                )
            };
            assert_eq!(code, 0);
        };
        run(&x, w.as_ptr() as u64, 1.0, &mut y);
        let mut want = Vec::with_capacity(rows * d);
        for r in 0..rows {
            let pos = (r / heads) % seq;
            let xr: Vec<f64> = x[r * d..(r + 1) * d].iter().map(|&a| a as f64).collect();
            let ms = xr.iter().map(|a| a * a).sum::<f64>() / d as f64;
            let inv = 1.0 / (ms + eps as f64).sqrt();
            let n: Vec<f64> = xr
                .iter()
                .zip(&w)
                .map(|(a, &g)| a * inv * g as f64)
                .collect();
            let (c, s) = (&cos[pos * half..], &sin[pos * half..]);
            let mut out = vec![0.0; d];
            for i in 0..half {
                let (ci, si) = (c[i] as f64, s[i] as f64);
                out[i] = n[i] * ci - n[i + half] * si;
                out[i + half] = n[i + half] * ci + n[i] * si;
            }
            want.extend(out);
        }
        assert_close(&format!("q/k norm + rope, d={d}"), &y, &want, 2e-6);

        // The backward rotation (sign -1, no norm) undoes the forward one.
        let mut rotated = vec![f32::NAN; rows * d];
        let mut back = vec![f32::NAN; rows * d];
        run(&x, 0, 1.0, &mut rotated);
        run(&rotated, 0, -1.0, &mut back);
        assert_close(&format!("rope inverse, d={d}"), &back, &f64s(&x), 1e-6);
    }
}

#[test]
fn swiglu_forward_and_backward_match_autograd() {
    let n = 3000usize;
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let g = uniform(&mut rng, n, -6.0, 6.0);
    let u = uniform(&mut rng, n, -2.0, 2.0);
    let dy = uniform(&mut rng, n, -1.0, 1.0);
    for dtype in [DType::F32, DType::BF16] {
        let got = run_typed(dtype, &[&g, &u], n, |code, p, out| {
            // SAFETY: g, u and out hold n elements.
            unsafe { ffi::koth_swiglu_fwd(code, p[0], p[1], out, n as i64, null_mut()) }
        });
        // silu in f32, rounded once to the dtype, times u (transformers' rounding).
        let (gt, ut) = (cpu(&g, &[n], dtype), cpu(&u, &[n], dtype));
        let silu = gt
            .to_dtype(DType::F32)
            .unwrap()
            .silu()
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        assert_same_rounding("swiglu", &got, &host(&(silu * ut).unwrap()), dtype);
    }
    let (mut dg, mut du) = (vec![f32::NAN; n], vec![f32::NAN; n]);
    // SAFETY: every buffer holds n floats.
    let code = unsafe {
        ffi::koth_swiglu_bwd(
            F32,
            g.as_ptr() as u64,
            u.as_ptr() as u64,
            dy.as_ptr() as u64,
            dg.as_mut_ptr() as u64,
            du.as_mut_ptr() as u64,
            n as i64,
            null_mut(),
        )
    };
    assert_eq!(code, 0);
    let gv = Var::from_tensor(&cpu(&g, &[n], DType::F64)).unwrap();
    let uv = Var::from_tensor(&cpu(&u, &[n], DType::F64)).unwrap();
    let y = (gv.as_tensor().silu().unwrap() * uv.as_tensor()).unwrap();
    let grads = (y * cpu(&dy, &[n], DType::F64))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_close("swiglu dg", &dg, &grad_f64(&grads, &gv), 1e-6);
    assert_close("swiglu du", &du, &grad_f64(&grads, &uv), 1e-6);
}

/// kernels.cu's AdamTensor.
#[repr(C)]
struct AdamRecord {
    p: *mut f32,
    g: *const c_void,
    m: *mut f32,
    v: *mut f32,
    model: *mut c_void,
    n: i64,
    decay: f32,
    pad: f32,
}

#[test]
fn adamw_updates_every_tensor_as_the_formula() {
    // SAFETY: no arguments.
    assert_eq!(
        unsafe { ffi::koth_adam_record_bytes() } as usize,
        std::mem::size_of::<AdamRecord>()
    );
    let (lr, b1, b2, eps, wd, step) = (1e-3f32, 0.9f32, 0.95f32, 1e-8f32, 0.1f32, 3i32);
    let (bc1, bc2_sqrt) = (1.0 - b1.powi(step), (1.0 - b2.powi(step)).sqrt());
    let gscale = 0.5f32;
    for grads_in_model_dtype in [false, true] {
        let mut rng = ChaCha8Rng::seed_from_u64(15);
        let sizes = [5usize, 1300];
        let mut p: Vec<Vec<f32>> = sizes
            .iter()
            .map(|&n| uniform(&mut rng, n, -1.0, 1.0))
            .collect();
        let g: Vec<Vec<f32>> = sizes
            .iter()
            .map(|&n| uniform(&mut rng, n, -1.0, 1.0))
            .collect();
        let mut m: Vec<Vec<f32>> = sizes
            .iter()
            .map(|&n| uniform(&mut rng, n, -0.1, 0.1))
            .collect();
        let mut v: Vec<Vec<f32>> = sizes
            .iter()
            .map(|&n| uniform(&mut rng, n, 0.0, 0.01))
            .collect();
        let g_bf16: Vec<Vec<u16>> = g.iter().map(|x| to_bf16(x)).collect();
        let g_used: Vec<Vec<f32>> = if grads_in_model_dtype {
            g_bf16.iter().map(|x| from_bf16(x)).collect()
        } else {
            g.clone()
        };
        let mut model: Vec<Vec<u16>> = sizes.iter().map(|&n| vec![0u16; n]).collect();
        let (p0, m0, v0) = (p.clone(), m.clone(), v.clone());
        let records: Vec<AdamRecord> = (0..sizes.len())
            .map(|j| AdamRecord {
                p: p[j].as_mut_ptr(),
                g: if grads_in_model_dtype {
                    g_bf16[j].as_ptr().cast()
                } else {
                    g[j].as_ptr().cast()
                },
                m: m[j].as_mut_ptr(),
                v: v[j].as_mut_ptr(),
                model: model[j].as_mut_ptr().cast(),
                n: sizes[j] as i64,
                decay: if j == 0 { 0.0 } else { 1.0 },
                pad: 0.0,
            })
            .collect();
        // SAFETY: the records point at live buffers of n elements each.
        let code = unsafe {
            ffi::koth_adamw_multi(
                BF16,
                grads_in_model_dtype as i32,
                records.as_ptr() as u64,
                records.len() as i32,
                1300,
                lr,
                b1,
                b2,
                eps,
                wd,
                bc1,
                bc2_sqrt,
                gscale,
                null_mut(),
            )
        };
        assert_eq!(code, 0);
        for j in 0..sizes.len() {
            let (mut wp, mut wm, mut wv) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..sizes[j] {
                let gi = g_used[j][i] as f64 * gscale as f64;
                let mi = b1 as f64 * m0[j][i] as f64 + (1.0 - b1 as f64) * gi;
                let vi = b2 as f64 * v0[j][i] as f64 + (1.0 - b2 as f64) * gi * gi;
                let mut pi = p0[j][i] as f64;
                if j == 1 {
                    pi *= 1.0 - lr as f64 * wd as f64;
                }
                pi -= mi / (vi.sqrt() / bc2_sqrt as f64 + eps as f64) * (lr as f64 / bc1 as f64);
                wp.push(pi);
                wm.push(mi);
                wv.push(vi);
            }
            let what = format!("tensor {j}, model-dtype grads {grads_in_model_dtype}");
            assert_close(&format!("p of {what}"), &p[j], &wp, 1e-6);
            assert_close(&format!("m of {what}"), &m[j], &wm, 1e-6);
            assert_close(&format!("v of {what}"), &v[j], &wv, 1e-6);
            assert_eq!(model[j], to_bf16(&p[j]), "model copy of {what}");
        }
    }
}

#[test]
fn embedding_gradient_sums_each_ids_rows_in_order() {
    let (tokens, cols, vocab) = (40usize, 70usize, 9usize);
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    let ids: Vec<u32> = uniform(&mut rng, tokens, 0.0, 7.0)
        .iter()
        .map(|&x| x as u32)
        .collect();
    let dy = uniform(&mut rng, tokens * cols, -1.0, 1.0);
    // The host's side: positions sorted by id (stable), each id's range, the ids present.
    let mut order: Vec<i32> = (0..tokens as i32).collect();
    order.sort_by_key(|&i| ids[i as usize]);
    let mut uniq: Vec<u32> = Vec::new();
    let mut offsets: Vec<i32> = Vec::new();
    for (j, &i) in order.iter().enumerate() {
        let id = ids[i as usize];
        if uniq.last() != Some(&id) {
            uniq.push(id);
            offsets.push(j as i32);
        }
    }
    offsets.push(tokens as i32);
    let mut out = vec![0f32; vocab * cols];
    // SAFETY: dy [tokens, cols], out [vocab, cols] zero-filled; the index arrays as built above.
    let code = unsafe {
        ffi::koth_embed_bwd(
            F32,
            dy.as_ptr() as u64,
            order.as_ptr() as u64,
            offsets.as_ptr() as u64,
            uniq.as_ptr() as u64,
            uniq.len() as i32,
            cols as i32,
            out.as_mut_ptr() as u64,
            null_mut(),
        )
    };
    assert_eq!(code, 0);
    let mut want = vec![0f64; vocab * cols];
    for (t, &id) in ids.iter().enumerate() {
        for c in 0..cols {
            want[id as usize * cols + c] += dy[t * cols + c] as f64;
        }
    }
    assert_close("embedding gradient", &out, &want, 1e-6);
}

#[test]
fn router_top_k_chooses_as_the_host() {
    // Experts a multiple of the warp and not, every expert chosen, the kernel's largest E;
    // exact ties, a NaN and infinities in the rows.
    for (experts, k, rows) in [
        (128usize, 8usize, 37usize),
        (60, 4, 20),
        (5, 5, 9),
        (1024, 3, 4),
    ] {
        let mut rng = ChaCha8Rng::seed_from_u64(experts as u64);
        let probs: Vec<f32> = uniform(&mut rng, rows * experts, 0.0, 1.0)
            .into_iter()
            .enumerate()
            .map(|(i, v)| match i % 89 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => f32::NEG_INFINITY,
                _ => (v * 8.0).floor() / 8.0,
            })
            .collect();
        let mut chosen = vec![u32::MAX; rows * k];
        // SAFETY: probs [rows, experts] f32; chosen [rows, k].
        let code = unsafe {
            ffi::koth_router_topk(
                probs.as_ptr() as u64,
                rows as i64,
                experts as i32,
                k as i32,
                chosen.as_mut_ptr() as u64,
                null_mut(),
            )
        };
        assert_eq!(code, 0);
        assert_eq!(
            chosen,
            koth_model::plan::top_k_experts(&probs, experts, k),
            "{experts} experts, top {k}"
        );
    }
}

#[test]
fn moe_combine_adds_as_the_host_index_add() {
    use candle_core::{Device, Tensor};
    // 40 tokens, 8 experts, top 3, hidden 72: the grouped list as moe_forward builds it.
    let (n, experts, k, h) = (40usize, 8usize, 3usize, 72usize);
    let mut rng = ChaCha8Rng::seed_from_u64(61);
    let probs = uniform(&mut rng, n * experts, 0.0, 1.0);
    let chosen = koth_model::plan::top_k_experts(&probs, experts, k);
    let (slots, _) = koth_model::plan::group_by_expert(&chosen, experts);
    let rows: Vec<u32> = slots.iter().map(|&s| s / k as u32).collect();
    let r = rows.len();
    let y = uniform(&mut rng, r * h, -3.0, 3.0);
    let w = uniform(&mut rng, r, 0.0, 1.0);
    let pos = koth_model::plan::token_rows(&slots, n, k);
    let combine = |dtype: DType, pos: &[u32]| {
        assert_eq!(pos.len(), n * k);
        run_typed(dtype, &[&y, &w], n * h, |code, p, out| {
            // SAFETY: y [r, h], w [r] of `code`'s dtype; pos [n, k] u32; out [n, h]. A position
            // past the rows is never read.
            unsafe {
                ffi::koth_moe_combine(
                    code,
                    p[0],
                    p[1],
                    pos.as_ptr() as u64,
                    out,
                    r as i64,
                    n as i64,
                    k as i32,
                    h as i32,
                    null_mut(),
                )
            }
        })
    };
    for dtype in [DType::F32, DType::BF16] {
        let got = combine(dtype, &pos);
        // The host path of moe_forward: zeros.index_add(rows, y * w).
        let dev = Device::Cpu;
        let yt = cpu(&y, &[r, h], dtype);
        let wt = cpu(&w, &[r, 1], dtype);
        let ids = Tensor::from_vec(rows.clone(), r, &dev).unwrap();
        let want = Tensor::zeros((n, h), dtype, &dev)
            .unwrap()
            .index_add(&ids, &yt.broadcast_mul(&wt).unwrap(), 0)
            .unwrap();
        let want = host(&want);
        assert!(
            same_bits(&got, &want),
            "{dtype:?}: the kernel's sums differ from index_add's"
        );
    }
    // A position past the rows yields NaN, not a read out of bounds.
    let mut bad = pos.clone();
    bad[5] = r as u32 + 7;
    let got = combine(DType::F32, &bad);
    let token = 5 / k;
    assert!(got[token * h..(token + 1) * h].iter().all(|x| x.is_nan()));
    assert!(got[..token * h].iter().all(|x| x.is_finite()));
}
