//! `config.json` of a Hugging Face checkpoint, parsed into what the network needs.
//!
//! Only the four families whose forward pass koth implements are accepted (`llama`, `qwen2`,
//! `qwen3`, `qwen3_moe`). Anything that would change the computation and that koth does not
//! implement (another activation, RoPE scaling, sliding-window attention, partial rotary) is an
//! error, never a silent default: a model scored with the wrong formula gives wrong verdicts.
//! Where a key is absent, the default is the one every transformers version agrees on for that
//! family; where versions disagree (`head_dim` of qwen3, `num_key_value_heads` of qwen2, the
//! MoE sizes), the key is required.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{ModelError, Result};

pub mod hybrid;
pub use hybrid::{HybridConfig, LinearAttentionConfig, MixerKind};

/// Largest config.json read (a real one is a few KiB): checked on the file's size before a
/// byte is read, so a stranger's config can never be a memory attack.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The model families koth implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Llama,
    Qwen2,
    Qwen3,
    Qwen3Moe,
    /// Qwen3.5 hybrid (gated DeltaNet + gated attention), dense FFN: `qwen3_5_text`, or the
    /// `qwen3_5` multimodal wrapper's text model. See [`hybrid`].
    Qwen35,
    /// Qwen3.5 hybrid with sparse MoE FFN: `qwen3_5_moe_text` or the `qwen3_5_moe` wrapper.
    Qwen35Moe,
}

impl Family {
    /// The `model_type` string of config.json.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Qwen3Moe => "qwen3_moe",
            Family::Qwen35 => "qwen3_5",
            Family::Qwen35Moe => "qwen3_5_moe",
        }
    }

    fn from_model_type(s: &str) -> Option<Self> {
        Some(match s {
            "llama" => Family::Llama,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            "qwen3_moe" => Family::Qwen3Moe,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.model_type())
    }
}

/// Mixture-of-experts settings (qwen3_moe).
#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    pub num_experts: usize,
    pub num_experts_per_tok: usize,
    pub moe_intermediate_size: usize,
    /// Renormalize the top-k router probabilities to sum to one.
    pub norm_topk_prob: bool,
    pub decoder_sparse_step: usize,
    pub mlp_only_layers: Vec<usize>,
}

/// A validated model configuration. `raw` keeps config.json exactly as read so that it can be
/// written back and compared key by key.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    /// Biases on the q, k and v projections.
    pub qkv_bias: bool,
    /// Bias on the output projection.
    pub o_bias: bool,
    /// Biases on gate, up and down projections of dense MLPs (llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// Per-head RMSNorm of q and k before RoPE (qwen3).
    pub qk_norm: bool,
    pub moe: Option<MoeConfig>,
    /// Standard deviation of the normal initialisation of fresh weights.
    pub initializer_range: f64,
    /// The Qwen3.5 hybrid families' layer layout and DeltaNet shapes; `None` for the others.
    pub hybrid: Option<HybridConfig>,
    pub raw: Map<String, Value>,
}

/// Reads typed fields out of the raw JSON object with errors naming the source and the field.
struct Fields<'a> {
    source: &'a str,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn err(&self, field: &str, reason: impl Into<String>) -> ModelError {
        ModelError::Config {
            source_name: self.source.to_owned(),
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    /// A present, non-null value.
    fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    fn positive_int(&self, field: &str, value: &Value) -> Result<usize> {
        match value.as_i64() {
            Some(n) if n > 0 => usize::try_from(n).map_err(|_| self.err(field, "too large")),
            Some(n) => Err(self.err(field, format!("must be a positive integer, found {n}"))),
            None => Err(self.err(field, format!("must be a positive integer, found {value}"))),
        }
    }

    fn required_size(&self, field: &str) -> Result<usize> {
        let v = self
            .get(field)
            .ok_or_else(|| self.err(field, "is required"))?;
        self.positive_int(field, v)
    }

    fn optional_size(&self, field: &str) -> Result<Option<usize>> {
        self.get(field)
            .map(|v| self.positive_int(field, v))
            .transpose()
    }

    fn non_negative_int(&self, field: &str, value: &Value) -> Result<usize> {
        match value.as_i64() {
            Some(n) if n >= 0 => usize::try_from(n).map_err(|_| self.err(field, "too large")),
            _ => Err(self.err(
                field,
                format!("must be a non-negative integer, found {value}"),
            )),
        }
    }

    fn positive_float(&self, field: &str, value: &Value) -> Result<f64> {
        match value.as_f64() {
            Some(x) if x.is_finite() && x > 0.0 => Ok(x),
            _ => Err(self.err(
                field,
                format!("must be a positive finite number, found {value}"),
            )),
        }
    }

    fn bool_or(&self, field: &str, default: bool) -> Result<bool> {
        match self.get(field) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.err(field, format!("must be true or false, found {v}"))),
        }
    }
}

impl ModelConfig {
    /// Read and validate a config.json file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = crate::weights::read_capped(path, MAX_CONFIG_BYTES)?;
        let text = String::from_utf8(bytes).map_err(|e| ModelError::Config {
            source_name: path.display().to_string(),
            field: "(document)".into(),
            reason: format!("is not UTF-8: {e}"),
        })?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Parse and validate config JSON; `source_name` (usually the file path) prefixes errors.
    pub fn from_json(text: &str, source_name: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| ModelError::Config {
            source_name: source_name.to_owned(),
            field: "(document)".into(),
            reason: format!("not valid JSON: {e}"),
        })?;
        let Value::Object(raw) = value else {
            return Err(ModelError::Config {
                source_name: source_name.to_owned(),
                field: "(document)".into(),
                reason: "must be a JSON object".into(),
            });
        };
        Self::from_map(raw, source_name)
    }

    fn from_map(raw: Map<String, Value>, source: &str) -> Result<Self> {
        let f = Fields { source, map: &raw };

        let model_type = match f.get("model_type") {
            Some(Value::String(s)) => s.as_str(),
            Some(v) => return Err(f.err("model_type", format!("must be a string, found {v}"))),
            None => return Err(f.err("model_type", "is required")),
        };
        if hybrid::family_of(model_type).is_some() {
            let model_type = model_type.to_owned();
            return hybrid::parse(raw, source, &model_type);
        }
        let family = Family::from_model_type(model_type).ok_or_else(|| {
            f.err(
                "model_type",
                format!(
                    "`{model_type}` is not supported (supported: llama, qwen2, qwen3, qwen3_moe, \
                     qwen3_5, qwen3_5_text, qwen3_5_moe, qwen3_5_moe_text)"
                ),
            )
        })?;

        // Every size is capped before anything is sized by it (a stranger's config.json with
        // `num_hidden_layers: 1000000000000` is an error here, not an allocation).
        use hybrid::{capped, required_capped, MAX_HEADS, MAX_HEAD_DIM, MAX_LAYERS, MAX_VOCAB};
        use hybrid::{MAX_EXPERTS, MAX_PARAMETERS, MAX_WIDTH};
        let vocab_size = required_capped(&f, "vocab_size", MAX_VOCAB)?;
        let hidden_size = required_capped(&f, "hidden_size", MAX_WIDTH)?;
        let intermediate_size = required_capped(&f, "intermediate_size", MAX_WIDTH)?;
        let num_hidden_layers = required_capped(&f, "num_hidden_layers", MAX_LAYERS)?;
        let num_attention_heads = required_capped(&f, "num_attention_heads", MAX_HEADS)?;
        let num_key_value_heads = match family {
            // LlamaConfig defaults the kv heads to the attention heads; Qwen2Config's default is
            // a fixed 32, so for the qwen families the key must be given.
            Family::Llama => f
                .optional_size("num_key_value_heads")?
                .unwrap_or(num_attention_heads),
            _ => f.required_size("num_key_value_heads")?,
        };
        let num_key_value_heads =
            capped(&f, "num_key_value_heads", num_key_value_heads, MAX_HEADS)?;
        if !num_attention_heads.is_multiple_of(num_key_value_heads) {
            return Err(f.err(
                "num_key_value_heads",
                format!(
                    "{num_key_value_heads} does not divide num_attention_heads {num_attention_heads}"
                ),
            ));
        }
        let head_dim = match family {
            Family::Llama | Family::Qwen2 => match f.optional_size("head_dim")? {
                Some(d) => d,
                None => {
                    if !hidden_size.is_multiple_of(num_attention_heads) {
                        return Err(f.err(
                            "head_dim",
                            format!("is absent and hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}"),
                        ));
                    }
                    hidden_size / num_attention_heads
                }
            },
            // transformers' Qwen3Config defaults head_dim to 128, not hidden/heads: require it.
            Family::Qwen3 | Family::Qwen3Moe | Family::Qwen35 | Family::Qwen35Moe => {
                f.required_size("head_dim")?
            }
        };
        let head_dim = capped(&f, "head_dim", head_dim, MAX_HEAD_DIM)?;
        if !head_dim.is_multiple_of(2) {
            return Err(f.err(
                "head_dim",
                format!("must be even for rotary embeddings, found {head_dim}"),
            ));
        }

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
        if let Some(v) = f.get("partial_rotary_factor") {
            if v.as_f64() != Some(1.0) {
                return Err(f.err(
                    "partial_rotary_factor",
                    format!("{v} is not supported (only 1.0)"),
                ));
            }
        }
        if f.bool_or("use_sliding_window", false)? {
            return Err(f.err(
                "use_sliding_window",
                "sliding-window attention is not supported",
            ));
        }
        if let Some(v) = f.get("layer_types") {
            let ok = v
                .as_array()
                .is_some_and(|a| a.iter().all(|t| t.as_str() == Some("full_attention")));
            if !ok {
                return Err(f.err(
                    "layer_types",
                    format!("only \"full_attention\" layers are supported, found {v}"),
                ));
            }
        }

        let tie_word_embeddings = f.bool_or("tie_word_embeddings", false)?;
        let attention_bias = f.bool_or("attention_bias", false)?;
        let (qkv_bias, o_bias) = match family {
            // Qwen2 always has q/k/v biases and no output bias, whatever attention_bias says.
            Family::Qwen2 => (true, false),
            _ => (attention_bias, attention_bias),
        };
        let mlp_bias = match family {
            Family::Llama => f.bool_or("mlp_bias", false)?,
            _ => false,
        };
        let qk_norm = matches!(family, Family::Qwen3 | Family::Qwen3Moe);

        let moe = match family {
            Family::Qwen3Moe => Some(moe_config(&f, num_hidden_layers)?),
            _ => None,
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

        if let Some(m) = &moe {
            capped(&f, "num_experts", m.num_experts, MAX_EXPERTS)?;
            capped(
                &f,
                "moe_intermediate_size",
                m.moe_intermediate_size,
                MAX_WIDTH,
            )?;
        }
        let params = {
            let w = |x: usize| x as u128;
            let hidden = w(hidden_size);
            let (q, kv) = (
                w(num_attention_heads) * w(head_dim),
                w(num_key_value_heads) * w(head_dim),
            );
            let ff = match &moe {
                Some(m) => w(m.num_experts.max(1)) * 3 * hidden * w(m.moe_intermediate_size),
                None => 3 * hidden * w(intermediate_size),
            };
            w(num_hidden_layers) * (hidden * (2 * q + 2 * kv) + ff + 2 * hidden)
                + 2 * w(vocab_size) * hidden
        };
        if params > MAX_PARAMETERS {
            return Err(f.err(
                "(sizes)",
                format!("{params} parameters exceed koth's cap of {MAX_PARAMETERS}"),
            ));
        }

        Ok(ModelConfig {
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
            qkv_bias,
            o_bias,
            mlp_bias,
            qk_norm,
            moe,
            initializer_range,
            hybrid: None,
            raw,
        })
    }

    /// Whether layer `layer_idx` has a mixture-of-experts MLP (transformers' rule for qwen3_moe).
    pub fn is_sparse_layer(&self, layer_idx: usize) -> bool {
        match &self.moe {
            Some(m) => {
                !m.mlp_only_layers.contains(&layer_idx)
                    && m.num_experts > 0
                    && (layer_idx + 1).is_multiple_of(m.decoder_sparse_step)
            }
            None => false,
        }
    }

    /// config.json as it was read, pretty-printed.
    pub fn to_json_string(&self) -> String {
        // Serialising a Map of JSON values cannot fail.
        serde_json::to_string_pretty(&Value::Object(self.raw.clone())).unwrap_or_default()
    }

    /// Write config.json into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join("config.json");
        std::fs::write(&path, self.to_json_string() + "\n").map_err(|e| ModelError::io(path, e))
    }
}

/// RoPE base from `rope_theta` (transformers 4) or `rope_parameters.rope_theta` (transformers
/// 5); any scaling other than the default is refused.
fn rope_theta(f: &Fields<'_>) -> Result<f64> {
    fn check_type(f: &Fields<'_>, field: &str, obj: &Map<String, Value>) -> Result<()> {
        let ty = obj
            .get("rope_type")
            .filter(|v| !v.is_null())
            .or_else(|| obj.get("type").filter(|v| !v.is_null()));
        match ty {
            None => Ok(()),
            Some(Value::String(s)) if s == "default" => Ok(()),
            Some(v) => Err(f.err(
                field,
                format!("RoPE scaling type {v} is not supported (only \"default\")"),
            )),
        }
    }
    let mut theta = None;
    if let Some(v) = f.get("rope_theta") {
        theta = Some(f.positive_float("rope_theta", v)?);
    }
    if let Some(v) = f.get("rope_scaling") {
        let obj = v
            .as_object()
            .ok_or_else(|| f.err("rope_scaling", format!("must be an object, found {v}")))?;
        check_type(f, "rope_scaling", obj)?;
    }
    if let Some(v) = f.get("rope_parameters") {
        let obj = v
            .as_object()
            .ok_or_else(|| f.err("rope_parameters", format!("must be an object, found {v}")))?;
        check_type(f, "rope_parameters", obj)?;
        if let Some(t) = obj.get("rope_theta").filter(|v| !v.is_null()) {
            let t = f.positive_float("rope_parameters.rope_theta", t)?;
            if let Some(top) = theta {
                if top != t {
                    return Err(f.err(
                        "rope_parameters.rope_theta",
                        format!("{t} disagrees with top-level rope_theta {top}"),
                    ));
                }
            }
            theta = Some(t);
        }
    }
    theta.ok_or_else(|| {
        f.err(
            "rope_theta",
            "is required (top level or in rope_parameters)",
        )
    })
}

fn moe_config(f: &Fields<'_>, num_hidden_layers: usize) -> Result<MoeConfig> {
    // transformers 5 writes `num_local_experts`, 4 writes `num_experts`; accept either, not two
    // that disagree.
    let a = f
        .get("num_experts")
        .map(|v| f.non_negative_int("num_experts", v))
        .transpose()?;
    let b = f
        .get("num_local_experts")
        .map(|v| f.non_negative_int("num_local_experts", v))
        .transpose()?;
    let num_experts = match (a, b) {
        (Some(x), Some(y)) if x != y => {
            return Err(f.err(
                "num_local_experts",
                format!("{y} disagrees with num_experts {x}"),
            ))
        }
        (Some(x), _) | (None, Some(x)) => x,
        (None, None) => return Err(f.err("num_experts", "is required (or num_local_experts)")),
    };
    let num_experts_per_tok = f.required_size("num_experts_per_tok")?;
    if num_experts > 0 && num_experts_per_tok > num_experts {
        return Err(f.err(
            "num_experts_per_tok",
            format!("{num_experts_per_tok} exceeds the number of experts {num_experts}"),
        ));
    }
    let moe_intermediate_size = f.required_size("moe_intermediate_size")?;
    let norm_topk_prob = f.bool_or("norm_topk_prob", false)?;
    let decoder_sparse_step = f.optional_size("decoder_sparse_step")?.unwrap_or(1);
    let mlp_only_layers = match f.get("mlp_only_layers") {
        None => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| f.non_negative_int("mlp_only_layers", v))
            .collect::<Result<Vec<_>>>()?,
        Some(v) => {
            return Err(f.err(
                "mlp_only_layers",
                format!("must be a list of layer indices, found {v}"),
            ))
        }
    };
    if let Some(&bad) = mlp_only_layers.iter().find(|&&l| l >= num_hidden_layers) {
        return Err(f.err(
            "mlp_only_layers",
            format!("layer {bad} does not exist (num_hidden_layers is {num_hidden_layers})"),
        ));
    }
    Ok(MoeConfig {
        num_experts,
        num_experts_per_tok,
        moe_intermediate_size,
        norm_topk_prob,
        decoder_sparse_step,
        mlp_only_layers,
    })
}

/// What a tensor is, which decides its initialisation and whether weight decay applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    /// Embedding, projection or router matrix: normal(0, initializer_range), decayed.
    Matrix,
    /// RMSNorm gain: ones, not decayed.
    Norm,
    /// Bias: zeros, not decayed.
    Bias,
    /// Zero-centred RMSNorm gain (Qwen3.5 scales by `1 + w`): zeros, not decayed.
    CenteredNorm,
    /// Gated DeltaNet `A_log`: `ln(uniform(0.01, 16))` as transformers initialises it, not
    /// decayed.
    LogDecayRate,
}

impl TensorKind {
    /// What the network adds to the stored value before using it: 1 for a zero-centred RMSNorm
    /// gain (Qwen3.5 computes with `1 + w`), 0 for everything else. A check on the scale of a
    /// tensor (the validator's weights gate compares RMS ratios against the king's) should look
    /// at `stored + offset`, the gain that acts: a zero-centred gain near 0 moving to 0.05 is a
    /// 5 % change of the network, not a 10x one.
    pub fn effective_offset(self) -> f64 {
        match self {
            TensorKind::CenteredNorm => 1.0,
            TensorKind::Matrix | TensorKind::Norm | TensorKind::Bias | TensorKind::LogDecayRate => {
                0.0
            }
        }
    }
}

/// One tensor a checkpoint of this config must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: TensorKind,
}

impl ModelConfig {
    /// Every tensor a checkpoint of this config holds, under its Hugging Face name, in a fixed
    /// order (embeddings, layers in order, final norm, head). This is the single source of truth
    /// for loading (exact tensor set), initialising and saving.
    pub fn tensor_specs(&self) -> Vec<TensorSpec> {
        if let Some(h) = &self.hybrid {
            return hybrid::tensor_specs(self, h);
        }
        let h = self.hidden_size;
        let hd = self.head_dim;
        let q_out = self.num_attention_heads * hd;
        let kv_out = self.num_key_value_heads * hd;
        let mut specs = Vec::new();
        let mut push =
            |name: String, shape: Vec<usize>, kind| specs.push(TensorSpec { name, shape, kind });
        push(
            "model.embed_tokens.weight".into(),
            vec![self.vocab_size, h],
            TensorKind::Matrix,
        );
        for i in 0..self.num_hidden_layers {
            let p = format!("model.layers.{i}");
            push(
                format!("{p}.input_layernorm.weight"),
                vec![h],
                TensorKind::Norm,
            );
            for (proj, out) in [("q_proj", q_out), ("k_proj", kv_out), ("v_proj", kv_out)] {
                push(
                    format!("{p}.self_attn.{proj}.weight"),
                    vec![out, h],
                    TensorKind::Matrix,
                );
                if self.qkv_bias {
                    push(
                        format!("{p}.self_attn.{proj}.bias"),
                        vec![out],
                        TensorKind::Bias,
                    );
                }
            }
            push(
                format!("{p}.self_attn.o_proj.weight"),
                vec![h, q_out],
                TensorKind::Matrix,
            );
            if self.o_bias {
                push(
                    format!("{p}.self_attn.o_proj.bias"),
                    vec![h],
                    TensorKind::Bias,
                );
            }
            if self.qk_norm {
                push(
                    format!("{p}.self_attn.q_norm.weight"),
                    vec![hd],
                    TensorKind::Norm,
                );
                push(
                    format!("{p}.self_attn.k_norm.weight"),
                    vec![hd],
                    TensorKind::Norm,
                );
            }
            push(
                format!("{p}.post_attention_layernorm.weight"),
                vec![h],
                TensorKind::Norm,
            );
            match &self.moe {
                Some(m) if self.is_sparse_layer(i) => {
                    push(
                        format!("{p}.mlp.gate.weight"),
                        vec![m.num_experts, h],
                        TensorKind::Matrix,
                    );
                    let w = m.moe_intermediate_size;
                    for e in 0..m.num_experts {
                        let q = format!("{p}.mlp.experts.{e}");
                        push(
                            format!("{q}.gate_proj.weight"),
                            vec![w, h],
                            TensorKind::Matrix,
                        );
                        push(
                            format!("{q}.up_proj.weight"),
                            vec![w, h],
                            TensorKind::Matrix,
                        );
                        push(
                            format!("{q}.down_proj.weight"),
                            vec![h, w],
                            TensorKind::Matrix,
                        );
                    }
                }
                _ => {
                    let w = self.intermediate_size;
                    for (proj, shape, bias) in [
                        ("gate_proj", vec![w, h], w),
                        ("up_proj", vec![w, h], w),
                        ("down_proj", vec![h, w], h),
                    ] {
                        push(format!("{p}.mlp.{proj}.weight"), shape, TensorKind::Matrix);
                        if self.mlp_bias {
                            push(format!("{p}.mlp.{proj}.bias"), vec![bias], TensorKind::Bias);
                        }
                    }
                }
            }
        }
        push("model.norm.weight".into(), vec![h], TensorKind::Norm);
        if !self.tie_word_embeddings {
            push(
                "lm_head.weight".into(),
                vec![self.vocab_size, h],
                TensorKind::Matrix,
            );
        }
        specs
    }

    /// Number of scalar parameters (tied embeddings counted once).
    pub fn parameter_count(&self) -> u64 {
        self.tensor_specs()
            .iter()
            .map(|s| s.shape.iter().map(|&d| d as u64).product::<u64>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"{"model_type":"llama","vocab_size":32,"hidden_size":16,
        "intermediate_size":24,"num_hidden_layers":2,"num_attention_heads":4,
        "num_key_value_heads":2,"rms_norm_eps":1e-5,"rope_theta":10000.0}"#;

    fn with(key: &str, value: Value) -> String {
        let mut v: Value = serde_json::from_str(BASE).unwrap();
        v[key] = value;
        v.to_string()
    }

    fn err_of(text: &str) -> String {
        ModelConfig::from_json(text, "C.json")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn llama_defaults() {
        let c = ModelConfig::from_json(BASE, "C.json").unwrap();
        assert_eq!(c.head_dim, 4);
        assert!(!c.tie_word_embeddings && !c.qkv_bias && !c.qk_norm);
        assert_eq!(c.rope_theta, 10000.0);
    }

    #[test]
    fn zero_and_negative_sizes_are_named() {
        let e = err_of(&with("hidden_size", Value::from(0)));
        assert!(e.contains("C.json") && e.contains("hidden_size"), "{e}");
        let e = err_of(&with("num_hidden_layers", Value::from(-2)));
        assert!(e.contains("num_hidden_layers") && e.contains("-2"), "{e}");
        let e = err_of(&with("vocab_size", Value::from(1.5)));
        assert!(e.contains("vocab_size"), "{e}");
    }

    #[test]
    fn unknown_things_are_errors() {
        let e = err_of(&with("model_type", Value::from("gpt2")));
        assert!(e.contains("model_type") && e.contains("gpt2"), "{e}");
        let e = err_of(&with("hidden_act", Value::from("gelu")));
        assert!(e.contains("hidden_act") && e.contains("gelu"), "{e}");
        let e = err_of(&with(
            "rope_scaling",
            serde_json::json!({"rope_type": "yarn", "factor": 4.0}),
        ));
        assert!(e.contains("rope_scaling") && e.contains("yarn"), "{e}");
        let e = err_of(&with(
            "rope_parameters",
            serde_json::json!({"rope_type": "llama3", "rope_theta": 10000.0}),
        ));
        assert!(e.contains("rope_parameters") && e.contains("llama3"), "{e}");
        let e = err_of(&with("num_key_value_heads", Value::from(3)));
        assert!(e.contains("num_key_value_heads"), "{e}");
    }

    #[test]
    fn rope_theta_in_rope_parameters() {
        let mut v: Value = serde_json::from_str(BASE).unwrap();
        v.as_object_mut().unwrap().remove("rope_theta");
        v["rope_parameters"] = serde_json::json!({"rope_type": "default", "rope_theta": 5e5});
        let c = ModelConfig::from_json(&v.to_string(), "C.json").unwrap();
        assert_eq!(c.rope_theta, 5e5);
        v.as_object_mut().unwrap().remove("rope_parameters");
        assert!(err_of(&v.to_string()).contains("rope_theta"));
    }

    #[test]
    fn qwen3_requires_head_dim() {
        let e = err_of(&with("model_type", Value::from("qwen3")));
        assert!(e.contains("head_dim"), "{e}");
    }

    #[test]
    fn sparse_layer_rule() {
        let mut v: Value = serde_json::from_str(BASE).unwrap();
        v["model_type"] = "qwen3_moe".into();
        v["head_dim"] = 4.into();
        v["num_hidden_layers"] = 4.into();
        v["num_experts"] = 4.into();
        v["num_experts_per_tok"] = 2.into();
        v["moe_intermediate_size"] = 8.into();
        v["decoder_sparse_step"] = 2.into();
        v["mlp_only_layers"] = serde_json::json!([3]);
        let c = ModelConfig::from_json(&v.to_string(), "C.json").unwrap();
        let sparse: Vec<bool> = (0..4).map(|i| c.is_sparse_layer(i)).collect();
        assert_eq!(sparse, [false, true, false, false]);
        v["num_local_experts"] = 5.into();
        assert!(err_of(&v.to_string()).contains("num_local_experts"));
    }
}
