//! The Qwen3.5 hybrid families beyond the golden numbers: what config.json koth accepts and
//! refuses, the tensor set (a Qwen3.5-9B-Base shape, the multimodal wrapper's layout, MTP
//! tensors), initialisation and gradients from init (training: tests/train_qwen35.rs).
#![recursion_limit = "256"]

mod common;

use std::collections::HashMap;

use common::*;
use koth_model::{DType, Device, Family, MixerKind, Model, ModelConfig, Tensor, TokenIds};
use serde_json::{json, Value};

/// Shaped like Qwen3.5-9B-Base's config.json: the multimodal wrapper with the text model in
/// `text_config` (the numbers of issue 20: 32 layers as 8 × (3 DeltaNet + 1 attention), DeltaNet
/// 32 value / 16 key heads of 128, conv width 4, attention 16 / 4 heads of 256 rotating 64 dims,
/// FFN 12,288, vocabulary 248,320, one MTP layer).
fn qwen35_9b_base() -> Value {
    let layer_types: Vec<&str> = (0..32)
        .map(|i| {
            if (i + 1) % 4 == 0 {
                "full_attention"
            } else {
                "linear_attention"
            }
        })
        .collect();
    json!({
        "architectures": ["Qwen3_5ForConditionalGeneration"],
        "model_type": "qwen3_5",
        "language_model_only": false,
        "image_token_id": 248056,
        "video_token_id": 248057,
        "vision_start_token_id": 248053,
        "vision_end_token_id": 248054,
        "tie_word_embeddings": false,
        "transformers_version": "4.57.0.dev0",
        "text_config": {
            "model_type": "qwen3_5_text",
            "attention_bias": false,
            "attention_dropout": 0.0,
            "attn_output_gate": true,
            "bos_token_id": 248044,
            "dtype": "bfloat16",
            "eos_token_id": 248044,
            "full_attention_interval": 4,
            "head_dim": 256,
            "hidden_act": "silu",
            "hidden_size": 4096,
            "initializer_range": 0.02,
            "intermediate_size": 12288,
            "layer_types": layer_types,
            "linear_conv_kernel_dim": 4,
            "linear_key_head_dim": 128,
            "linear_num_key_heads": 16,
            "linear_num_value_heads": 32,
            "linear_value_head_dim": 128,
            "mamba_ssm_dtype": "float32",
            "max_position_embeddings": 262144,
            "mtp_num_hidden_layers": 1,
            "mtp_use_dedicated_embeddings": false,
            "num_attention_heads": 16,
            "num_hidden_layers": 32,
            "num_key_value_heads": 4,
            "rms_norm_eps": 1e-6,
            "use_cache": true,
            "vocab_size": 248320,
            "rope_parameters": {
                "mrope_interleaved": true,
                "mrope_section": [11, 11, 10],
                "rope_type": "default",
                "rope_theta": 10000000,
                "partial_rotary_factor": 0.25
            }
        },
        "vision_config": {"model_type": "qwen3_5", "depth": 27, "hidden_size": 1152}
    })
}

fn parse(v: &Value) -> Result<ModelConfig, String> {
    ModelConfig::from_json(&v.to_string(), "C.json").map_err(|e| e.to_string())
}

fn golden_text_config() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(golden_dir("qwen35-tiny").join("config.json")).unwrap(),
    )
    .unwrap()
}

#[test]
fn a_qwen35_9b_base_config_parses_with_its_real_shape() {
    let c = parse(&qwen35_9b_base()).unwrap();
    assert_eq!(c.family, Family::Qwen35);
    assert_eq!(c.family.to_string(), "qwen3_5");
    let h = c.hybrid.as_ref().unwrap();
    assert_eq!(h.rotary_dim, 64);
    assert_eq!(h.prefix, "model.language_model");
    let full: Vec<usize> = (0..32)
        .filter(|&i| h.layer_types[i] == MixerKind::FullAttention)
        .collect();
    assert_eq!(full, [3, 7, 11, 15, 19, 23, 27, 31]);
    assert_eq!(h.linear.conv_dim(), 2 * 16 * 128 + 32 * 128);
    assert_eq!(c.rope_theta, 1e7);

    // The exact parameter count, from the shapes of the issue.
    let (hid, v, ffn) = (4096u64, 248_320u64, 12_288u64);
    let conv_dim = 2 * 16 * 128 + 32 * 128;
    let deltanet = hid * conv_dim + 2 * hid * 4096 + 2 * hid * 32 + conv_dim * 4 + 2 * 32 + 128;
    let attention = hid * (2 * 16 * 256) + 2 * hid * (4 * 256) + 16 * 256 * hid + 2 * 256;
    let per_layer = 3 * hid * ffn + 2 * hid;
    let want = 2 * v * hid + hid + 24 * (deltanet + per_layer) + 8 * (attention + per_layer);
    assert_eq!(c.parameter_count(), want);
    assert!((8.9e9..9.0e9).contains(&(want as f64)), "{want}");

    let specs = c.tensor_specs();
    assert!(specs
        .iter()
        .all(|s| s.name == "lm_head.weight" || s.name.starts_with("model.language_model.")));
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"model.language_model.layers.0.linear_attn.A_log"));
    assert!(names.contains(&"model.language_model.layers.3.self_attn.q_norm.weight"));
    let q = specs
        .iter()
        .find(|s| s.name == "model.language_model.layers.3.self_attn.q_proj.weight")
        .unwrap();
    assert_eq!(q.shape, [2 * 16 * 256, 4096], "query and output gate");
    let conv = specs
        .iter()
        .find(|s| s.name == "model.language_model.layers.0.linear_attn.conv1d.weight")
        .unwrap();
    assert_eq!(conv.shape, [8192, 1, 4]);
    // Zero-centred gains act as 1 + w (what a scale check must compare); the DeltaNet's gated
    // norm is a plain gain.
    for s in &specs {
        let centred = s.name.ends_with("layernorm.weight")
            || s.name.ends_with("q_norm.weight")
            || s.name.ends_with("k_norm.weight")
            || s.name == "model.language_model.norm.weight";
        assert_eq!(
            s.kind.effective_offset(),
            if centred { 1.0 } else { 0.0 },
            "{}",
            s.name
        );
    }
    // Neither the MTP head nor the vision tower is part of the tensor set.
    assert!(!names
        .iter()
        .any(|n| n.starts_with("mtp.") || n.contains("visual")));
}

/// A change to a config document.
type ConfigEdit = Box<dyn Fn(&mut Value)>;

#[test]
fn refusals_name_the_key() {
    let cases: Vec<(&str, ConfigEdit, &str)> = vec![
        (
            "an unknown key",
            Box::new(|v| v["text_config"]["sliding_window"] = json!(4096)),
            "sliding_window",
        ),
        (
            "an unknown wrapper key",
            Box::new(|v| v["auto_map"] = json!({"AutoModel": "x.Y"})),
            "auto_map",
        ),
        (
            "attn_output_gate false",
            Box::new(|v| v["text_config"]["attn_output_gate"] = json!(false)),
            "attn_output_gate",
        ),
        (
            "a third layer type",
            Box::new(|v| v["text_config"]["layer_types"][5] = json!("sliding_attention")),
            "layer_types",
        ),
        (
            "layer_types of the wrong length",
            Box::new(|v| v["text_config"]["num_hidden_layers"] = json!(28)),
            "layer_types",
        ),
        (
            "full_attention_interval disagreeing with layer_types",
            Box::new(|v| v["text_config"]["full_attention_interval"] = json!(2)),
            "full_attention_interval",
        ),
        (
            "a hidden size over the cap (checked before any allocation)",
            Box::new(|v| v["text_config"]["hidden_size"] = json!(1u64 << 40)),
            "hidden_size",
        ),
        (
            "vocabulary × hidden over the parameter cap",
            Box::new(|v| {
                v["text_config"]["hidden_size"] = json!(1 << 18);
                v["text_config"]["vocab_size"] = json!(1 << 22);
            }),
            "parameters exceed",
        ),
        (
            "value heads not a multiple of key heads",
            Box::new(|v| v["text_config"]["linear_num_key_heads"] = json!(12)),
            "linear_num_key_heads",
        ),
        (
            "RoPE scaling",
            Box::new(|v| v["text_config"]["rope_parameters"]["rope_type"] = json!("yarn")),
            "yarn",
        ),
        (
            "an odd rotated width",
            Box::new(|v| {
                v["text_config"]["rope_parameters"]["partial_rotary_factor"] = json!(0.2);
            }),
            "partial_rotary_factor",
        ),
        (
            "mrope sections not tiling the rotated half",
            Box::new(|v| v["text_config"]["rope_parameters"]["mrope_section"] = json!([11, 11])),
            "mrope_section",
        ),
        (
            "a wrapper without text_config",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("text_config");
            }),
            "text_config",
        ),
        (
            "a MoE text model under the dense wrapper",
            Box::new(|v| v["text_config"]["model_type"] = json!("qwen3_5_moe_text")),
            "text_config.model_type",
        ),
        (
            "attention dropout",
            Box::new(|v| v["text_config"]["attention_dropout"] = json!(0.1)),
            "attention_dropout",
        ),
        (
            "an activation other than silu",
            Box::new(|v| v["text_config"]["hidden_act"] = json!("gelu")),
            "hidden_act",
        ),
    ];
    for (what, edit, needle) in cases {
        let mut v = qwen35_9b_base();
        edit(&mut v);
        let err = parse(&v).expect_err(what);
        assert!(err.contains(needle), "{what}: {err}");
        assert!(err.contains("C.json"), "{what}: {err}");
    }
}

#[test]
fn moe_refusals_and_defaults() {
    let base: Value = serde_json::from_str(
        &std::fs::read_to_string(golden_dir("qwen35moe-tiny").join("config.json")).unwrap(),
    )
    .unwrap();
    let c = parse(&base).unwrap();
    assert_eq!(c.family, Family::Qwen35Moe);
    let m = c.moe.as_ref().unwrap();
    assert!(m.norm_topk_prob && (0..4).all(|i| c.is_sparse_layer(i)));
    for (key, value) in [
        ("norm_topk_prob", json!(false)),
        ("decoder_sparse_step", json!(2)),
        ("mlp_only_layers", json!([1])),
        ("num_experts_per_tok", json!(9)),
    ] {
        let mut v = base.clone();
        v[key] = value;
        let err = parse(&v).expect_err(key);
        assert!(err.contains(key), "{key}: {err}");
    }
    // The keys transformers' MoE config lacks but older configs carry, with the one value that
    // computes the same, are accepted.
    let mut v = base.clone();
    v["norm_topk_prob"] = json!(true);
    v["decoder_sparse_step"] = json!(1);
    v["mlp_only_layers"] = json!([]);
    parse(&v).unwrap();
    // The shared expert is required.
    let mut v = base;
    v.as_object_mut()
        .unwrap()
        .remove("shared_expert_intermediate_size");
    assert!(parse(&v)
        .unwrap_err()
        .contains("shared_expert_intermediate_size"));
}

#[test]
fn defaults_follow_transformers() {
    // No layer_types: every 4th layer is full attention (full_attention_interval's default);
    // no partial_rotary_factor: 0.25.
    let mut v = golden_text_config();
    let o = v.as_object_mut().unwrap();
    o.remove("layer_types");
    o.remove("partial_rotary_factor");
    o["rope_parameters"]
        .as_object_mut()
        .unwrap()
        .remove("partial_rotary_factor");
    o.insert("num_hidden_layers".into(), json!(8));
    let c = parse(&v).unwrap();
    let h = c.hybrid.as_ref().unwrap();
    let full: Vec<usize> = (0..8)
        .filter(|&i| h.layer_types[i] == MixerKind::FullAttention)
        .collect();
    assert_eq!(full, [3, 7]);
    assert_eq!(h.rotary_dim, 8);
    v["full_attention_interval"] = json!(2);
    let c = parse(&v).unwrap();
    let full = c
        .hybrid
        .unwrap()
        .layer_types
        .iter()
        .filter(|t| **t == MixerKind::FullAttention)
        .count();
    assert_eq!(full, 4);
    // Two factors that disagree are refused.
    let mut v = golden_text_config();
    v["partial_rotary_factor"] = json!(0.5);
    assert!(parse(&v).unwrap_err().contains("partial_rotary_factor"));
}

fn golden_tensors(name: &str) -> HashMap<String, Tensor> {
    koth_model::weights::read_safetensors(&golden_dir(name).join("model.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn the_wrapper_layout_scores_exactly_like_the_text_layout() {
    let text = Model::load(&golden_dir("qwen35-tiny"), DType::F32, &Device::Cpu).unwrap();
    let exp = expected("qwen35-tiny");
    let mut inner = golden_text_config();
    inner.as_object_mut().unwrap().remove("tie_word_embeddings");
    let wrapper = json!({
        "model_type": "qwen3_5",
        "text_config": inner,
        "vision_config": {"depth": 1},
        "tie_word_embeddings": false,
    });
    let config = parse(&wrapper).unwrap();
    let renamed: HashMap<String, Tensor> = golden_tensors("qwen35-tiny")
        .into_iter()
        .map(|(k, t)| {
            let k = match k.strip_prefix("model.") {
                Some(rest) => format!("model.language_model.{rest}"),
                None => k,
            };
            (k, t)
        })
        .collect();
    let wrapped = Model::from_tensors(config, renamed).unwrap();
    assert_eq!(
        flat_f32(&wrapped.nll(&exp.ids).unwrap()),
        flat_f32(&text.nll(&exp.ids).unwrap())
    );
    // Saved and loaded back, the wrapper keeps its layout.
    let dir = tempfile::tempdir().unwrap();
    wrapped.save(dir.path()).unwrap();
    let again = Model::load(dir.path(), DType::F32, &Device::Cpu).unwrap();
    assert!(again
        .named_tensors()
        .iter()
        .all(|(n, _)| n == "lm_head.weight" || n.starts_with("model.language_model.")));
}

#[test]
fn mtp_and_vision_tensors_are_refused_by_name() {
    let config = parse(&golden_text_config()).unwrap();
    for extra in ["mtp.fc.weight", "model.visual.patch_embed.proj.weight"] {
        let mut tensors = golden_tensors("qwen35-tiny");
        tensors.insert(
            extra.into(),
            Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
        );
        let err = Model::from_tensors(config.clone(), tensors)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(&format!("unexpected tensor `{extra}`")),
            "{err}"
        );
    }
    let mut tensors = golden_tensors("qwen35-tiny");
    tensors.remove("model.layers.0.linear_attn.A_log");
    let err = Model::from_tensors(config, tensors)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("missing tensor `model.layers.0.linear_attn.A_log`"),
        "{err}"
    );
}

fn tiny(moe: bool) -> ModelConfig {
    let mut v = json!({
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
    parse(&v).unwrap()
}

fn pattern(rows: usize, cols: usize) -> TokenIds {
    let cycle = [3u32, 17, 42, 8, 29, 55, 1, 60];
    let ids = (0..rows * cols)
        .map(|i| cycle[(i % cols + i / cols) % cycle.len()])
        .collect();
    TokenIds::new(ids, rows, cols).unwrap()
}

#[test]
fn init_follows_transformers_and_every_parameter_gets_a_gradient() {
    for moe in [false, true] {
        let config = tiny(moe);
        let model = Model::init(&config, 1, DType::F32, &Device::Cpu).unwrap();
        for (name, t) in model.named_tensors() {
            let v = flat_f32(&t);
            if name.ends_with("layernorm.weight")
                || name.ends_with("q_norm.weight")
                || name.ends_with("k_norm.weight")
                || name == "model.norm.weight"
            {
                assert!(
                    v.iter().all(|&x| x == 0.0),
                    "`{name}`: 1 + w norms start at 0"
                );
            }
            if name.ends_with("linear_attn.norm.weight") || name.ends_with("dt_bias") {
                assert!(v.iter().all(|&x| x == 1.0), "`{name}`");
            }
            if name.ends_with("A_log") {
                let lo = 0.01f32.ln();
                let hi = 16f32.ln();
                assert!(v.iter().all(|&x| (lo..=hi).contains(&x)), "`{name}`: {v:?}");
                assert!(v.windows(2).any(|w| w[0] != w[1]), "`{name}` is constant");
            }
        }
        let (loss, grads) = model.loss_and_grads(&pattern(4, 16)).unwrap();
        assert!((loss - 64f32.ln()).abs() < 0.1, "initial loss {loss}");
        let spec_names: Vec<String> = config.tensor_specs().into_iter().map(|s| s.name).collect();
        assert_eq!(
            grads.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
            spec_names
        );
        for (name, g) in grads {
            let v = flat_f32(&g);
            assert!(
                v.iter().all(|x| x.is_finite()) && v.iter().any(|x| *x != 0.0),
                "moe {moe}: `{name}` has no finite non-zero gradient"
            );
        }
    }
}
