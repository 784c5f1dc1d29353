//! The training path: seeded initialisation and AdamW actually learning.

mod common;

use common::*;
use koth_model::{AdamWConfig, DType, Device, Model, ModelConfig, TokenIds, Trainer};

fn tiny_config(model_type: &str) -> ModelConfig {
    tiny_config_of(model_type, 64, 2, 4)
}

fn pattern(rows: usize, cols: usize) -> TokenIds {
    let cycle = [3u32, 17, 42, 8, 29, 55, 1, 60];
    let ids = (0..rows * cols)
        .map(|i| cycle[(i % cols + i / cols) % cycle.len()])
        .collect();
    TokenIds::new(ids, rows, cols).unwrap()
}

#[test]
fn init_is_seeded_and_deterministic() {
    let c = tiny_config("qwen3");
    let a = Model::init(&c, 7, DType::F32, &Device::Cpu).unwrap();
    let b = Model::init(&c, 7, DType::F32, &Device::Cpu).unwrap();
    let other = Model::init(&c, 8, DType::F32, &Device::Cpu).unwrap();
    let (ta, tb, to) = (a.named_tensors(), b.named_tensors(), other.named_tensors());
    for ((name, x), ((_, y), (_, z))) in ta.iter().zip(tb.iter().zip(&to)) {
        assert_eq!(flat_f32(x), flat_f32(y), "`{name}` differs for one seed");
        if name.ends_with("proj.weight") {
            assert_ne!(flat_f32(x), flat_f32(z), "`{name}` ignores the seed");
            let v = flat_f32(x);
            let std = (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
            assert!((std - 0.02).abs() < 0.004, "`{name}` std {std}");
        }
        if name.ends_with("norm.weight") {
            assert!(flat_f32(x).iter().all(|&v| v == 1.0));
        }
    }
    // A golden value pins the stream across machines and versions.
    let first = flat_f32(&ta[0].1)[0];
    assert_eq!(first.to_bits(), PINNED_FIRST_VALUE, "first value {first:e}");
}

/// The bits of model.embed_tokens.weight[0, 0] of `tiny_config("qwen3")` at seed 7
/// (-2.7574977e-2). Changing the initialisation stream changes every fresh model: bump the
/// domain tag in init.rs and this value together, deliberately.
const PINNED_FIRST_VALUE: u32 = 3168920811;

/// `tiny_config(model_type)` with some keys replaced.
fn tiny_config_with(model_type: &str, extra: serde_json::Value) -> ModelConfig {
    let mut v: serde_json::Value =
        serde_json::from_str(&tiny_config(model_type).to_json_string()).unwrap();
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    ModelConfig::from_json(&v.to_string(), "tiny").unwrap()
}

#[test]
fn every_parameter_of_every_family_gets_a_gradient_from_init() {
    use serde_json::json;
    let cases = [
        ("llama", tiny_config("llama")),
        ("qwen2", tiny_config("qwen2")),
        ("qwen3", tiny_config("qwen3")),
        ("qwen3_moe", tiny_config("qwen3_moe")),
        // The options the golden set does not cover (tests/options.rs checks their values).
        (
            "llama with attention_bias and mlp_bias",
            tiny_config_with("llama", json!({"attention_bias": true, "mlp_bias": true})),
        ),
        (
            "qwen3 with attention_bias",
            tiny_config_with("qwen3", json!({"attention_bias": true})),
        ),
        (
            "qwen3_moe with raw top-k weights",
            tiny_config_with("qwen3_moe", json!({"norm_topk_prob": false})),
        ),
        (
            "qwen3_moe with decoder_sparse_step 2 and mlp_only_layers [3]",
            tiny_config_with(
                "qwen3_moe",
                json!({"num_hidden_layers": 4, "decoder_sparse_step": 2, "mlp_only_layers": [3]}),
            ),
        ),
    ];
    for (label, config) in cases {
        let model = Model::init(&config, 1, DType::F32, &Device::Cpu).unwrap();
        let (loss, grads) = model.loss_and_grads(&pattern(4, 16)).unwrap();
        assert!(
            (loss - (64f32).ln()).abs() < 0.1,
            "{label}: initial loss {loss}"
        );
        let names: Vec<String> = model.named_tensors().into_iter().map(|(n, _)| n).collect();
        let spec_names: Vec<String> = config.tensor_specs().into_iter().map(|s| s.name).collect();
        assert_eq!(names, spec_names, "{label}");
        assert_eq!(
            grads.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
            names,
            "{label}: one gradient per parameter"
        );
        for (name, g) in grads {
            let v = flat_f32(&g);
            assert!(
                v.iter().all(|x| x.is_finite()) && v.iter().any(|x| *x != 0.0),
                "{label}: `{name}` has no finite non-zero gradient"
            );
        }
    }
}

#[test]
fn adamw_halves_the_loss_on_a_repeating_pattern() {
    for family in ["llama", "qwen2", "qwen3", "qwen3_moe"] {
        let model = Model::init(&tiny_config(family), 3, DType::F32, &Device::Cpu).unwrap();
        let mut trainer = Trainer::new(&model, AdamWConfig::default()).unwrap();
        let ids = pattern(4, 16);
        let first = trainer.step(&ids, 3e-3).unwrap();
        let mut last = first;
        for _ in 1..200 {
            last = trainer.step(&ids, 3e-3).unwrap();
        }
        let after = trainer
            .model()
            .loss(&ids)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            after <= first.loss / 2.0,
            "{family}: loss {} → {after} (last step {last:?})",
            first.loss
        );
        assert_eq!(trainer.steps(), 200);
    }
}

#[test]
fn bf16_training_keeps_f32_master_weights() {
    let model = Model::init(&tiny_config("llama"), 5, DType::BF16, &Device::Cpu).unwrap();
    let mut trainer = Trainer::new(&model, AdamWConfig::default()).unwrap();
    let ids = pattern(2, 16);
    let first = trainer.step(&ids, 3e-3).unwrap();
    for _ in 0..30 {
        trainer.step(&ids, 3e-3).unwrap();
    }
    let after = trainer
        .model()
        .loss(&ids)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        after < first.loss * 0.9,
        "bf16 loss {} → {after}",
        first.loss
    );
    assert_eq!(trainer.model().dtype(), DType::BF16);
}

/// A 2-layer Qwen3.5 hybrid (one gated DeltaNet, one gated attention layer), dense or MoE.
fn tiny_qwen35(moe: bool) -> ModelConfig {
    let mut v = serde_json::json!({
        "model_type": if moe { "qwen3_5_moe_text" } else { "qwen3_5_text" },
        "vocab_size": 64,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "layer_types": ["linear_attention", "full_attention"],
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "partial_rotary_factor": 0.25,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "linear_key_head_dim": 8,
        "linear_value_head_dim": 8,
        "linear_conv_kernel_dim": 4,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "hidden_act": "silu",
        "tie_word_embeddings": false,
    });
    if moe {
        v["num_experts"] = 4.into();
        v["num_experts_per_tok"] = 2.into();
        v["moe_intermediate_size"] = 16.into();
        v["shared_expert_intermediate_size"] = 16.into();
    } else {
        v["intermediate_size"] = 64.into();
    }
    ModelConfig::from_json(&v.to_string(), "tiny").unwrap()
}

#[test]
fn qwen35_adamw_halves_the_loss_and_the_trained_model_round_trips() {
    for moe in [false, true] {
        let model = Model::init(&tiny_qwen35(moe), 3, DType::F32, &Device::Cpu).unwrap();
        let mut trainer = Trainer::new(&model, AdamWConfig::default()).unwrap();
        let ids = pattern(4, 16);
        let first = trainer.step(&ids, 3e-3).unwrap();
        for _ in 1..150 {
            trainer.step(&ids, 3e-3).unwrap();
        }
        let trained = trainer.model().clone();
        let after = trained.loss(&ids).unwrap().to_scalar::<f32>().unwrap();
        assert!(
            after <= first.loss / 2.0,
            "moe {moe}: loss {} → {after}",
            first.loss
        );
        let dir = tempfile::tempdir().unwrap();
        trained.save(dir.path()).unwrap();
        let loaded = Model::load(dir.path(), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            flat_f32(&loaded.nll(&ids).unwrap()),
            flat_f32(&trained.nll(&ids).unwrap())
        );
        let info = koth_model::inspect(dir.path()).unwrap();
        assert_eq!(info.family, if moe { "qwen3_5_moe" } else { "qwen3_5" });
    }
}
