//! Activation checkpointing by layer: the gradients of candle's autograd with only one layer's
//! graph alive at a time.
//!
//! Candle's autograd keeps every intermediate tensor of the forward pass until `backward`
//! returns. For the models the hand-written backward (`explicit.rs`) does not cover — the
//! mixtures of experts and the Qwen3.5 hybrids — that is tens of tensors per layer per token: the
//! 0.92B hybrid ran out of an 80 GB H100 at two sequences of 2048 tokens. Here the forward runs
//! layer by layer, keeping only the residual stream at each layer boundary (detached: each
//! layer's graph is freed as soon as its output exists). The backward then runs the segments in
//! reverse: the head (a few hundred positions at a time, so the logits of the whole batch are
//! never alive), each layer recomputed from its saved input, then the embedding. Each segment's graph
//! is differentiated with the incoming gradient as the seed (`sum(out · grad)`, whose gradient
//! with respect to `out` is exactly `grad`), and the parameters' gradients are summed in f32
//! across segments (a tied embedding gets the head's and the embedding's).
//!
//! The recomputation runs exactly the ops of the first forward on the same inputs, so the
//! gradients are those of the whole-graph autograd up to the order of the sums over segments
//! (`tests/checkpoint.rs` holds them together). The cost is one more forward per step.

use std::collections::HashMap;

use candle_core::{DType, Tensor, TensorId, Var};

use super::hybrid::{HybridForward, HybridStack};
use super::{Layer, Model};
use crate::error::{ModelError, Result};
use crate::loss::row_chunks;
use crate::model::TokenIds;
use crate::ops::{rms_norm, OpPath, Rope};
use crate::ScoreOptions;

/// Whether the training step recomputes each layer's forward in the backward (see the module
/// docs) instead of keeping the whole forward graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Checkpointing {
    /// By layer on a CUDA device, where memory is what limits the batch; the whole graph on the
    /// CPU, where the extra forward is the larger cost.
    #[default]
    Auto,
    /// Always by layer.
    Layers,
    /// Never: the whole forward graph stays alive until the backward.
    Off,
}

impl Checkpointing {
    /// Parses `auto`, `layers` or `off` (a command-line flag).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "layers" => Ok(Self::Layers),
            "off" => Ok(Self::Off),
            other => Err(ModelError::Invalid(format!(
                "activation checkpointing `{other}`: expected auto, layers or off"
            ))),
        }
    }
}

/// How the checkpointed backward cuts the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointOptions {
    /// The head's own chunking ([`ScoreOptions::logits_chunk_bytes`]); the whole-graph path's
    /// default keeps the two bit for bit comparable.
    pub logits_chunk_bytes: usize,
    /// The bound on one head segment's logits (model dtype): the head's backward runs as many of
    /// its chunks at a time as fit, at least one. Small by default (256 MiB), because the
    /// composite cross-entropy's graph holds several f32 copies of its logits (on the CPU a
    /// 248k vocabulary costs about 20 MB per position), and each segment's graph is freed
    /// before the next is made.
    pub head_segment_bytes: usize,
}

impl Default for CheckpointOptions {
    fn default() -> Self {
        Self {
            logits_chunk_bytes: ScoreOptions::default().logits_chunk_bytes,
            head_segment_bytes: 256 << 20,
        }
    }
}

/// The per-forward context of the one-stage model's layers.
enum Context<'m> {
    Dense { rope: Rope, mask: Option<Tensor> },
    Hybrid(&'m HybridStack, HybridForward),
}

/// A one-stage model's forward cut at its layer boundaries.
struct Segments<'m> {
    model: &'m Model,
    path: OpPath,
    context: Context<'m>,
}

impl<'m> Segments<'m> {
    fn new(model: &'m Model, t: usize, path: OpPath) -> Result<Self> {
        let context = match &model.hybrid {
            Some(stack) => Context::Hybrid(stack, model.hybrid_forward(t, path)?),
            None => {
                let (rope, mask) = model.rope_and_mask(t, path, &model.device)?;
                Context::Dense { rope, mask }
            }
        };
        Ok(Self {
            model,
            path,
            context,
        })
    }

    fn layers(&self) -> usize {
        match &self.context {
            Context::Dense { .. } => self.model.layers.len(),
            Context::Hybrid(stack, _) => stack.len(),
        }
    }

    fn layer(&self, i: usize, x: &Tensor) -> Result<Tensor> {
        match &self.context {
            Context::Dense { rope, mask } => {
                let layer: &Layer = &self.model.layers[i];
                self.model
                    .layer_forward(layer, x, rope, mask.as_ref(), self.path)
            }
            Context::Hybrid(stack, f) => self.model.hybrid_layer(stack, i, x, f),
        }
    }

    /// Final norm and head on flattened rows: `x` [R, H] of the residual stream, `targets` [R]:
    /// NLL f32 [R].
    fn head_rows(&self, x: &Tensor, targets: &Tensor, opts: ScoreOptions) -> Result<Tensor> {
        let hidden = match &self.context {
            Context::Dense { .. } => rms_norm(
                x,
                &self.model.norm,
                self.model.config.rms_norm_eps,
                self.path,
            )?,
            Context::Hybrid(_, f) => self.model.hybrid_final_norm(x, f)?,
        };
        self.model.head_rows_nll(&hidden, targets, self.path, opts)
    }
}

/// Gradients summed in f32 over the segments, by parameter.
struct GradSum<'a> {
    params: &'a [Tensor],
    sums: HashMap<TensorId, Tensor>,
}

impl<'a> GradSum<'a> {
    fn new(params: &'a [Tensor]) -> Self {
        Self {
            params,
            sums: HashMap::new(),
        }
    }

    /// Adds the parameters' gradients in `store` (one segment's backward).
    fn add(&mut self, store: &candle_core::backprop::GradStore) -> Result<()> {
        for p in self.params {
            if let Some(g) = store.get(p) {
                let g = g.to_dtype(DType::F32)?;
                let sum = match self.sums.remove(&p.id()) {
                    Some(s) => (s + g)?,
                    None => g,
                };
                self.sums.insert(p.id(), sum);
            }
        }
        Ok(())
    }
}

/// The seed of a segment's backward: a scalar whose gradient with respect to `out` is `grad`.
fn seeded(out: &Tensor, grad: &Tensor) -> Result<Tensor> {
    Ok((out * grad)?.sum_all()?)
}

/// `var`'s f32 gradient out of `grads` (by tensor id), or zeros when nothing depended on it.
pub(crate) fn take_grad(grads: &mut HashMap<TensorId, Tensor>, var: &Var) -> Result<Tensor> {
    match grads.remove(&var.as_tensor().id()) {
        Some(g) => Ok(g),
        None => Ok(var.as_tensor().zeros_like()?.to_dtype(DType::F32)?),
    }
}

/// The gradient `store` holds for `x`, or zeros when nothing downstream depended on it.
fn grad_of(store: &candle_core::backprop::GradStore, x: &Tensor) -> Result<Tensor> {
    match store.get(x) {
        Some(g) => Ok(g.clone()),
        None => Ok(x.zeros_like()?),
    }
}

/// The mean NLL of `ids` and the f32 gradient of every parameter of `model` that is a training
/// variable (`Var`), by tensor id, computed segment by segment (module docs), the head's
/// segments holding at most `options.head_segment_bytes` of logits (at least one chunk of the
/// head's own chunking). `model` must be one stage on one device.
pub(super) fn loss_and_grads(
    model: &Model,
    ids: &TokenIds,
    path: OpPath,
    options: CheckpointOptions,
) -> Result<(f32, HashMap<TensorId, Tensor>)> {
    if model.placement.len() != 1 {
        return Err(ModelError::Invalid(
            "activation checkpointing covers models of one stage".into(),
        ));
    }
    ids.check_vocab(model.config.vocab_size)?;
    let (b, t) = (ids.rows(), ids.cols());
    let ids_t = ids.to_tensor(&model.device)?;
    let segments = Segments::new(model, t, path)?;
    let params: Vec<Tensor> = model.named_tensors().into_iter().map(|(_, t)| t).collect();
    let mut sums = GradSum::new(&params);

    // Forward, keeping only the residual stream at each layer boundary.
    let mut inputs = Vec::with_capacity(segments.layers() + 1);
    inputs.push(model.embed_ids(&ids_t)?.detach());
    for i in 0..segments.layers() {
        let out = segments.layer(i, &inputs[i])?.detach();
        inputs.push(out);
    }

    // The head, a few hundred rows (positions that predict a token) at a time: each segment is
    // whole chunks of the head's own chunking, so every row's logits come from the same GEMM
    // as in the whole graph. The seed is the mean's 1/N per token.
    let last = inputs
        .pop()
        .expect("the embedding's output is always there");
    let hidden = last.dim(2)?;
    let rows = b * (t - 1);
    let x_rows = last.narrow(1, 0, t - 1)?.reshape((rows, hidden))?;
    drop(last);
    let targets = ids_t.narrow(1, 1, t - 1)?.flatten_all()?;
    let opts = ScoreOptions {
        logits_chunk_bytes: options.logits_chunk_bytes,
    };
    let chunk = model.head_chunk_rows(path, opts);
    let logits_bytes = chunk * model.config.vocab_size * model.dtype.size_in_bytes();
    let segment_rows = (options.head_segment_bytes / logits_bytes.max(1)).max(1) * chunk;
    let scale = 1.0 / rows as f64;
    let mut nll_parts = Vec::with_capacity(rows.div_ceil(segment_rows));
    let mut grad_parts = Vec::with_capacity(rows.div_ceil(segment_rows));
    for (start, len) in row_chunks(rows, segment_rows) {
        let x = Var::from_tensor(&x_rows.narrow(0, start, len)?)?;
        let nll = segments.head_rows(x.as_tensor(), &targets.narrow(0, start, len)?, opts)?;
        let store = nll.sum_all()?.affine(scale, 0.0)?.backward()?;
        sums.add(&store)?;
        grad_parts.push(grad_of(&store, x.as_tensor())?);
        nll_parts.push(nll.detach());
    }
    drop(x_rows);
    let loss = Tensor::cat(&nll_parts, 0)?
        .mean_all()?
        .to_dtype(DType::F32)?
        .to_scalar::<f32>()?;
    drop(nll_parts);
    // The last position of each sequence predicts nothing: its gradient is zero.
    let mut grad = Tensor::cat(&grad_parts, 0)?
        .reshape((b, t - 1, hidden))?
        .pad_with_zeros(1, 0, 1)?;
    drop(grad_parts);

    // Each layer again from its saved input, last to first.
    for i in (0..segments.layers()).rev() {
        let input = inputs.pop().expect("one saved input per layer");
        let x = Var::from_tensor(&input)?;
        let out = segments.layer(i, x.as_tensor())?;
        let store = seeded(&out, &grad)?.backward()?;
        sums.add(&store)?;
        grad = grad_of(&store, x.as_tensor())?;
    }

    // The embedding.
    if model.embed.track_op() {
        let x = model.embed_ids(&ids_t)?;
        sums.add(&seeded(&x, &grad)?.backward()?)?;
    }
    Ok((loss, sums.sums))
}
