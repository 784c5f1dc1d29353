//! The gated delta rule of Qwen3.5's gated DeltaNet layers, as transformers computes it
//! (`torch_chunk_gated_delta_rule` / `torch_recurrent_gated_delta_rule` in
//! `modeling_qwen3_5.py`), and the short causal convolution in front of it.
//!
//! Per value head, with q and k L2-normalised and q scaled by `1/sqrt(d_k)`, a state
//! `S` [d_k, d_v] starts at zero and for every token t:
//!
//! ```text
//! S  <- exp(g_t) * S
//! S  <- S + k_t (beta_t (v_t - S^T k_t))^T        (the delta rule)
//! o_t = S^T q_t
//! ```
//!
//! [`chunk_gated_delta_rule`] computes the same outputs block-parallel: inside a chunk of C
//! tokens the updates are condensed by the UT transform (the inverse of a unit lower-triangular
//! matrix, by recursive block inversion), and only the state hand-over between chunks is
//! sequential. Every op is a differentiable candle op, so
//! the training path gets its backward from candle's autograd. [`recurrent_gated_delta_rule_f64`]
//! is the step-by-step recurrence in f64 on the host, the reference the chunked form is tested
//! against.

use candle_core::{DType, Device, Tensor, D};

use crate::error::{ModelError, Result};

/// transformers' and fla's chunk length.
pub const DEFAULT_CHUNK: usize = 64;

/// The epsilon of transformers' `l2norm` (matching fla's kernels).
pub const L2_NORM_EPS: f64 = 1e-6;

/// `x * rsqrt(sum(x^2) + eps)` over the last dimension.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let inv = (x.sqr()?.sum_keepdim(D::Minus1)? + L2_NORM_EPS)?
        .sqrt()?
        .recip()?;
    Ok(x.broadcast_mul(&inv)?)
}

/// The gated DeltaNet's gates, as transformers computes them: from `a` and `b` [.., Hv] (the
/// in_proj_a and in_proj_b outputs), the log decay `g = -(softplus(a + dt_bias) * exp(A_log))`
/// in f32 (transformers upcasts so that a half-precision A cannot overflow) and
/// `beta = sigmoid(b)` in f32, rounded once to b's dtype. softplus(x) is
/// `max(x, 0) + log(1 + exp(-|x|))`, which never overflows.
pub fn gates(a: &Tensor, b: &Tensor, a_log: &Tensor, dt_bias: &Tensor) -> Result<(Tensor, Tensor)> {
    let x = a
        .to_dtype(DType::F32)?
        .broadcast_add(&dt_bias.to_dtype(DType::F32)?)?;
    let softplus = (x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    let g = softplus
        .broadcast_mul(&a_log.to_dtype(DType::F32)?.exp()?)?
        .neg()?;
    let beta = candle_nn::ops::sigmoid(&b.to_dtype(DType::F32)?)?.to_dtype(b.dtype())?;
    Ok((g, beta))
}

/// Depthwise causal convolution followed by SiLU, as transformers' `causal_conv1d_fn` fallback:
/// `x` [B, T, C], `weight` [C, 1, K]; output t of channel c is
/// `silu(sum_j weight[c, 0, j] * x[t - (K - 1) + j, c])` with zeros before the sequence. Like
/// torch in half precision: the convolution accumulates in f32 and is rounded to the input
/// dtype, then SiLU is computed in f32 and rounded again.
pub fn causal_conv1d_silu(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (b, t, c) = x.dims3()?;
    let (wc, one, k) = weight.dims3()?;
    if wc != c || one != 1 {
        return Err(ModelError::Invalid(format!(
            "conv1d weight has shape [{wc}, {one}, {k}], expected [{c}, 1, K]"
        )));
    }
    let dtype = x.dtype();
    let x32 = x.to_dtype(DType::F32)?;
    let w = weight.to_dtype(DType::F32)?.reshape((c, k))?;
    let padded = x32.pad_with_zeros(1, k - 1, 0)?; // [B, T + K - 1, C]
    let mut acc: Option<Tensor> = None;
    for j in 0..k {
        let tap = w.narrow(1, j, 1)?.reshape(c)?;
        let term = padded.narrow(1, j, t)?.broadcast_mul(&tap)?;
        acc = Some(match acc {
            None => term,
            Some(a) => (a + term)?,
        });
    }
    let out = acc.ok_or_else(|| ModelError::Invalid("conv1d kernel width is 0".into()))?;
    debug_assert_eq!(out.dims(), [b, t, c]);
    if dtype == DType::F32 {
        return Ok(out.silu()?);
    }
    Ok(out
        .to_dtype(dtype)?
        .to_dtype(DType::F32)?
        .silu()?
        .to_dtype(dtype)?)
}

/// `(I + A)^-1` for every batch entry, `A` [M, C, C] strictly lower triangular (zero on and
/// above the diagonal), by recursive block inversion, all blocks of one size at once:
///
/// ```text
/// [[P, 0], [Q, R]]^-1 = [[P^-1, 0], [-R^-1 Q P^-1, R^-1]]
/// ```
///
/// from 1×1 blocks (whose inverse is 1) up to C×C in log2(C) steps (C padded to a power of two
/// with identity). This is how fla's kernels invert the UT system; unlike a power series it
/// does not cancel catastrophically on near-parallel keys, and unlike row-by-row forward
/// substitution it keeps O(C²) values per level for the backward pass, not O(C³). Every op is
/// differentiable.
fn unit_lower_inverse(a: &Tensor) -> Result<Tensor> {
    let (m, c, _) = a.dims3()?;
    let device = a.device().clone();
    let size = c.next_power_of_two();
    let l = if size == c {
        a.clone()
    } else {
        a.pad_with_zeros(1, 0, size - c)?
            .pad_with_zeros(2, 0, size - c)?
    };
    // inverses of the diagonal blocks of the current size, [M, blocks, s, s]
    let mut inv = Tensor::ones((m, size, 1, 1), DType::F32, &device)?;
    let mut s = 1;
    while s < size {
        let pairs = size / (2 * s);
        // The diagonal (2s × 2s) blocks of L: keep block (p, p) of the pair grid.
        let eye: Vec<f32> = (0..pairs)
            .flat_map(|i| (0..pairs).map(move |j| if i == j { 1.0 } else { 0.0 }))
            .collect();
        let eye = Tensor::from_vec(eye, (1, pairs, 1, pairs, 1), &device)?;
        let diag = l
            .reshape((m, pairs, 2 * s, pairs, 2 * s))?
            .broadcast_mul(&eye)?
            .sum(3)?; // [M, pairs, 2s, 2s]
        let lower_left = diag.narrow(2, s, s)?.narrow(3, 0, s)?.contiguous()?;
        let halves = inv.reshape((m, pairs, 2, s, s))?;
        let top_inv = halves.narrow(2, 0, 1)?.squeeze(2)?.contiguous()?;
        let bottom_inv = halves.narrow(2, 1, 1)?.squeeze(2)?.contiguous()?;
        let corner = bottom_inv.matmul(&lower_left)?.matmul(&top_inv)?.neg()?;
        let zeros = Tensor::zeros((m, pairs, s, s), DType::F32, &device)?;
        let top = Tensor::cat(&[&top_inv, &zeros], 3)?;
        let bottom = Tensor::cat(&[&corner, &bottom_inv], 3)?;
        inv = Tensor::cat(&[&top, &bottom], 2)?; // [M, pairs, 2s, 2s]
        s *= 2;
    }
    let inv = inv.reshape((m, size, size))?;
    Ok(if size == c {
        inv
    } else {
        inv.narrow(1, 0, c)?.narrow(2, 0, c)?.contiguous()?
    })
}

/// Additive [C, C] f32 mask: 0 on and below the diagonal, -inf above.
fn upper_minus_inf(c: usize, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..c)
        .flat_map(|i| (0..c).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Ok(Tensor::from_vec(v, (c, c), device)?)
}

/// [C, C] f32: 1 strictly below the diagonal, 0 elsewhere.
fn strictly_lower_ones(c: usize, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..c)
        .flat_map(|i| (0..c).map(move |j| if j < i { 1.0 } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(v, (c, c), device)?)
}

/// The gated delta rule, chunked. `q`, `k` [B, T, H, d_k] (raw: L2-normalised here, in f32, and
/// q scaled by `1/sqrt(d_k)`), `v` [B, T, H, d_v], `g` [B, T, H] (log decay, <= 0), `beta`
/// [B, T, H]. Returns the outputs [B, T, H, d_v] in f32. `chunk` may be any positive length:
/// the result is the same up to rounding (the tests hold it to the f64 recurrence).
pub fn chunk_gated_delta_rule(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    g: &Tensor,
    beta: &Tensor,
    chunk: usize,
) -> Result<Tensor> {
    let (b, t, h, dk) = q.dims4()?;
    let dv = v.dim(3)?;
    if chunk == 0 {
        return Err(ModelError::Invalid(
            "delta-rule chunk length must be positive".into(),
        ));
    }
    let device = q.device().clone();
    let m = b * h;
    // [B, T, H, d] -> [B*H, T, d] in f32.
    let heads_first = |x: &Tensor, d: usize| -> Result<Tensor> {
        Ok(x.to_dtype(DType::F32)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((m, t, d))?)
    };
    let q = heads_first(&l2_normalize(&q.to_dtype(DType::F32)?)?, dk)?;
    let q = (q * (1.0 / (dk as f64).sqrt()))?;
    let k = heads_first(&l2_normalize(&k.to_dtype(DType::F32)?)?, dk)?;
    let v = heads_first(v, dv)?;
    let g = g
        .to_dtype(DType::F32)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((m, t))?;
    let beta = beta
        .to_dtype(DType::F32)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((m, t))?;

    // Pad to whole chunks: zero q/k/v/beta add nothing, zero g decays nothing, and the padded
    // outputs are dropped.
    let n = t.div_ceil(chunk);
    let pad = n * chunk - t;
    let (q, k, v, g, beta) = if pad == 0 {
        (q, k, v, g, beta)
    } else {
        (
            q.pad_with_zeros(1, 0, pad)?,
            k.pad_with_zeros(1, 0, pad)?,
            v.pad_with_zeros(1, 0, pad)?,
            g.pad_with_zeros(1, 0, pad)?,
            beta.pad_with_zeros(1, 0, pad)?,
        )
    };
    let c = chunk;
    let mn = m * n;
    // [M, N*C, d] -> [M*N, C, d]: every chunk of every head is one batch entry.
    let q = q.reshape((mn, c, dk))?;
    let k = k.reshape((mn, c, dk))?;
    let v = v.reshape((mn, c, dv))?;
    let beta = beta.reshape((mn, c, 1))?;
    let g = g.reshape((mn, c))?;

    let k_beta = k.broadcast_mul(&beta)?;
    let v_beta = v.broadcast_mul(&beta)?;
    // cum[i] = g_0 + ... + g_i inside the chunk (log of the decay from the chunk start to i).
    let cum = g.cumsum(1)?; // [MN, C]
                            // decay[i, j] = exp(cum_i - cum_j) for j <= i, 0 above the diagonal (masked before exp so
                            // that no positive exponent can overflow).
    let pairwise = cum
        .unsqueeze(2)?
        .broadcast_sub(&cum.unsqueeze(1)?)?
        .broadcast_add(&upper_minus_inf(c, &device)?)?
        .exp()?; // [MN, C, C]
    let lower = strictly_lower_ones(c, &device)?;
    let ut = k_beta
        .matmul(&k.t()?)?
        .mul(&pairwise)?
        .broadcast_mul(&lower)?;
    let cum_exp = cum.exp()?.unsqueeze(2)?; // [MN, C, 1]
    let rhs = Tensor::cat(&[&v_beta, &k_beta.broadcast_mul(&cum_exp)?], 2)?;
    let solved = unit_lower_inverse(&ut)?.matmul(&rhs)?;
    let new_values = solved.narrow(2, 0, dv)?; // u in the DeltaNet paper
    let k_cumdecay = solved.narrow(2, dv, dk)?;
    let intra = q.matmul(&k.t()?)?.mul(&pairwise)?; // with the diagonal

    let last = cum.narrow(1, c - 1, 1)?; // [MN, 1]
    let q_decayed = q.broadcast_mul(&cum_exp)?;
    let k_to_end = k.broadcast_mul(&last.broadcast_sub(&cum)?.exp()?.unsqueeze(2)?)?;
    let chunk_decay = last.exp()?; // [MN, 1]

    // Sequential hand-over of the state between chunks, all heads at once.
    let per_chunk =
        |x: &Tensor, d2: usize, d3: usize| -> Result<Tensor> { Ok(x.reshape((m, n, d2, d3))?) };
    let new_values = per_chunk(&new_values, c, dv)?;
    let k_cumdecay = per_chunk(&k_cumdecay, c, dk)?;
    let intra = per_chunk(&intra, c, c)?;
    let q_decayed = per_chunk(&q_decayed, c, dk)?;
    let k_to_end = per_chunk(&k_to_end, c, dk)?;
    let chunk_decay = chunk_decay.reshape((m, n, 1, 1))?;
    let mut state = Tensor::zeros((m, dk, dv), DType::F32, &device)?;
    let mut outs = Vec::with_capacity(n);
    for i in 0..n {
        let at = |x: &Tensor| -> Result<Tensor> { Ok(x.narrow(1, i, 1)?.squeeze(1)?) };
        let v_new = (at(&new_values)? - at(&k_cumdecay)?.matmul(&state)?)?;
        let inter = at(&q_decayed)?.matmul(&state)?;
        outs.push((inter + at(&intra)?.matmul(&v_new)?)?);
        state = (state.broadcast_mul(&at(&chunk_decay)?)? + at(&k_to_end)?.t()?.matmul(&v_new)?)?;
    }
    let out = Tensor::cat(&outs, 1)?.narrow(1, 0, t)?; // [M, T, dv]
    Ok(out.reshape((b, h, t, dv))?.transpose(1, 2)?.contiguous()?)
}

/// The step-by-step recurrence in f64 (transformers' `torch_recurrent_gated_delta_rule`, with
/// q/k L2 normalisation), on host slices in [B, T, H, d] / [B, T, H] row-major layout. Returns
/// the outputs [B, T, H, d_v] row-major. The reference for [`chunk_gated_delta_rule`].
#[allow(clippy::too_many_arguments)]
pub fn recurrent_gated_delta_rule_f64(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    g: &[f64],
    beta: &[f64],
    (b, t, h, dk, dv): (usize, usize, usize, usize, usize),
) -> Vec<f64> {
    let normalise = |x: &[f64]| -> Vec<f64> {
        let inv = 1.0 / (x.iter().map(|a| a * a).sum::<f64>() + L2_NORM_EPS).sqrt();
        x.iter().map(|a| a * inv).collect()
    };
    let scale = 1.0 / (dk as f64).sqrt();
    let mut out = vec![0.0; b * t * h * dv];
    for bi in 0..b {
        for hi in 0..h {
            let mut s = vec![0.0f64; dk * dv]; // S[i][j], i over d_k
            for ti in 0..t {
                let at = |d: usize| ((bi * t + ti) * h + hi) * d;
                let qt: Vec<f64> = normalise(&q[at(dk)..at(dk) + dk])
                    .into_iter()
                    .map(|x| x * scale)
                    .collect();
                let kt = normalise(&k[at(dk)..at(dk) + dk]);
                let vt = &v[at(dv)..at(dv) + dv];
                let gi = (bi * t + ti) * h + hi;
                let decay = g[gi].exp();
                s.iter_mut().for_each(|x| *x *= decay);
                for j in 0..dv {
                    let mem: f64 = (0..dk).map(|i| s[i * dv + j] * kt[i]).sum();
                    let delta = (vt[j] - mem) * beta[gi];
                    for i in 0..dk {
                        s[i * dv + j] += kt[i] * delta;
                    }
                }
                for j in 0..dv {
                    out[at(dv) + j] = (0..dk).map(|i| s[i * dv + j] * qt[i]).sum();
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(rng: &mut rand_chacha::ChaCha8Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| rng.random_range(lo..hi)).collect()
    }

    fn tensor(x: &[f64], shape: &[usize]) -> Tensor {
        let v: Vec<f32> = x.iter().map(|&a| a as f32).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Chunked form against the f64 recurrence, for chunk lengths that divide T, that do not,
    /// that exceed it, and for one token per chunk; with strong decay, none, and keys that are
    /// nearly parallel (where a power-series inverse would cancel catastrophically).
    #[test]
    fn chunked_form_matches_the_f64_recurrence() {
        let (b, t, h, dk, dv) = (2, 37, 3, 8, 5);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for case in 0..3 {
            let q = random(&mut rng, b * t * h * dk, -1.0, 1.0);
            let mut k = random(&mut rng, b * t * h * dk, -1.0, 1.0);
            if case == 2 {
                // nearly parallel keys: a shared direction plus a little noise
                for (i, x) in k.iter_mut().enumerate() {
                    *x = 1.0 + 0.05 * *x + (i % dk) as f64 * 0.1;
                }
            }
            let v = random(&mut rng, b * t * h * dv, -2.0, 2.0);
            let g = match case {
                0 => random(&mut rng, b * t * h, -3.0, -0.01),
                _ => random(&mut rng, b * t * h, -0.05, 0.0),
            };
            let beta = random(&mut rng, b * t * h, 0.05, 0.99);
            let want = recurrent_gated_delta_rule_f64(&q, &k, &v, &g, &beta, (b, t, h, dk, dv));
            let scale = want.iter().fold(0.0f64, |a, x| a.max(x.abs()));
            for chunk in [1, 4, 16, 37, 64] {
                let got = chunk_gated_delta_rule(
                    &tensor(&q, &[b, t, h, dk]),
                    &tensor(&k, &[b, t, h, dk]),
                    &tensor(&v, &[b, t, h, dv]),
                    &tensor(&g, &[b, t, h]),
                    &tensor(&beta, &[b, t, h]),
                    chunk,
                )
                .unwrap();
                assert_eq!(got.dims(), [b, t, h, dv]);
                let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(a, w)| (*a as f64 - w).abs())
                    .fold(0.0f64, f64::max);
                assert!(
                    worst <= 2e-5 * scale.max(1.0),
                    "case {case}, chunk {chunk}: max |chunked - recurrent| = {worst:e} (scale {scale})"
                );
            }
        }
    }

    /// The chunked form's gradient (candle autograd) against central differences of the f64
    /// recurrence, for every input.
    #[test]
    fn chunked_form_gradients_match_finite_differences_of_the_recurrence() {
        let (b, t, h, dk, dv) = (1, 11, 2, 4, 3);
        let dims = (b, t, h, dk, dv);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let q = random(&mut rng, b * t * h * dk, -1.0, 1.0);
        let k = random(&mut rng, b * t * h * dk, -1.0, 1.0);
        let v = random(&mut rng, b * t * h * dv, -1.0, 1.0);
        let g = random(&mut rng, b * t * h, -1.0, -0.01);
        let beta = random(&mut rng, b * t * h, 0.1, 0.9);
        // loss = sum(out * w) for fixed random w
        let w = random(&mut rng, b * t * h * dv, -1.0, 1.0);
        let loss64 = |q: &[f64], k: &[f64], v: &[f64], g: &[f64], beta: &[f64]| -> f64 {
            recurrent_gated_delta_rule_f64(q, k, v, g, beta, dims)
                .iter()
                .zip(&w)
                .map(|(a, b)| a * b)
                .sum()
        };
        let vars: Vec<candle_core::Var> = [
            (&q, vec![b, t, h, dk]),
            (&k, vec![b, t, h, dk]),
            (&v, vec![b, t, h, dv]),
            (&g, vec![b, t, h]),
            (&beta, vec![b, t, h]),
        ]
        .iter()
        .map(|(x, s)| candle_core::Var::from_tensor(&tensor(x, s)).unwrap())
        .collect();
        let out = chunk_gated_delta_rule(
            vars[0].as_tensor(),
            vars[1].as_tensor(),
            vars[2].as_tensor(),
            vars[3].as_tensor(),
            vars[4].as_tensor(),
            4,
        )
        .unwrap();
        let loss = (out * tensor(&w, &[b, t, h, dv]))
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let inputs = [&q, &k, &v, &g, &beta];
        for (which, var) in vars.iter().enumerate() {
            let got: Vec<f32> = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for (i, got_i) in got.iter().enumerate() {
                let eps = 1e-6;
                let mut plus: Vec<Vec<f64>> = inputs.iter().map(|x| x.to_vec()).collect();
                let mut minus = plus.clone();
                plus[which][i] += eps;
                minus[which][i] -= eps;
                let f = |a: &Vec<Vec<f64>>| loss64(&a[0], &a[1], &a[2], &a[3], &a[4]);
                let numeric = (f(&plus) - f(&minus)) / (2.0 * eps);
                assert!(
                    (*got_i as f64 - numeric).abs() <= 1e-3 * numeric.abs().max(1.0),
                    "input {which}, element {i}: autograd {got_i} vs numeric {numeric}"
                );
            }
        }
    }

    /// The block inverse against forward substitution in f64, for power-of-two and other sizes,
    /// with entries that make the inverse's entries large (near-parallel keys do that).
    #[test]
    fn block_inverse_matches_forward_substitution() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for (c, lo, hi) in [
            (1, -1.0, 1.0),
            (5, -1.0, 1.0),
            (16, -1.0, 1.0),
            (64, 0.8, 0.99),
        ] {
            let m = 3;
            let mut a = vec![0.0f64; m * c * c];
            for b in 0..m {
                for i in 0..c {
                    for j in 0..i {
                        a[(b * c + i) * c + j] = rng.random_range(lo..hi);
                    }
                }
            }
            let got: Vec<f32> = unit_lower_inverse(&tensor(&a, &[m, c, c]))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for b in 0..m {
                // X = (I + A)^-1 column by column: x_i = e_i - sum_{j<i} A[i, j] x_j (rows).
                let mut x = vec![0.0f64; c * c];
                for i in 0..c {
                    for k in 0..c {
                        let mut v = if i == k { 1.0 } else { 0.0 };
                        for j in 0..i {
                            v -= a[(b * c + i) * c + j] * x[j * c + k];
                        }
                        x[i * c + k] = v;
                    }
                }
                let scale = x.iter().fold(1.0f64, |acc, v| acc.max(v.abs()));
                for (i, want) in x.iter().enumerate() {
                    let g = got[b * c * c + i] as f64;
                    assert!(
                        (g - want).abs() <= 1e-5 * scale,
                        "c {c}, batch {b}, entry {i}: {g} vs {want} (scale {scale})"
                    );
                }
            }
        }
    }

    #[test]
    fn causal_conv_sees_only_the_past() {
        let (b, t, c, k) = (1, 6, 2, 4);
        let x: Vec<f32> = (0..b * t * c).map(|i| i as f32 * 0.1 - 0.3).collect();
        let w: Vec<f32> = (0..c * k).map(|i| (i as f32 - 3.0) * 0.2).collect();
        let xt = Tensor::from_vec(x.clone(), (b, t, c), &Device::Cpu).unwrap();
        let wt = Tensor::from_vec(w.clone(), (c, 1, k), &Device::Cpu).unwrap();
        let got: Vec<f32> = causal_conv1d_silu(&xt, &wt)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for ti in 0..t {
            for ci in 0..c {
                let mut s = 0.0f64;
                for j in 0..k {
                    let src = ti as isize - (k as isize - 1) + j as isize;
                    if src >= 0 {
                        s += w[ci * k + j] as f64 * x[src as usize * c + ci] as f64;
                    }
                }
                let want = s / (1.0 + (-s).exp());
                assert!((got[ti * c + ci] as f64 - want).abs() < 1e-6);
            }
        }
    }
}
