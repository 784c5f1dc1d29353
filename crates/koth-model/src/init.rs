//! Seeded, machine-independent initialisation of a fresh model.
//!
//! Each tensor gets its own ChaCha20 stream seeded with sha256("koth-model/init/v1", seed,
//! tensor name), so a tensor's values depend only on (seed, name, shape), never on the order in
//! which tensors are made. Normals come from a hand-written Box–Muller transform using the
//! pure-Rust `libm` functions, so the bits are the same on every platform. Matrices are normal
//! with std `initializer_range` (transformers' `_init_weights`), RMSNorm gains are one (zero for
//! Qwen3.5's zero-centred `1 + w` norms), biases zero, and a gated DeltaNet's `A_log` is
//! `ln(uniform(0.01, 16))` from its own stream. Values are made in f32 on the CPU and then moved
//! to the requested device and dtype.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use rand::RngCore;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest as _, Sha256};

use crate::config::{ModelConfig, TensorKind};
use crate::error::Result;

/// A ChaCha20 stream for one tensor of one seed.
fn tensor_rng(seed: u64, name: &str) -> ChaCha20Rng {
    let mut h = Sha256::new();
    h.update(b"koth-model/init/v1\0");
    h.update(seed.to_le_bytes());
    h.update(name.as_bytes());
    ChaCha20Rng::from_seed(h.finalize().into())
}

/// A uniform double in [0, 1) from the top 53 bits of a u64.
fn unit(rng: &mut ChaCha20Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// `n` standard normal samples (Box–Muller, both outputs used).
pub fn standard_normals(rng: &mut ChaCha20Rng, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - unit(rng);
        let u2 = unit(rng);
        let r = libm::sqrt(-2.0 * libm::log(u1));
        let theta = 2.0 * std::f64::consts::PI * u2;
        out.push(r * libm::cos(theta));
        out.push(r * libm::sin(theta));
    }
    out.truncate(n);
    out
}

/// Fresh values for every tensor of `config`, by Hugging Face name.
pub fn init_tensors(
    config: &ModelConfig,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    init_tensors_placed(config, seed, dtype, |_| device)
}

/// [`init_tensors`] with each tensor made on the host and moved to the device `device_of(name)`
/// names before the next is made (the values do not depend on where a tensor goes).
pub fn init_tensors_placed<'d>(
    config: &ModelConfig,
    seed: u64,
    dtype: DType,
    device_of: impl Fn(&str) -> &'d Device,
) -> Result<HashMap<String, Tensor>> {
    let std = config.initializer_range;
    let specs = config.tensor_specs();
    // Each tensor's values depend only on (seed, name, shape), so they are drawn on several
    // threads at once (a 30B model's draws take minutes on one core) and moved to their devices
    // in order on this thread. At most `threads` tensors' values are in host memory at a time.
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16);
    let mut out = HashMap::new();
    for group in specs.chunks(threads) {
        let drawn: Vec<Vec<f32>> = std::thread::scope(|scope| {
            let handles: Vec<_> = group
                .iter()
                .map(|spec| scope.spawn(move || draw(spec, seed, std)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("an init thread panicked"))
                .collect()
        });
        for (spec, values) in group.iter().zip(drawn) {
            let t = Tensor::from_vec(values, spec.shape.as_slice(), &Device::Cpu)?
                .to_dtype(dtype)?
                .to_device(device_of(&spec.name))?;
            out.insert(spec.name.clone(), t);
        }
    }
    Ok(out)
}

/// One tensor's initial values, in f32.
fn draw(spec: &crate::config::TensorSpec, seed: u64, std: f64) -> Vec<f32> {
    let n: usize = spec.shape.iter().product();
    match spec.kind {
        TensorKind::Matrix => {
            let mut rng = tensor_rng(seed, &spec.name);
            standard_normals(&mut rng, n)
                .into_iter()
                .map(|z| (z * std) as f32)
                .collect()
        }
        TensorKind::Norm => vec![1.0; n],
        TensorKind::Bias | TensorKind::CenteredNorm => vec![0.0; n],
        TensorKind::LogDecayRate => {
            // transformers: A = uniform(0.01, 16), stored as ln(A) (lower bound away from 0
            // so that ln(A) stays finite).
            let mut rng = tensor_rng(seed, &spec.name);
            (0..n)
                .map(|_| libm::log(0.01 + (16.0 - 0.01) * unit(&mut rng)) as f32)
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The draws are part of the protocol's reproducibility (a devnet's genesis king, the
    /// benches' models): the digest of a small hybrid's every tensor at seed 1 is pinned, so
    /// drawing on several threads, or any later change, cannot move a single bit.
    #[test]
    fn init_values_are_pinned() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/hf-golden/qwen35moe-tiny/config.json"
        );
        let config = ModelConfig::from_file(std::path::Path::new(path)).unwrap();
        let tensors = init_tensors(&config, 1, DType::F32, &Device::Cpu).unwrap();
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        let mut h = Sha256::new();
        for name in names {
            h.update(name.as_bytes());
            for v in tensors[name]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
            {
                h.update(v.to_le_bytes());
            }
        }
        let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(digest, PINNED_INIT_DIGEST);
    }

    const PINNED_INIT_DIGEST: &str =
        "1e9cd19f5ea51e5e2e3438ece44121e4ceacbaf473d058d0cf2f02b603a30ed7";

    #[test]
    fn normals_have_unit_moments_and_are_reproducible() {
        let a = standard_normals(&mut tensor_rng(7, "x"), 20_001);
        let b = standard_normals(&mut tensor_rng(7, "x"), 20_001);
        assert_eq!(a, b);
        let c = standard_normals(&mut tensor_rng(7, "y"), 10);
        assert_ne!(a[..10], c[..]);
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
    }
}
