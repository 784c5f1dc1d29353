//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use koth_model::{ModelConfig, Tensor, TokenIds};

pub const FAMILIES: [&str; 4] = ["llama-tiny", "qwen2-tiny", "qwen3-tiny", "qwen3moe-tiny"];

/// The Qwen3.5 hybrids of the golden set (scripts/fixtures/make_qwen35_golden.py).
pub const HYBRIDS: [&str; 2] = ["qwen35-tiny", "qwen35moe-tiny"];

/// The golden checkpoints made with transformers (see fixtures/hf-golden/README.md).
pub fn golden_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/hf-golden")
        .join(name)
}

pub struct Expected {
    pub ids: TokenIds,
    /// [B, T-1] row-major.
    pub nll: Vec<f64>,
    pub loss: f64,
}

pub fn expected(name: &str) -> Expected {
    let t = koth_model::weights::read_safetensors(&golden_dir(name).join("expected.safetensors"))
        .unwrap();
    let ids_t = &t["input_ids"];
    let (b, s) = ids_t.dims2().unwrap();
    let ids: Vec<u32> = ids_t
        .flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|x| x as u32)
        .collect();
    Expected {
        ids: TokenIds::new(ids, b, s).unwrap(),
        nll: t["nll"].flatten_all().unwrap().to_vec1::<f64>().unwrap(),
        loss: t["loss"].flatten_all().unwrap().to_vec1::<f64>().unwrap()[0],
    }
}

/// Each row's mean NLL through the scoring path equals transformers' `seq_loss` within 2e-5.
pub fn assert_sequence_losses_match(name: &str) {
    let model = koth_model::Model::load(
        &golden_dir(name),
        koth_model::DType::F32,
        &koth_model::Device::Cpu,
    )
    .unwrap();
    let exp = expected(name);
    let t = koth_model::weights::read_safetensors(&golden_dir(name).join("expected.safetensors"))
        .unwrap();
    let golden = t["seq_loss"].to_vec1::<f64>().unwrap();
    let ours = model.sequence_losses(&exp.ids).unwrap();
    assert_eq!(ours.len(), golden.len());
    for (a, b) in ours.iter().zip(&golden) {
        assert!((*a as f64 - b).abs() <= 2e-5, "{name}: seq loss {a} vs {b}");
    }
}

pub fn flat_f32(t: &Tensor) -> Vec<f32> {
    t.to_dtype(koth_model::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// ‖a − b‖ / ‖b‖.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-300)).sqrt()
}

/// A tiny llama / qwen2 / qwen3 / qwen3_moe config (hidden 32, 4 heads of 8, 2 kv heads; qwen2
/// ties its head; qwen3_moe has `experts` experts, top-2).
pub fn tiny_config_of(
    model_type: &str,
    vocab: usize,
    layers: usize,
    experts: usize,
) -> ModelConfig {
    let mut v = serde_json::json!({
        "model_type": model_type,
        "vocab_size": vocab,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": model_type == "qwen2",
    });
    if model_type == "qwen3_moe" {
        v["num_experts"] = experts.into();
        v["num_experts_per_tok"] = 2.into();
        v["moe_intermediate_size"] = 16.into();
        v["norm_topk_prob"] = true.into();
    }
    ModelConfig::from_json(&v.to_string(), "tiny").unwrap()
}
