//! The dense decoder's loss and gradients with a hand-written backward.
//!
//! candle's autograd keeps every intermediate of the forward alive until the whole backward has
//! run, adds each gradient into a fresh zero tensor, differentiates the chunked loss chunk by
//! chunk (one [V, H] head gradient per chunk, summed), and scatters the embedding's gradient
//! with a kernel that walks every token on one thread per column. For the dense families
//! (llama, qwen2, qwen3) on one device this module instead:
//!
//! - runs the forward keeping only what each layer's backward needs: the layer's input, the raw
//!   q/k/v, the attention output (and cuDNN's softmax statistics), the residual after attention,
//!   and the MLP's gate and up projections; the normalised inputs, q/k after norm and RoPE, and
//!   the SwiGLU product are recomputed in the backward (each one cheap pass);
//! - computes the loss and its gradient in one pass per chunk of rows: the chunk's logits are
//!   overwritten by their gradient, so no logits outlive their chunk;
//! - walks the layers backwards, dropping each layer's saved tensors once it is done;
//! - sums the embedding's gradient per token id in a fixed order, without atomics.
//!
//! Each op runs on koth's GPU kernels where they run, and otherwise as the training composite
//! differentiated locally by candle ([`vjp`]): the autograd path's own maths, which the golden
//! tests compare gradient by gradient.

use std::collections::HashMap;

use candle_core::{DType, Tensor, Var};

use super::{attention_composite, silu_rounded_once, Attention, FeedForward, Layer, Linear, Mlp};
use super::{Model, TokenIds};
use crate::error::{ModelError, Result};
use crate::ops::{causal_mask, rms_norm, OpPath, Rope};

/// Bytes of model-dtype logits one chunk of the loss holds (its gradient is written in place).
const LOSS_CHUNK_BYTES: usize = 1 << 30;

/// Whether `model` is one the explicit backward covers: a dense decoder on one device.
pub(super) fn applies(model: &Model) -> bool {
    model.hybrid.is_none()
        && model.placement.len() == 1
        && model
            .layers
            .iter()
            .all(|l| matches!(l.ff, FeedForward::Dense(_)))
}

/// The mean NLL over the batch and the gradient of every parameter (in the model's dtype, or
/// f32 where a sum was accumulated), in [`Model::named_tensors`] order.
pub(super) fn loss_and_grads(
    model: &Model,
    ids: &TokenIds,
) -> Result<(f32, Vec<(String, Tensor)>)> {
    if !applies(model) {
        return Err(ModelError::Invalid(
            "the explicit backward covers the dense families (llama, qwen2, qwen3) on one device; \
             this model is a mixture of experts, a hybrid or split across devices"
                .into(),
        ));
    }
    ids.check_vocab(model.config.vocab_size)?;
    // The parameters may be training variables: detached, no op here records a graph.
    let model = model.map_tensors(|_, t| Ok(t.detach()))?;
    let step = Step::new(&model, ids)?;
    step.run()
}

/// Gradient of `sum(f(inputs) · dy)` with respect to each input, and `f(inputs)`: the training
/// composite's own backward, run on a graph of this one op.
fn vjp(
    inputs: &[&Tensor],
    dy: &Tensor,
    f: impl FnOnce(&[Tensor]) -> Result<Tensor>,
) -> Result<(Tensor, Vec<Tensor>)> {
    let vars = inputs
        .iter()
        .map(|t| Var::from_tensor(&t.detach()))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let xs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&xs)?;
    let s = (y.to_dtype(DType::F32)? * dy.to_dtype(DType::F32)?.detach())?.sum_all()?;
    let grads = s.backward()?;
    let dxs = xs
        .iter()
        .map(|x| match grads.get(x) {
            Some(g) => Ok(g.clone()),
            None => Ok(x.zeros_like()?),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((y.detach(), dxs))
}

/// Gradients by parameter name.
#[derive(Default)]
struct Grads(HashMap<String, Tensor>);

impl Grads {
    fn put(&mut self, name: String, g: Tensor) {
        self.0.insert(name, g);
    }

    /// The linear layer's weight (and bias) gradients from its input `x` [N, in] and output
    /// gradient `dy` [N, out]; returns dx [N, in].
    fn linear(&mut self, name: &str, lin: &Linear, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        self.put(format!("{name}.weight"), dy.t()?.matmul(x)?);
        if lin.bias.is_some() {
            let db = dy.to_dtype(DType::F32)?.sum(0)?.to_dtype(dy.dtype())?;
            self.put(format!("{name}.bias"), db);
        }
        Ok(dy.matmul(&lin.weight)?)
    }

    /// In [`Model::named_tensors`] order; every parameter must have its gradient.
    fn ordered(mut self, model: &Model) -> Result<Vec<(String, Tensor)>> {
        model
            .named_tensors()
            .into_iter()
            .map(|(name, _)| match self.0.remove(&name) {
                Some(g) => Ok((name, g)),
                None => Err(ModelError::Invalid(format!(
                    "explicit backward: no gradient for `{name}`"
                ))),
            })
            .collect()
    }
}

/// What one decoder layer's backward needs from its forward.
struct Saved {
    /// The layer's input [N, H] and its RMSNorm's reciprocal RMS (kernels only).
    x: Tensor,
    rstd_in: Option<Tensor>,
    /// The projections before q/k norm and RoPE, [B, T, heads, D].
    q: Tensor,
    k: Tensor,
    v: Tensor,
    /// Attention's output [B, T, Hq, D] and cuDNN's statistics (fused attention only).
    o: Tensor,
    stats: Option<Tensor>,
    /// The residual stream after attention [N, H], and its norm's reciprocal RMS.
    x2: Tensor,
    rstd_post: Option<Tensor>,
    /// The MLP's gate and up projections [N, I].
    gate: Tensor,
    up: Tensor,
}

/// One forward and backward over a batch.
struct Step<'a> {
    model: &'a Model,
    ids: &'a TokenIds,
    ids_t: Tensor,
    rope: Rope,
    /// The additive causal mask, for the composite attention only.
    mask: Option<Tensor>,
    /// Whether koth's kernels run on this model's tensors (CUDA, a build that has them).
    kernels: bool,
    /// Whether attention is cuDNN's fused kernel (half precision).
    fused_attention: bool,
    eps: f64,
}

impl<'a> Step<'a> {
    fn new(model: &'a Model, ids: &'a TokenIds) -> Result<Self> {
        let c = &model.config;
        let device = &model.device;
        let kernels = koth_kernels::usable(&model.embed);
        let fused_attention = kernels
            && koth_kernels::attention_usable(&model.embed, c.head_dim)
            && koth_kernels::norm_rope_usable(&model.embed, c.head_dim);
        Ok(Self {
            model,
            ids,
            ids_t: ids.to_tensor(device)?,
            rope: Rope::new(c.rope_theta, c.head_dim, ids.cols(), model.dtype, device)?,
            mask: if fused_attention {
                None
            } else {
                Some(causal_mask(ids.cols(), device)?)
            },
            kernels,
            fused_attention,
            eps: c.rms_norm_eps,
        })
    }

    fn run(&self) -> Result<(f32, Vec<(String, Tensor)>)> {
        let m = self.model;
        let c = &m.config;
        let (b, t) = (self.ids.rows(), self.ids.cols());
        let mut x = m
            .embed
            .index_select(&self.ids_t.flatten_all()?, 0)?
            .reshape((b * t, c.hidden_size))?;
        let mut saved = Vec::with_capacity(m.layers.len());
        for layer in &m.layers {
            let (next, s) = self.layer_forward(layer, x)?;
            saved.push(s);
            x = next;
        }
        let (hidden, rstd_final) = self.norm(&x, &m.norm)?;
        let head = m.lm_head.as_ref().unwrap_or(&m.embed);
        let (loss, dhidden, dhead) =
            self.head_loss(&hidden.reshape((b, t, c.hidden_size))?, head)?;
        drop(hidden);
        let mut grads = Grads::default();
        let dhidden = dhidden.reshape((b * t, c.hidden_size))?;
        let (mut dx, dnorm) = self.norm_backward(&x, &m.norm, rstd_final.as_ref(), &dhidden)?;
        grads.put("model.norm.weight".into(), dnorm);
        drop(x);
        for (i, layer) in m.layers.iter().enumerate().rev() {
            let s = saved.pop().ok_or_else(|| {
                ModelError::Invalid("explicit backward: a layer's saved tensors are missing".into())
            })?;
            dx = self.layer_backward(i, layer, s, &dx, &mut grads)?;
        }
        let dembed = if self.kernels {
            koth_kernels::embedding_backward(&dx, self.ids.as_slice(), c.vocab_size)?
        } else {
            Tensor::zeros((c.vocab_size, c.hidden_size), dx.dtype(), dx.device())?.index_add(
                &self.ids_t.flatten_all()?,
                &dx,
                0,
            )?
        };
        match m.lm_head {
            Some(_) => {
                grads.put("lm_head.weight".into(), dhead);
                grads.put("model.embed_tokens.weight".into(), dembed);
            }
            // A tied head: the matrix gets both uses' gradients, summed in f32.
            None => grads.put(
                "model.embed_tokens.weight".into(),
                (dembed.to_dtype(DType::F32)? + dhead.to_dtype(DType::F32)?)?,
            ),
        }
        Ok((loss, grads.ordered(m)?))
    }

    /// RMSNorm, keeping the reciprocal RMS for the backward when the kernel runs.
    fn norm(&self, x: &Tensor, w: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        if self.kernels {
            let (y, rstd) = koth_kernels::rms_norm_with_rstd(x, w, self.eps as f32)?;
            return Ok((y, Some(rstd)));
        }
        Ok((rms_norm(x, w, self.eps, OpPath::Composite)?, None))
    }

    /// The normalised input again, for a weight gradient.
    fn renorm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        if self.kernels {
            return Ok(koth_kernels::rms_norm(x, w, self.eps as f32)?);
        }
        rms_norm(x, w, self.eps, OpPath::Composite)
    }

    fn norm_backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        rstd: Option<&Tensor>,
        dy: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        if let Some(rstd) = rstd {
            return Ok(koth_kernels::rms_norm_backward(x, w, rstd, dy)?);
        }
        let eps = self.eps;
        let (_, g) = vjp(&[x, w], dy, |t| {
            rms_norm(&t[0], &t[1], eps, OpPath::Composite)
        })?;
        let [dx, dw]: [Tensor; 2] = g.try_into().map_err(|_| bad_arity())?;
        Ok((dx, dw))
    }

    fn layer_forward(&self, layer: &Layer, x: Tensor) -> Result<(Tensor, Saved)> {
        let c = &self.model.config;
        let (b, t) = (self.ids.rows(), self.ids.cols());
        let (nh, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let (h1, rstd_in) = self.norm(&x, &layer.input_norm)?;
        let a = &layer.attn;
        let q = a.q.forward(&h1)?.reshape((b, t, nh, hd))?;
        let k = a.k.forward(&h1)?.reshape((b, t, nkv, hd))?;
        let v = a.v.forward(&h1)?.reshape((b, t, nkv, hd))?;
        drop(h1);
        let (o, stats) = self.attention(a, &q, &k, &v)?;
        let x2 = (&x + a.o.forward(&o.reshape((b * t, nh * hd))?)?)?;
        let (h2, rstd_post) = self.norm(&x2, &layer.post_norm)?;
        let mlp = dense(layer)?;
        let gate = mlp.gate.forward(&h2)?;
        let up = mlp.up.forward(&h2)?;
        drop(h2);
        let act = self.swiglu(&gate, &up)?;
        let out = (&x2 + mlp.down.forward(&act)?)?;
        let saved = Saved {
            x,
            rstd_in,
            q,
            k,
            v,
            o,
            stats,
            x2,
            rstd_post,
            gate,
            up,
        };
        Ok((out, saved))
    }

    fn layer_backward(
        &self,
        i: usize,
        layer: &Layer,
        s: Saved,
        dy: &Tensor,
        grads: &mut Grads,
    ) -> Result<Tensor> {
        let c = &self.model.config;
        let (b, t) = (self.ids.rows(), self.ids.cols());
        let (nh, hd) = (c.num_attention_heads, c.head_dim);
        let p = format!("model.layers.{i}");
        // MLP: out = x2 + down(swiglu(gate(h2), up(h2))).
        let mlp = dense(layer)?;
        let act = self.swiglu(&s.gate, &s.up)?;
        let dact = grads.linear(&format!("{p}.mlp.down_proj"), &mlp.down, &act, dy)?;
        drop(act);
        let (dgate, dup) = self.swiglu_backward(&s.gate, &s.up, &dact)?;
        drop(dact);
        let h2 = self.renorm(&s.x2, &layer.post_norm)?;
        let dh2 = (grads.linear(&format!("{p}.mlp.gate_proj"), &mlp.gate, &h2, &dgate)?
            + grads.linear(&format!("{p}.mlp.up_proj"), &mlp.up, &h2, &dup)?)?;
        drop((h2, dgate, dup));
        let (dx2, dpost) =
            self.norm_backward(&s.x2, &layer.post_norm, s.rstd_post.as_ref(), &dh2)?;
        grads.put(format!("{p}.post_attention_layernorm.weight"), dpost);
        let dx2 = (dy + dx2)?;
        // Attention: x2 = x + o_proj(attention(q, k, v)).
        let a = &layer.attn;
        let o_flat = s.o.reshape((b * t, nh * hd))?;
        let do_ = grads.linear(&format!("{p}.self_attn.o_proj"), &a.o, &o_flat, &dx2)?;
        drop(o_flat);
        let do_ = do_.reshape((b, t, nh, hd))?;
        let (dq, dk, dv) = self.attention_backward(i, a, &s, &do_, grads)?;
        drop(do_);
        let h1 = self.renorm(&s.x, &layer.input_norm)?;
        let flat = |x: Tensor| -> Result<Tensor> {
            let rows = x.dim(0)? * x.dim(1)?;
            Ok(x.reshape((rows, ()))?)
        };
        let dh1 = ((grads.linear(&format!("{p}.self_attn.q_proj"), &a.q, &h1, &flat(dq)?)?
            + grads.linear(&format!("{p}.self_attn.k_proj"), &a.k, &h1, &flat(dk)?)?)?
            + grads.linear(&format!("{p}.self_attn.v_proj"), &a.v, &h1, &flat(dv)?)?)?;
        drop(h1);
        let (dx, din) = self.norm_backward(&s.x, &layer.input_norm, s.rstd_in.as_ref(), &dh1)?;
        grads.put(format!("{p}.input_layernorm.weight"), din);
        Ok((dx2 + dx)?)
    }

    /// q/k norm, RoPE and causal attention: [B, T, Hq, D] and, on the fused path, cuDNN's
    /// statistics.
    fn attention(
        &self,
        a: &Attention,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Option<Tensor>)> {
        if self.fused_attention {
            let (qr, kr) = self.norm_rope(a, q, k)?;
            let (o, stats) = koth_kernels::attention_with_stats(&qr, &kr, v, self.scale())?;
            return Ok((o, Some(stats)));
        }
        let inputs = attention_inputs(a, q, k, v);
        Ok((self.attention_composite(a, &inputs)?, None))
    }

    fn norm_rope(&self, a: &Attention, q: &Tensor, k: &Tensor) -> Result<(Tensor, Tensor)> {
        let (cos, sin) = self.rope.half_tables();
        let eps = self.eps as f32;
        Ok((
            koth_kernels::norm_rope(q, a.q_norm.as_ref(), cos, sin, eps)?,
            koth_kernels::norm_rope(k, a.k_norm.as_ref(), cos, sin, eps)?,
        ))
    }

    fn scale(&self) -> f32 {
        (1.0 / (self.model.config.head_dim as f64).sqrt()) as f32
    }

    /// The training composite of `Model::attention` on `inputs` = [q, k, v, q_norm?, k_norm?]
    /// ([B, T, heads, D] each, then the gains): [B, T, Hq, D].
    fn attention_composite(&self, a: &Attention, inputs: &[Tensor]) -> Result<Tensor> {
        let path = OpPath::Composite;
        let (mut q, mut k) = (inputs[0].clone(), inputs[1].clone());
        let mut next = 3;
        if a.q_norm.is_some() {
            q = rms_norm(&q, &inputs[next], self.eps, path)?;
            next += 1;
        }
        if a.k_norm.is_some() {
            k = rms_norm(&k, &inputs[next], self.eps, path)?;
        }
        let q = self.rope.apply(&q.transpose(1, 2)?.contiguous()?, path)?;
        let k = self.rope.apply(&k.transpose(1, 2)?.contiguous()?, path)?;
        let v = inputs[2].transpose(1, 2)?.contiguous()?;
        Ok(attention_composite(&q, &k, &v, self.mask.as_ref(), path)?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// d q, d k, d v ([B, T, heads, D]); the q/k norm gains' gradients go into `grads`.
    fn attention_backward(
        &self,
        i: usize,
        a: &Attention,
        s: &Saved,
        dout: &Tensor,
        grads: &mut Grads,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let p = format!("model.layers.{i}.self_attn");
        if self.fused_attention {
            let stats = s.stats.as_ref().ok_or_else(|| {
                ModelError::Invalid("explicit backward: fused attention without statistics".into())
            })?;
            let (qr, kr) = self.norm_rope(a, &s.q, &s.k)?;
            let (dqr, dkr, dv) =
                koth_kernels::attention_backward(&qr, &kr, &s.v, &s.o, dout, stats, self.scale())?;
            drop((qr, kr));
            let dq = self.norm_rope_backward(
                &s.q,
                a.q_norm.as_ref(),
                &dqr,
                &format!("{p}.q_norm"),
                grads,
            )?;
            let dk = self.norm_rope_backward(
                &s.k,
                a.k_norm.as_ref(),
                &dkr,
                &format!("{p}.k_norm"),
                grads,
            )?;
            return Ok((dq, dk, dv));
        }
        let inputs = attention_inputs(a, &s.q, &s.k, &s.v);
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let (_, mut g) = vjp(&refs, dout, |t| self.attention_composite(a, t))?;
        if a.k_norm.is_some() {
            grads.put(format!("{p}.k_norm.weight"), g.pop().ok_or_else(bad_arity)?);
        }
        if a.q_norm.is_some() {
            grads.put(format!("{p}.q_norm.weight"), g.pop().ok_or_else(bad_arity)?);
        }
        let [dq, dk, dv]: [Tensor; 3] = g.try_into().map_err(|_| bad_arity())?;
        Ok((dq, dk, dv))
    }

    /// Through RoPE (the inverse rotation) and the optional per-head RMSNorm, whose gain's
    /// gradient goes into `grads` under `name`.
    fn norm_rope_backward(
        &self,
        x: &Tensor,
        gain: Option<&Tensor>,
        dy: &Tensor,
        name: &str,
        grads: &mut Grads,
    ) -> Result<Tensor> {
        let (cos, sin) = self.rope.half_tables();
        let dnormed = koth_kernels::rope_backward(dy, cos, sin)?;
        let Some(w) = gain else {
            return Ok(dnormed);
        };
        let (_, rstd) = koth_kernels::rms_norm_with_rstd(x, w, self.eps as f32)?;
        let (dx, dw) = koth_kernels::rms_norm_backward(x, w, &rstd, &dnormed)?;
        grads.put(format!("{name}.weight"), dw);
        Ok(dx)
    }

    fn swiglu(&self, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        if self.kernels {
            return Ok(koth_kernels::swiglu(gate, up)?);
        }
        Ok((silu_rounded_once(gate)? * up)?)
    }

    fn swiglu_backward(&self, gate: &Tensor, up: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
        if self.kernels {
            return Ok(koth_kernels::swiglu_backward(gate, up, dy)?);
        }
        let (_, g) = vjp(
            &[gate, up],
            dy,
            |t| Ok((silu_rounded_once(&t[0])? * &t[1])?),
        )?;
        let [dg, du]: [Tensor; 2] = g.try_into().map_err(|_| bad_arity())?;
        Ok((dg, du))
    }

    /// The mean next-token NLL from the final hidden states [B, T, H], and its gradients with
    /// respect to them and to the head [V, H].
    fn head_loss(&self, hidden: &Tensor, head: &Tensor) -> Result<(f32, Tensor, Tensor)> {
        if !self.kernels {
            let one = Tensor::new(1f32, hidden.device())?;
            let ids_t = &self.ids_t;
            let (loss, g) = vjp(&[hidden, head], &one, |t| {
                crate::loss::chunked_nll(&t[0], ids_t, &t[1], 64 << 20)?
                    .mean_all()
                    .map_err(Into::into)
            })?;
            let [dh, dw]: [Tensor; 2] = g.try_into().map_err(|_| bad_arity())?;
            return Ok((loss.to_dtype(DType::F32)?.to_scalar::<f32>()?, dh, dw));
        }
        let (b, t, h) = hidden.dims3()?;
        let positions = t - 1;
        let rows = b * positions;
        let inputs = hidden.narrow(1, 0, positions)?.reshape((rows, h))?;
        let targets = self
            .ids_t
            .narrow(1, 1, positions)?
            .flatten_all()?
            .contiguous()?;
        let vocab = head.dim(0)?;
        let step = (LOSS_CHUNK_BYTES / (hidden.dtype().size_in_bytes() * vocab.max(1))).max(1);
        let scale = 1.0 / rows as f32;
        let head_t = head.t()?;
        let (mut nlls, mut dxs, mut dhead) = (Vec::new(), Vec::new(), None::<Tensor>);
        let mut start = 0;
        while start < rows {
            let len = step.min(rows - start);
            let x = inputs.narrow(0, start, len)?;
            let logits = x.matmul(&head_t)?;
            let target = targets.narrow(0, start, len)?;
            // `logits` now holds d loss / d logits.
            nlls.push(koth_kernels::cross_entropy_with_grad(
                &logits, &target, scale,
            )?);
            dxs.push(logits.matmul(head)?);
            let dw = logits.t()?.matmul(&x)?;
            dhead = Some(match dhead {
                None => dw,
                Some(acc) => (acc.to_dtype(DType::F32)? + dw.to_dtype(DType::F32)?)?,
            });
            start += len;
        }
        let loss = Tensor::cat(&nlls, 0)?.mean_all()?.to_scalar::<f32>()?;
        let dx = Tensor::cat(&dxs, 0)?.reshape((b, positions, h))?;
        let last = Tensor::zeros((b, 1, h), dx.dtype(), dx.device())?;
        let dhidden = Tensor::cat(&[&dx, &last], 1)?;
        let dhead = dhead.ok_or_else(|| ModelError::Invalid("a batch of one token".into()))?;
        Ok((loss, dhidden, dhead))
    }
}

fn dense(layer: &Layer) -> Result<&Mlp> {
    match &layer.ff {
        FeedForward::Dense(m) => Ok(m),
        FeedForward::Sparse(_) => Err(ModelError::Invalid(
            "explicit backward: a mixture-of-experts layer".into(),
        )),
    }
}

/// [q, k, v, q_norm?, k_norm?]: what the composite attention differentiates.
fn attention_inputs(a: &Attention, q: &Tensor, k: &Tensor, v: &Tensor) -> Vec<Tensor> {
    let mut inputs = vec![q.clone(), k.clone(), v.clone()];
    inputs.extend(a.q_norm.iter().cloned());
    inputs.extend(a.k_norm.iter().cloned());
    inputs
}

fn bad_arity() -> ModelError {
    ModelError::Invalid("explicit backward: a local gradient has the wrong arity".into())
}
