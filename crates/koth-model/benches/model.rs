//! `cargo bench -p koth-model`: scoring throughput (fused and composite paths) and training-step
//! throughput of a small qwen3-shaped model, and of a small qwen3_moe, on the CPU (or on the
//! device named by KOTH_BENCH_DEVICE, e.g. `cuda`, with KOTH_BENCH_DTYPE=bf16).

mod common;
use common::time;

use koth_model::{AdamWConfig, Model, ModelConfig, OpPath, ScoreOptions, TokenIds, Trainer};

fn config(moe: bool) -> ModelConfig {
    let mut v = serde_json::json!({
        "model_type": if moe { "qwen3_moe" } else { "qwen3" },
        "vocab_size": 8192,
        "hidden_size": 256,
        "intermediate_size": 768,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 32,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1e6,
        "tie_word_embeddings": true,
    });
    if moe {
        v["num_experts"] = 8.into();
        v["num_experts_per_tok"] = 2.into();
        v["moe_intermediate_size"] = 192.into();
        v["norm_topk_prob"] = true.into();
    }
    ModelConfig::from_json(&v.to_string(), "bench").expect("bench config")
}

fn ids(rows: usize, cols: usize, vocab: u32) -> TokenIds {
    let v = (0..rows * cols)
        .map(|i| ((i as u64 * 2654435761) % vocab as u64) as u32)
        .collect();
    TokenIds::new(v, rows, cols).expect("ids")
}

fn main() {
    let device = koth_model::parse_device(
        &std::env::var("KOTH_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into()),
    )
    .expect("KOTH_BENCH_DEVICE");
    let dtype = koth_model::parse_dtype(
        &std::env::var("KOTH_BENCH_DTYPE").unwrap_or_else(|_| "f32".into()),
    )
    .expect("KOTH_BENCH_DTYPE");
    let (rows, cols) = (4, 256);
    let tokens = (rows * cols) as f64;
    println!("device {device:?}, dtype {dtype:?}, batch [{rows}, {cols}]");
    for moe in [false, true] {
        let cfg = config(moe);
        let model = Model::init(&cfg, 0, dtype, &device).expect("init");
        let batch = ids(rows, cols, cfg.vocab_size as u32);
        let name = format!("{} ({} params)", cfg.family, cfg.parameter_count());
        for path in [OpPath::Fused, OpPath::Composite] {
            let s = time(5, || {
                let n = model
                    .nll_with(&batch, path, ScoreOptions::default())
                    .expect("nll");
                n.sum_all()
                    .expect("sum")
                    .to_dtype(koth_model::DType::F32)
                    .expect("f32")
                    .to_scalar::<f32>()
                    .expect("sync");
            });
            println!(
                "{name}: score {path:?}: {:.0} tokens/s ({:.1} ms/batch)",
                tokens / s,
                s * 1e3
            );
        }
        let mut trainer = Trainer::new(&model, AdamWConfig::default()).expect("trainer");
        let s = time(3, || {
            trainer.step(&batch, 1e-3).expect("step");
        });
        println!(
            "{name}: train step (AdamW): {:.0} tokens/s ({:.1} ms/step)",
            tokens / s,
            s * 1e3
        );
    }
}
