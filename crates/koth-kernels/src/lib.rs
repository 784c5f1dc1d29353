//! koth's GPU kernel layer.
//!
//! The transformer's memory-bound steps and its attention, as candle operations on CUDA tensors:
//!
//! | op | forward | backward |
//! | --- | --- | --- |
//! | [`attention`] / [`attention_trainable`] | cuDNN fused SDPA (causal, GQA), no `[B,H,T,T]` | cuDNN SDPA backward |
//! | [`cross_entropy`] / [`cross_entropy_trainable`] | log-sum-exp + target gather in f32 per row of logits | softmax − one-hot, written in place |
//! | [`rms_norm`] / [`rms_norm_trainable`] / [`add_rms_norm`] | one pass, f32 statistics (alone, or with the residual add before it) | dx and a fixed-order dw reduction |
//! | [`norm_rope`] / [`rope_trainable`] | qwen3's q/k RMSNorm and RoPE in one pass | the inverse rotation |
//! | [`swiglu`] / [`swiglu_trainable`] | silu(gate) · up | both inputs' gradients |
//! | [`AdamWKernel`] | every parameter's AdamW update in one launch (f32 or model-dtype gradients) | — |
//! | [`sum_of_squares`] | a global gradient norm: every tensor read once, two launches | — |
//! | [`gated_delta_rule`] / [`gated_delta_rule_trainable`] | Qwen3.5's delta rule, recurrent, state split by column | the recurrence walked back from 64-token checkpoints (opt-in: [`delta_rule_backward_kernel`]) |
//! | [`causal_conv1d_silu`] / [`gated_rms_norm`] / [`rms_norm_centered`] / [`add_rms_norm_centered`] / [`delta_gates`] | the gated DeltaNet's short convolution + SiLU, its gated norm, Qwen3.5's `1 + w` RMSNorm (alone, or with the residual add before it), the DeltaNet's decay and beta gates | — |
//! | [`router_top_k`] / [`grouped_matmul`] / [`moe_combine`] | the MoE router's top-k on the device (the host's exact choice); every expert's GEMM as one cuBLAS grouped call; each token's weighted expert outputs summed (index_add's order and rounding) | — |
//! | [`centered_norm_rope`] / [`sigmoid_gate`] | Qwen3.5's gated attention: q/k `1 + w` norm + partial RoPE read in place from q_proj, and the sigmoid output gate | — |
//!
//! Every reduction runs in a fixed order (no atomics), and every row is computed from that row
//! alone, so the same inputs give bit-identical outputs on the same kind of device.
//!
//! Built only with the `cuda` feature (see `build.rs` and docs/GPU.md). Without it the crate
//! still compiles, [`COMPILED`] is false and every op returns [`not_compiled`]'s error, so
//! callers choose a path with [`usable`] and never need a `cfg`.

use candle_core::{DType, Tensor};

#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "cuda")]
pub use cuda::*;

#[cfg(not(feature = "cuda"))]
mod cpu_only;
#[cfg(not(feature = "cuda"))]
pub use cpu_only::*;

/// Whether this build carries the CUDA kernels.
pub const COMPILED: bool = cfg!(feature = "cuda");

/// The error every op returns in a build without the `cuda` feature.
pub fn not_compiled() -> candle_core::Error {
    candle_core::Error::Msg(
        "koth-kernels: this build has no GPU kernels (build with --features cuda)".into(),
    )
}

/// Whether the kernels can run on `t`: a CUDA tensor of a dtype they take, in a build that has
/// them.
pub fn usable(t: &Tensor) -> bool {
    COMPILED && t.device().is_cuda() && matches!(t.dtype(), DType::F32 | DType::BF16 | DType::F16)
}

/// Whether the fused attention can run on `t`: cuDNN's SDPA takes half precision only.
pub fn attention_usable(t: &Tensor, head_dim: usize) -> bool {
    usable(t) && t.dtype() != DType::F32 && head_dim % 8 == 0 && head_dim <= 256
}

/// Whether the fused q/k-norm + RoPE kernel takes this head dimension (even, at most 256: a
/// warp's 32 lanes hold up to 128 rotation pairs).
pub fn norm_rope_usable(t: &Tensor, head_dim: usize) -> bool {
    usable(t) && head_dim % 2 == 0 && head_dim <= 256
}

/// The scalars of one AdamW step.
#[derive(Debug, Clone, Copy)]
pub struct AdamHyper {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub bias1: f32,
    pub bias2_sqrt: f32,
    pub grad_scale: f32,
}

/// The head layout of a gated DeltaNet's packed q/k/v activations.
#[derive(Debug, Clone, Copy)]
pub struct DeltaHeads {
    /// Query/key heads and their dimension.
    pub key_heads: usize,
    pub key_dim: usize,
    /// Value heads (a multiple of the key heads) and their dimension.
    pub value_heads: usize,
    pub value_dim: usize,
}

/// Whether hybrid training on CUDA takes the delta-rule backward kernel
/// ([`gated_delta_rule_trainable`]): only with `KOTH_GDR_BACKWARD=kernel` (read once). On a GPU
/// its gradients agree with the composite's on qwen35 but not yet within 1e-4 on qwen35moe's
/// ill-conditioned `A_log` (docs/GPU.md), so it stays opt-in; its arithmetic is checked against
/// autograd under the host emulator (crate `koth-kernels-emu`). Otherwise training runs the
/// chunked composite through candle's autograd.
pub fn delta_rule_backward_kernel() -> bool {
    static MODE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MODE.get_or_init(|| std::env::var("KOTH_GDR_BACKWARD").is_ok_and(|v| v == "kernel"))
}
