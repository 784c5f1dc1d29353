//! The few operations that exist twice: a fused candle kernel (fast, but candle's backward
//! silently returns no gradient through it) and a composite of differentiable ops. The scoring
//! path uses the fused ones, the training path the composite ones; a test asserts both agree.

use candle_core::{DType, Device, Tensor, D};

use crate::error::Result;

/// Which implementation of the fused-able ops a forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpPath {
    /// candle's fused kernels: scoring only (no gradients flow through them).
    Fused,
    /// Differentiable composite ops: training, gradients, and the reference for the fused path.
    Composite,
    /// koth's GPU kernel layer (`koth-kernels`): fused attention without [B, H, T, T], fused
    /// cross-entropy over the head without f32 logits, one-pass RMSNorm, q/k-norm + RoPE and
    /// SwiGLU. Scoring and training (each op has its backward); CUDA builds and devices only.
    /// Attention falls back to the composite form in f32 (cuDNN's SDPA is half precision).
    Kernels,
}

impl OpPath {
    /// The scoring path for tensors like `t`: koth's kernels where they run, else candle's fused
    /// ops.
    pub fn scoring_for(t: &Tensor) -> Self {
        if koth_kernels::usable(t) {
            OpPath::Kernels
        } else {
            OpPath::Fused
        }
    }

    /// The training path for tensors like `t`: koth's kernels where they run, else the
    /// differentiable composites.
    pub fn training_for(t: &Tensor) -> Self {
        if koth_kernels::usable(t) {
            OpPath::Kernels
        } else {
            OpPath::Composite
        }
    }
}

/// RMSNorm over the last dimension, as transformers computes it: normalise in f32, cast back to
/// the input dtype, then scale by the gain.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, path: OpPath) -> Result<Tensor> {
    match path {
        OpPath::Fused if x.dtype() == DType::F32 => {
            let x = x.contiguous()?;
            Ok(candle_nn::ops::rms_norm(&x, weight, eps as f32)?)
        }
        // Half precision, as transformers computes it: normalise in f32, round to the input
        // dtype, then scale by the gain (one more rounding). candle's CPU kernel would instead
        // round the row's RMS to bf16/f16 and divide and scale in half arithmetic; koth's GPU
        // kernel (OpPath::Kernels) rounds exactly like this, so a bf16 score agrees across
        // devices.
        OpPath::Fused => {
            let x32 = x.to_dtype(DType::F32)?.contiguous()?;
            let unit = Tensor::ones(x.dim(D::Minus1)?, DType::F32, x.device())?;
            let normed = candle_nn::ops::rms_norm(&x32, &unit, eps as f32)?.to_dtype(x.dtype())?;
            Ok(normed.broadcast_mul(weight)?)
        }
        OpPath::Kernels if x.track_op() || weight.track_op() => {
            Ok(koth_kernels::rms_norm_trainable(x, weight, eps as f32)?)
        }
        OpPath::Kernels => Ok(koth_kernels::rms_norm(x, weight, eps as f32)?),
        OpPath::Composite => {
            let dtype = x.dtype();
            let x32 = x.to_dtype(DType::F32)?;
            let var = x32.sqr()?.mean_keepdim(D::Minus1)?;
            let inv = (var + eps)?.sqrt()?.recip()?;
            let normed = x32.broadcast_mul(&inv)?.to_dtype(dtype)?;
            Ok(normed.broadcast_mul(weight)?)
        }
    }
}

/// Qwen3.5's RMSNorm: normalise in f32, scale by `1 + w` in f32, round once to the input dtype.
pub fn centered_rms_norm(x: &Tensor, weight: &Tensor, eps: f64, path: OpPath) -> Result<Tensor> {
    let dtype = x.dtype();
    if path == OpPath::Kernels && koth_kernels::usable(x) && !x.track_op() && !weight.track_op() {
        // Scoring on the kernels: one pass, the same f32 arithmetic and single rounding.
        let w = weight.to_dtype(dtype)?;
        return Ok(koth_kernels::rms_norm_centered(x, &w, eps as f32)?);
    }
    let x32 = x.to_dtype(DType::F32)?;
    let gain = (weight.to_dtype(DType::F32)? + 1.0)?;
    let y = match path {
        OpPath::Fused => candle_nn::ops::rms_norm(&x32.contiguous()?, &gain, eps as f32)?,
        OpPath::Composite | OpPath::Kernels => {
            let inv = (x32.sqr()?.mean_keepdim(D::Minus1)? + eps)?
                .sqrt()?
                .recip()?;
            x32.broadcast_mul(&inv)?.broadcast_mul(&gain)?
        }
    };
    Ok(y.to_dtype(dtype)?)
}

/// transformers' `Qwen3_5RMSNormGated`: normalise in f32, round to the input dtype, scale by
/// `w`, multiply by `silu(z)` in f32, round once more.
pub fn gated_rms_norm(x: &Tensor, z: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x32 = x.to_dtype(DType::F32)?;
    let inv = (x32.sqr()?.mean_keepdim(D::Minus1)? + eps)?
        .sqrt()?
        .recip()?;
    let normed = x32
        .broadcast_mul(&inv)?
        .to_dtype(dtype)?
        .broadcast_mul(weight)?;
    let gate = z.to_dtype(DType::F32)?.silu()?;
    Ok((normed.to_dtype(DType::F32)? * gate)?.to_dtype(dtype)?)
}

/// Softmax over the last dimension. The composite version subtracts a detached row maximum
/// (softmax does not depend on it, so no gradient is lost).
pub fn softmax_last(x: &Tensor, path: OpPath) -> Result<Tensor> {
    match path {
        OpPath::Fused => Ok(candle_nn::ops::softmax_last_dim(&x.contiguous()?)?),
        OpPath::Kernels if !x.track_op() => Ok(candle_nn::ops::softmax_last_dim(&x.contiguous()?)?),
        OpPath::Composite | OpPath::Kernels => {
            let max = x.max_keepdim(D::Minus1)?.detach();
            let e = x.broadcast_sub(&max)?.exp()?;
            let s = e.sum_keepdim(D::Minus1)?;
            Ok(e.broadcast_div(&s)?)
        }
    }
}

/// Rotary position embedding tables for positions `0..seq_len` in Hugging Face's
/// non-interleaved (rotate_half) layout.
pub struct Rope {
    /// [T, head_dim/2], for the fused kernel.
    cos_half: Tensor,
    sin_half: Tensor,
    /// [T, head_dim] (the half tables repeated), for the composite form.
    cos_full: Tensor,
    sin_full: Tensor,
}

impl Rope {
    /// transformers computes `inv_freq` and `position * inv_freq` in f32 whatever the model
    /// dtype, then cos/sin in f32, then casts to the model dtype; so do we.
    pub fn new(
        theta: f64,
        head_dim: usize,
        seq_len: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32)
            .collect();
        let mut cos = Vec::with_capacity(seq_len * half);
        let mut sin = Vec::with_capacity(seq_len * half);
        for p in 0..seq_len {
            for f in &inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let cos_half = Tensor::from_vec(cos, (seq_len, half), device)?.to_dtype(dtype)?;
        let sin_half = Tensor::from_vec(sin, (seq_len, half), device)?.to_dtype(dtype)?;
        let cos_full = Tensor::cat(&[&cos_half, &cos_half], 1)?;
        let sin_full = Tensor::cat(&[&sin_half, &sin_half], 1)?;
        Ok(Self {
            cos_half,
            sin_half,
            cos_full,
            sin_full,
        })
    }

    /// The [T, head_dim/2] cos and sin tables.
    pub fn half_tables(&self) -> (&Tensor, &Tensor) {
        (&self.cos_half, &self.sin_half)
    }

    /// Rotate `x` of shape [B, heads, T, head_dim].
    pub fn apply(&self, x: &Tensor, path: OpPath) -> Result<Tensor> {
        match path {
            OpPath::Fused => Ok(candle_nn::rotary_emb::rope(
                &x.contiguous()?,
                &self.cos_half,
                &self.sin_half,
            )?),
            OpPath::Composite | OpPath::Kernels => {
                let d = x.dim(D::Minus1)?;
                let x1 = x.narrow(D::Minus1, 0, d / 2)?;
                let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
                let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
                Ok((x.broadcast_mul(&self.cos_full)? + rotated.broadcast_mul(&self.sin_full)?)?)
            }
        }
    }
}

/// Additive causal mask [T, T] in f32: 0 on and below the diagonal, -inf above.
pub fn causal_mask(seq_len: usize, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..seq_len)
        .flat_map(|i| (0..seq_len).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Ok(Tensor::from_vec(v, (seq_len, seq_len), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows whose RMS is far from a bf16 value, so a rounded RMS would show.
    fn sample(dtype: DType) -> (Tensor, Tensor) {
        let xs: Vec<f32> = (0..6 * 64)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.0371 + (i % 7) as f32 * 0.013)
            .collect();
        let ws: Vec<f32> = (0..64)
            .map(|i| 0.5 + (i * 13 % 17) as f32 * 0.061)
            .collect();
        let x = Tensor::from_vec(xs, (6, 64), &Device::Cpu).unwrap();
        let w = Tensor::from_vec(ws, 64, &Device::Cpu).unwrap();
        (x.to_dtype(dtype).unwrap(), w.to_dtype(dtype).unwrap())
    }

    #[test]
    fn half_precision_fused_rms_norm_rounds_like_transformers() {
        for dtype in [DType::BF16, DType::F16] {
            let (x, w) = sample(dtype);
            let got = rms_norm(&x, &w, 1e-6, OpPath::Fused).unwrap();
            assert_eq!(got.dtype(), dtype);
            // The reference: transformers' order (f32 statistics, round, scale, round), which the
            // composite path spells out op by op.
            let want = rms_norm(&x, &w, 1e-6, OpPath::Composite).unwrap();
            let a: Vec<f32> = got
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let b: Vec<f32> = want
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            // f32 evaluation orders may differ by an ulp of f32, which can move a value across
            // a rounding boundary: allow at most one half ulp step on a few elements.
            let differing = a.iter().zip(&b).filter(|(p, q)| p != q).count();
            assert!(
                differing <= 2,
                "{dtype:?}: {differing} of {} elements differ",
                a.len()
            );
            // candle's own half kernel (rounded RMS, half arithmetic) is measurably different.
            let native = candle_nn::ops::rms_norm(&x, &w, 1e-6).unwrap();
            let c: Vec<f32> = native
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let native_differing = c.iter().zip(&b).filter(|(p, q)| p != q).count();
            assert!(
                native_differing > 20,
                "{dtype:?}: only {native_differing} differ natively"
            );
        }
    }
}
