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
/// names as soon as its values are complete (the values do not depend on where a tensor goes).
pub fn init_tensors_placed<'d>(
    config: &ModelConfig,
    seed: u64,
    dtype: DType,
    device_of: impl Fn(&str) -> &'d Device,
) -> Result<HashMap<String, Tensor>> {
    let std = config.initializer_range;
    let specs = config.tensor_specs();
    // Each element's value depends only on (seed, name, shape, index): a tensor's stream is
    // seekable, so the draws are cut into blocks of at most BLOCK elements, drawn and converted
    // to `dtype` on several threads at once (a 30B model's draws take minutes on one core), a
    // wave of `threads` blocks at a time. A tensor goes to its device once its last block is
    // in; host memory holds at most one wave plus the tensors whose blocks are still coming.
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16);
    let jobs: Vec<(usize, usize, usize)> = specs
        .iter()
        .enumerate()
        .flat_map(|(i, spec)| {
            let n: usize = spec.shape.iter().product();
            (0..n.div_ceil(BLOCK).max(1)).map(move |b| (i, b * BLOCK, BLOCK.min(n - b * BLOCK)))
        })
        .collect();
    let mut pending: HashMap<usize, HostValues> = HashMap::new();
    let mut out = HashMap::new();
    for wave in jobs.chunks(threads) {
        let drawn: Vec<HostValues> = std::thread::scope(|scope| {
            let handles: Vec<_> = wave
                .iter()
                .map(|&(i, start, len)| {
                    let spec = &specs[i];
                    scope.spawn(move || {
                        HostValues::of(draw_range(spec, seed, std, start, len), dtype)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("an init thread panicked"))
                .collect()
        });
        for (&(i, _, _), values) in wave.iter().zip(drawn) {
            let spec = &specs[i];
            let n: usize = spec.shape.iter().product();
            let values = match pending.remove(&i) {
                Some(mut sofar) => {
                    sofar.append(values);
                    sofar
                }
                None => values,
            };
            if values.len() < n {
                pending.insert(i, values);
                continue;
            }
            let t = values
                .into_tensor(spec.shape.as_slice(), dtype)?
                .to_device(device_of(&spec.name))?;
            out.insert(spec.name.clone(), t);
        }
    }
    Ok(out)
}

/// Elements per block of a tensor's draw: even, so that every block starts on a Box–Muller pair.
const BLOCK: usize = 1 << 22;

/// A block's values on the host, already in the model's dtype where that is a half type
/// (rounded as candle's `to_dtype` rounds: to nearest, ties to even).
enum HostValues {
    F32(Vec<f32>),
    BF16(Vec<half::bf16>),
    F16(Vec<half::f16>),
}

impl HostValues {
    fn of(values: Vec<f32>, dtype: DType) -> Self {
        match dtype {
            DType::BF16 => Self::BF16(values.into_iter().map(half::bf16::from_f32).collect()),
            DType::F16 => Self::F16(values.into_iter().map(half::f16::from_f32).collect()),
            _ => Self::F32(values),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::BF16(v) => v.len(),
            Self::F16(v) => v.len(),
        }
    }

    fn append(&mut self, more: Self) {
        match (self, more) {
            (Self::F32(a), Self::F32(b)) => a.extend(b),
            (Self::BF16(a), Self::BF16(b)) => a.extend(b),
            (Self::F16(a), Self::F16(b)) => a.extend(b),
            _ => unreachable!("one tensor's blocks share one dtype"),
        }
    }

    /// The tensor on the host in `dtype` (f32 values converted by candle for other dtypes).
    fn into_tensor(self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Ok(match self {
            Self::F32(v) => Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)?,
            Self::BF16(v) => Tensor::from_vec(v, shape, &Device::Cpu)?,
            Self::F16(v) => Tensor::from_vec(v, shape, &Device::Cpu)?,
        })
    }
}

/// Elements `start..start + len` of one tensor's initial values, in f32: exactly the elements
/// a draw of the whole tensor from its first element gives there (the stream is seeked).
fn draw_range(
    spec: &crate::config::TensorSpec,
    seed: u64,
    std: f64,
    start: usize,
    len: usize,
) -> Vec<f32> {
    match spec.kind {
        TensorKind::Matrix => {
            // Each Box–Muller pair takes two u64, four 32-bit words of the stream.
            let mut rng = tensor_rng(seed, &spec.name);
            let skip = start % 2;
            rng.set_word_pos(4 * (start / 2) as u128);
            standard_normals(&mut rng, len + skip)
                .into_iter()
                .skip(skip)
                .map(|z| (z * std) as f32)
                .collect()
        }
        TensorKind::Norm => vec![1.0; len],
        TensorKind::Bias | TensorKind::CenteredNorm => vec![0.0; len],
        TensorKind::LogDecayRate => {
            // transformers: A = uniform(0.01, 16), stored as ln(A) (lower bound away from 0
            // so that ln(A) stays finite). One u64, two words, per element.
            let mut rng = tensor_rng(seed, &spec.name);
            rng.set_word_pos(2 * start as u128);
            (0..len)
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

    /// A block drawn on its own, from any element, equals that slice of the whole tensor's
    /// draw: the seek lands on the right Box–Muller pair, odd starts included.
    #[test]
    fn seeked_blocks_equal_the_whole_draw() {
        use crate::config::TensorSpec;
        for kind in [TensorKind::Matrix, TensorKind::LogDecayRate] {
            let spec = TensorSpec {
                name: "model.layers.0.x".into(),
                shape: vec![3, 1001],
                kind,
            };
            let whole = draw_range(&spec, 9, 0.02, 0, 3003);
            for (start, len) in [(0, 1), (1, 1), (2, 7), (7, 100), (1000, 2003), (3002, 1)] {
                assert_eq!(
                    draw_range(&spec, 9, 0.02, start, len),
                    whole[start..start + len],
                    "{kind:?} {start}+{len}"
                );
            }
        }
    }

    /// Half-precision models get the f32 draw rounded as candle's `to_dtype` rounds it, and a
    /// tensor of several blocks is the same as one drawn whole.
    #[test]
    fn half_precision_and_multi_block_tensors_equal_the_f32_draw_converted() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/hf-golden/qwen3-tiny/config.json"
        );
        let mut config = ModelConfig::from_file(std::path::Path::new(path)).unwrap();
        // A vocabulary whose embedding spans three blocks.
        config.vocab_size = (2 * BLOCK + 12_345) / config.hidden_size + 1;
        let spec = config
            .tensor_specs()
            .into_iter()
            .find(|s| s.name == "model.embed_tokens.weight")
            .unwrap();
        let n: usize = spec.shape.iter().product();
        assert!(n > 2 * BLOCK);
        let values = |t: &Tensor| -> Vec<f32> {
            t.to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let f32s = init_tensors(&config, 3, DType::F32, &Device::Cpu).unwrap();
        let whole = draw_range(&spec, 3, config.initializer_range, 0, n);
        assert!(
            values(&f32s[&spec.name]) == whole,
            "the blocked embedding differs from one whole draw"
        );
        for dtype in [DType::BF16, DType::F16] {
            let half = init_tensors(&config, 3, dtype, &Device::Cpu).unwrap();
            for (name, t) in &half {
                assert_eq!(t.dtype(), dtype);
                let want = f32s[name].to_dtype(dtype).unwrap();
                assert!(values(t) == values(&want), "{dtype:?} {name}");
            }
        }
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
