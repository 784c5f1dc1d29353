//! AdamW with f32 moments, global gradient-norm clipping, and a [`Trainer`] that ties them to a
//! model's training path.
//!
//! candle_nn's AdamW keeps its moments in the parameter dtype; in bf16 that loses most of the
//! second moment. Here moments are always f32, and a parameter stored in bf16/f16 also gets an
//! f32 master copy so that updates smaller than a bf16 ulp are not rounded away.
//!
//! Weight decay is decoupled (Loshchilov & Hutter; torch.optim.AdamW's formula) and applies only
//! to matrices (embeddings, projections, router, head: every tensor of rank ≥ 2); RMSNorm gains
//! and biases are not decayed, the common practice for transformer LMs.

use candle_core::{DType, Tensor, Var};

use crate::error::{ModelError, Result};
use crate::model::{take_grad, Checkpointing, Model, TokenIds};

/// AdamW hyper-parameters (defaults: torch.optim.AdamW's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Clip the global L2 norm of all gradients to this value before the update.
    pub max_grad_norm: Option<f64>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            max_grad_norm: Some(1.0),
        }
    }
}

struct ParamState {
    m: Tensor,
    v: Tensor,
    /// f32 copy of a bf16/f16 parameter; `None` for f32 parameters.
    master: Option<Tensor>,
    decay: bool,
}

/// The optimizer state for a fixed list of variables.
pub struct AdamW {
    config: AdamWConfig,
    steps: u64,
    states: Vec<ParamState>,
}

impl AdamW {
    pub fn new(vars: &[Var], config: AdamWConfig) -> Result<Self> {
        let states = vars
            .iter()
            .map(|v| {
                let t = v.as_tensor();
                let zeros = Tensor::zeros(t.dims(), DType::F32, t.device())?;
                let master = match t.dtype() {
                    DType::F32 => None,
                    _ => Some(t.detach().to_dtype(DType::F32)?),
                };
                Ok(ParamState {
                    m: zeros.clone(),
                    v: zeros,
                    master,
                    decay: t.rank() >= 2,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config,
            steps: 0,
            states,
        })
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    fn check_lengths(&self, vars: &[Var], grads: &[Tensor]) -> Result<()> {
        if vars.len() != self.states.len() || grads.len() != vars.len() {
            return Err(ModelError::Invalid(format!(
                "AdamW holds state for {} parameters, got {} variables and {} gradients",
                self.states.len(),
                vars.len(),
                grads.len()
            )));
        }
        Ok(())
    }

    /// Whether [`AdamW::update_scaled`] runs as koth-kernels' one-launch multi-tensor update
    /// (CUDA parameters in a build with the kernels).
    pub fn uses_kernel(vars: &[Var]) -> bool {
        vars.first()
            .is_some_and(|v| koth_kernels::usable(v.as_tensor()))
    }

    /// One step with the gradients scaled by `grad_scale` (gradient clipping folded into the
    /// update): on CUDA, every parameter in one kernel launch that also refreshes the
    /// model-dtype weights in place; elsewhere [`AdamW::update`] on scaled gradients.
    pub fn update_scaled(
        &mut self,
        vars: &[Var],
        grads: &[Tensor],
        lr: f64,
        grad_scale: f64,
    ) -> Result<()> {
        if !Self::uses_kernel(vars) {
            if grad_scale == 1.0 {
                return self.update(vars, grads, lr);
            }
            let scaled = grads
                .iter()
                .map(|g| Ok((g * grad_scale)?))
                .collect::<Result<Vec<_>>>()?;
            return self.update(vars, &scaled, lr);
        }
        self.check_lengths(vars, grads)?;
        let c = self.config;
        self.steps += 1;
        let t = self.steps as i32;
        let hyper = koth_kernels::AdamHyper {
            lr: lr as f32,
            beta1: c.beta1 as f32,
            beta2: c.beta2 as f32,
            eps: c.eps as f32,
            weight_decay: c.weight_decay as f32,
            bias1: (1.0 - c.beta1.powi(t)) as f32,
            bias2_sqrt: (1.0 - c.beta2.powi(t)).sqrt() as f32,
            grad_scale: grad_scale as f32,
        };
        // The kernel reads gradients in f32 or in the model dtype as they come (the hand-written
        // backward gives the model dtype, a tied head's sum f32): one launch per gradient dtype,
        // and no f32 copy of a half-precision gradient.
        let model_dtype = vars.first().map(|v| v.dtype()).unwrap_or(DType::F32);
        let grads = grads
            .iter()
            .map(|g| {
                let g = if g.dtype() == DType::F32 || g.dtype() == model_dtype {
                    g.clone()
                } else {
                    g.to_dtype(DType::F32)?
                };
                Ok(g.contiguous()?)
            })
            .collect::<Result<Vec<_>>>()?;
        let dtypes = if model_dtype == DType::F32 {
            vec![DType::F32]
        } else {
            vec![model_dtype, DType::F32]
        };
        for dtype in dtypes {
            let idx: Vec<usize> = (0..grads.len())
                .filter(|&i| grads[i].dtype() == dtype)
                .collect();
            let states = || idx.iter().map(|&i| &self.states[i]);
            // With an f32 master copy, the kernel updates it and refreshes the model's tensor.
            let params: Vec<&Tensor> = idx
                .iter()
                .map(|&i| {
                    self.states[i]
                        .master
                        .as_ref()
                        .unwrap_or(vars[i].as_tensor())
                })
                .collect();
            let models: Vec<Option<&Tensor>> = idx
                .iter()
                .map(|&i| self.states[i].master.as_ref().map(|_| vars[i].as_tensor()))
                .collect();
            let grad_refs: Vec<&Tensor> = idx.iter().map(|&i| &grads[i]).collect();
            let m: Vec<&Tensor> = states().map(|s| &s.m).collect();
            let v: Vec<&Tensor> = states().map(|s| &s.v).collect();
            let decay: Vec<bool> = states().map(|s| s.decay && c.weight_decay != 0.0).collect();
            koth_kernels::AdamWKernel::step(&params, &grad_refs, &m, &v, &models, &decay, hyper)?;
        }
        Ok(())
    }

    /// One update with learning rate `lr`; `grads[i]` (f32) belongs to `vars[i]`.
    pub fn update(&mut self, vars: &[Var], grads: &[Tensor], lr: f64) -> Result<()> {
        self.check_lengths(vars, grads)?;
        let c = self.config;
        self.steps += 1;
        let t = self.steps as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        for ((var, g), s) in vars.iter().zip(grads).zip(&mut self.states) {
            let g = g.to_dtype(DType::F32)?;
            s.m = ((&s.m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            s.v = ((&s.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let p = match &s.master {
                Some(m) => m.clone(),
                None => var.as_tensor().detach(),
            };
            let p = if s.decay && c.weight_decay != 0.0 {
                (p * (1.0 - lr * c.weight_decay))?
            } else {
                p
            };
            let denom = ((s.v.sqrt()? / bias2_sqrt)? + c.eps)?;
            let p = (p - (s.m.div(&denom)? * (lr / bias1))?)?;
            var.set(&p.to_dtype(var.dtype())?)?;
            if s.master.is_some() {
                s.master = Some(p);
            }
        }
        Ok(())
    }
}

impl AdamW {
    /// The optimizer's state as named f32 tensors, for a checkpoint: for the parameter named
    /// `names[i]`, `<name>.exp_avg` (m), `<name>.exp_avg_sq` (v) and, for a bf16/f16
    /// parameter, `<name>.master` (its f32 master copy). The tensors are copies: saving them
    /// while training goes on is safe.
    pub fn state_tensors(&self, names: &[String]) -> Result<Vec<(String, Tensor)>> {
        if names.len() != self.states.len() {
            return Err(ModelError::Invalid(format!(
                "AdamW holds state for {} parameters, got {} names",
                self.states.len(),
                names.len()
            )));
        }
        let mut out = Vec::with_capacity(3 * names.len());
        for (name, s) in names.iter().zip(&self.states) {
            out.push((format!("{name}.exp_avg"), s.m.copy()?));
            out.push((format!("{name}.exp_avg_sq"), s.v.copy()?));
            if let Some(master) = &s.master {
                out.push((format!("{name}.master"), master.copy()?));
            }
        }
        Ok(out)
    }

    /// Restore what [`AdamW::state_tensors`] saved, and the step count (bias correction depends
    /// on it). Every tensor must be present with its parameter's shape; nothing is changed
    /// unless all of them are. Tensors are converted to f32 on the state's device.
    pub fn load_state(
        &mut self,
        names: &[String],
        steps: u64,
        tensors: &std::collections::HashMap<String, Tensor>,
    ) -> Result<()> {
        if names.len() != self.states.len() {
            return Err(ModelError::Invalid(format!(
                "AdamW holds state for {} parameters, got {} names",
                self.states.len(),
                names.len()
            )));
        }
        let take = |key: String, like: &Tensor| -> Result<Tensor> {
            let t = tensors
                .get(&key)
                .ok_or_else(|| ModelError::Invalid(format!("optimizer state lacks `{key}`")))?;
            if t.dims() != like.dims() {
                return Err(ModelError::Invalid(format!(
                    "optimizer state `{key}` has shape {:?}, the parameter {:?}",
                    t.dims(),
                    like.dims()
                )));
            }
            Ok(t.to_dtype(DType::F32)?.to_device(like.device())?)
        };
        let mut loaded = Vec::with_capacity(self.states.len());
        for (name, s) in names.iter().zip(&self.states) {
            let m = take(format!("{name}.exp_avg"), &s.m)?;
            let v = take(format!("{name}.exp_avg_sq"), &s.v)?;
            let master = match &s.master {
                Some(old) => Some(take(format!("{name}.master"), old)?),
                None => None,
            };
            loaded.push((m, v, master));
        }
        let expected: usize = self
            .states
            .iter()
            .map(|s| 2 + usize::from(s.master.is_some()))
            .sum();
        if tensors.len() != expected {
            return Err(ModelError::Invalid(format!(
                "optimizer state holds {} tensors, expected {expected}",
                tensors.len()
            )));
        }
        for (s, (m, v, master)) in self.states.iter_mut().zip(loaded) {
            s.m = m;
            s.v = v;
            s.master = master;
        }
        self.steps = steps;
        Ok(())
    }
}

/// The global L2 norm of `grads` (accumulated in f32).
pub fn global_grad_norm(grads: &[Tensor]) -> Result<f32> {
    let mut total = 0f64;
    for g in grads {
        total += g
            .to_dtype(DType::F32)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f32>()? as f64;
    }
    Ok(total.sqrt() as f32)
}

/// [`global_grad_norm`] on the GPU: the multi-tensor sum-of-squares kernel once per gradient
/// dtype (each gradient read once, in its own dtype, in a fixed order), one read-back.
fn device_grad_norm(grads: &[Tensor]) -> Result<f32> {
    const KERNEL_DTYPES: [DType; 3] = [DType::F32, DType::BF16, DType::F16];
    if let Some(g) = grads.iter().find(|g| !KERNEL_DTYPES.contains(&g.dtype())) {
        return Err(ModelError::Invalid(format!(
            "a gradient of dtype {:?}; expected f32, bf16 or f16",
            g.dtype()
        )));
    }
    let grads = grads
        .iter()
        .map(|g| Ok(g.contiguous()?))
        .collect::<Result<Vec<_>>>()?;
    let mut total = 0f64;
    for dtype in KERNEL_DTYPES {
        let group: Vec<&Tensor> = grads.iter().filter(|g| g.dtype() == dtype).collect();
        if !group.is_empty() {
            total += koth_kernels::sum_of_squares(&group)?.to_scalar::<f32>()? as f64;
        }
    }
    Ok(total.sqrt() as f32)
}

/// Scale `grads` so that their global L2 norm is at most `max_norm` (torch's
/// `clip_grad_norm_`: coefficient `max_norm / (norm + 1e-6)`, capped at 1). Returns the norm
/// before clipping.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f32> {
    let norm = global_grad_norm(grads)?;
    let coef = max_norm / (norm as f64 + 1e-6);
    if coef < 1.0 {
        for g in grads.iter_mut() {
            *g = (&*g * coef)?;
        }
    }
    Ok(norm)
}

/// `value` when it is a finite loss, else the error a training step ends with.
fn finite_loss(value: f32) -> Result<f32> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ModelError::NonFinite {
            what: "loss".into(),
            value: value as f64,
        })
    }
}

/// What one training step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Mean NLL of the batch before the update.
    pub loss: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
}

/// A model whose parameters are training variables, with its AdamW state.
pub struct Trainer {
    model: Model,
    names: Vec<String>,
    vars: Vec<Var>,
    opt: AdamW,
    checkpointing: Checkpointing,
}

impl Trainer {
    /// Copy `model`'s parameters into variables (in the model's dtype, on its device).
    pub fn new(model: &Model, config: AdamWConfig) -> Result<Self> {
        let mut names = Vec::new();
        let mut vars = Vec::new();
        let model = model.map_tensors(|name, t| {
            let v = Var::from_tensor(t)?;
            let tensor = v.as_tensor().clone();
            names.push(name.to_owned());
            vars.push(v);
            Ok(tensor)
        })?;
        let opt = AdamW::new(&vars, config)?;
        Ok(Self {
            model,
            names,
            vars,
            opt,
            checkpointing: Checkpointing::Auto,
        })
    }

    /// Whether the steps recompute each layer in the backward instead of keeping the whole
    /// forward graph ([`Checkpointing`]; `Auto` by default).
    pub fn set_checkpointing(&mut self, mode: Checkpointing) {
        self.checkpointing = mode;
    }

    /// Whether the next step recomputes each layer in the backward.
    pub fn checkpoints_layers(&self) -> bool {
        self.model
            .checkpoints_layers(self.model.training_path(), self.checkpointing)
    }

    /// The model with the current weights (shares storage with the variables: clone it with
    /// `map_tensors(|_, t| Ok(t.copy()?))` to keep a snapshot).
    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn steps(&self) -> u64 {
        self.opt.steps()
    }

    /// Loss and f32 gradients of the current weights, by parameter name, without updating.
    pub fn gradients(&self, ids: &TokenIds) -> Result<(f32, Vec<(String, Tensor)>)> {
        let (loss, grads) = self.loss_and_grads(ids)?;
        Ok((loss, self.names.iter().cloned().zip(grads).collect()))
    }

    fn loss_and_grads(&self, ids: &TokenIds) -> Result<(f32, Vec<Tensor>)> {
        let path = self.model.training_path();
        if self.model.trains_explicitly(path) {
            let (value, grads) = self.model.loss_and_grads_explicit(ids)?;
            let value = finite_loss(value)?;
            return Ok((value, grads.into_iter().map(|(_, g)| g).collect()));
        }
        if self.checkpoints_layers() {
            let (value, mut grads) = self.model.grads_by_layer(ids, path)?;
            let value = finite_loss(value)?;
            let grads = self
                .vars
                .iter()
                .map(|v| take_grad(&mut grads, v))
                .collect::<Result<Vec<_>>>()?;
            return Ok((value, grads));
        }
        let loss = self.model.loss(ids)?;
        // Checked before the backward, which a non-finite loss would waste.
        let value = finite_loss(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?)?;
        let store = loss.backward()?;
        let grads = self
            .vars
            .iter()
            .map(|v| match store.get(v.as_tensor()) {
                Some(g) => Ok(g.to_dtype(DType::F32)?),
                None => Ok(Tensor::zeros(v.dims(), DType::F32, v.device())?),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((value, grads))
    }

    /// Parameter names, in the order of [`Trainer::gradients`] and of the optimizer state.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// One AdamW update from gradients the caller computed (for example the mean of several
    /// micro-batches' [`Trainer::gradients`]): `grads` must name every parameter in
    /// [`Trainer::names`] order. Clipping follows the optimizer config, exactly as in
    /// [`Trainer::step`]. A non-finite gradient norm is an error and leaves the weights
    /// untouched. Returns the gradient norm before clipping.
    pub fn apply_gradients(&mut self, grads: Vec<(String, Tensor)>, lr: f64) -> Result<f32> {
        if grads.len() != self.names.len() {
            return Err(ModelError::Invalid(format!(
                "{} gradients for {} parameters",
                grads.len(),
                self.names.len()
            )));
        }
        let mut tensors = Vec::with_capacity(grads.len());
        for ((name, g), expected) in grads.into_iter().zip(&self.names) {
            if &name != expected {
                return Err(ModelError::Invalid(format!(
                    "gradient `{name}` where `{expected}` was expected (order of Trainer::names)"
                )));
            }
            tensors.push(g);
        }
        let norm = global_grad_norm(&tensors)?;
        if !norm.is_finite() {
            return Err(ModelError::NonFinite {
                what: "gradient norm".into(),
                value: norm as f64,
            });
        }
        if let Some(max) = self.opt.config.max_grad_norm {
            clip_grad_norm(&mut tensors, max)?;
        }
        self.opt.update(&self.vars, &tensors, lr)?;
        Ok(norm)
    }

    /// The optimizer's step count and state tensors (see [`AdamW::state_tensors`]).
    pub fn optimizer_state(&self) -> Result<(u64, Vec<(String, Tensor)>)> {
        Ok((self.opt.steps(), self.opt.state_tensors(&self.names)?))
    }

    /// Restore a state saved by [`Trainer::optimizer_state`] (the weights come from the
    /// model the trainer was made from).
    pub fn load_optimizer_state(
        &mut self,
        steps: u64,
        tensors: &std::collections::HashMap<String, Tensor>,
    ) -> Result<()> {
        self.opt.load_state(&self.names, steps, tensors)
    }

    /// One AdamW step on `ids` at learning rate `lr` (callers schedule `lr`). A non-finite
    /// loss or gradient norm is an error and leaves the weights untouched.
    pub fn step(&mut self, ids: &TokenIds, lr: f64) -> Result<StepReport> {
        if AdamW::uses_kernel(&self.vars) {
            return self.step_kernels(ids, lr);
        }
        let (loss, mut grads) = self.loss_and_grads(ids)?;
        let grad_norm = match self.opt.config.max_grad_norm {
            Some(max) => {
                let norm = global_grad_norm(&grads)?;
                if norm.is_finite() {
                    clip_grad_norm(&mut grads, max)?;
                }
                norm
            }
            None => global_grad_norm(&grads)?,
        };
        if !grad_norm.is_finite() {
            return Err(ModelError::NonFinite {
                what: "gradient norm".into(),
                value: grad_norm as f64,
            });
        }
        self.opt.update(&self.vars, &grads, lr)?;
        Ok(StepReport { loss, grad_norm })
    }

    /// [`Trainer::step`] on the GPU: the gradient norm in one device reduction and one read-back,
    /// clipping folded into the multi-tensor AdamW launch as a scale.
    fn step_kernels(&mut self, ids: &TokenIds, lr: f64) -> Result<StepReport> {
        let (loss, grads) = self.loss_and_grads(ids)?;
        let grad_norm = device_grad_norm(&grads)?;
        if !grad_norm.is_finite() {
            return Err(ModelError::NonFinite {
                what: "gradient norm".into(),
                value: grad_norm as f64,
            });
        }
        let scale = match self.opt.config.max_grad_norm {
            Some(max) => (max / (grad_norm as f64 + 1e-6)).min(1.0),
            None => 1.0,
        };
        self.opt.update_scaled(&self.vars, &grads, lr, scale)?;
        Ok(StepReport { loss, grad_norm })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn clipping_scales_to_max_norm_and_returns_the_old_norm() {
        let d = Device::Cpu;
        let mut g = vec![
            Tensor::new(&[3f32, 0.0], &d).unwrap(),
            Tensor::new(&[4f32], &d).unwrap(),
        ];
        let n = clip_grad_norm(&mut g, 1.0).unwrap();
        assert!((n - 5.0).abs() < 1e-6);
        let after = global_grad_norm(&g).unwrap();
        assert!((after - 1.0).abs() < 1e-5, "{after}");
        let n = clip_grad_norm(&mut g, 10.0).unwrap();
        assert!((n - after).abs() < 1e-6);
    }

    #[test]
    fn adamw_first_step_matches_the_formula() {
        // After one step m̂ = g and v̂ = g², so the update is lr * g / (|g| + eps) = lr * sign(g),
        // and a matrix is first shrunk by (1 - lr * wd).
        let d = Device::Cpu;
        let w = Var::from_tensor(&Tensor::new(&[[1f32, -2.0]], &d).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::new(&[0.5f32], &d).unwrap()).unwrap();
        let cfg = AdamWConfig {
            weight_decay: 0.1,
            ..Default::default()
        };
        let vars = [w.clone(), b.clone()];
        let mut opt = AdamW::new(&vars, cfg).unwrap();
        let grads = [
            Tensor::new(&[[0.3f32, -0.01]], &d).unwrap(),
            Tensor::new(&[-2f32], &d).unwrap(),
        ];
        opt.update(&vars, &grads, 0.01).unwrap();
        let w = w.as_tensor().to_vec2::<f32>().unwrap();
        let b = b.as_tensor().to_vec1::<f32>().unwrap();
        let decay = 1.0 - 0.01 * 0.1;
        assert!((w[0][0] - (1.0 * decay - 0.01)).abs() < 1e-6, "{w:?}");
        assert!((w[0][1] - (-2.0 * decay + 0.01)).abs() < 1e-6, "{w:?}");
        assert!((b[0] - 0.51).abs() < 1e-6, "bias is not decayed: {b:?}");
    }
}
