//! The API of a build without the `cuda` feature: the same signatures, each an error.

use candle_core::{Result, Tensor};

use crate::{not_compiled, AdamHyper};

pub fn attention(_q: &Tensor, _k: &Tensor, _v: &Tensor, _scale: f32) -> Result<Tensor> {
    Err(not_compiled())
}
pub fn attention_trainable(_q: &Tensor, _k: &Tensor, _v: &Tensor, _scale: f32) -> Result<Tensor> {
    Err(not_compiled())
}
pub fn cross_entropy(_logits: &Tensor, _targets: &Tensor) -> Result<Tensor> {
    Err(not_compiled())
}
pub fn cross_entropy_trainable(_logits: &Tensor, _targets: &Tensor) -> Result<Tensor> {
    Err(not_compiled())
}
pub fn rms_norm(_x: &Tensor, _w: &Tensor, _eps: f32) -> Result<Tensor> {
    Err(not_compiled())
}
pub fn rms_norm_trainable(_x: &Tensor, _w: &Tensor, _eps: f32) -> Result<Tensor> {
    Err(not_compiled())
}
pub fn norm_rope(
    _x: &Tensor,
    _w: Option<&Tensor>,
    _cos: &Tensor,
    _sin: &Tensor,
    _eps: f32,
) -> Result<Tensor> {
    Err(not_compiled())
}
pub fn centered_norm_rope(
    _x: &Tensor,
    _w: &Tensor,
    _cos: &Tensor,
    _sin: &Tensor,
    _eps: f32,
) -> Result<Tensor> {
    Err(not_compiled())
}
pub fn sigmoid_gate(_out: &Tensor, _gate: &Tensor) -> Result<Tensor> {
    Err(not_compiled())
}
pub fn add_rms_norm_centered(
    _x: &Tensor,
    _d: &Tensor,
    _w: &Tensor,
    _eps: f32,
) -> Result<(Tensor, Tensor)> {
    Err(not_compiled())
}
pub fn add_rms_norm(_x: &Tensor, _d: &Tensor, _w: &Tensor, _eps: f32) -> Result<(Tensor, Tensor)> {
    Err(not_compiled())
}
pub fn moe_combine(_y: &Tensor, _w: &Tensor, _pos: &Tensor) -> Result<Tensor> {
    Err(not_compiled())
}
pub fn router_top_k(_probs: &Tensor, _k: usize) -> Result<Tensor> {
    Err(not_compiled())
}
pub fn grouped_matmul(_x: &Tensor, _w: &Tensor, _offsets: &[usize]) -> Result<Tensor> {
    Err(not_compiled())
}
pub fn delta_gates(
    _a: &Tensor,
    _b: &Tensor,
    _a_log: &Tensor,
    _dt_bias: &Tensor,
) -> Result<(Tensor, Tensor)> {
    Err(not_compiled())
}
pub fn rope_trainable(_x: &Tensor, _cos: &Tensor, _sin: &Tensor) -> Result<Tensor> {
    Err(not_compiled())
}
pub fn swiglu(_gate: &Tensor, _up: &Tensor) -> Result<Tensor> {
    Err(not_compiled())
}
pub fn swiglu_trainable(_gate: &Tensor, _up: &Tensor) -> Result<Tensor> {
    Err(not_compiled())
}

/// The multi-tensor AdamW update (GPU builds only).
pub struct AdamWKernel;

impl AdamWKernel {
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        _params: &[&Tensor],
        _grads: &[&Tensor],
        _m: &[&Tensor],
        _v: &[&Tensor],
        _model: &[Option<&Tensor>],
        _decay: &[bool],
        _hyper: AdamHyper,
    ) -> Result<()> {
        Err(not_compiled())
    }
}

/// The multi-tensor sum of squares (GPU builds only).
pub fn sum_of_squares(_tensors: &[&Tensor]) -> Result<Tensor> {
    Err(not_compiled())
}

/// The gated delta rule's scoring kernel (GPU builds only).
pub fn gated_delta_rule(
    _qkv: &Tensor,
    _heads: crate::DeltaHeads,
    _g: &Tensor,
    _beta: &Tensor,
    _eps: f32,
) -> Result<Tensor> {
    Err(not_compiled())
}

/// The gated delta rule's training op (GPU builds only).
pub fn gated_delta_rule_trainable(
    _packed: &Tensor,
    _heads: crate::DeltaHeads,
    _g: &Tensor,
    _beta: &Tensor,
) -> Result<Tensor> {
    Err(not_compiled())
}

/// The short convolution + SiLU kernel (GPU builds only).
pub fn causal_conv1d_silu(_x: &Tensor, _weight: &Tensor) -> Result<Tensor> {
    Err(not_compiled())
}

/// The zero-centred RMSNorm kernel (GPU builds only).
pub fn rms_norm_centered(_x: &Tensor, _w: &Tensor, _eps: f32) -> Result<Tensor> {
    Err(not_compiled())
}

/// The gated RMSNorm kernel (GPU builds only).
pub fn gated_rms_norm(_x: &Tensor, _z: &Tensor, _w: &Tensor, _eps: f32) -> Result<Tensor> {
    Err(not_compiled())
}

/// Releasing cached device memory (GPU builds only).
pub fn memory_release(_device: &candle_core::Device) -> Result<()> {
    Err(not_compiled())
}

/// Peak device memory (GPU builds only).
pub fn memory_peak(_device: &candle_core::Device, _reset: bool) -> Result<u64> {
    Err(not_compiled())
}

pub fn attention_backward_deterministic() -> bool {
    true
}
pub fn attention_with_stats(
    _q: &Tensor,
    _k: &Tensor,
    _v: &Tensor,
    _scale: f32,
) -> Result<(Tensor, Tensor)> {
    Err(not_compiled())
}
pub fn attention_backward(
    _q: &Tensor,
    _k: &Tensor,
    _v: &Tensor,
    _o: &Tensor,
    _dout: &Tensor,
    _stats: &Tensor,
    _scale: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    Err(not_compiled())
}
pub fn rms_norm_with_rstd(_x: &Tensor, _w: &Tensor, _eps: f32) -> Result<(Tensor, Tensor)> {
    Err(not_compiled())
}
pub fn rms_norm_backward(
    _x: &Tensor,
    _w: &Tensor,
    _rstd: &Tensor,
    _dy: &Tensor,
) -> Result<(Tensor, Tensor)> {
    Err(not_compiled())
}
pub fn rope_backward(_dy: &Tensor, _cos: &Tensor, _sin: &Tensor) -> Result<Tensor> {
    Err(not_compiled())
}
pub fn swiglu_backward(_gate: &Tensor, _up: &Tensor, _dy: &Tensor) -> Result<(Tensor, Tensor)> {
    Err(not_compiled())
}
pub fn cross_entropy_with_grad(_logits: &Tensor, _targets: &Tensor, _grad: f32) -> Result<Tensor> {
    Err(not_compiled())
}
pub fn embedding_backward(_dy: &Tensor, _ids: &[u32], _vocab: usize) -> Result<Tensor> {
    Err(not_compiled())
}
