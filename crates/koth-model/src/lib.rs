//! The transformer language model koth scores and trains.
//!
//! - [`ModelConfig`]: a validated Hugging Face `config.json` (llama, qwen2, qwen3, qwen3_moe, and
//!   the Qwen3.5 hybrids qwen3_5 / qwen3_5_moe: gated DeltaNet + gated attention, see
//!   [`deltanet`]).
//! - [`Model`]: load / init / save in Hugging Face layout; [`Model::nll`] scores token ids
//!   (per-token next-token NLL in f32, logits never materialised for the whole batch);
//!   [`Model::loss_and_grads`] differentiates the mean NLL.
//! - [`Trainer`]: parameters as variables plus [`AdamW`] (f32 moments, decoupled weight decay,
//!   gradient-norm clipping).
//! - [`Placement`] and [`Pipeline`]: a model split into stages of consecutive layers on several
//!   devices, scored micro-batch by micro-batch with the stages overlapping ([`placement`],
//!   [`pipeline`]; for a duel the stages come from the planner, [`plan`]).
//!
//! Two paths, one network: [`OpPath::Fused`] uses candle's fused kernels, which give no
//! gradient; [`OpPath::Composite`] uses differentiable ops and is what training runs on.

pub mod config;
pub mod deltanet;
pub mod device;
pub mod error;
pub mod init;
pub mod loss;
pub mod model;
pub mod ops;
pub mod optim;
pub mod pipeline;
pub mod placement;
pub mod plan;
pub mod weights;

pub use config::{
    Family, HybridConfig, LinearAttentionConfig, MixerKind, ModelConfig, MoeConfig, TensorKind,
    TensorSpec, MAX_CONFIG_BYTES,
};
pub use device::{parse_device, parse_devices, parse_dtype};
pub use error::{ModelError, Result};
pub use model::{
    inspect, CheckpointOptions, Checkpointing, Model, ModelInfo, ScoreOptions, TokenIds,
};
pub use ops::OpPath;
pub use optim::{clip_grad_norm, global_grad_norm, AdamW, AdamWConfig, StepReport, Trainer};
pub use pipeline::{Pipeline, Schedule};
pub use placement::{Placement, StageSpec};
pub use weights::{CheckpointFiles, DEFAULT_SHARD_LIMIT_BYTES};

pub use candle_core::{DType, Device, Tensor};

/// Whether this build carries koth's GPU kernels (`OpPath::Kernels`).
pub fn kernels_compiled() -> bool {
    koth_kernels::COMPILED
}

/// The high-water mark of device memory allocated on a CUDA `device` since the last reset
/// (`reset` starts a new measurement): what `koth bench` reports as peak memory.
pub fn memory_peak(device: &Device, reset: bool) -> Result<u64> {
    Ok(koth_kernels::memory_peak(device, reset)?)
}

/// Give the memory a CUDA `device`'s pool caches but no tensor uses back to the driver (after
/// the models are dropped, so that another process can have it).
pub fn memory_release(device: &Device) -> Result<()> {
    Ok(koth_kernels::memory_release(device)?)
}
