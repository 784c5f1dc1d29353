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

/// A device or a comma-separated list of them (`cpu`, `cuda:0,cuda:1`, `cuda:0, cuda:0`), in
/// order. A name given twice is the same device (its stages share one candle device, and the
/// hand-over between them is no copy); `cuda` and `cuda:0` name the same GPU. A list of one is
/// [`parse_device`]'s device. Errors name the list and the entry at fault.
pub fn parse_devices(s: &str) -> Result<Vec<Device>> {
    let mut opened: Vec<(String, Device)> = Vec::new();
    let mut out = Vec::new();
    for (i, entry) in s.split(',').enumerate() {
        let name = entry.trim();
        if name.is_empty() {
            return Err(ModelError::Invalid(format!(
                "device list `{s}`: entry {} is empty",
                i + 1
            )));
        }
        let key = if name == "cuda" { "cuda:0" } else { name };
        if let Some((_, d)) = opened.iter().find(|(k, _)| k == key) {
            out.push(d.clone());
            continue;
        }
        let device = parse_device(name).map_err(|e| match e {
            ModelError::Invalid(m) if s.contains(',') => {
                ModelError::Invalid(format!("device list `{s}`: entry {}: {m}", i + 1))
            }
            other => other,
        })?;
        opened.push((key.to_owned(), device.clone()));
        out.push(device);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_list_is_parsed_in_order_and_refused_by_entry() {
        assert_eq!(parse_devices("cpu").unwrap().len(), 1);
        let d = parse_devices("cpu, cpu,cpu").unwrap();
        assert_eq!(d.len(), 3);
        assert!(d.iter().all(|d| d.is_cpu()));
        let e = parse_devices("cpu,,cpu").unwrap_err().to_string();
        assert!(
            e.contains("`cpu,,cpu`") && e.contains("entry 2 is empty"),
            "{e}"
        );
        let e = parse_devices("cpu,gpu7").unwrap_err().to_string();
        assert!(
            e.contains("entry 2") && e.contains("`gpu7` is not one of cpu, cuda, cuda:N"),
            "{e}"
        );
        assert!(parse_devices("").is_err());
        if !candle_core::utils::cuda_is_available() {
            let e = parse_devices("cpu,cuda:1").unwrap_err().to_string();
            assert!(
                e.contains("entry 2") && e.contains("no CUDA support"),
                "{e}"
            );
        }
    }
}
