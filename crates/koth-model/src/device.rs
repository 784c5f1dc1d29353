//! Parsing of `--device` and `--dtype` values.

use candle_core::{DType, Device};

use crate::error::{ModelError, Result};

/// `cpu`, `cuda` (GPU 0) or `cuda:N`. CUDA needs the crate's `cuda` feature.
pub fn parse_device(s: &str) -> Result<Device> {
    let ordinal = match s {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => {
                return Err(ModelError::Invalid(format!(
                    "device `{s}` is not one of cpu, cuda, cuda:N"
                )))
            }
        },
    };
    if !candle_core::utils::cuda_is_available() {
        return Err(ModelError::Invalid(format!(
            "device `{s}`: this build has no CUDA support (build with --features cuda)"
        )));
    }
    Device::new_cuda(ordinal)
        .map_err(|e| ModelError::Invalid(format!("device `{s}` cannot be opened: {e}")))
}

/// `f32`, `bf16` or `f16`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        _ => Err(ModelError::Invalid(format!(
            "dtype `{s}` is not one of f32, bf16, f16"
        ))),
    }
}
