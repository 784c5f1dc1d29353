//! The Qwen3.5 hybrid families (`qwen3_5`, `qwen3_5_moe`): gated DeltaNet layers and gated
//! softmax-attention layers, as transformers implements them (`modeling_qwen3_5.py`,
//! `modeling_qwen3_5_moe.py`, the same blocks as `qwen3_next`).
//!
//! Two config.json shapes are read:
//! - the text model, `model_type` `qwen3_5_text` / `qwen3_5_moe_text`, which is what
//!   `Qwen3_5ForCausalLM.save_pretrained` writes; tensors `model.*` and `lm_head.weight`;
//! - the multimodal wrapper, `model_type` `qwen3_5` / `qwen3_5_moe`, with the text model under
//!   `text_config` (a Qwen3.5-9B-Base config.json); its text tensors are
//!   `model.language_model.*` and `lm_head.weight`.
//!
//! Unlike the dense families, every key is checked: a key this module does not know is refused
//! (a config.json whose meaning koth cannot vouch for is never scored). Sizes are capped before
//! anything is allocated. What is refused on purpose: the vision tower's tensors and the MTP
//! heads' tensors (`model.visual.*`, `mtp.*`: transformers' causal LM drops both on load; the
//! MTP *keys* are accepted and ignored, the loss never uses them), an `attn_output_gate` of
//! false (transformers' Qwen3.5 attention is always gated), RoPE scaling, and layer types other
//! than `linear_attention` / `full_attention`.

use serde_json::{Map, Value};

use super::{rope_theta, Family, Fields, ModelConfig, MoeConfig, TensorKind, TensorSpec};
use crate::error::{ModelError, Result};

/// Caps checked before any allocation: a config.json is untrusted input.
pub(crate) const MAX_VOCAB: usize = 1 << 22;
pub(crate) const MAX_WIDTH: usize = 1 << 18;
pub(crate) const MAX_LAYERS: usize = 1024;
pub(crate) const MAX_HEADS: usize = 1024;
pub(crate) const MAX_HEAD_DIM: usize = 4096;
pub(crate) const MAX_EXPERTS: usize = 4096;
const MAX_CONV_KERNEL: usize = 64;
/// 2^38 parameters (about 275 billion).
pub(crate) const MAX_PARAMETERS: u128 = 1 << 38;

/// The token mixer of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MixerKind {
    /// Gated DeltaNet (`linear_attn.*`).
    LinearAttention,
    /// Gated softmax attention (`self_attn.*`).
    FullAttention,
}

/// Shapes of the gated DeltaNet layers (the `linear_*` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearAttentionConfig {
    pub num_key_heads: usize,
    pub num_value_heads: usize,
    pub key_head_dim: usize,
    pub value_head_dim: usize,
    /// Width of the short causal depthwise convolution over q, k and v.
    pub conv_kernel: usize,
}

impl LinearAttentionConfig {
    pub fn key_dim(&self) -> usize {
        self.num_key_heads * self.key_head_dim
    }
    pub fn value_dim(&self) -> usize {
        self.num_value_heads * self.value_head_dim
    }
    /// Channels of `in_proj_qkv` and of the convolution: q, k and v side by side.
    pub fn conv_dim(&self) -> usize {
        2 * self.key_dim() + self.value_dim()
    }
}

/// What the hybrid families add to [`ModelConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct HybridConfig {
    /// One entry per layer.
    pub layer_types: Vec<MixerKind>,
    pub linear: LinearAttentionConfig,
    /// Leading dims of each attention head that are rotated (`head_dim * partial_rotary_factor`).
    pub rotary_dim: usize,
    /// qwen3_5_moe: width of the always-on shared expert (gated by a sigmoid).
    pub shared_expert_intermediate_size: Option<usize>,
    /// Name prefix of the text model's tensors: `model` (text config) or
    /// `model.language_model` (multimodal wrapper).
    pub prefix: String,
}

/// Keys of a text config that may appear and carry no computation koth must reproduce
/// (metadata, generation and inference settings, training-only extras, the MTP heads).
const INERT_KEYS: &[&str] = &[
    "architectures",
    "transformers_version",
    "dtype",
    "torch_dtype",
    "_name_or_path",
    "use_cache",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "max_position_embeddings",
    "initializer_range",
    "mamba_ssm_dtype",
    "mtp_num_hidden_layers",
    "mtp_use_dedicated_embeddings",
    "output_router_logits",
    "router_aux_loss_coef",
];

/// Keys of a text config that decide the computation; each is validated below.
const MODEL_KEYS: &[&str] = &[
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "partial_rotary_factor",
    "attention_bias",
    "attention_dropout",
    "attn_output_gate",
    "tie_word_embeddings",
    "layer_types",
    "full_attention_interval",
    "linear_conv_kernel_dim",
    "linear_key_head_dim",
    "linear_value_head_dim",
    "linear_num_key_heads",
    "linear_num_value_heads",
];

const MOE_KEYS: &[&str] = &[
    "num_experts",
    "num_experts_per_tok",
    "moe_intermediate_size",
    "shared_expert_intermediate_size",
    "norm_topk_prob",
    "decoder_sparse_step",
    "mlp_only_layers",
];

/// Keys of the multimodal wrapper besides `text_config`.
const WRAPPER_KEYS: &[&str] = &[
    "model_type",
    "text_config",
    "vision_config",
    "image_token_id",
    "video_token_id",
    "vision_start_token_id",
    "vision_end_token_id",
    // Whether transformers builds the vision tower at all; koth never does.
    "language_model_only",
    "tie_word_embeddings",
    "architectures",
    "transformers_version",
    "dtype",
    "torch_dtype",
    "_name_or_path",
    "use_cache",
];

/// The `model_type`s of the hybrid families: (text model, wrapper) for dense and MoE.
pub(crate) fn family_of(model_type: &str) -> Option<(Family, bool)> {
    Some(match model_type {
        "qwen3_5_text" => (Family::Qwen35, false),
        "qwen3_5" => (Family::Qwen35, true),
        "qwen3_5_moe_text" => (Family::Qwen35Moe, false),
        "qwen3_5_moe" => (Family::Qwen35Moe, true),
        _ => return None,
    })
}

fn refuse_unknown(f: &Fields<'_>, allowed: &[&[&str]]) -> Result<()> {
    let mut unknown: Vec<&str> = f
        .map
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.iter().any(|list| list.contains(k)))
        .collect();
    unknown.sort_unstable();
    match unknown.first() {
        None => Ok(()),
        Some(first) => Err(f.err(
            first,
            format!(
                "is not a key koth knows for this family (unknown: {}); refusing rather than \
                 guessing what it changes",
                unknown.join(", ")
            ),
        )),
    }
}

pub(super) fn capped(f: &Fields<'_>, field: &str, value: usize, cap: usize) -> Result<usize> {
    if value > cap {
        return Err(f.err(field, format!("{value} exceeds koth's cap of {cap}")));
    }
    Ok(value)
}

pub(super) fn required_capped(f: &Fields<'_>, field: &str, cap: usize) -> Result<usize> {
    let v = f.required_size(field)?;
    capped(f, field, v, cap)
}

/// Parse a hybrid-family config.json (`model_type` already read).
pub(crate) fn parse(
    raw: Map<String, Value>,
    source: &str,
    model_type: &str,
) -> Result<ModelConfig> {
    let Some((family, wrapper)) = family_of(model_type) else {
        return Err(ModelError::Config {
            source_name: source.to_owned(),
            field: "model_type".into(),
            reason: format!("`{model_type}` is not a Qwen3.5 hybrid family"),
        });
    };
    if !wrapper {
        return parse_text(raw.clone(), &raw, source, family, "model", None);
    }
    let top = Fields { source, map: &raw };
    refuse_unknown(&top, &[WRAPPER_KEYS])?;
    let text = match top.get("text_config") {
        Some(Value::Object(m)) => m.clone(),
        Some(v) => return Err(top.err("text_config", format!("must be an object, found {v}"))),
        None => {
            return Err(top.err(
                "text_config",
                "is required: koth reads the text model's shape from it",
            ))
        }
    };
    if let Some(v) = top.get("vision_config") {
        if !v.is_object() {
            return Err(top.err("vision_config", format!("must be an object, found {v}")));
        }
    }
    let expected_text_type = match family {
        Family::Qwen35Moe => "qwen3_5_moe_text",
        _ => "qwen3_5_text",
    };
    let mut text = text;
    match text.get("model_type") {
        None | Some(Value::Null) => {
            text.insert("model_type".into(), Value::from(expected_text_type));
        }
        Some(Value::String(s)) if s == expected_text_type => {}
        Some(v) => {
            return Err(top.err(
                "text_config.model_type",
                format!(
                    "must be \"{expected_text_type}\" under a `{model_type}` wrapper, found {v}"
                ),
            ))
        }
    }
    let tie_top = top.bool_or("tie_word_embeddings", false)?;
    let text_source = format!("{source}: text_config");
    parse_text(
        raw.clone(),
        &text,
        &text_source,
        family,
        "model.language_model",
        top.get("tie_word_embeddings").map(|_| tie_top),
    )
}

/// The text model. `raw` is the whole document (kept for writing back); `text` the object the
/// text keys are read from (the document itself, or its `text_config`).
fn parse_text(
    raw: Map<String, Value>,
    text: &Map<String, Value>,
    source: &str,
    family: Family,
    prefix: &str,
    wrapper_tie: Option<bool>,
) -> Result<ModelConfig> {
    let f = Fields { source, map: text };
    let moe = family == Family::Qwen35Moe;
    if moe {
        refuse_unknown(&f, &[MODEL_KEYS, INERT_KEYS, MOE_KEYS])?;
    } else {
        refuse_unknown(&f, &[MODEL_KEYS, INERT_KEYS])?;
    }

    let vocab_size = required_capped(&f, "vocab_size", MAX_VOCAB)?;
    let hidden_size = required_capped(&f, "hidden_size", MAX_WIDTH)?;
    let intermediate_size = if moe {
        // Every qwen3_5_moe layer is sparse: a dense width, if given, is never used.
        match f.optional_size("intermediate_size")? {
            Some(v) => capped(&f, "intermediate_size", v, MAX_WIDTH)?,
            None => 0,
        }
    } else {
        required_capped(&f, "intermediate_size", MAX_WIDTH)?
    };
    let num_hidden_layers = required_capped(&f, "num_hidden_layers", MAX_LAYERS)?;
    let num_attention_heads = required_capped(&f, "num_attention_heads", MAX_HEADS)?;
    let num_key_value_heads = required_capped(&f, "num_key_value_heads", MAX_HEADS)?;
    if !num_attention_heads.is_multiple_of(num_key_value_heads) {
        return Err(f.err(
            "num_key_value_heads",
            format!(
                "{num_key_value_heads} does not divide num_attention_heads {num_attention_heads}"
            ),
        ));
    }
    // transformers' default (256) is the 9B's value, but defaults move between versions.
    let head_dim = required_capped(&f, "head_dim", MAX_HEAD_DIM)?;

    match f.get("hidden_act") {
        None => {}
        Some(Value::String(s)) if s == "silu" => {}
        Some(v) => {
            return Err(f.err(
                "hidden_act",
                format!("{v} is not supported (only \"silu\")"),
            ))
        }
    }
    let rms_norm_eps = match f.get("rms_norm_eps") {
        Some(v) => f.positive_float("rms_norm_eps", v)?,
        None => return Err(f.err("rms_norm_eps", "is required")),
    };
    let rope_theta = rope_theta(&f)?;
    let rotary_dim = rotary_dim(&f, head_dim)?;

    match f.get("attention_dropout") {
        None => {}
        Some(v) if v.as_f64() == Some(0.0) => {}
        Some(v) => {
            return Err(f.err(
                "attention_dropout",
                format!("{v} is not supported (koth trains without dropout; only 0)"),
            ))
        }
    }
    if !f.bool_or("attn_output_gate", true)? {
        return Err(f.err(
            "attn_output_gate",
            "false is not supported: transformers' Qwen3.5 attention always applies the sigmoid \
             output gate, so the key must be true or absent",
        ));
    }
    let attention_bias = f.bool_or("attention_bias", false)?;
    let tie_text = f.bool_or("tie_word_embeddings", false)?;
    let tie_word_embeddings = match wrapper_tie {
        Some(top) if f.get("tie_word_embeddings").is_some() && top != tie_text => {
            return Err(f.err(
                "tie_word_embeddings",
                format!("{tie_text} disagrees with the wrapper's tie_word_embeddings {top}"),
            ))
        }
        Some(top) => top,
        None => tie_text,
    };

    let layer_types = layer_types(&f, num_hidden_layers)?;
    let linear = LinearAttentionConfig {
        num_key_heads: required_capped(&f, "linear_num_key_heads", MAX_HEADS)?,
        num_value_heads: required_capped(&f, "linear_num_value_heads", MAX_HEADS)?,
        key_head_dim: required_capped(&f, "linear_key_head_dim", MAX_HEAD_DIM)?,
        value_head_dim: required_capped(&f, "linear_value_head_dim", MAX_HEAD_DIM)?,
        conv_kernel: required_capped(&f, "linear_conv_kernel_dim", MAX_CONV_KERNEL)?,
    };
    if !linear.num_value_heads.is_multiple_of(linear.num_key_heads) {
        return Err(f.err(
            "linear_num_key_heads",
            format!(
                "{} does not divide linear_num_value_heads {}",
                linear.num_key_heads, linear.num_value_heads
            ),
        ));
    }

    let (moe_config, shared_expert_intermediate_size) = if moe {
        let (m, shared) = moe_config(&f)?;
        (Some(m), Some(shared))
    } else {
        (None, None)
    };

    let initializer_range = match f.get("initializer_range") {
        None => 0.02,
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() && x >= 0.0 => x,
            _ => {
                return Err(f.err(
                    "initializer_range",
                    format!("must be a non-negative finite number, found {v}"),
                ))
            }
        },
    };
    if let Some(v) = f.get("mtp_num_hidden_layers") {
        f.non_negative_int("mtp_num_hidden_layers", v)?;
    }
    f.bool_or("mtp_use_dedicated_embeddings", false)?;

    let config = ModelConfig {
        family,
        vocab_size,
        hidden_size,
        intermediate_size,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps,
        rope_theta,
        tie_word_embeddings,
        qkv_bias: attention_bias,
        o_bias: attention_bias,
        mlp_bias: false,
        qk_norm: true,
        moe: moe_config,
        initializer_range,
        hybrid: Some(HybridConfig {
            layer_types,
            linear,
            rotary_dim,
            shared_expert_intermediate_size,
            prefix: prefix.to_owned(),
        }),
        raw,
    };
    let params = parameter_count_checked(&config);
    if params > MAX_PARAMETERS {
        return Err(f.err(
            "(sizes)",
            format!("{params} parameters exceed koth's cap of {MAX_PARAMETERS}"),
        ));
    }
    Ok(config)
}

/// `int(head_dim * partial_rotary_factor)` rotated dims, as transformers computes them. The
/// factor may sit at the top level (transformers 4) or in `rope_parameters` (transformers 5
/// writes both); the default is Qwen3.5's 0.25.
fn rotary_dim(f: &Fields<'_>, head_dim: usize) -> Result<usize> {
    let top = f
        .get("partial_rotary_factor")
        .map(|v| f.positive_float("partial_rotary_factor", v))
        .transpose()?;
    let rope_parameters = f.get("rope_parameters").and_then(Value::as_object);
    let nested = rope_parameters
        .and_then(|o| o.get("partial_rotary_factor").filter(|v| !v.is_null()))
        .map(|v| f.positive_float("rope_parameters.partial_rotary_factor", v))
        .transpose()?;
    let factor = match (top, nested) {
        (Some(a), Some(b)) if a != b => {
            return Err(f.err(
                "rope_parameters.partial_rotary_factor",
                format!("{b} disagrees with top-level partial_rotary_factor {a}"),
            ))
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => 0.25,
    };
    if factor > 1.0 {
        return Err(f.err(
            "partial_rotary_factor",
            format!("{factor} exceeds 1 (more rotated dims than the head has)"),
        ));
    }
    // Python's int() truncates toward zero.
    let dim = (head_dim as f64 * factor) as usize;
    if dim == 0 || !dim.is_multiple_of(2) {
        return Err(f.err(
            "partial_rotary_factor",
            format!("rotates {dim} of head_dim {head_dim} dims; koth needs a positive even count"),
        ));
    }
    if let Some(obj) = rope_parameters {
        for key in obj.keys() {
            if !matches!(
                key.as_str(),
                "rope_type"
                    | "type"
                    | "rope_theta"
                    | "partial_rotary_factor"
                    | "mrope_section"
                    | "mrope_interleaved"
            ) {
                return Err(f.err("rope_parameters", format!("key `{key}` is not supported")));
            }
        }
        // Multimodal RoPE: text tokens carry the same position on all three axes, so the
        // sections only regroup identical angles. Check they tile the rotated half exactly.
        if let Some(v) = obj.get("mrope_section").filter(|v| !v.is_null()) {
            let sum = v
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| x.as_u64().map(|n| n as usize))
                        .try_fold(0usize, |acc, x| x.and_then(|n| acc.checked_add(n)))
                })
                .unwrap_or(None);
            if sum != Some(dim / 2) {
                return Err(f.err(
                    "rope_parameters.mrope_section",
                    format!(
                        "{v} must be non-negative integers summing to rotary_dim / 2 = {}",
                        dim / 2
                    ),
                ));
            }
        }
        if let Some(v) = obj.get("mrope_interleaved").filter(|v| !v.is_null()) {
            if !v.is_boolean() {
                return Err(f.err(
                    "rope_parameters.mrope_interleaved",
                    format!("must be true or false, found {v}"),
                ));
            }
        }
    }
    Ok(dim)
}

/// `layer_types`, or transformers' default from `full_attention_interval` (every n-th layer is
/// full attention, n = 4 by default). When both are given they must agree.
fn layer_types(f: &Fields<'_>, num_hidden_layers: usize) -> Result<Vec<MixerKind>> {
    let interval = f.optional_size("full_attention_interval")?;
    let from_interval = |n: usize| -> Vec<MixerKind> {
        (0..num_hidden_layers)
            .map(|i| {
                if (i + 1).is_multiple_of(n) {
                    MixerKind::FullAttention
                } else {
                    MixerKind::LinearAttention
                }
            })
            .collect()
    };
    let Some(v) = f.get("layer_types") else {
        return Ok(from_interval(interval.unwrap_or(4)));
    };
    let list = v
        .as_array()
        .ok_or_else(|| f.err("layer_types", format!("must be a list, found {v}")))?;
    if list.len() != num_hidden_layers {
        return Err(f.err(
            "layer_types",
            format!(
                "has {} entries, num_hidden_layers is {num_hidden_layers}",
                list.len()
            ),
        ));
    }
    let types = list
        .iter()
        .enumerate()
        .map(|(i, t)| match t.as_str() {
            Some("linear_attention") => Ok(MixerKind::LinearAttention),
            Some("full_attention") => Ok(MixerKind::FullAttention),
            _ => Err(f.err(
                "layer_types",
                format!(
                    "entry {i} is {t}; only \"linear_attention\" and \"full_attention\" are \
                     supported"
                ),
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(n) = interval {
        if from_interval(n) != types {
            return Err(f.err(
                "full_attention_interval",
                format!("{n} disagrees with layer_types"),
            ));
        }
    }
    Ok(types)
}

/// qwen3_5_moe: every layer sparse, top-k weights always renormalised, one shared expert.
fn moe_config(f: &Fields<'_>) -> Result<(MoeConfig, usize)> {
    let num_experts = required_capped(f, "num_experts", MAX_EXPERTS)?;
    let num_experts_per_tok = f.required_size("num_experts_per_tok")?;
    if num_experts_per_tok > num_experts {
        return Err(f.err(
            "num_experts_per_tok",
            format!("{num_experts_per_tok} exceeds the number of experts {num_experts}"),
        ));
    }
    let moe_intermediate_size = required_capped(f, "moe_intermediate_size", MAX_WIDTH)?;
    let shared = required_capped(f, "shared_expert_intermediate_size", MAX_WIDTH)?;
    // transformers' Qwen3_5Moe router renormalises unconditionally and has no sparse-step or
    // dense-layer options: accept those keys only with the values that compute the same.
    if !f.bool_or("norm_topk_prob", true)? {
        return Err(f.err(
            "norm_topk_prob",
            "false is not supported: qwen3_5_moe always renormalises the top-k weights",
        ));
    }
    if let Some(step) = f.optional_size("decoder_sparse_step")? {
        if step != 1 {
            return Err(f.err(
                "decoder_sparse_step",
                format!("{step} is not supported: every qwen3_5_moe layer is sparse (only 1)"),
            ));
        }
    }
    match f.get("mlp_only_layers") {
        None => {}
        Some(Value::Array(a)) if a.is_empty() => {}
        Some(v) => {
            return Err(f.err(
                "mlp_only_layers",
                format!("{v} is not supported: every qwen3_5_moe layer is sparse (only [])"),
            ))
        }
    }
    Ok((
        MoeConfig {
            num_experts,
            num_experts_per_tok,
            moe_intermediate_size,
            norm_topk_prob: true,
            decoder_sparse_step: 1,
            mlp_only_layers: Vec::new(),
        },
        shared,
    ))
}

/// Parameter count in u128 straight from the sizes (no tensor list), for the cap.
fn parameter_count_checked(c: &ModelConfig) -> u128 {
    let Some(h) = &c.hybrid else { return 0 };
    let w = |x: usize| x as u128;
    let hidden = w(c.hidden_size);
    let l = &h.linear;
    let linear_layer = hidden * w(l.conv_dim())
        + hidden * w(l.value_dim()) * 2
        + hidden * w(l.num_value_heads) * 2
        + w(l.conv_dim()) * w(l.conv_kernel)
        + w(l.num_value_heads) * 2
        + w(l.value_head_dim);
    let q = w(c.num_attention_heads) * w(c.head_dim);
    let kv = w(c.num_key_value_heads) * w(c.head_dim);
    let full_layer = hidden * (2 * q + 2 * kv) + q * hidden + 2 * w(c.head_dim) + 2 * (q + kv);
    let ff = match (&c.moe, h.shared_expert_intermediate_size) {
        (Some(m), Some(s)) => {
            w(m.num_experts) * (3 * hidden * w(m.moe_intermediate_size) + hidden)
                + 3 * hidden * w(s)
                + hidden
        }
        _ => 3 * hidden * w(c.intermediate_size),
    };
    let layers: u128 = h
        .layer_types
        .iter()
        .map(|t| match t {
            MixerKind::LinearAttention => linear_layer,
            MixerKind::FullAttention => full_layer,
        } + ff
            + 2 * hidden)
        .sum();
    let head = if c.tie_word_embeddings { 1 } else { 2 };
    layers + head * w(c.vocab_size) * hidden + hidden
}

/// Every tensor of a hybrid checkpoint, in transformers' module order.
pub(crate) fn tensor_specs(c: &ModelConfig, h: &HybridConfig) -> Vec<TensorSpec> {
    let hidden = c.hidden_size;
    let hd = c.head_dim;
    let l = &h.linear;
    let root = &h.prefix;
    let mut specs = Vec::new();
    let mut push =
        |name: String, shape: Vec<usize>, kind| specs.push(TensorSpec { name, shape, kind });
    push(
        format!("{root}.embed_tokens.weight"),
        vec![c.vocab_size, hidden],
        TensorKind::Matrix,
    );
    for (i, kind) in h.layer_types.iter().enumerate() {
        let p = format!("{root}.layers.{i}");
        push(
            format!("{p}.input_layernorm.weight"),
            vec![hidden],
            TensorKind::CenteredNorm,
        );
        match kind {
            MixerKind::LinearAttention => {
                let a = format!("{p}.linear_attn");
                push(
                    format!("{a}.in_proj_qkv.weight"),
                    vec![l.conv_dim(), hidden],
                    TensorKind::Matrix,
                );
                push(
                    format!("{a}.in_proj_z.weight"),
                    vec![l.value_dim(), hidden],
                    TensorKind::Matrix,
                );
                push(
                    format!("{a}.in_proj_b.weight"),
                    vec![l.num_value_heads, hidden],
                    TensorKind::Matrix,
                );
                push(
                    format!("{a}.in_proj_a.weight"),
                    vec![l.num_value_heads, hidden],
                    TensorKind::Matrix,
                );
                push(
                    format!("{a}.conv1d.weight"),
                    vec![l.conv_dim(), 1, l.conv_kernel],
                    TensorKind::Matrix,
                );
                push(
                    format!("{a}.dt_bias"),
                    vec![l.num_value_heads],
                    TensorKind::Norm,
                );
                push(
                    format!("{a}.A_log"),
                    vec![l.num_value_heads],
                    TensorKind::LogDecayRate,
                );
                push(
                    format!("{a}.norm.weight"),
                    vec![l.value_head_dim],
                    TensorKind::Norm,
                );
                push(
                    format!("{a}.out_proj.weight"),
                    vec![hidden, l.value_dim()],
                    TensorKind::Matrix,
                );
            }
            MixerKind::FullAttention => {
                let a = format!("{p}.self_attn");
                let q_out = c.num_attention_heads * hd;
                let kv_out = c.num_key_value_heads * hd;
                // q_proj carries the query and the output gate, interleaved per head.
                for (proj, out) in [
                    ("q_proj", 2 * q_out),
                    ("k_proj", kv_out),
                    ("v_proj", kv_out),
                ] {
                    push(
                        format!("{a}.{proj}.weight"),
                        vec![out, hidden],
                        TensorKind::Matrix,
                    );
                    if c.qkv_bias {
                        push(format!("{a}.{proj}.bias"), vec![out], TensorKind::Bias);
                    }
                }
                push(
                    format!("{a}.o_proj.weight"),
                    vec![hidden, q_out],
                    TensorKind::Matrix,
                );
                if c.o_bias {
                    push(format!("{a}.o_proj.bias"), vec![hidden], TensorKind::Bias);
                }
                push(
                    format!("{a}.q_norm.weight"),
                    vec![hd],
                    TensorKind::CenteredNorm,
                );
                push(
                    format!("{a}.k_norm.weight"),
                    vec![hd],
                    TensorKind::CenteredNorm,
                );
            }
        }
        push(
            format!("{p}.post_attention_layernorm.weight"),
            vec![hidden],
            TensorKind::CenteredNorm,
        );
        let mlp =
            |prefix: String, width: usize, push: &mut dyn FnMut(String, Vec<usize>, TensorKind)| {
                push(
                    format!("{prefix}.gate_proj.weight"),
                    vec![width, hidden],
                    TensorKind::Matrix,
                );
                push(
                    format!("{prefix}.up_proj.weight"),
                    vec![width, hidden],
                    TensorKind::Matrix,
                );
                push(
                    format!("{prefix}.down_proj.weight"),
                    vec![hidden, width],
                    TensorKind::Matrix,
                );
            };
        match (&c.moe, h.shared_expert_intermediate_size) {
            (Some(m), Some(shared)) => {
                for e in 0..m.num_experts {
                    mlp(
                        format!("{p}.mlp.experts.{e}"),
                        m.moe_intermediate_size,
                        &mut push,
                    );
                }
                push(
                    format!("{p}.mlp.gate.weight"),
                    vec![m.num_experts, hidden],
                    TensorKind::Matrix,
                );
                mlp(format!("{p}.mlp.shared_expert"), shared, &mut push);
                push(
                    format!("{p}.mlp.shared_expert_gate.weight"),
                    vec![1, hidden],
                    TensorKind::Matrix,
                );
            }
            _ => mlp(format!("{p}.mlp"), c.intermediate_size, &mut push),
        }
    }
    push(
        format!("{root}.norm.weight"),
        vec![hidden],
        TensorKind::CenteredNorm,
    );
    if !c.tie_word_embeddings {
        push(
            "lm_head.weight".into(),
            vec![c.vocab_size, hidden],
            TensorKind::Matrix,
        );
    }
    specs
}
