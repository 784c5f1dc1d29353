//! Config options that the golden set (made with transformers' defaults) does not exercise:
//! raw top-k router weights (`norm_topk_prob: false`), `decoder_sparse_step` and
//! `mlp_only_layers`, and the attention (`attention_bias`) and MLP (`mlp_bias`) biases.
//!
//! The reference is a plain f64 forward pass written here, from config.json's keys and
//! transformers' rules, with none of the model's code (no candle ops): loops over rows. It is first
//! checked against the transformers golden set, so it computes what transformers computes; then,
//! for each option, a tiny model with the option set must match it on both paths, the option must
//! move the output far beyond the tolerance (so a model that ignored it fails), and gradients of
//! the parameters the option governs must match central differences of the reference.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::*;
use koth_model::{DType, Device, Model, ModelConfig, OpPath, ScoreOptions, Tensor, TokenIds};
use serde_json::{json, Value};

/// Parameters by name: shape and values in f64.
type Weights = HashMap<String, (Vec<usize>, Vec<f64>)>;

fn weights_of(model: &Model) -> Weights {
    model
        .named_tensors()
        .into_iter()
        .map(|(name, t)| {
            let v = flat_f32(&t).into_iter().map(f64::from).collect();
            (name, (t.dims().to_vec(), v))
        })
        .collect()
}

fn model_of(config: &Value, weights: &Weights) -> Model {
    let config = ModelConfig::from_json(&config.to_string(), "options").unwrap();
    let tensors = weights
        .iter()
        .map(|(name, (shape, v))| {
            let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            let t = Tensor::from_vec(v, shape.as_slice(), &Device::Cpu).unwrap();
            (name.clone(), t)
        })
        .collect();
    Model::from_tensors(config, tensors).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The f64 reference.

fn size(cfg: &Value, key: &str) -> usize {
    cfg[key]
        .as_u64()
        .unwrap_or_else(|| panic!("reference: config `{key}` is not an integer")) as usize
}

fn flag(cfg: &Value, key: &str) -> bool {
    cfg.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn rope_theta(cfg: &Value) -> f64 {
    cfg.get("rope_theta")
        .and_then(Value::as_f64)
        .or_else(|| cfg["rope_parameters"]["rope_theta"].as_f64())
        .expect("reference: rope_theta")
}

/// `y = x W^T + b` for `x` [n, din], `W` [dout, din].
fn linear(x: &[f64], din: usize, w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let dout = w.len() / din;
    let n = x.len() / din;
    let mut y = vec![0.0; n * dout];
    for r in 0..n {
        for o in 0..dout {
            let mut s = b.map_or(0.0, |b| b[o]);
            for i in 0..din {
                s += x[r * din + i] * w[o * din + i];
            }
            y[r * dout + o] = s;
        }
    }
    y
}

fn rms_norm(x: &[f64], gain: &[f64], eps: f64) -> Vec<f64> {
    let d = gain.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(d) {
        let ms = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        out.extend(row.iter().zip(gain).map(|(v, g)| v * inv * g));
    }
    out
}

fn silu(v: f64) -> f64 {
    v / (1.0 + (-v).exp())
}

fn softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

struct Reference<'a> {
    cfg: &'a Value,
    w: &'a Weights,
}

impl Reference<'_> {
    fn t(&self, name: &str) -> &[f64] {
        &self
            .w
            .get(name)
            .unwrap_or_else(|| panic!("reference needs tensor `{name}`"))
            .1
    }

    /// A bias the config says exists (its absence is a test failure, not a zero).
    fn bias(&self, name: &str, present: bool) -> Option<&[f64]> {
        present.then(|| self.t(name))
    }

    /// SwiGLU with optional biases on all three projections.
    fn mlp(&self, prefix: &str, x: &[f64], bias: bool) -> Vec<f64> {
        let hidden = size(self.cfg, "hidden_size");
        let gate = linear(
            x,
            hidden,
            self.t(&format!("{prefix}.gate_proj.weight")),
            self.bias(&format!("{prefix}.gate_proj.bias"), bias),
        );
        let up = linear(
            x,
            hidden,
            self.t(&format!("{prefix}.up_proj.weight")),
            self.bias(&format!("{prefix}.up_proj.bias"), bias),
        );
        let inner = gate.len() / (x.len() / hidden);
        let act: Vec<f64> = gate.iter().zip(&up).map(|(g, u)| silu(*g) * u).collect();
        linear(
            &act,
            inner,
            self.t(&format!("{prefix}.down_proj.weight")),
            self.bias(&format!("{prefix}.down_proj.bias"), bias),
        )
    }

    /// transformers' Qwen3MoeSparseMoeBlock: softmax over all experts, top-k (ties to the lower
    /// index), renormalised only when `norm_topk_prob`, weighted sum of the chosen experts.
    fn moe(&self, prefix: &str, x: &[f64]) -> Vec<f64> {
        let cfg = self.cfg;
        let hidden = size(cfg, "hidden_size");
        let experts = cfg
            .get("num_experts")
            .or_else(|| cfg.get("num_local_experts"))
            .and_then(Value::as_u64)
            .expect("reference: num_experts") as usize;
        let k = size(cfg, "num_experts_per_tok");
        let logits = linear(x, hidden, self.t(&format!("{prefix}.gate.weight")), None);
        let mut out = vec![0.0; x.len()];
        for (row, xr) in x.chunks(hidden).enumerate() {
            let p = softmax(&logits[row * experts..(row + 1) * experts]);
            let mut order: Vec<usize> = (0..experts).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            let chosen = &order[..k];
            let total: f64 = chosen.iter().map(|&e| p[e]).sum();
            for &e in chosen {
                let weight = if flag(cfg, "norm_topk_prob") {
                    p[e] / total
                } else {
                    p[e]
                };
                let y = self.mlp(&format!("{prefix}.experts.{e}"), xr, false);
                for (o, v) in out[row * hidden..(row + 1) * hidden].iter_mut().zip(y) {
                    *o += weight * v;
                }
            }
        }
        out
    }

    /// transformers' rule (Qwen3MoeDecoderLayer): sparse unless listed in `mlp_only_layers`,
    /// and only every `decoder_sparse_step`-th layer (1-based).
    fn is_sparse(&self, layer: usize) -> bool {
        let cfg = self.cfg;
        if cfg["model_type"] != "qwen3_moe" {
            return false;
        }
        let step = cfg
            .get("decoder_sparse_step")
            .and_then(Value::as_u64)
            .unwrap_or(1) as usize;
        let mlp_only: Vec<u64> = cfg
            .get("mlp_only_layers")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        !mlp_only.contains(&(layer as u64)) && (layer + 1).is_multiple_of(step)
    }

    /// Per-position next-token NLL of one sequence, [T-1].
    fn sequence_nll(&self, ids: &[u32]) -> Vec<f64> {
        let cfg = self.cfg;
        let ty = cfg["model_type"].as_str().expect("reference: model_type");
        let hidden = size(cfg, "hidden_size");
        let nh = size(cfg, "num_attention_heads");
        let nkv = size(cfg, "num_key_value_heads");
        // Llama and qwen2 default head_dim to hidden / heads.
        let hd = match cfg.get("head_dim") {
            Some(Value::Null) | None => hidden / nh,
            Some(_) => size(cfg, "head_dim"),
        };
        let eps = cfg["rms_norm_eps"]
            .as_f64()
            .expect("reference: rms_norm_eps");
        let theta = rope_theta(cfg);
        let attention_bias = flag(cfg, "attention_bias");
        let (qkv_bias, o_bias) = match ty {
            "qwen2" => (true, false),
            _ => (attention_bias, attention_bias),
        };
        let mlp_bias = ty == "llama" && flag(cfg, "mlp_bias");
        let qk_norm = matches!(ty, "qwen3" | "qwen3_moe");
        let t_len = ids.len();

        let embed = self.t("model.embed_tokens.weight");
        let mut x: Vec<f64> = ids
            .iter()
            .flat_map(|&id| embed[id as usize * hidden..(id as usize + 1) * hidden].to_vec())
            .collect();
        let half = hd / 2;
        // transformers computes the rotary angles in f32 whatever the model dtype (inv_freq is
        // an f32 buffer and the position product runs in f32), then cos and sin in f32.
        let rope = |v: &mut [f64], pos: usize| {
            for i in 0..half {
                let inv_freq = (1.0 / theta.powf((2 * i) as f64 / hd as f64)) as f32;
                let angle = pos as f32 * inv_freq;
                let (cos, sin) = (f64::from(angle.cos()), f64::from(angle.sin()));
                let (a, b) = (v[i], v[i + half]);
                v[i] = a * cos - b * sin;
                v[i + half] = b * cos + a * sin;
            }
        };
        for layer in 0..size(cfg, "num_hidden_layers") {
            let p = format!("model.layers.{layer}");
            let a = format!("{p}.self_attn");
            let h = rms_norm(&x, self.t(&format!("{p}.input_layernorm.weight")), eps);
            let proj = |name: &str| {
                linear(
                    &h,
                    hidden,
                    self.t(&format!("{a}.{name}.weight")),
                    self.bias(&format!("{a}.{name}.bias"), qkv_bias),
                )
            };
            let (mut q, mut k, v) = (proj("q_proj"), proj("k_proj"), proj("v_proj"));
            if qk_norm {
                q = rms_norm(&q, self.t(&format!("{a}.q_norm.weight")), eps);
                k = rms_norm(&k, self.t(&format!("{a}.k_norm.weight")), eps);
            }
            for (pos, row) in q.chunks_mut(nh * hd).enumerate() {
                row.chunks_mut(hd).for_each(|head| rope(head, pos));
            }
            for (pos, row) in k.chunks_mut(nkv * hd).enumerate() {
                row.chunks_mut(hd).for_each(|head| rope(head, pos));
            }
            let mut att = vec![0.0; t_len * nh * hd];
            for head in 0..nh {
                let kvh = head / (nh / nkv);
                for t in 0..t_len {
                    let qv = &q[(t * nh + head) * hd..(t * nh + head + 1) * hd];
                    let scores: Vec<f64> = (0..=t)
                        .map(|u| {
                            let kv = &k[(u * nkv + kvh) * hd..(u * nkv + kvh + 1) * hd];
                            qv.iter().zip(kv).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt()
                        })
                        .collect();
                    for (u, pr) in softmax(&scores).into_iter().enumerate() {
                        for d in 0..hd {
                            att[(t * nh + head) * hd + d] += pr * v[(u * nkv + kvh) * hd + d];
                        }
                    }
                }
            }
            let o = linear(
                &att,
                nh * hd,
                self.t(&format!("{a}.o_proj.weight")),
                self.bias(&format!("{a}.o_proj.bias"), o_bias),
            );
            x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);
            let h = rms_norm(
                &x,
                self.t(&format!("{p}.post_attention_layernorm.weight")),
                eps,
            );
            let m = if self.is_sparse(layer) {
                self.moe(&format!("{p}.mlp"), &h)
            } else {
                self.mlp(&format!("{p}.mlp"), &h, mlp_bias)
            };
            x.iter_mut().zip(&m).for_each(|(x, m)| *x += m);
        }
        let x = rms_norm(&x, self.t("model.norm.weight"), eps);
        let head = if flag(cfg, "tie_word_embeddings") {
            embed
        } else {
            self.t("lm_head.weight")
        };
        let logits = linear(&x, hidden, head, None);
        let vocab = size(cfg, "vocab_size");
        (0..t_len - 1)
            .map(|t| {
                let row = &logits[t * vocab..(t + 1) * vocab];
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                lse - row[ids[t + 1] as usize]
            })
            .collect()
    }

    /// [B, T-1] row-major.
    fn nll(&self, ids: &TokenIds) -> Vec<f64> {
        ids.as_slice()
            .chunks(ids.cols())
            .flat_map(|row| self.sequence_nll(row))
            .collect()
    }

    fn loss(&self, ids: &TokenIds) -> f64 {
        let v = self.nll(ids);
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn reference_nll(cfg: &Value, w: &Weights, ids: &TokenIds) -> Vec<f64> {
    Reference { cfg, w }.nll(ids)
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn model_nll(model: &Model, ids: &TokenIds, path: OpPath) -> Vec<f64> {
    let t = model.nll_with(ids, path, ScoreOptions::default()).unwrap();
    flat_f32(&t).into_iter().map(f64::from).collect()
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

/// Largest |ours − reference| allowed on a per-token NLL (f32 model, f64 reference).
const TOL: f64 = 1e-5;
/// An option must move some per-token NLL by at least this much, so ignoring it cannot pass.
const MOVES: f64 = 100.0 * TOL;

fn tiny(model_type: &str, extra: Value) -> Value {
    let mut v = json!({
        "model_type": model_type,
        "vocab_size": 64,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": false,
        // Larger than transformers' 0.02 so that every sub-layer moves the output well beyond
        // the tolerance.
        "initializer_range": 0.1,
    });
    if model_type == "qwen3_moe" {
        v["num_experts"] = 4.into();
        v["num_experts_per_tok"] = 2.into();
        v["moe_intermediate_size"] = 24.into();
    }
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

fn ids() -> TokenIds {
    let ids = (0..3 * 12).map(|i| ((i * 37 + 11) % 64) as u32).collect();
    TokenIds::new(ids, 3, 12).unwrap()
}

/// Deterministic, clearly non-zero values for the biases (fresh models have zero biases).
fn randomize_biases(w: &mut Weights) {
    for (name, (_, v)) in w.iter_mut() {
        if name.ends_with(".bias") {
            let salt = name.bytes().map(f64::from).sum::<f64>() * 0.013;
            for (i, x) in v.iter_mut().enumerate() {
                *x = 0.4 * ((i as f64 * 0.618_034 + salt).fract() - 0.5);
            }
        }
    }
}

/// Both paths within TOL of the reference, and of each other.
fn assert_matches_reference(label: &str, cfg: &Value, w: &Weights, ids: &TokenIds) -> Vec<f64> {
    let model = model_of(cfg, w);
    let reference = reference_nll(cfg, w, ids);
    let fused = model_nll(&model, ids, OpPath::Fused);
    let composite = model_nll(&model, ids, OpPath::Composite);
    let (df, dc, dp) = (
        max_abs_diff(&fused, &reference),
        max_abs_diff(&composite, &reference),
        max_abs_diff(&fused, &composite),
    );
    assert!(
        df <= TOL && dc <= TOL && dp <= TOL,
        "{label}: max |fused - ref| {df:e}, |composite - ref| {dc:e}, |fused - composite| {dp:e}"
    );
    reference
}

fn names(w: &Weights) -> BTreeSet<String> {
    w.keys().cloned().collect()
}

/// d(mean NLL)/d(w[name][i]) of the model (f32 autograd) against a central difference of the
/// f64 reference, for a few elements of each tensor named.
fn assert_gradients_match_reference(label: &str, cfg: &Value, w: &Weights, tensors: &[String]) {
    let ids = ids();
    let model = model_of(cfg, w);
    let (_, grads) = model.loss_and_grads(&ids).unwrap();
    let grads: HashMap<String, Vec<f32>> =
        grads.into_iter().map(|(n, g)| (n, flat_f32(&g))).collect();
    let h = 1e-5;
    for name in tensors {
        let len = w[name].1.len();
        for i in [0, len / 3, len - 1] {
            let mut plus = w.clone();
            plus.get_mut(name).unwrap().1[i] += h;
            let mut minus = w.clone();
            minus.get_mut(name).unwrap().1[i] -= h;
            let fd = (Reference { cfg, w: &plus }.loss(&ids)
                - Reference { cfg, w: &minus }.loss(&ids))
                / (2.0 * h);
            let ours = grads[name][i] as f64;
            assert!(
                (ours - fd).abs() <= 1e-4 * fd.abs().max(1e-2),
                "{label}: d loss / d {name}[{i}]: autograd {ours:e}, reference {fd:e}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn reference_computes_what_transformers_computes() {
    for name in FAMILIES {
        let dir = golden_dir(name);
        let cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let model = Model::load(&dir, DType::F32, &Device::Cpu).unwrap();
        let exp = expected(name);
        let ours = reference_nll(&cfg, &weights_of(&model), &exp.ids);
        let worst = max_abs_diff(&ours, &exp.nll);
        // Not 0: transformers rounds RMSNorm and the softmaxes to f32 even in its f64 run, and
        // the MoE golden is f32 (fixtures/hf-golden/README.md). Seen: 3e-7 to 1.3e-6.
        assert!(worst <= 2e-6, "{name}: reference vs transformers {worst:e}");
    }
}

#[test]
fn raw_top_k_weights_are_not_renormalised() {
    let ids = ids();
    // Absent `norm_topk_prob` means false (transformers' Qwen3MoeConfig default), as does false.
    for raw in [
        tiny("qwen3_moe", json!({})),
        tiny("qwen3_moe", json!({"norm_topk_prob": false})),
    ] {
        let c = ModelConfig::from_json(&raw.to_string(), "raw").unwrap();
        assert!(!c.moe.as_ref().unwrap().norm_topk_prob);
        let w = weights_of(&Model::init(&c, 11, DType::F32, &Device::Cpu).unwrap());
        let mut normed = raw.clone();
        normed["norm_topk_prob"] = true.into();
        // Same tensors, one flag: both must match the reference, and differ from each other.
        let a = assert_matches_reference("raw top-k", &raw, &w, &ids);
        let b = assert_matches_reference("normalised top-k", &normed, &w, &ids);
        let moved = max_abs_diff(&a, &b);
        assert!(
            moved >= MOVES,
            "norm_topk_prob moves the NLL only {moved:e}"
        );
        // Our model's two settings differ in the same way the reference's do.
        let ours_a = model_nll(&model_of(&raw, &w), &ids, OpPath::Fused);
        let ours_b = model_nll(&model_of(&normed, &w), &ids, OpPath::Fused);
        assert!(max_abs_diff(&ours_a, &ours_b) >= MOVES);
    }
}

#[test]
fn decoder_sparse_step_and_mlp_only_layers_choose_the_sparse_layers() {
    let ids = ids();
    // 4 layers, every 2nd sparse (layers 1 and 3), but layer 3 forced dense: only layer 1 is.
    let cfg = tiny(
        "qwen3_moe",
        json!({"num_hidden_layers": 4, "decoder_sparse_step": 2, "mlp_only_layers": [3],
               "norm_topk_prob": true}),
    );
    let c = ModelConfig::from_json(&cfg.to_string(), "sparse").unwrap();
    let w = weights_of(&Model::init(&c, 5, DType::F32, &Device::Cpu).unwrap());
    for layer in 0..4 {
        let router = format!("model.layers.{layer}.mlp.gate.weight");
        let dense = format!("model.layers.{layer}.mlp.gate_proj.weight");
        let sparse = layer == 1;
        assert_eq!(w.contains_key(&router), sparse, "layer {layer}: router");
        assert_eq!(w.contains_key(&dense), !sparse, "layer {layer}: dense MLP");
        if !sparse {
            assert_eq!(w[&dense].0, [48, 32], "layer {layer}: dense MLP shape");
        }
    }
    assert_matches_reference("sparse step 2, mlp_only [3]", &cfg, &w, &ids);

    // Without mlp_only_layers, layer 3 becomes sparse: the tensor set changes exactly there.
    let mut no_only = cfg.clone();
    no_only.as_object_mut().unwrap().remove("mlp_only_layers");
    let c2 = ModelConfig::from_json(&no_only.to_string(), "no mlp_only").unwrap();
    let w2 = weights_of(&Model::init(&c2, 5, DType::F32, &Device::Cpu).unwrap());
    let changed: BTreeSet<String> = names(&w)
        .symmetric_difference(&names(&w2))
        .cloned()
        .collect();
    assert!(
        !changed.is_empty() && changed.iter().all(|n| n.starts_with("model.layers.3.mlp.")),
        "{changed:?}"
    );
    assert_matches_reference("sparse step 2", &no_only, &w2, &ids);

    // Each layer's feed-forward block, dense or sparse, is in the forward pass: zeroing its
    // output projection(s) moves the NLL.
    let model = model_nll(&model_of(&cfg, &w), &ids, OpPath::Fused);
    for layer in 0..4 {
        let prefix = format!("model.layers.{layer}.mlp.");
        let mut zeroed = w.clone();
        for (name, (_, v)) in zeroed.iter_mut() {
            if name.starts_with(&prefix) && name.ends_with("down_proj.weight") {
                v.iter_mut().for_each(|x| *x = 0.0);
            }
        }
        let moved = max_abs_diff(
            &model,
            &model_nll(&model_of(&cfg, &zeroed), &ids, OpPath::Fused),
        );
        assert!(
            moved >= MOVES,
            "layer {layer}'s MLP moves the NLL only {moved:e}"
        );
    }

    // decoder_sparse_step 1 with mlp_only_layers [0]: layer 0 dense, layer 1 sparse.
    let cfg3 = tiny(
        "qwen3_moe",
        json!({"decoder_sparse_step": 1, "mlp_only_layers": [0]}),
    );
    let c3 = ModelConfig::from_json(&cfg3.to_string(), "only 0").unwrap();
    let w3 = weights_of(&Model::init(&c3, 5, DType::F32, &Device::Cpu).unwrap());
    assert!(w3.contains_key("model.layers.0.mlp.gate_proj.weight"));
    assert!(w3.contains_key("model.layers.1.mlp.experts.3.down_proj.weight"));
    assert_matches_reference("mlp_only [0]", &cfg3, &w3, &ids);

    assert_gradients_match_reference(
        "sparse step 2, mlp_only [3]",
        &cfg,
        &w,
        &[
            "model.layers.1.mlp.gate.weight".into(),
            "model.layers.1.mlp.experts.2.up_proj.weight".into(),
            "model.layers.3.mlp.down_proj.weight".into(),
        ],
    );
}

#[test]
fn raw_top_k_gradients_match_the_reference() {
    let cfg = tiny("qwen3_moe", json!({"norm_topk_prob": false}));
    let c = ModelConfig::from_json(&cfg.to_string(), "raw").unwrap();
    let w = weights_of(&Model::init(&c, 11, DType::F32, &Device::Cpu).unwrap());
    assert_gradients_match_reference(
        "raw top-k",
        &cfg,
        &w,
        &[
            "model.layers.0.mlp.gate.weight".into(),
            "model.layers.1.mlp.gate.weight".into(),
            "model.layers.1.mlp.experts.0.gate_proj.weight".into(),
        ],
    );
}

#[test]
fn attention_and_mlp_biases_are_applied() {
    let ids = ids();
    for (label, cfg, groups) in [
        (
            "llama attention_bias + mlp_bias",
            tiny("llama", json!({"attention_bias": true, "mlp_bias": true})),
            vec![
                "self_attn.q_proj.bias",
                "self_attn.k_proj.bias",
                "self_attn.v_proj.bias",
                "self_attn.o_proj.bias",
                "mlp.gate_proj.bias",
                "mlp.up_proj.bias",
                "mlp.down_proj.bias",
            ],
        ),
        (
            "llama mlp_bias only",
            tiny("llama", json!({"mlp_bias": true})),
            vec![
                "mlp.gate_proj.bias",
                "mlp.up_proj.bias",
                "mlp.down_proj.bias",
            ],
        ),
        (
            "qwen3 attention_bias",
            tiny("qwen3", json!({"attention_bias": true})),
            vec![
                "self_attn.q_proj.bias",
                "self_attn.k_proj.bias",
                "self_attn.v_proj.bias",
                "self_attn.o_proj.bias",
            ],
        ),
    ] {
        let c = ModelConfig::from_json(&cfg.to_string(), label).unwrap();
        let mut w = weights_of(&Model::init(&c, 3, DType::F32, &Device::Cpu).unwrap());
        // Exactly the biases the options imply, in every layer.
        let biases: BTreeSet<String> = w.keys().filter(|n| n.ends_with(".bias")).cloned().collect();
        let expected: BTreeSet<String> = (0..2)
            .flat_map(|l| groups.iter().map(move |g| format!("model.layers.{l}.{g}")))
            .collect();
        assert_eq!(biases, expected, "{label}");
        randomize_biases(&mut w);
        let with = assert_matches_reference(label, &cfg, &w, &ids);

        // The same weights without biases (options off) match the reference too, and differ.
        let mut off = cfg.clone();
        off["attention_bias"] = false.into();
        off["mlp_bias"] = false.into();
        let mut bare = w.clone();
        bare.retain(|n, _| !n.ends_with(".bias"));
        let without = assert_matches_reference(&format!("{label}, off"), &off, &bare, &ids);
        assert!(max_abs_diff(&with, &without) >= MOVES, "{label}");

        // Each bias on its own moves the output: zeroing one group changes our model's NLL.
        let model_with = model_nll(&model_of(&cfg, &w), &ids, OpPath::Fused);
        for g in &groups {
            let mut zeroed = w.clone();
            for (n, (_, v)) in zeroed.iter_mut() {
                if n.ends_with(g) {
                    v.iter_mut().for_each(|x| *x = 0.0);
                }
            }
            let moved = max_abs_diff(
                &model_with,
                &model_nll(&model_of(&cfg, &zeroed), &ids, OpPath::Fused),
            );
            assert!(
                moved >= MOVES,
                "{label}: `{g}` moves the NLL only {moved:e}"
            );
        }

        let grad_of: Vec<String> = groups
            .iter()
            .map(|g| format!("model.layers.1.{g}"))
            .collect();
        assert_gradients_match_reference(label, &cfg, &w, &grad_of);
    }
}
