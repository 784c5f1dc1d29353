//! The Qwen3.5 hybrid decoder (`qwen3_5`, `qwen3_5_moe`): layers whose token mixer is either a
//! gated DeltaNet or gated softmax attention, zero-centred RMSNorms (`1 + w`), and a dense or
//! sparse (routed experts + sigmoid-gated shared expert) FFN. It follows transformers'
//! `modeling_qwen3_5.py` / `modeling_qwen3_5_moe.py` operation for operation, including where
//! each step is computed in f32 and rounded back.
//!
//! It lives under `model` so that [`Model`] can hold it without another public type: the
//! embeddings, final norm and head stay in [`Model`]'s own fields, the layers live here.

use std::collections::HashMap;

use candle_core::{DType, Tensor};

use super::{moe_forward, Linear, Mlp, Model, SparseMoe, Take};
use crate::config::{HybridConfig, MixerKind, ModelConfig};
use crate::deltanet::{
    causal_conv1d_silu, chunk_gated_delta_rule, gates, l2_normalize, DEFAULT_CHUNK, L2_NORM_EPS,
};
use crate::error::{ModelError, Result};
use crate::ops::{causal_mask, centered_rms_norm, gated_rms_norm, softmax_last, OpPath, Rope};
use crate::pipeline::Pipeline;
use crate::placement::Placement;

/// Gated DeltaNet parameters (`linear_attn.*`).
#[derive(Clone)]
struct GatedDeltaNet {
    in_qkv: Linear,
    in_z: Linear,
    in_b: Linear,
    in_a: Linear,
    /// [conv_dim, 1, K]
    conv: Tensor,
    dt_bias: Tensor,
    a_log: Tensor,
    /// Gated RMSNorm gain over one value head (plain `w`, not `1 + w`).
    norm: Tensor,
    out: Linear,
}

/// Gated attention parameters (`self_attn.*`): q_proj yields query and output gate.
#[derive(Clone)]
struct GatedAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Tensor,
    k_norm: Tensor,
}

#[derive(Clone)]
enum Mixer {
    Linear(GatedDeltaNet),
    Full(GatedAttention),
}

#[derive(Clone)]
enum HybridFeedForward {
    Dense(Mlp),
    /// Routed experts plus a shared expert scaled by `sigmoid(shared_gate x)`.
    Sparse {
        routed: SparseMoe,
        shared: Mlp,
        shared_gate: Tensor,
    },
}

#[derive(Clone)]
struct HybridLayer {
    input_norm: Tensor,
    mixer: Mixer,
    post_norm: Tensor,
    ff: HybridFeedForward,
}

/// The layers of a hybrid model, and every parameter in `tensor_specs()` order.
#[derive(Clone)]
pub(super) struct HybridStack {
    layers: Vec<HybridLayer>,
    named: Vec<(String, Tensor)>,
}

impl HybridStack {
    pub(super) fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.named.clone()
    }

    /// Decoder layers.
    pub(super) fn len(&self) -> usize {
        self.layers.len()
    }
}

fn hybrid_of(config: &ModelConfig) -> Result<&HybridConfig> {
    config
        .hybrid
        .as_ref()
        .ok_or_else(|| ModelError::Invalid(format!("{} is not a hybrid family", config.family)))
}

/// [`Model::from_tensors`] for the hybrid families: exactly the tensors of `tensor_specs()`,
/// with their shapes, one dtype and one device.
pub(super) fn from_tensors(
    config: ModelConfig,
    mut tensors: HashMap<String, Tensor>,
) -> Result<Model> {
    let h = hybrid_of(&config)?.clone();
    super::check_tensor_shapes(&config, &tensors)?;
    let specs = config.tensor_specs();
    let root = h.prefix.clone();
    let embed_name = format!("{root}.embed_tokens.weight");
    let (dtype, device) = super::common_dtype_device(&tensors, &embed_name)?;
    let named: Vec<(String, Tensor)> = specs
        .iter()
        .map(|s| (s.name.clone(), tensors[&s.name].clone()))
        .collect();

    let mut take = Take { map: &mut tensors };
    let embed = take.get(&embed_name)?;
    let mut layers = Vec::with_capacity(h.layer_types.len());
    for (i, kind) in h.layer_types.iter().enumerate() {
        let p = format!("{root}.layers.{i}");
        let mixer = match kind {
            MixerKind::LinearAttention => {
                let a = format!("{p}.linear_attn");
                Mixer::Linear(GatedDeltaNet {
                    in_qkv: take.linear(&format!("{a}.in_proj_qkv"), false)?,
                    in_z: take.linear(&format!("{a}.in_proj_z"), false)?,
                    in_b: take.linear(&format!("{a}.in_proj_b"), false)?,
                    in_a: take.linear(&format!("{a}.in_proj_a"), false)?,
                    conv: take.get(&format!("{a}.conv1d.weight"))?,
                    dt_bias: take.get(&format!("{a}.dt_bias"))?,
                    a_log: take.get(&format!("{a}.A_log"))?,
                    norm: take.get(&format!("{a}.norm.weight"))?,
                    out: take.linear(&format!("{a}.out_proj"), false)?,
                })
            }
            MixerKind::FullAttention => {
                let a = format!("{p}.self_attn");
                Mixer::Full(GatedAttention {
                    q: take.linear(&format!("{a}.q_proj"), config.qkv_bias)?,
                    k: take.linear(&format!("{a}.k_proj"), config.qkv_bias)?,
                    v: take.linear(&format!("{a}.v_proj"), config.qkv_bias)?,
                    o: take.linear(&format!("{a}.o_proj"), config.o_bias)?,
                    q_norm: take.get(&format!("{a}.q_norm.weight"))?,
                    k_norm: take.get(&format!("{a}.k_norm.weight"))?,
                })
            }
        };
        let ff = match &config.moe {
            Some(m) => HybridFeedForward::Sparse {
                routed: SparseMoe::new(
                    take.get(&format!("{p}.mlp.gate.weight"))?,
                    (0..m.num_experts)
                        .map(|e| take.mlp(&format!("{p}.mlp.experts.{e}"), false))
                        .collect::<Result<_>>()?,
                    m.num_experts_per_tok,
                    m.norm_topk_prob,
                )?,
                shared: take.mlp(&format!("{p}.mlp.shared_expert"), false)?,
                shared_gate: take.get(&format!("{p}.mlp.shared_expert_gate.weight"))?,
            },
            None => HybridFeedForward::Dense(take.mlp(&format!("{p}.mlp"), false)?),
        };
        layers.push(HybridLayer {
            input_norm: take.get(&format!("{p}.input_layernorm.weight"))?,
            mixer,
            post_norm: take.get(&format!("{p}.post_attention_layernorm.weight"))?,
            ff,
        });
    }
    let norm = take.get(&format!("{root}.norm.weight"))?;
    let lm_head = take.opt("lm_head.weight", !config.tie_word_embeddings)?;
    let placement = Placement::single(device.clone(), config.num_hidden_layers);
    Ok(Model {
        config,
        dtype,
        device,
        embed,
        layers: Vec::new(),
        norm,
        lm_head,
        head_copy: None,
        placement,
        pipeline: Pipeline::default(),
        hybrid: Some(HybridStack { layers, named }),
    })
}

/// Sigmoid computed in f32 and rounded once to the input dtype, as torch does for bf16/f16 (and
/// candle's CUDA kernel); candle's CPU kernel would evaluate `1 / (1 + exp(-x))` in half
/// arithmetic, rounding after every operation.
fn sigmoid_rounded_once(x: &Tensor) -> Result<Tensor> {
    if x.dtype() == DType::F32 {
        return Ok(candle_nn::ops::sigmoid(x)?);
    }
    Ok(candle_nn::ops::sigmoid(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype())?)
}

/// What every layer of one hybrid forward shares: the paths each op takes, the rotary tables and
/// the mask (built once per forward, or once per activation-checkpointed step).
pub(super) struct HybridForward {
    /// Scoring on koth's kernels.
    kernels: bool,
    /// Training on the kernels with the delta-rule backward kernel (opt-in).
    train_kernels: bool,
    /// The attention's path (`Kernels` resolved to `Fused` when scoring, `Composite` when
    /// training).
    path: OpPath,
    /// The FFNs' and the zero-centred norms' path.
    ff_path: OpPath,
    rope: Rope,
    mask: Option<Tensor>,
}

impl Model {
    /// The per-forward context of a hybrid model for sequences of `t` tokens through `path`.
    pub(super) fn hybrid_forward(&self, t: usize, path: OpPath) -> Result<HybridForward> {
        // On the kernel path, scoring runs the gated delta rule and the gated attention's core on
        // koth's kernels (a recurrent delta-rule kernel, cuDNN's fused attention) and the rest on
        // candle's fused ops; training runs the differentiable composites (the delta-rule kernel
        // has no backward), and the head's cross-entropy takes the kernel either way.
        let training = self.embed.track_op();
        let kernels = path == OpPath::Kernels && !training;
        // Training on the kernels: the delta rule may take its backward kernel (opt-in).
        let train_kernels =
            path == OpPath::Kernels && training && koth_kernels::delta_rule_backward_kernel();
        let path = match path {
            OpPath::Kernels if training => OpPath::Composite,
            OpPath::Kernels => OpPath::Fused,
            other => other,
        };
        // The FFNs are qwen3's SwiGLU MLP: when scoring on the kernels they take koth's SwiGLU
        // kernel (the same rounding as the fused path's silu-then-multiply, in one pass); so do
        // the zero-centred RMSNorms (koth's one-pass kernel).
        let ff_path = if kernels { OpPath::Kernels } else { path };
        let c = &self.config;
        let h = hybrid_of(c)?;
        // Text tokens carry one position on every multimodal-RoPE axis, so the rotation is
        // plain RoPE over the first `rotary_dim` dims of each head.
        let rope = Rope::new(c.rope_theta, h.rotary_dim, t, self.dtype, &self.device)?;
        // The additive [T, T] mask (built on the host, 16 MB at T=2048) only serves the
        // unfused attention; cuDNN's causal attention needs none.
        let fused_attention = kernels && koth_kernels::attention_usable(&self.embed, c.head_dim);
        let mask = if fused_attention {
            None
        } else {
            Some(causal_mask(t, &self.device)?)
        };
        Ok(HybridForward {
            kernels,
            train_kernels,
            path,
            ff_path,
            rope,
            mask,
        })
    }

    /// Final hidden states [B, T, hidden] of a hybrid model.
    pub(super) fn hybrid_hidden_states(
        &self,
        stack: &HybridStack,
        ids: &Tensor,
        path: OpPath,
    ) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let f = self.hybrid_forward(t, path)?;
        let mut x = self.embed_ids(ids)?;
        for i in 0..stack.layers.len() {
            x = self.hybrid_layer(stack, i, &x, &f)?;
        }
        self.hybrid_final_norm(&x, &f)
    }

    /// The final zero-centred RMSNorm.
    pub(super) fn hybrid_final_norm(&self, x: &Tensor, f: &HybridForward) -> Result<Tensor> {
        centered_rms_norm(x, &self.norm, self.config.rms_norm_eps, f.ff_path)
    }

    /// Decoder layer `i` of a hybrid model on the residual stream `x` [B, T, hidden].
    pub(super) fn hybrid_layer(
        &self,
        stack: &HybridStack,
        i: usize,
        x: &Tensor,
        f: &HybridForward,
    ) -> Result<Tensor> {
        let layer = stack
            .layers
            .get(i)
            .ok_or_else(|| ModelError::Invalid(format!("no hybrid layer {i}")))?;
        let c = &self.config;
        let eps = c.rms_norm_eps;
        let norm_path = f.ff_path;
        let (b, t, _) = x.dims3()?;
        let normed = centered_rms_norm(x, &layer.input_norm, eps, norm_path)?;
        let mixed = match &layer.mixer {
            Mixer::Linear(net) => self.gated_delta_net(net, &normed, f.kernels, f.train_kernels)?,
            Mixer::Full(attn) => {
                self.gated_attention(attn, &normed, &f.rope, f.mask.as_ref(), f.path, f.kernels)?
            }
        };
        // The residual add and the norm after it: one kernel on the kernels path.
        let fused = norm_path == OpPath::Kernels
            && koth_kernels::usable(x)
            && !x.track_op()
            && !mixed.track_op()
            && !layer.post_norm.track_op();
        let (x, normed) = if fused {
            let w = layer.post_norm.to_dtype(x.dtype())?;
            koth_kernels::add_rms_norm_centered(x, &mixed, &w, eps as f32)?
        } else {
            let x = (x + mixed)?;
            let normed = centered_rms_norm(&x, &layer.post_norm, eps, norm_path)?;
            (x, normed)
        };
        let flat = normed.reshape((b * t, c.hidden_size))?;
        let y = match &layer.ff {
            HybridFeedForward::Dense(mlp) => mlp.forward(&flat, f.ff_path)?,
            HybridFeedForward::Sparse {
                routed,
                shared,
                shared_gate,
            } => {
                let routed_out = moe_forward(routed, &flat, f.ff_path)?;
                let gate = sigmoid_rounded_once(&flat.matmul(&shared_gate.t()?)?)?;
                let shared_out = shared.forward(&flat, f.ff_path)?.broadcast_mul(&gate)?;
                (routed_out + shared_out)?
            }
        };
        Ok((x + y.reshape((b, t, c.hidden_size))?)?)
    }

    /// transformers' `Qwen3_5GatedDeltaNet.forward` without a cache. With `kernels` (scoring on
    /// a CUDA device), the short convolution, the delta rule and the gated norm run as
    /// koth-kernels' kernels.
    fn gated_delta_net(
        &self,
        net: &GatedDeltaNet,
        x: &Tensor,
        kernels: bool,
        train_kernels: bool,
    ) -> Result<Tensor> {
        let c = &self.config;
        let l = &hybrid_of(c)?.linear;
        let (b, t, hidden) = x.dims3()?;
        let flat = x.reshape((b * t, hidden))?;
        let mixed = net.in_qkv.forward(&flat)?.reshape((b, t, l.conv_dim()))?;
        let z = net.in_z.forward(&flat)?; // [B*T, value_dim]
        let beta_in = net
            .in_b
            .forward(&flat)?
            .reshape((b, t, l.num_value_heads))?;
        let a_in = net
            .in_a
            .forward(&flat)?
            .reshape((b, t, l.num_value_heads))?;

        // The kernels take the packed activations as they are: no q/k/v copies, no f32 casts.
        let kernels = kernels && koth_kernels::usable(&mixed) && l.key_head_dim <= 256;
        let mixed = if kernels {
            koth_kernels::causal_conv1d_silu(&mixed, &net.conv)?
        } else {
            causal_conv1d_silu(&mixed, &net.conv)?
        };

        // g (log decay, f32) and beta: one kernel on the kernels path.
        let (g, beta) = if kernels {
            koth_kernels::delta_gates(&a_in, &beta_in, &net.a_log, &net.dt_bias)?
        } else {
            gates(&a_in, &beta_in, &net.a_log, &net.dt_bias)?
        };

        let heads = koth_kernels::DeltaHeads {
            key_heads: l.num_key_heads,
            key_dim: l.key_head_dim,
            value_heads: l.num_value_heads,
            value_dim: l.value_head_dim,
        };
        let train_kernels = train_kernels && koth_kernels::usable(&mixed) && l.key_head_dim <= 256;
        // q, k [B, T, Hk, dk] and v [B, T, Hv, dv]: views of the packed activations.
        let kd = l.key_dim();
        let split = || -> Result<(Tensor, Tensor, Tensor)> {
            let heads_of = |start: usize, width: usize, n: usize, d: usize| -> Result<Tensor> {
                Ok(mixed.narrow(2, start, width)?.reshape((b, t, n, d))?)
            };
            Ok((
                heads_of(0, kd, l.num_key_heads, l.key_head_dim)?,
                heads_of(kd, kd, l.num_key_heads, l.key_head_dim)?,
                heads_of(2 * kd, l.value_dim(), l.num_value_heads, l.value_head_dim)?,
            ))
        };
        let core = if train_kernels {
            // q and k normalised (and q scaled) by differentiable ops, so autograd carries their
            // gradients; the kernel op differentiates the recurrence itself.
            let (q, k, v) = split()?;
            let scale = 1.0 / (l.key_head_dim as f64).sqrt();
            let q = (l2_normalize(&q.to_dtype(DType::F32)?)? * scale)?.reshape((b, t, kd))?;
            let k = l2_normalize(&k.to_dtype(DType::F32)?)?.reshape((b, t, kd))?;
            let v = v.to_dtype(DType::F32)?.reshape((b, t, l.value_dim()))?;
            let packed = Tensor::cat(&[&q, &k, &v], 2)?;
            koth_kernels::gated_delta_rule_trainable(&packed, heads, &g, &beta)?
                .to_dtype(self.dtype)?
        } else if kernels {
            // The kernel normalises q and k itself and maps each value head to its key head
            // (no repeat_interleave).
            koth_kernels::gated_delta_rule(&mixed, heads, &g, &beta, L2_NORM_EPS as f32)?
        } else {
            self.delta_rule_composite(l, split()?, &g, &beta)?
                .to_dtype(self.dtype)?
        };
        let core = core.reshape((b * t * l.num_value_heads, l.value_head_dim))?;
        let z = z.reshape((b * t * l.num_value_heads, l.value_head_dim))?;
        let normed = if kernels {
            koth_kernels::gated_rms_norm(&core, &z, &net.norm, c.rms_norm_eps as f32)?
        } else {
            gated_rms_norm(&core, &z, &net.norm, c.rms_norm_eps)?
        }
        .reshape((b * t, l.value_dim()))?;
        Ok(net.out.forward(&normed)?.reshape((b, t, hidden))?)
    }

    /// The chunked delta rule of candle ops (differentiable), f32 [B, T, Hv, dv].
    fn delta_rule_composite(
        &self,
        l: &crate::config::LinearAttentionConfig,
        (q, k, v): (Tensor, Tensor, Tensor),
        g: &Tensor,
        beta: &Tensor,
    ) -> Result<Tensor> {
        let (b, t, _, _) = q.dims4()?;
        // Each key head serves num_value_heads / num_key_heads consecutive value heads
        // (repeat_interleave).
        let rep = l.num_value_heads / l.num_key_heads;
        let expand = |x: Tensor| -> Result<Tensor> {
            if rep == 1 {
                return Ok(x);
            }
            Ok(x.unsqueeze(3)?
                .broadcast_as((b, t, l.num_key_heads, rep, l.key_head_dim))?
                .reshape((b, t, l.num_value_heads, l.key_head_dim))?)
        };
        let (q, k) = (expand(q)?, expand(k)?);
        chunk_gated_delta_rule(&q, &k, &v, g, beta, DEFAULT_CHUNK)
    }

    /// transformers' `Qwen3_5Attention.forward` (eager) without a cache.
    fn gated_attention(
        &self,
        attn: &GatedAttention,
        x: &Tensor,
        rope: &Rope,
        mask: Option<&Tensor>,
        path: OpPath,
        kernels: bool,
    ) -> Result<Tensor> {
        let c = &self.config;
        let rot = hybrid_of(c)?.rotary_dim;
        let (b, t, hidden) = x.dims3()?;
        let (nh, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let flat = x.reshape((b * t, hidden))?;
        // q_proj yields [query | gate] per head.
        let qg = attn.q.forward(&flat)?.reshape((b, t, nh, 2 * hd))?;
        let q = qg.narrow(3, 0, hd)?;
        let gate = qg.narrow(3, hd, hd)?; // [B, T, nh, hd], a view
        let k = attn.k.forward(&flat)?.reshape((b, t, nkv, hd))?;
        let v = attn.v.forward(&flat)?.reshape((b, t, nkv, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        if kernels && koth_kernels::attention_usable(&k, hd) {
            // Scoring on the kernels: q and k normalised and rotated in one pass each, read in
            // place and written as [B, T, H, D] for cuDNN's fused causal attention (GQA
            // natively, no [B, H, T, T]); the output gate reads its half of q_proj in place.
            let (cos, sin) = rope.half_tables();
            let eps = c.rms_norm_eps as f32;
            let q = koth_kernels::centered_norm_rope(&q, &attn.q_norm, cos, sin, eps)?;
            let k = koth_kernels::centered_norm_rope(&k, &attn.k_norm, cos, sin, eps)?;
            let out = koth_kernels::attention(&q, &k, &v.contiguous()?, scale as f32)?
                .reshape((b, t, nh, hd))?;
            let gated = koth_kernels::sigmoid_gate(&out, &gate)?.reshape((b * t, nh * hd))?;
            return Ok(attn.o.forward(&gated)?.reshape((b, t, hidden))?);
        }
        let gate = gate.reshape((b * t, nh * hd))?;
        let norm_path = path;
        let q = centered_rms_norm(&q, &attn.q_norm, c.rms_norm_eps, norm_path)?;
        let k = centered_rms_norm(&k, &attn.k_norm, c.rms_norm_eps, norm_path)?;
        let partial_rope = |x: Tensor| -> Result<Tensor> {
            let x = x.transpose(1, 2)?.contiguous()?; // [B, heads, T, hd]
            if rot == hd {
                return rope.apply(&x, path);
            }
            let rotated = rope.apply(&x.narrow(3, 0, rot)?.contiguous()?, path)?;
            Ok(Tensor::cat(&[&rotated, &x.narrow(3, rot, hd - rot)?], 3)?)
        };
        let q = partial_rope(q)?;
        let k = partial_rope(k)?;
        let v = v.transpose(1, 2)?.contiguous()?;
        let rep = nh / nkv;
        let (k, v) = if rep == 1 {
            (k, v)
        } else {
            let expand = |x: Tensor| -> Result<Tensor> {
                Ok(x.unsqueeze(2)?
                    .broadcast_as((b, nkv, rep, t, hd))?
                    .reshape((b, nh, t, hd))?)
            };
            (expand(k)?, expand(v)?)
        };
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let mask = match mask {
            Some(m) => m.clone(),
            None => causal_mask(t, &self.device)?,
        };
        let scores = scores.to_dtype(DType::F32)?.broadcast_add(&mask)?;
        let probs = softmax_last(&scores, path)?.to_dtype(self.dtype)?;
        let out = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b * t, nh * hd))?;
        let gated = (out * sigmoid_rounded_once(&gate)?)?;
        Ok(attn.o.forward(&gated)?.reshape((b, t, hidden))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn half_precision_sigmoid_is_the_f32_result_rounded_once() {
        let xs: Vec<f32> = (0..512).map(|i| (i as f32 - 256.0) * 0.0391).collect();
        let x32 = Tensor::from_vec(xs, 512, &Device::Cpu).unwrap();
        for dtype in [DType::BF16, DType::F16] {
            let x = x32.to_dtype(dtype).unwrap();
            let as_f32 =
                |t: Tensor| -> Vec<f32> { t.to_dtype(DType::F32).unwrap().to_vec1().unwrap() };
            let got = as_f32(sigmoid_rounded_once(&x).unwrap());
            let exact = candle_nn::ops::sigmoid(&x.to_dtype(DType::F32).unwrap()).unwrap();
            let want = as_f32(exact.to_dtype(dtype).unwrap());
            assert_eq!(got, want, "{dtype:?}");
            let native = as_f32(candle_nn::ops::sigmoid(&x).unwrap());
            assert_ne!(
                native, want,
                "{dtype:?}: the native kernel already rounds once"
            );
        }
    }
}
