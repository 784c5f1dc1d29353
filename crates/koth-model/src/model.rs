//! The decoder-only transformer of the llama / qwen2 / qwen3 / qwen3_moe families.
//!
//! One network, two paths (see [`OpPath`]): the scoring path runs candle's fused RMSNorm, RoPE
//! and softmax kernels; the training path runs differentiable composites of the same math.
//! Everything else (projections, attention matmuls, SwiGLU, MoE dispatch, the chunked loss) is
//! shared and differentiable.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};

use crate::config::{ModelConfig, MoeConfig};
use crate::error::{ModelError, Result};
use crate::ops::{causal_mask, rms_norm, softmax_last, OpPath, Rope};
use crate::pipeline::Pipeline;
use crate::placement::{transfer, Placement};
use crate::weights::{CheckpointFiles, DEFAULT_SHARD_LIMIT_BYTES};

mod checkpoint;
mod explicit;
mod hybrid;

pub(crate) use checkpoint::take_grad;
pub use checkpoint::{CheckpointOptions, Checkpointing};

/// A batch of token ids, `rows` sequences of `cols` tokens, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIds {
    ids: Vec<u32>,
    rows: usize,
    cols: usize,
}

impl TokenIds {
    /// `ids.len()` must equal `rows * cols`, with at least one row of at least two tokens (a
    /// next-token loss needs a next token).
    pub fn new(ids: Vec<u32>, rows: usize, cols: usize) -> Result<Self> {
        if rows == 0 || cols < 2 {
            return Err(ModelError::TokenShape(format!(
                "shape [{rows}, {cols}] needs at least one row of at least two tokens"
            )));
        }
        if rows.checked_mul(cols) != Some(ids.len()) {
            return Err(ModelError::TokenShape(format!(
                "{} ids do not fill shape [{rows}, {cols}]",
                ids.len()
            )));
        }
        Ok(Self { ids, rows, cols })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn as_slice(&self) -> &[u32] {
        &self.ids
    }

    /// Error naming the first id that is not below `vocab_size`.
    pub fn check_vocab(&self, vocab_size: usize) -> Result<()> {
        match self.ids.iter().position(|&id| id as usize >= vocab_size) {
            None => Ok(()),
            Some(i) => Err(ModelError::TokenOutOfRange {
                id: self.ids[i],
                row: i / self.cols,
                position: i % self.cols,
                vocab_size,
            }),
        }
    }

    /// Rows `start..start + n` as a batch of their own.
    pub fn slice_rows(&self, start: usize, n: usize) -> Result<Self> {
        if n == 0 || start.checked_add(n).is_none_or(|end| end > self.rows) {
            return Err(ModelError::TokenShape(format!(
                "rows {start}..{} of a batch of {} rows",
                start.saturating_add(n),
                self.rows
            )));
        }
        Self::new(
            self.ids[start * self.cols..(start + n) * self.cols].to_vec(),
            n,
            self.cols,
        )
    }

    fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.ids,
            (self.rows, self.cols),
            device,
        )?)
    }
}

/// Tuning of the scoring path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreOptions {
    /// Upper bound on the bytes of f32 logits held at once by the chunked head: rows of the
    /// flattened [B*(T-1), hidden] are pushed through the head in chunks of
    /// `max(1, logits_chunk_bytes / (4 * vocab))`.
    pub logits_chunk_bytes: usize,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        Self {
            logits_chunk_bytes: 64 << 20,
        }
    }
}

/// A linear layer in Hugging Face's convention: `y = x W^T + b`, `W` [out, in].
#[derive(Clone)]
struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// `x` is [N, in].
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.weight.t()?)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

#[derive(Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
}

/// SwiGLU: down(silu(gate(x)) * up(x)).
#[derive(Clone)]
struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor, path: OpPath) -> Result<Tensor> {
        let g = self.gate.forward(x)?;
        let u = self.up.forward(x)?;
        let product = match path {
            OpPath::Kernels if g.track_op() || u.track_op() => {
                koth_kernels::swiglu_trainable(&g, &u)?
            }
            OpPath::Kernels => koth_kernels::swiglu(&g, &u)?,
            OpPath::Fused | OpPath::Composite => (silu_rounded_once(&g)? * u)?,
        };
        self.down.forward(&product)
    }
}

/// SiLU computed in f32 and rounded once to the activation dtype. candle's CUDA kernel does
/// exactly this, but its CPU kernel evaluates `x / (1 + exp(-x))` in bf16/f16 arithmetic,
/// rounding after every operation; without the upcast a bf16 model scores differently on the
/// CPU and on a GPU (and transformers, like CUDA, rounds once).
fn silu_rounded_once(x: &Tensor) -> Result<Tensor> {
    if x.dtype() == DType::F32 {
        return Ok(x.silu()?);
    }
    Ok(x.to_dtype(DType::F32)?.silu()?.to_dtype(x.dtype())?)
}

#[derive(Clone)]
struct SparseMoe {
    /// Router [experts, hidden].
    router: Tensor,
    experts: Vec<Mlp>,
    top_k: usize,
    norm_topk_prob: bool,
    /// On a CUDA device (unless `KOTH_MOE_GROUPED=0` and `KOTH_MOE_BATCHED` is unset; see
    /// [`grouped_experts_enabled`]): every expert's projections stacked ([E, I, H] gate and up,
    /// [E, H, I] down), the experts' own weights being views into them (no second copy), so that
    /// scoring runs each projection of all experts as one grouped (or batched) GEMM.
    stacked: Option<StackedExperts>,
}

#[derive(Clone)]
struct StackedExperts {
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

impl SparseMoe {
    fn new(router: Tensor, experts: Vec<Mlp>, top_k: usize, norm_topk_prob: bool) -> Result<Self> {
        let stack = (batched_experts_enabled() || grouped_experts_enabled())
            && koth_kernels::usable(&router);
        Self::assemble(router, experts, top_k, norm_topk_prob, stack)
    }

    /// The block, its experts stacked for batched GEMMs when `stack` asks for it and the
    /// weights allow it.
    fn assemble(
        router: Tensor,
        mut experts: Vec<Mlp>,
        top_k: usize,
        norm_topk_prob: bool,
        stack: bool,
    ) -> Result<Self> {
        // Never for variables: a trainer updates its variables in place, and the model must
        // keep reading them, not a stacked copy.
        let plain = |l: &Linear| l.bias.is_none() && !l.weight.is_variable();
        let stackable = stack
            && !router.is_variable()
            && !experts.is_empty()
            && experts
                .iter()
                .all(|m| plain(&m.gate) && plain(&m.up) && plain(&m.down));
        let stacked = if stackable {
            let stack = |of: fn(&Mlp) -> &Tensor| -> Result<Tensor> {
                Ok(Tensor::stack(
                    &experts.iter().map(of).collect::<Vec<_>>(),
                    0,
                )?)
            };
            let s = StackedExperts {
                gate: stack(|m| &m.gate.weight)?,
                up: stack(|m| &m.up.weight)?,
                down: stack(|m| &m.down.weight)?,
            };
            for (e, m) in experts.iter_mut().enumerate() {
                m.gate.weight = s.gate.get(e)?;
                m.up.weight = s.up.get(e)?;
                m.down.weight = s.down.get(e)?;
            }
            Some(s)
        } else {
            None
        };
        Ok(Self {
            router,
            experts,
            top_k,
            norm_topk_prob,
            stacked,
        })
    }
}

#[derive(Clone)]
enum FeedForward {
    Dense(Mlp),
    Sparse(SparseMoe),
}

#[derive(Clone)]
struct Layer {
    input_norm: Tensor,
    attn: Attention,
    post_norm: Tensor,
    ff: FeedForward,
}

/// The dtype and device every tensor of a model must share: the embeddings', which must be
/// f32, bf16 or f16.
pub(crate) fn common_dtype_device(
    tensors: &HashMap<String, Tensor>,
    embed_name: &str,
) -> Result<(DType, Device)> {
    let embed = tensors
        .get(embed_name)
        .ok_or_else(|| ModelError::Invalid(format!("missing tensor `{embed_name}`")))?;
    let dtype = embed.dtype();
    let device = embed.device().clone();
    if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
        return Err(ModelError::Invalid(format!(
            "model dtype {dtype:?} is not supported (f32, bf16, f16)"
        )));
    }
    for (name, t) in tensors {
        if t.dtype() != dtype || !t.device().same_device(&device) {
            return Err(ModelError::Invalid(format!(
                "tensor `{name}` is {:?} on {:?}, the embeddings {dtype:?} on {device:?}",
                t.dtype(),
                t.device()
            )));
        }
    }
    Ok((dtype, device))
}

/// A placement's stages must cover exactly the model's decoder layers.
fn check_placement_layers(placement: &Placement, config: &ModelConfig) -> Result<()> {
    if placement.num_layers() != config.num_hidden_layers {
        return Err(ModelError::Invalid(format!(
            "placement: the stages cover {} decoder layers, the model has {}",
            placement.num_layers(),
            config.num_hidden_layers
        )));
    }
    Ok(())
}

/// The tensors must be exactly those `config.tensor_specs()` names, with those shapes.
fn check_tensor_shapes(config: &ModelConfig, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let specs = config.tensor_specs();
    let mut problems = Vec::new();
    for s in &specs {
        match tensors.get(&s.name) {
            None => problems.push(format!("missing tensor `{}`", s.name)),
            Some(t) if t.dims() != s.shape.as_slice() => problems.push(format!(
                "tensor `{}` has shape {:?}, expected {:?}",
                s.name,
                t.dims(),
                s.shape
            )),
            Some(_) => {}
        }
    }
    let known: std::collections::HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let mut extra: Vec<&String> = tensors
        .keys()
        .filter(|k| !known.contains(k.as_str()))
        .collect();
    extra.sort();
    problems.extend(extra.iter().map(|k| format!("unexpected tensor `{k}`")));
    if !problems.is_empty() {
        return Err(ModelError::Invalid(format!(
            "tensors do not match the config: {}",
            problems.join("; ")
        )));
    }
    Ok(())
}

/// The dtype every tensor of a placed model must share (the embeddings', which must be f32,
/// bf16 or f16); devices are the placement's business.
fn common_dtype(tensors: &HashMap<String, Tensor>, embed_name: &str) -> Result<DType> {
    let embed = tensors
        .get(embed_name)
        .ok_or_else(|| ModelError::Invalid(format!("missing tensor `{embed_name}`")))?;
    let dtype = embed.dtype();
    if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
        return Err(ModelError::Invalid(format!(
            "model dtype {dtype:?} is not supported (f32, bf16, f16)"
        )));
    }
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let t = &tensors[name];
        if t.dtype() != dtype {
            return Err(ModelError::Invalid(format!(
                "tensor `{name}` is {:?}, the embeddings {dtype:?}",
                t.dtype()
            )));
        }
    }
    Ok(dtype)
}

/// Summary of a model, for `koth model info`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelInfo {
    pub family: String,
    pub parameters: u64,
    pub bytes: u64,
    pub dtype: String,
    pub layers: usize,
    pub hidden_size: usize,
    pub vocab_size: usize,
    pub experts: Option<usize>,
    pub tied_embeddings: bool,
}

/// A loaded or freshly initialised model: its config and its parameters.
///
/// The parameters may be split across devices ([`Placement`]: stages of consecutive decoder
/// layers, the embedding on the first, the final norm and head on the last); the scoring path
/// then runs stage by stage ([`crate::pipeline`]). A model built without a placement is one
/// stage on one device.
#[derive(Clone)]
pub struct Model {
    config: ModelConfig,
    dtype: DType,
    /// The first stage's device (the embedding's).
    device: Device,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    /// `None` when the head is tied to the embeddings.
    lm_head: Option<Tensor>,
    /// A tied head's copy of the embedding matrix on the last stage's device, when that is not
    /// the embedding's device.
    head_copy: Option<Tensor>,
    placement: Placement,
    pipeline: Pipeline,
    /// The Qwen3.5 hybrid families' layers (then `layers` is empty); see `model/hybrid.rs`.
    hybrid: Option<hybrid::HybridStack>,
}

/// Takes tensors out of a name → tensor map, failing with the tensor's name.
struct Take<'a> {
    map: &'a mut HashMap<String, Tensor>,
}

impl Take<'_> {
    fn get(&mut self, name: &str) -> Result<Tensor> {
        self.map
            .remove(name)
            .ok_or_else(|| ModelError::Invalid(format!("missing tensor `{name}`")))
    }
    fn opt(&mut self, name: &str, present: bool) -> Result<Option<Tensor>> {
        present.then(|| self.get(name)).transpose()
    }
    fn linear(&mut self, prefix: &str, bias: bool) -> Result<Linear> {
        Ok(Linear {
            weight: self.get(&format!("{prefix}.weight"))?,
            bias: self.opt(&format!("{prefix}.bias"), bias)?,
        })
    }
    fn mlp(&mut self, prefix: &str, bias: bool) -> Result<Mlp> {
        Ok(Mlp {
            gate: self.linear(&format!("{prefix}.gate_proj"), bias)?,
            up: self.linear(&format!("{prefix}.up_proj"), bias)?,
            down: self.linear(&format!("{prefix}.down_proj"), bias)?,
        })
    }
}

impl Model {
    /// Build a model from exactly the tensors `config.tensor_specs()` names (shapes checked).
    /// All tensors must already have one dtype and live on one device.
    pub fn from_tensors(config: ModelConfig, tensors: HashMap<String, Tensor>) -> Result<Self> {
        if config.hybrid.is_some() {
            return hybrid::from_tensors(config, tensors);
        }
        check_tensor_shapes(&config, &tensors)?;
        let (dtype, device) = common_dtype_device(&tensors, "model.embed_tokens.weight")?;
        let placement = Placement::single(device, config.num_hidden_layers);
        Self::assemble(config, tensors, dtype, placement, None)
    }

    /// Build a model from exactly the tensors `config.tensor_specs()` names (shapes checked),
    /// of one dtype, each moved to its stage's device ([`Placement::device_of`]; a tensor already
    /// there is not copied). A one-stage placement is [`Model::from_tensors`] on its device. The
    /// Qwen3.5 hybrids take only a one-stage placement.
    pub fn from_tensors_placed(
        config: ModelConfig,
        tensors: HashMap<String, Tensor>,
        placement: Placement,
    ) -> Result<Self> {
        Self::from_tensors_placed_reusing(config, tensors, placement, None)
    }

    /// [`Model::from_tensors_placed`], keeping the assembled blocks of `reuse`'s layers that stay
    /// on their device (for [`Model::place`]).
    fn from_tensors_placed_reusing(
        config: ModelConfig,
        mut tensors: HashMap<String, Tensor>,
        placement: Placement,
        reuse: Option<&[Layer]>,
    ) -> Result<Self> {
        check_placement_layers(&placement, &config)?;
        for (name, t) in tensors.iter_mut() {
            *t = transfer(t, placement.device_of(name))?;
        }
        // One stage and nothing to keep is a plain assembly; so is a hybrid, which takes only a
        // one-stage placement and is always assembled afresh.
        if placement.len() == 1 && (reuse.is_none() || config.hybrid.is_some()) {
            return Self::from_tensors(config, tensors);
        }
        if config.hybrid.is_some() {
            return Err(ModelError::Invalid(format!(
                "placement: a {} model is not cut into stages (llama, qwen2, qwen3 and qwen3_moe \
                 are); place it on one device",
                config.family.model_type()
            )));
        }
        check_tensor_shapes(&config, &tensors)?;
        let dtype = common_dtype(&tensors, "model.embed_tokens.weight")?;
        Self::assemble(config, tensors, dtype, placement, reuse)
    }

    /// The network from checked tensors, each already on its stage's device. A layer of `reuse`
    /// already on its stage's device is kept as it is (its tensors are the same ones), so that
    /// re-placing a model does not stack a mixture of experts' weights a second time.
    fn assemble(
        config: ModelConfig,
        mut tensors: HashMap<String, Tensor>,
        dtype: DType,
        placement: Placement,
        reuse: Option<&[Layer]>,
    ) -> Result<Self> {
        let device = placement.first_device().clone();
        let mut take = Take { map: &mut tensors };
        let embed = take.get("model.embed_tokens.weight")?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let norm_name = format!("{p}.input_layernorm.weight");
            let kept = reuse.and_then(|r| r.get(i)).filter(|l| {
                l.input_norm
                    .device()
                    .same_device(placement.device_of(&norm_name))
            });
            if let Some(layer) = kept {
                let prefix = format!("{p}.");
                take.map.retain(|name, _| !name.starts_with(&prefix));
                layers.push(layer.clone());
                continue;
            }
            let a = format!("{p}.self_attn");
            let attn = Attention {
                q: take.linear(&format!("{a}.q_proj"), config.qkv_bias)?,
                k: take.linear(&format!("{a}.k_proj"), config.qkv_bias)?,
                v: take.linear(&format!("{a}.v_proj"), config.qkv_bias)?,
                o: take.linear(&format!("{a}.o_proj"), config.o_bias)?,
                q_norm: take.opt(&format!("{a}.q_norm.weight"), config.qk_norm)?,
                k_norm: take.opt(&format!("{a}.k_norm.weight"), config.qk_norm)?,
            };
            let ff = match &config.moe {
                Some(MoeConfig {
                    num_experts,
                    num_experts_per_tok,
                    norm_topk_prob,
                    ..
                }) if config.is_sparse_layer(i) => FeedForward::Sparse(SparseMoe::new(
                    take.get(&format!("{p}.mlp.gate.weight"))?,
                    (0..*num_experts)
                        .map(|e| take.mlp(&format!("{p}.mlp.experts.{e}"), false))
                        .collect::<Result<_>>()?,
                    *num_experts_per_tok,
                    *norm_topk_prob,
                )?),
                _ => FeedForward::Dense(take.mlp(&format!("{p}.mlp"), config.mlp_bias)?),
            };
            layers.push(Layer {
                input_norm: take.get(&format!("{p}.input_layernorm.weight"))?,
                attn,
                post_norm: take.get(&format!("{p}.post_attention_layernorm.weight"))?,
                ff,
            });
        }
        let norm = take.get("model.norm.weight")?;
        let lm_head = take.opt("lm_head.weight", !config.tie_word_embeddings)?;
        let last = placement.last_device();
        let head_copy = match &lm_head {
            None if !embed.device().same_device(last) => Some(transfer(&embed, last)?),
            _ => None,
        };
        Ok(Self {
            config,
            dtype,
            device,
            embed,
            layers,
            norm,
            lm_head,
            head_copy,
            placement,
            pipeline: Pipeline::default(),
            hybrid: None,
        })
    }

    /// Load a Hugging Face checkpoint directory (config.json + safetensors, single or sharded),
    /// converting weights to `dtype` on `device`. The tensor set must match the config exactly.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let files = CheckpointFiles::open(dir)?;
        files.check_tensor_set(dir, &config)?;
        let tensors = files.load_tensors(dtype, device)?;
        Self::from_tensors(config, tensors)
    }

    /// Load a checkpoint directory with its parameters split across `placement`'s stages. The
    /// safetensors files (single or sharded) are memory-mapped and every tensor goes to its
    /// stage's device as it is read ([`CheckpointFiles::load_tensors_placed`]): host memory
    /// holds no staging copy of the model, and a tensor stored in `dtype` is not converted.
    pub fn load_placed(dir: &Path, dtype: DType, placement: Placement) -> Result<Self> {
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        if placement.num_layers() != config.num_hidden_layers {
            return Err(ModelError::Invalid(format!(
                "placement: the stages cover {} decoder layers, {} has {}",
                placement.num_layers(),
                dir.display(),
                config.num_hidden_layers
            )));
        }
        let files = CheckpointFiles::open(dir)?;
        files.check_tensor_set(dir, &config)?;
        let tensors = files.load_tensors_placed(dtype, |name| placement.device_of(name))?;
        Self::from_tensors_placed(config, tensors, placement)
    }

    /// The same parameters on `placement`'s stages (each tensor copied to its stage's device,
    /// or shared where it already is).
    pub fn place(&self, placement: Placement) -> Result<Self> {
        let tensors = self.named_tensors().into_iter().collect();
        // Layers that stay on their device keep their blocks: on CUDA a mixture of experts'
        // stacked weights are not stacked again (a second copy of every expert).
        Ok(Self::from_tensors_placed_reusing(
            self.config.clone(),
            tensors,
            placement,
            Some(&self.layers),
        )?
        .with_pipeline(self.pipeline))
    }

    /// Where the parameters live.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// How [`Model::sequence_losses`] drives the stages.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The same model scored with `pipeline`.
    pub fn with_pipeline(mut self, pipeline: Pipeline) -> Self {
        self.pipeline = pipeline;
        self
    }

    /// A fresh model with seeded, machine-independent random weights.
    pub fn init(config: &ModelConfig, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        let tensors = crate::init::init_tensors(config, seed, dtype, device)?;
        Self::from_tensors(config.clone(), tensors)
    }

    /// [`Model::init`]'s weights made straight onto `placement`'s stages, tensor by tensor
    /// (never the whole model on one device or in host memory).
    pub fn init_placed(
        config: &ModelConfig,
        seed: u64,
        dtype: DType,
        placement: Placement,
    ) -> Result<Self> {
        check_placement_layers(&placement, config)?;
        let tensors = crate::init::init_tensors_placed(config, seed, dtype, |name| {
            placement.device_of(name)
        })?;
        Self::from_tensors_placed(config.clone(), tensors, placement)
    }

    /// Save config.json and the weights (in the model's dtype) in Hugging Face layout; shards
    /// above 5 GB. Refuses a directory that already holds weights.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.save_with_shard_limit(dir, DEFAULT_SHARD_LIMIT_BYTES)
    }

    /// As [`Model::save`], with shards of at most `shard_limit_bytes` of tensor data.
    pub fn save_with_shard_limit(&self, dir: &Path, shard_limit_bytes: u64) -> Result<()> {
        crate::weights::save_tensors(dir, &self.named_tensors(), shard_limit_bytes)?;
        self.config.save(dir)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// The device of the embedding (the first stage's; the only one of a one-stage model).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every parameter under its Hugging Face name, in `config.tensor_specs()` order.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        if let Some(stack) = &self.hybrid {
            return stack.named_tensors();
        }
        let mut out = Vec::new();
        let mut push = |n: String, t: &Tensor| out.push((n, t.clone()));
        push("model.embed_tokens.weight".into(), &self.embed);
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            push(format!("{p}.input_layernorm.weight"), &l.input_norm);
            let a = &l.attn;
            for (name, lin) in [("q_proj", &a.q), ("k_proj", &a.k), ("v_proj", &a.v)] {
                push(format!("{p}.self_attn.{name}.weight"), &lin.weight);
                if let Some(b) = &lin.bias {
                    push(format!("{p}.self_attn.{name}.bias"), b);
                }
            }
            push(format!("{p}.self_attn.o_proj.weight"), &a.o.weight);
            if let Some(b) = &a.o.bias {
                push(format!("{p}.self_attn.o_proj.bias"), b);
            }
            if let Some(t) = &a.q_norm {
                push(format!("{p}.self_attn.q_norm.weight"), t);
            }
            if let Some(t) = &a.k_norm {
                push(format!("{p}.self_attn.k_norm.weight"), t);
            }
            push(format!("{p}.post_attention_layernorm.weight"), &l.post_norm);
            let mlp = |prefix: String, m: &Mlp, push: &mut dyn FnMut(String, &Tensor)| {
                for (name, lin) in [
                    ("gate_proj", &m.gate),
                    ("up_proj", &m.up),
                    ("down_proj", &m.down),
                ] {
                    push(format!("{prefix}.{name}.weight"), &lin.weight);
                    if let Some(b) = &lin.bias {
                        push(format!("{prefix}.{name}.bias"), b);
                    }
                }
            };
            match &l.ff {
                FeedForward::Dense(m) => mlp(format!("{p}.mlp"), m, &mut push),
                FeedForward::Sparse(moe) => {
                    push(format!("{p}.mlp.gate.weight"), &moe.router);
                    for (e, m) in moe.experts.iter().enumerate() {
                        mlp(format!("{p}.mlp.experts.{e}"), m, &mut push);
                    }
                }
            }
        }
        push("model.norm.weight".into(), &self.norm);
        if let Some(h) = &self.lm_head {
            push("lm_head.weight".into(), h);
        }
        out
    }

    /// The same model with every parameter passed through `f` (dtype or device moves, making
    /// training variables). A model of several stages keeps its placement: `f` may change
    /// dtypes, and each result is put back on its stage's device.
    pub fn map_tensors(&self, mut f: impl FnMut(&str, &Tensor) -> Result<Tensor>) -> Result<Self> {
        let mut map = HashMap::new();
        for (name, t) in self.named_tensors() {
            let t = f(&name, &t)?;
            map.insert(name, t);
        }
        let model = if self.placement.len() == 1 {
            Self::from_tensors(self.config.clone(), map)?
        } else {
            Self::from_tensors_placed(self.config.clone(), map, self.placement.clone())?
        };
        Ok(model.with_pipeline(self.pipeline))
    }

    /// The model converted to `dtype`, all of it on `device` (one stage).
    pub fn to(&self, dtype: DType, device: &Device) -> Result<Self> {
        let mut map = HashMap::new();
        for (name, t) in self.named_tensors() {
            map.insert(name, t.to_dtype(dtype)?.to_device(device)?);
        }
        Ok(Self::from_tensors(self.config.clone(), map)?.with_pipeline(self.pipeline))
    }

    /// Family, size and dtype.
    pub fn info(&self) -> ModelInfo {
        let c = &self.config;
        let parameters = c.parameter_count();
        ModelInfo {
            family: c.family.to_string(),
            parameters,
            bytes: parameters * self.dtype.size_in_bytes() as u64,
            dtype: format!("{:?}", self.dtype).to_lowercase(),
            layers: c.num_hidden_layers,
            hidden_size: c.hidden_size,
            vocab_size: c.vocab_size,
            experts: c.moe.as_ref().map(|m| m.num_experts),
            tied_embeddings: c.tie_word_embeddings,
        }
    }

    /// Stage `s` of the forward pass on one (micro-)batch `ids`, on the stage's device. Stage 0
    /// embeds the ids (`input` is `None`); a later stage takes the previous stage's residual
    /// stream (`input`), moved to its device. Every stage runs its decoder layers; the last
    /// applies the final RMSNorm and the head and returns the per-token NLL f32 [B, T-1], the
    /// others the residual stream [B, T, hidden]. Stage after stage, these are exactly the ops
    /// of the one-stage model. Vocabulary bounds are the caller's to check.
    pub(crate) fn run_stage(
        &self,
        s: usize,
        ids: &TokenIds,
        input: Option<Tensor>,
        path: OpPath,
        opts: ScoreOptions,
    ) -> Result<Tensor> {
        if let Some(stack) = &self.hybrid {
            // One stage only (`from_tensors_placed` refuses more).
            let ids_t = ids.to_tensor(&self.device)?;
            let hidden = self.hybrid_hidden_states(stack, &ids_t, path)?;
            return self.head_nll(&hidden, &ids_t, path, opts);
        }
        let stages = self.placement.stages();
        let stage = stages
            .get(s)
            .ok_or_else(|| ModelError::Invalid(format!("no stage {s} of {}", stages.len())))?;
        let device = &stage.device;
        let c = &self.config;
        let t = ids.cols();
        let mut ids_here = None;
        let mut x = match input {
            None if s == 0 => {
                let ids_t = ids.to_tensor(device)?;
                let x = self.embed_ids(&ids_t)?;
                ids_here = Some(ids_t);
                x
            }
            None => {
                return Err(ModelError::Invalid(format!(
                    "stage {s} needs the residual stream of stage {}",
                    s - 1
                )))
            }
            Some(x) => transfer(&x, device)?,
        };
        let (rope, mask) = self.rope_and_mask(t, path, device)?;
        for layer in &self.layers[stage.layers.clone()] {
            x = self.layer_forward(layer, &x, &rope, mask.as_ref(), path)?;
        }
        if s + 1 < stages.len() {
            return Ok(x);
        }
        let hidden = rms_norm(&x, &self.norm, c.rms_norm_eps, path)?;
        let ids_t = match ids_here {
            Some(ids_t) => ids_t,
            None => ids.to_tensor(device)?,
        };
        self.head_nll(&hidden, &ids_t, path, opts)
    }

    /// A dense decoder's rotary tables for `t` positions and, for the unfused attention only,
    /// the additive causal mask, on `device`.
    fn rope_and_mask(
        &self,
        t: usize,
        path: OpPath,
        device: &Device,
    ) -> Result<(Rope, Option<Tensor>)> {
        let c = &self.config;
        let rope = Rope::new(c.rope_theta, c.head_dim, t, self.dtype, device)?;
        let mask = if self.fused_attention(path) {
            None
        } else {
            Some(causal_mask(t, device)?)
        };
        Ok((rope, mask))
    }

    /// The embeddings of `ids` [B, T]: the residual stream [B, T, hidden] entering layer 0.
    fn embed_ids(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        Ok(self.embed.index_select(&ids.flatten_all()?, 0)?.reshape((
            b,
            t,
            self.config.hidden_size,
        ))?)
    }

    /// The head's per-token NLL f32 [B, T-1] from the final hidden states, on the head's device.
    fn head_nll(
        &self,
        hidden: &Tensor,
        ids_t: &Tensor,
        path: OpPath,
        opts: ScoreOptions,
    ) -> Result<Tensor> {
        let (b, positions, rows, targets) = crate::loss::predicting_rows(hidden, ids_t)?;
        Ok(self
            .head_rows_nll(&rows, &targets, path, opts)?
            .reshape((b, positions))?)
    }

    /// [`Model::head_nll`] on rows already flattened: `hidden` [R, H] (final, normalised),
    /// `targets` [R]: NLL f32 [R], chunked from the first row as [`Model::head_chunk_rows`] says.
    fn head_rows_nll(
        &self,
        hidden: &Tensor,
        targets: &Tensor,
        path: OpPath,
        opts: ScoreOptions,
    ) -> Result<Tensor> {
        let head = self.head_weight();
        if path == OpPath::Kernels {
            return crate::loss::rows_nll_kernels(hidden, targets, head, opts.logits_chunk_bytes);
        }
        crate::loss::rows_nll(hidden, targets, head, opts.logits_chunk_bytes)
    }

    /// Rows per chunk of the head's logits on `path` (the same chunks whatever rows come first).
    fn head_chunk_rows(&self, path: OpPath, opts: ScoreOptions) -> usize {
        let vocab = self.config.vocab_size;
        if path == OpPath::Kernels {
            crate::loss::kernel_chunk_rows(vocab, self.dtype, opts.logits_chunk_bytes)
        } else {
            crate::loss::chunk_rows(vocab, opts.logits_chunk_bytes)
        }
    }

    /// The head matrix [V, H]: `lm_head`, or the tied embeddings (a copy on the last stage's
    /// device when that is not the embedding's).
    fn head_weight(&self) -> &Tensor {
        self.lm_head
            .as_ref()
            .or(self.head_copy.as_ref())
            .unwrap_or(&self.embed)
    }

    /// Whether attention runs as one fused kernel on this path (koth-kernels, half precision).
    fn fused_attention(&self, path: OpPath) -> bool {
        path == OpPath::Kernels && koth_kernels::attention_usable(&self.embed, self.config.head_dim)
    }

    fn layer_forward(
        &self,
        layer: &Layer,
        x: &Tensor,
        rope: &Rope,
        mask: Option<&Tensor>,
        path: OpPath,
    ) -> Result<Tensor> {
        let eps = self.config.rms_norm_eps;
        let h = rms_norm(x, &layer.input_norm, eps, path)?;
        let attended = self.attention(&layer.attn, &h, rope, mask, path)?;
        // Scoring on the kernels: the residual add and the norm after it in one pass (bit for bit
        // the two kernels' result).
        let fused = path == OpPath::Kernels
            && koth_kernels::usable(x)
            && !x.track_op()
            && !attended.track_op()
            && !layer.post_norm.track_op();
        let (x, h) = if fused {
            koth_kernels::add_rms_norm(x, &attended, &layer.post_norm, eps as f32)?
        } else {
            let x = (x + attended)?;
            let h = rms_norm(&x, &layer.post_norm, eps, path)?;
            (x, h)
        };
        let (b, t, hidden) = h.dims3()?;
        let flat = h.reshape((b * t, hidden))?;
        let m = match &layer.ff {
            FeedForward::Dense(mlp) => mlp.forward(&flat, path)?,
            FeedForward::Sparse(moe) => moe_forward(moe, &flat, path)?,
        };
        Ok((x + m.reshape((b, t, hidden))?)?)
    }

    fn attention(
        &self,
        attn: &Attention,
        h: &Tensor,
        rope: &Rope,
        mask: Option<&Tensor>,
        path: OpPath,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, t, hidden) = h.dims3()?;
        let (nh, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let flat = h.reshape((b * t, hidden))?;
        let q = attn.q.forward(&flat)?.reshape((b, t, nh, hd))?;
        let k = attn.k.forward(&flat)?.reshape((b, t, nkv, hd))?;
        let v = attn.v.forward(&flat)?.reshape((b, t, nkv, hd))?;
        if path == OpPath::Kernels && koth_kernels::norm_rope_usable(&q, hd) {
            return self.attention_kernels(attn, (q, k, v), rope, mask, path);
        }
        // qwen3: RMSNorm over head_dim per head, before RoPE.
        let q = match &attn.q_norm {
            Some(w) => rms_norm(&q, w, c.rms_norm_eps, path)?,
            None => q,
        };
        let k = match &attn.k_norm {
            Some(w) => rms_norm(&k, w, c.rms_norm_eps, path)?,
            None => k,
        };
        let q = rope.apply(&q.transpose(1, 2)?.contiguous()?, path)?; // [B, nh, T, hd]
        let k = rope.apply(&k.transpose(1, 2)?.contiguous()?, path)?; // [B, nkv, T, hd]
        let v = v.transpose(1, 2)?.contiguous()?;
        let out = attention_composite(&q, &k, &v, mask, path)?
            .transpose(1, 2)?
            .reshape((b * t, nh * hd))?;
        Ok(attn.o.forward(&out)?.reshape((b, t, hidden))?)
    }

    /// Attention on koth's kernels, in the projections' own [B, T, H, D] layout (no transposes):
    /// q/k norm + RoPE in one pass when scoring (RMSNorm then RoPE, each with its backward, when
    /// training), then cuDNN's fused causal attention.
    fn attention_kernels(
        &self,
        attn: &Attention,
        (q, k, v): (Tensor, Tensor, Tensor),
        rope: &Rope,
        mask: Option<&Tensor>,
        path: OpPath,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, t, nh, hd) = q.dims4()?;
        let eps = c.rms_norm_eps as f32;
        let (cos, sin) = rope.half_tables();
        let training = q.track_op() || attn.q.weight.track_op();
        let (q, k) = if training {
            let norm = |x: Tensor, w: &Option<Tensor>| -> Result<Tensor> {
                let x = match w {
                    Some(w) => koth_kernels::rms_norm_trainable(&x, w, eps)?,
                    None => x,
                };
                Ok(koth_kernels::rope_trainable(&x, cos, sin)?)
            };
            (norm(q, &attn.q_norm)?, norm(k, &attn.k_norm)?)
        } else {
            (
                koth_kernels::norm_rope(&q, attn.q_norm.as_ref(), cos, sin, eps)?,
                koth_kernels::norm_rope(&k, attn.k_norm.as_ref(), cos, sin, eps)?,
            )
        };
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        let out = if self.fused_attention(path) {
            if training {
                koth_kernels::attention_trainable(&q, &k, &v, scale)?
            } else {
                koth_kernels::attention(&q, &k, &v, scale)?
            }
        } else {
            let mask = mask.ok_or_else(|| {
                ModelError::Invalid("unfused attention needs the causal mask".into())
            })?;
            let bhtd = |x: Tensor| -> Result<Tensor> { Ok(x.transpose(1, 2)?.contiguous()?) };
            attention_composite(&bhtd(q)?, &bhtd(k)?, &bhtd(v)?, Some(mask), path)?
                .transpose(1, 2)?
        };
        let out = out.reshape((b * t, nh * hd))?;
        Ok(attn.o.forward(&out)?.reshape((b, t, c.hidden_size))?)
    }

    /// Per-token next-token negative log-likelihood, f32 [B, T-1], on the head's device: the
    /// whole batch through every stage in turn.
    fn token_nll(&self, ids: &TokenIds, path: OpPath, opts: ScoreOptions) -> Result<Tensor> {
        ids.check_vocab(self.config.vocab_size)?;
        let mut x = None;
        for s in 0..self.placement.len() {
            x = Some(self.run_stage(s, ids, x, path, opts)?);
        }
        x.ok_or_else(|| ModelError::Invalid("the model has no stage".into()))
    }

    /// Scoring path: per-token NLL f32 [B, T-1] through the fused kernels. Use one path for
    /// both models of a duel.
    pub fn nll(&self, ids: &TokenIds) -> Result<Tensor> {
        self.nll_with(ids, self.scoring_path(), ScoreOptions::default())
    }

    /// The scoring path this model takes by default: koth's GPU kernels on a CUDA device in a
    /// build that has them, candle's fused ops otherwise.
    pub fn scoring_path(&self) -> OpPath {
        OpPath::scoring_for(&self.embed)
    }

    /// The training path this model takes by default: koth's GPU kernels on a CUDA device in a
    /// build that has them, the differentiable composites otherwise.
    pub fn training_path(&self) -> OpPath {
        OpPath::training_for(&self.embed)
    }

    /// Mean next-token NLL of each row (a duel's per-window loss), f32, through the scoring
    /// path; the row means are reduced in f32 from the f32 per-token values. A model of one
    /// stage scores the batch at once, as it always has; a model of several stages runs it
    /// through its [`Pipeline`] of micro-batches.
    pub fn sequence_losses(&self, ids: &TokenIds) -> Result<Vec<f32>> {
        if self.placement.len() == 1 {
            return crate::pipeline::row_means(&self.nll(ids)?);
        }
        self.sequence_losses_with(
            ids,
            self.scoring_path(),
            ScoreOptions::default(),
            &self.pipeline,
        )
    }

    /// [`Model::sequence_losses`] through `path`, cutting the batch into `pipeline`'s
    /// micro-batches (on a model of one stage too: the reference a pipelined run is compared
    /// with).
    pub fn sequence_losses_with(
        &self,
        ids: &TokenIds,
        path: OpPath,
        opts: ScoreOptions,
        pipeline: &Pipeline,
    ) -> Result<Vec<f32>> {
        crate::pipeline::sequence_losses(self, ids, path, opts, pipeline)
    }

    /// Per-token NLL through the chosen path with explicit options.
    pub fn nll_with(&self, ids: &TokenIds, path: OpPath, opts: ScoreOptions) -> Result<Tensor> {
        self.token_nll(ids, path, opts)
    }

    /// Mean NLL (a scalar f32 tensor) through the differentiable path: call `backward()` on it
    /// when the parameters are `Var`s.
    pub fn loss(&self, ids: &TokenIds) -> Result<Tensor> {
        self.loss_with(ids, self.training_path())
    }

    /// [`Model::loss`] through the chosen path (`Composite` or `Kernels`; `Fused` gives no
    /// gradient).
    pub fn loss_with(&self, ids: &TokenIds, path: OpPath) -> Result<Tensor> {
        let nll = self.token_nll(ids, path, ScoreOptions::default())?;
        Ok(nll.mean_all()?)
    }

    /// The mean NLL over the batch and d(mean NLL)/d(parameter) for every parameter, in f32,
    /// under Hugging Face names, through the training path, checkpointed by layer where
    /// [`Checkpointing::Auto`] would. The model itself is left unchanged.
    pub fn loss_and_grads(&self, ids: &TokenIds) -> Result<(f32, Vec<(String, Tensor)>)> {
        let path = self.training_path();
        if self.checkpoints_layers(path, Checkpointing::Auto) {
            return self.loss_and_grads_checkpointed(ids, path, CheckpointOptions::default());
        }
        self.loss_and_grads_with(ids, path)
    }

    /// Whether a training step through `path` under `mode` recomputes each layer in the
    /// backward (`model/checkpoint.rs`): never where the hand-written backward applies (it keeps
    /// only what each layer needs already) nor on a model of several stages.
    pub fn checkpoints_layers(&self, path: OpPath, mode: Checkpointing) -> bool {
        if self.trains_explicitly(path) || self.placement.len() != 1 {
            return false;
        }
        match mode {
            Checkpointing::Auto => self.device.is_cuda(),
            Checkpointing::Layers => true,
            Checkpointing::Off => false,
        }
    }

    /// [`Model::loss_and_grads_with`] with activation checkpointing by layer: only the residual
    /// stream at each layer boundary is kept through the forward, each layer is recomputed in the
    /// backward. The same gradients up to the order of the sums across layers; one more forward
    /// per step. The head's backward runs a few hundred positions at a time
    /// ([`CheckpointOptions`]). An error for a model of several stages.
    pub fn loss_and_grads_checkpointed(
        &self,
        ids: &TokenIds,
        path: OpPath,
        options: CheckpointOptions,
    ) -> Result<(f32, Vec<(String, Tensor)>)> {
        let (trainable, vars) = self.trainable_copy()?;
        let (loss, mut grads) = checkpoint::loss_and_grads(&trainable, ids, path, options)?;
        let out = vars
            .into_iter()
            .map(|(name, var)| Ok((name, checkpoint::take_grad(&mut grads, &var)?)))
            .collect::<Result<_>>()?;
        Ok((loss, out))
    }

    /// A copy of the model whose parameters are training variables, and the variables under
    /// their Hugging Face names.
    fn trainable_copy(&self) -> Result<(Model, Vec<(String, candle_core::Var)>)> {
        let mut vars = Vec::new();
        let trainable = self.map_tensors(|name, t| {
            let v = candle_core::Var::from_tensor(t)?;
            let tensor = v.as_tensor().clone();
            vars.push((name.to_owned(), v));
            Ok(tensor)
        })?;
        Ok((trainable, vars))
    }

    /// The checkpointed backward of a model whose parameters are training variables: the loss
    /// and each variable's f32 gradient by tensor id (what [`crate::Trainer`] holds).
    pub(crate) fn grads_by_layer(
        &self,
        ids: &TokenIds,
        path: OpPath,
    ) -> Result<(f32, HashMap<candle_core::TensorId, Tensor>)> {
        checkpoint::loss_and_grads(self, ids, path, CheckpointOptions::default())
    }

    /// [`Model::loss_and_grads`] through the chosen differentiable path (`Composite` or
    /// `Kernels`), with the whole forward graph kept for candle's autograd (no checkpointing):
    /// what the check that the kernels' gradients equal the composites' compares.
    pub fn loss_and_grads_with(
        &self,
        ids: &TokenIds,
        path: OpPath,
    ) -> Result<(f32, Vec<(String, Tensor)>)> {
        if self.trains_explicitly(path) {
            return self.loss_and_grads_explicit(ids);
        }
        let (trainable, vars) = self.trainable_copy()?;
        let loss = trainable.loss_with(ids, path)?;
        let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let grads = loss.backward()?;
        let mut out = Vec::with_capacity(vars.len());
        for (name, var) in vars {
            let g = match grads.get(var.as_tensor()) {
                Some(g) => g.to_dtype(DType::F32)?,
                None => var.as_tensor().zeros_like()?.to_dtype(DType::F32)?,
            };
            out.push((name, g));
        }
        Ok((value, out))
    }
}

impl Model {
    /// Whether [`Model::loss_and_grads_explicit`] covers this model: a dense decoder (llama,
    /// qwen2, qwen3) on one device. The kernels' training path takes it for such models.
    pub fn has_explicit_backward(&self) -> bool {
        explicit::applies(self)
    }

    /// Whether gradients through `path` come from the explicit backward rather than candle's
    /// autograd: the kernels' path on a model it covers.
    pub(crate) fn trains_explicitly(&self, path: OpPath) -> bool {
        path == OpPath::Kernels && self.has_explicit_backward()
    }

    /// [`Model::loss_and_grads`] through the hand-written backward of `model/explicit.rs`
    /// instead of candle's autograd: only what each layer's backward needs is kept, each layer's
    /// tensors are freed once its backward is done, the loss's gradient is written over each
    /// chunk's logits. koth's GPU kernels run each op where they can, the training composites
    /// (differentiated locally) elsewhere. An error for a mixture of experts, a hybrid or a
    /// model split across devices ([`Model::has_explicit_backward`]).
    pub fn loss_and_grads_explicit(&self, ids: &TokenIds) -> Result<(f32, Vec<(String, Tensor)>)> {
        let (loss, grads) = explicit::loss_and_grads(self, ids)?;
        let grads = grads
            .into_iter()
            .map(|(name, g)| Ok((name, g.to_dtype(DType::F32)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok((loss, grads))
    }
}

/// Attention over [B, H, T, D] q and [B, Hkv, T, D] k, v through materialised scores (the
/// reference form, and the only one in f32): returns [B, H, T, D].
fn attention_composite(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    path: OpPath,
) -> Result<Tensor> {
    let (b, nh, t, hd) = q.dims4()?;
    let nkv = k.dim(1)?;
    let dtype = q.dtype();
    // Grouped-query attention: each kv head serves nh/nkv query heads.
    let rep = nh / nkv;
    let (k, v) = if rep == 1 {
        (k.clone(), v.clone())
    } else {
        let expand = |x: &Tensor| -> Result<Tensor> {
            Ok(x.unsqueeze(2)?
                .broadcast_as((b, nkv, rep, t, hd))?
                .reshape((b, nh, t, hd))?)
        };
        (expand(k)?, expand(v)?)
    };
    let mask = mask.ok_or_else(|| ModelError::Invalid("attention needs the causal mask".into()))?;
    let scale = 1.0 / (hd as f64).sqrt();
    // Scoring in half precision: the scores stay in f32 (no rounding of q·k to bf16), as the
    // fused attention of koth's GPU kernels and of PyTorch's SDPA computes them, so a bf16 score
    // agrees across devices. The training composite keeps transformers' eager rounding.
    let (q, k) = if path == OpPath::Fused && dtype != DType::F32 {
        (q.to_dtype(DType::F32)?, k.to_dtype(DType::F32)?)
    } else {
        (q.clone(), k)
    };
    let scores = (q.matmul(&k.t()?)? * scale)?;
    // Softmax in f32 whatever the model dtype (transformers' eager attention does the same).
    let scores = scores.to_dtype(DType::F32)?.broadcast_add(mask)?;
    let probs = softmax_last(&scores, path)?.to_dtype(dtype)?;
    Ok(probs.matmul(&v)?)
}

/// qwen3_moe's sparse block: softmax router (f32) → top-k → optional renormalisation → the
/// weighted sum of the chosen experts. Tokens are dispatched sparsely: each expert sees only the
/// rows routed to it (index_select) and its weighted output is added back (index_add). Both ops,
/// and the gather of the routing weights, are differentiable in candle, so this one
/// implementation serves scoring and training; the router gets its gradient through the
/// gathered probabilities. Top-k is chosen by `plan::top_k_experts` (a GPU kernel on CUDA; ties go
/// to the lower expert index).
fn moe_forward(moe: &SparseMoe, x: &Tensor, path: OpPath) -> Result<Tensor> {
    let (n, _hidden) = x.dims2()?;
    let num_experts = moe.experts.len();
    let logits = x.matmul(&moe.router.t()?)?.to_dtype(DType::F32)?;
    let probs = softmax_last(&logits, path)?; // [N, E] f32
    let k = moe.top_k.min(num_experts);
    // The choice (largest first, ties to the lower expert) is made where the probabilities are:
    // on a GPU by one kernel, so only the [N, k] choice crosses to the host for the grouping
    // (not the [N, E] probabilities); on the CPU by one selection pass per row.
    let (chosen, chosen_on_device) = if koth_kernels::usable(&probs) && num_experts <= 1024 {
        let on_device = koth_kernels::router_top_k(&probs, k)?;
        (on_device.flatten_all()?.to_vec1::<u32>()?, Some(on_device))
    } else {
        let host = probs.flatten_all()?.to_vec1::<f32>()?;
        (crate::plan::top_k_experts(&host, num_experts, k), None)
    };
    // Grouped dispatch: every routed (token, slot) sorted by expert, stably (token order within
    // an expert), so the tokens are gathered once, each expert runs on one contiguous block,
    // and the weighted outputs are scattered back once, in the same order the per-expert loop
    // added them (bit-identical to it). A GPU gets three index uploads per layer instead of two
    // per expert.
    let (slots, offsets) = crate::plan::group_by_expert(&chosen, num_experts);
    let rows: Vec<u32> = slots.iter().map(|&s| s / k as u32).collect();
    let batched = match &moe.stacked {
        // The grouped GEMM (cuBLAS) takes the groups as they are, on CUDA.
        Some(stacked) if !x.track_op() && grouped_experts_enabled() && koth_kernels::usable(x) => {
            Some(ExpertGemms::Grouped(stacked))
        }
        Some(stacked) if !x.track_op() => {
            crate::plan::pad_groups(&rows, &offsets, n as u32, MAX_EXPERT_PADDING)
                .map(|padded| ExpertGemms::Padded(stacked, padded))
        }
        _ => None,
    };
    let device = x.device();
    let chosen = match chosen_on_device {
        Some(t) => t,
        None => Tensor::from_vec(chosen, (n, k), device)?,
    };
    let mut weights = probs.gather(&chosen, 1)?; // [N, k]
    if moe.norm_topk_prob {
        weights = weights.broadcast_div(&weights.sum_keepdim(D::Minus1)?)?;
    }
    let weights = weights.to_dtype(x.dtype())?.flatten_all()?;
    let routed = rows.len();
    let rows = Tensor::from_vec(rows, routed, device)?;
    // Scoring on CUDA sums each token's k weighted outputs in one kernel (below), from each
    // token's rows of the grouped list; everything else takes index_add.
    let combine_on_device = koth_kernels::usable(x) && !x.track_op();
    let token_rows = combine_on_device.then(|| crate::plan::token_rows(&slots, n, k));
    let slots = Tensor::from_vec(slots, routed, device)?;
    let y = match batched {
        // Scoring with stacked experts (on CUDA): all experts in one batched GEMM per
        // projection over their rows padded to the largest group (padding rows read a zero row
        // and are dropped).
        Some(ExpertGemms::Padded(stacked, padded)) => experts_batched(stacked, x, &padded, routed)?,
        // Scoring with stacked experts on CUDA (the default; KOTH_MOE_GROUPED=0 turns it off):
        // each projection of all experts as one cuBLAS grouped GEMM over the grouped rows, no
        // padding.
        Some(ExpertGemms::Grouped(stacked)) => {
            let gathered = x.index_select(&rows, 0)?;
            let g = koth_kernels::grouped_matmul(&gathered, &stacked.gate, &offsets)?;
            let u = koth_kernels::grouped_matmul(&gathered, &stacked.up, &offsets)?;
            let p = koth_kernels::swiglu(&g, &u)?;
            koth_kernels::grouped_matmul(&p, &stacked.down, &offsets)?
        }
        None => {
            let gathered = x.index_select(&rows, 0)?; // [N*k, hidden], grouped by expert
            let mut outputs = Vec::new();
            for (e, expert) in moe.experts.iter().enumerate() {
                let (start, end) = (offsets[e], offsets[e + 1]);
                if start == end {
                    continue;
                }
                outputs.push(expert.forward(&gathered.narrow(0, start, end - start)?, path)?);
            }
            Tensor::cat(&outputs, 0)?
        }
    };
    let w = weights.index_select(&slots, 0)?;
    if let Some(pos) = token_rows {
        // In the order and with the roundings of the index_add below (candle's CUDA index_add
        // walks all routed rows in one thread per column).
        let pos = Tensor::from_vec(pos, (n, k), device)?;
        return Ok(koth_kernels::moe_combine(&y, &w, &pos)?);
    }
    let out = x
        .zeros_like()?
        .index_add(&rows, &y.broadcast_mul(&w.unsqueeze(1)?)?, 0)?;
    Ok(out)
}

/// Whether MoE scoring on CUDA stacks the experts for padded batched GEMMs: only with
/// `KOTH_MOE_BATCHED=1` (read once). On the H200 (2026-12-05, `scripts/bench/gpu-run.sh
/// moe-batched`) it passed the golden set but scored the 12-layer 30B-A3B pair at half the
/// grouped GEMM's rate (25,598 against 53,058 tokens/s), so it stays opt-in.
/// Stacking happens when a model is assembled; [`Model::place`] keeps the stacks of the layers
/// that stay on their device.
fn batched_experts_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("KOTH_MOE_BATCHED").is_ok_and(|v| v == "1"))
}

/// How the experts' projections run when they are stacked (see [`moe_forward`]).
enum ExpertGemms<'a> {
    /// One batched GEMM per projection over the groups padded to the largest.
    Padded(&'a StackedExperts, crate::plan::PaddedGroups),
    /// One cuBLAS grouped GEMM per projection, each expert at its own row count.
    Grouped(&'a StackedExperts),
}

/// Whether MoE scoring on CUDA runs the experts as cuBLAS grouped GEMMs
/// ([`koth_kernels::grouped_matmul`]): yes unless `KOTH_MOE_GROUPED=0` (read once). Measured on
/// an H100 at the Qwen3-30B-A3B shape (12 layers, B=8, T=2048): 1.13× transformers' grouped_mm,
/// where the per-expert loop was 0.67×; it passes the golden set on CUDA (docs/SCALE.md). It
/// takes precedence over `KOTH_MOE_BATCHED=1`; both stack the experts when a model is
/// assembled on CUDA ([`Model::place`] keeps the stacks of the layers that stay on their
/// device, so `koth bench score --stages N` makes no second copy).
fn grouped_experts_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("KOTH_MOE_GROUPED").map_or(true, |v| v != "0"))
}

/// The most padding the batched expert GEMM accepts: experts × largest group at most this many
/// times the routed rows (beyond it, a skewed router, the per-expert loop does less work).
const MAX_EXPERT_PADDING: usize = 2;

/// Every expert's SwiGLU MLP on its rows as three batched GEMMs: `padded` (from
/// [`crate::plan::pad_groups`]) gathers each expert's rows into a [E, M, hidden] block (padding
/// rows read the zero row appended at index N); the outputs of the real rows come back in the
/// grouped order, [routed, hidden].
fn experts_batched(
    stacked: &StackedExperts,
    x: &Tensor,
    padded: &crate::plan::PaddedGroups,
    routed: usize,
) -> Result<Tensor> {
    let (_, hidden) = x.dims2()?;
    let experts = stacked.gate.dim(0)?;
    let device = x.device();
    let x_pad = Tensor::cat(&[x, &x.narrow(0, 0, 1)?.zeros_like()?], 0)?;
    let index = Tensor::from_vec(padded.rows.clone(), padded.rows.len(), device)?;
    let xe = x_pad
        .index_select(&index, 0)?
        .reshape((experts, padded.width, hidden))?;
    let g = xe.matmul(&stacked.gate.transpose(1, 2)?)?;
    let u = xe.matmul(&stacked.up.transpose(1, 2)?)?;
    // The same product as `Mlp::forward` on this device's scoring path.
    let p = if koth_kernels::usable(&g) {
        koth_kernels::swiglu(&g, &u)?
    } else {
        (silu_rounded_once(&g)? * u)?
    };
    let y = p
        .matmul(&stacked.down.transpose(1, 2)?)?
        .reshape((experts * padded.width, hidden))?;
    let valid = Tensor::from_vec(padded.valid.clone(), routed, device)?;
    Ok(y.index_select(&valid, 0)?)
}

/// Describe a checkpoint directory without loading its weights: config.json is validated, every
/// safetensors header is parsed with bounds checks, and the tensor set must match the config.
pub fn inspect(dir: &Path) -> Result<ModelInfo> {
    let config = ModelConfig::from_file(&dir.join("config.json"))?;
    let files = CheckpointFiles::open(dir)?;
    files.check_tensor_set(dir, &config)?;
    Ok(ModelInfo {
        family: config.family.to_string(),
        parameters: config.parameter_count(),
        bytes: files.data_bytes(),
        dtype: files.dtypes().join(",").to_lowercase(),
        layers: config.num_hidden_layers,
        hidden_size: config.hidden_size,
        vocab_size: config.vocab_size,
        experts: config.moe.as_ref().map(|m| m.num_experts),
        tied_embeddings: config.tie_word_embeddings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batched expert GEMMs (stacked weights, groups padded to the largest) give the
    /// per-expert loop's output: the gather, the padding rows and the return to grouped order.
    #[test]
    fn stacked_experts_match_the_per_expert_loop() {
        use rand::{Rng, SeedableRng};
        let (hidden, inter, experts, tokens) = (8, 6, 4, 64);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(31);
        let mut t = |shape: &[usize]| -> Tensor {
            let n = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
        };
        let linear = |w: Tensor| Linear {
            weight: w,
            bias: None,
        };
        let mlps: Vec<Mlp> = (0..experts)
            .map(|_| Mlp {
                gate: linear(t(&[inter, hidden])),
                up: linear(t(&[inter, hidden])),
                down: linear(t(&[hidden, inter])),
            })
            .collect();
        let router = t(&[experts, hidden]);
        let x = t(&[tokens, hidden]);
        for dtype in [DType::F32, DType::BF16] {
            let cast = |w: &Tensor| w.to_dtype(dtype).unwrap();
            let mlps: Vec<Mlp> = mlps
                .iter()
                .map(|m| Mlp {
                    gate: linear(cast(&m.gate.weight)),
                    up: linear(cast(&m.up.weight)),
                    down: linear(cast(&m.down.weight)),
                })
                .collect();
            let looped = SparseMoe::assemble(cast(&router), mlps.clone(), 2, true, false).unwrap();
            let stacked = SparseMoe::assemble(cast(&router), mlps, 2, true, true).unwrap();
            assert!(looped.stacked.is_none() && stacked.stacked.is_some());
            let x = cast(&x);
            let host = |m: &SparseMoe| -> Vec<f32> {
                moe_forward(m, &x, OpPath::Fused)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            };
            let (want, got) = (host(&looped), host(&stacked));
            let tol = if dtype == DType::F32 { 1e-5 } else { 2e-2 };
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= tol * b.abs().max(1.0),
                    "{dtype:?} element {i}: stacked {a}, per expert {b}"
                );
            }
        }
    }

    /// Re-placing a model keeps the blocks of the layers that stay on their device: a mixture of
    /// experts' stacked weights are the same tensors, not a second stack (on CUDA each would be
    /// a second copy of every expert), and the placed model scores bit for bit as the original.
    #[test]
    fn place_keeps_stacked_experts_of_layers_that_stay() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/hf-golden/qwen3moe-tiny/config.json");
        let config = ModelConfig::from_file(&dir).unwrap();
        let mut model = Model::init(&config, 7, DType::F32, &Device::Cpu).unwrap();
        // On the CPU nothing is stacked by default: stack every block as CUDA scoring does.
        for layer in &mut model.layers {
            if let FeedForward::Sparse(moe) = &layer.ff {
                let stacked = SparseMoe::assemble(
                    moe.router.clone(),
                    moe.experts.clone(),
                    moe.top_k,
                    moe.norm_topk_prob,
                    true,
                )
                .unwrap();
                layer.ff = FeedForward::Sparse(stacked);
            }
        }
        let stacks = |m: &Model| -> Vec<Option<candle_core::TensorId>> {
            m.layers
                .iter()
                .map(|l| match &l.ff {
                    FeedForward::Sparse(moe) => moe.stacked.as_ref().map(|s| s.gate.id()),
                    FeedForward::Dense(_) => None,
                })
                .collect()
        };
        let before = stacks(&model);
        assert!(
            before.iter().any(Option::is_some),
            "the fixture has MoE layers"
        );
        let layers = config.num_hidden_layers;
        for devices in [vec![Device::Cpu], vec![Device::Cpu, Device::Cpu]] {
            let placed = model
                .place(Placement::even(layers, &devices).unwrap())
                .unwrap();
            assert_eq!(placed.placement().len(), devices.len());
            assert_eq!(stacks(&placed), before, "{} stage(s)", devices.len());
            let ids = TokenIds::new(vec![1, 5, 9, 2, 7, 3, 4, 4, 8, 0, 6, 1], 2, 6).unwrap();
            let opts = ScoreOptions::default();
            let pipeline = Pipeline::default();
            let want = model
                .sequence_losses_with(&ids, OpPath::Fused, opts, &pipeline)
                .unwrap();
            let got = placed
                .sequence_losses_with(&ids, OpPath::Fused, opts, &pipeline)
                .unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{} stage(s)", devices.len());
        }
    }

    #[test]
    fn half_precision_silu_is_the_f32_result_rounded_once() {
        let xs: Vec<f32> = (0..512).map(|i| (i as f32 - 256.0) * 0.0437).collect();
        let x32 = Tensor::from_vec(xs, 512, &Device::Cpu).unwrap();
        for dtype in [DType::BF16, DType::F16] {
            let x = x32.to_dtype(dtype).unwrap();
            let got: Vec<f32> = silu_rounded_once(&x)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1()
                .unwrap();
            let exact = x.to_dtype(DType::F32).unwrap().silu().unwrap();
            let want: Vec<f32> = exact
                .to_dtype(dtype)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(got, want, "{dtype:?}");
            // candle's CPU half kernel rounds after each operation and differs somewhere.
            let native: Vec<f32> = x
                .silu()
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_ne!(
                native, want,
                "{dtype:?}: the native kernel already rounds once"
            );
        }
    }
}
