//! `cargo bench -p koth-model --bench init`: drawing a fresh bf16 model's random weights on the
//! host (`init::init_tensors`, what `koth bench` and `koth model init` do before anything runs),
//! beside the way it was done until 2026-12-05: one thread per tensor in waves of `threads`
//! tensors, each tensor's f32 values converted to bf16 on the calling thread afterwards. The
//! shape is one Qwen3-30B-A3B layer (128 experts) with a 32k vocabulary, about 0.7B parameters.

use koth_model::{DType, Device, ModelConfig, Tensor};
use rand_chacha::rand_core::SeedableRng;

mod common;
use common::time;

/// The former loop: the same Box–Muller draws per tensor, a wave of whole tensors at a time,
/// conversion to bf16 on this thread.
fn per_tensor(config: &ModelConfig, threads: usize) -> usize {
    let specs = config.tensor_specs();
    let mut made = 0;
    for group in specs.chunks(threads) {
        let drawn: Vec<Vec<f32>> = std::thread::scope(|scope| {
            let handles: Vec<_> = group
                .iter()
                .enumerate()
                .map(|(i, spec)| {
                    scope.spawn(move || {
                        let n: usize = spec.shape.iter().product();
                        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(i as u64);
                        koth_model::init::standard_normals(&mut rng, n)
                            .into_iter()
                            .map(|z| (z * 0.02) as f32)
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (spec, values) in group.iter().zip(drawn) {
            let t = Tensor::from_vec(values, spec.shape.as_slice(), &Device::Cpu)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap();
            made += t.elem_count();
        }
    }
    made
}

fn main() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/bench/qwen3-30b-a3b.json"
    );
    let mut raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    raw["num_hidden_layers"] = 1.into();
    raw["vocab_size"] = 32_000.into();
    let config = ModelConfig::from_json(&raw.to_string(), "qwen3-30b-a3b, 1 layer").unwrap();
    let params = config.parameter_count();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 16);
    let before = time(3, || {
        std::hint::black_box(per_tensor(&config, threads));
    });
    let after = time(3, || {
        std::hint::black_box(
            koth_model::init::init_tensors(&config, 1, DType::BF16, &Device::Cpu).unwrap(),
        );
    });
    println!(
        "random bf16 init of {:.2}B parameters ({threads} threads): per-tensor waves {:.2} s \
         ({:.0} M params/s), seeked blocks {:.2} s ({:.0} M params/s), {:.2}x",
        params as f64 / 1e9,
        before,
        params as f64 / before / 1e6,
        after,
        params as f64 / after / 1e6,
        before / after
    );
}
