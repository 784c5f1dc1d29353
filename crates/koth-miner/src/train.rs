//! The training loop: AdamW from the king's weights on the miner's training windows, with the
//! warmup-then-cosine schedule, gradient accumulation over micro-batches, global-norm clipping,
//! and checkpoints that a restarted miner resumes bit for bit (on CPU).
//!
//! One optimizer step = `grad_accum` micro-batches of `batch_size` rows; their gradients (each
//! the gradient of a micro-batch's mean NLL) are averaged, which equals the gradient of the
//! mean NLL over all `grad_accum · batch_size` rows because every row has the same number of
//! predicted tokens. Clipping applies to the averaged gradient.
//!
//! A checkpoint is a directory `<dir>/checkpoint/` holding the weights (`model/`, Hugging Face
//! layout), the AdamW moments and master copies (`optimizer.safetensors`) and `state.json`
//! (king, attempt, settings fingerprint, step, the loss of every step so far). It is written to
//! a fresh directory and swapped in by rename, so a crash leaves the previous one intact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use koth_core::Digest;
use koth_model::{AdamWConfig, Device, Model, TokenIds, Trainer};
use serde::{Deserialize, Serialize};

use crate::config::TrainSettings;
use crate::data::MinerData;
use crate::error::{MinerError, Result};

/// What the loop reports after each optimizer step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepInfo {
    /// 1-based count of steps done.
    pub step: u64,
    pub steps: u64,
    pub loss: f32,
    pub lr: f64,
    pub grad_norm: f32,
    /// Tokens per second of this step.
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
}

/// Whether the loop goes on after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop now; a checkpoint is written first when `checkpoint` is true (an interruption to
    /// resume later), not when the attempt is abandoned (the king changed).
    Stop {
        checkpoint: bool,
    },
}

/// The identity of one training run: a checkpoint is resumed only if all of it matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunKey {
    pub king: Digest,
    pub attempt: u64,
    pub fingerprint: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    format: String,
    key: RunKey,
    step: u64,
    losses: Vec<f32>,
}

const CHECKPOINT_FORMAT: &str = "koth-miner-checkpoint/1";

/// How a training run ended.
pub struct TrainResult {
    /// The trained model (on the training device and dtype).
    pub model: Model,
    /// Mean NLL of every optimizer step, from step 1 (resumed steps included).
    pub losses: Vec<f32>,
    /// Steps done (equals the schedule's `steps` unless stopped).
    pub steps_done: u64,
    /// The step this run resumed from (0 for a fresh start).
    pub resumed_from: u64,
    pub stopped: bool,
}

/// Where the checkpoint of a training run lives.
pub struct CheckpointDir {
    root: PathBuf,
}

impl CheckpointDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn current(&self) -> PathBuf {
        self.root.join("checkpoint")
    }

    /// The checkpoint's run key and step, if one is there and readable.
    pub fn peek(&self) -> Option<(RunKey, u64)> {
        let state = read_state(&self.current()).ok()?;
        Some((state.key, state.step))
    }

    /// Remove the checkpoint (after a completed or abandoned attempt).
    pub fn clear(&self) -> Result<()> {
        for d in [self.current(), self.root.join("checkpoint.old")] {
            if d.exists() {
                std::fs::remove_dir_all(&d).map_err(|e| MinerError::io(&d, e))?;
            }
        }
        Ok(())
    }

    fn save(&self, trainer: &Trainer, key: &RunKey, step: u64, losses: &[f32]) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.root).map_err(|e| MinerError::io(&self.root, e))?;
        let staging = self.root.join(format!("checkpoint.tmp-{step}"));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| MinerError::io(&staging, e))?;
        }
        let ck = |e: koth_model::ModelError| MinerError::Checkpoint {
            path: staging.clone(),
            message: e.to_string(),
        };
        trainer.model().save(&staging.join("model")).map_err(ck)?;
        let (opt_steps, tensors) = trainer.optimizer_state().map_err(ck)?;
        if opt_steps != step {
            return Err(MinerError::Training(format!(
                "the optimizer counted {opt_steps} steps, the loop {step}"
            )));
        }
        koth_model::weights::write_safetensors(&staging.join("optimizer.safetensors"), &tensors)
            .map_err(ck)?;
        let state = CheckpointState {
            format: CHECKPOINT_FORMAT.into(),
            key: key.clone(),
            step,
            losses: losses.to_vec(),
        };
        let bytes =
            serde_json::to_vec_pretty(&state).map_err(|e| MinerError::Training(e.to_string()))?;
        write_synced(&staging.join("state.json"), &bytes)?;
        let current = self.current();
        let old = self.root.join("checkpoint.old");
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| MinerError::io(&old, e))?;
        }
        if current.exists() {
            std::fs::rename(&current, &old).map_err(|e| MinerError::io(&current, e))?;
        }
        std::fs::rename(&staging, &current).map_err(|e| MinerError::io(&staging, e))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| MinerError::io(&old, e))?;
        }
        Ok(current)
    }

    /// Load the checkpoint for `key` into a trainer; `None` if there is none for this run.
    fn load(
        &self,
        key: &RunKey,
        adamw: AdamWConfig,
        dtype: koth_model::DType,
        device: &Device,
    ) -> Result<Option<(Trainer, u64, Vec<f32>)>> {
        // A crash between the two renames of `save` leaves only `checkpoint.old`.
        let mut dir = self.current();
        if !dir.exists() {
            let old = self.root.join("checkpoint.old");
            if old.exists() {
                dir = old;
            } else {
                return Ok(None);
            }
        }
        let state = read_state(&dir)?;
        if &state.key != key {
            return Ok(None);
        }
        let ck = |e: koth_model::ModelError| MinerError::Checkpoint {
            path: dir.clone(),
            message: e.to_string(),
        };
        let model = Model::load(&dir.join("model"), dtype, device).map_err(ck)?;
        let mut trainer = Trainer::new(&model, adamw).map_err(ck)?;
        let tensors: HashMap<String, koth_model::Tensor> =
            koth_model::weights::read_safetensors(&dir.join("optimizer.safetensors"))
                .map_err(ck)?
                .into_iter()
                .collect();
        trainer
            .load_optimizer_state(state.step, &tensors)
            .map_err(ck)?;
        if state.losses.len() as u64 != state.step {
            return Err(MinerError::Checkpoint {
                path: dir,
                message: format!(
                    "state.json records {} losses for {} steps",
                    state.losses.len(),
                    state.step
                ),
            });
        }
        Ok(Some((trainer, state.step, state.losses)))
    }
}

fn read_state(dir: &Path) -> Result<CheckpointState> {
    let path = dir.join("state.json");
    let bytes = std::fs::read(&path).map_err(|e| MinerError::io(&path, e))?;
    let state: CheckpointState =
        serde_json::from_slice(&bytes).map_err(|e| MinerError::Checkpoint {
            path: path.clone(),
            message: e.to_string(),
        })?;
    if state.format != CHECKPOINT_FORMAT {
        return Err(MinerError::Checkpoint {
            path,
            message: format!("format {:?}, expected {CHECKPOINT_FORMAT:?}", state.format),
        });
    }
    Ok(state)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| MinerError::io(path, e))?;
    f.write_all(bytes).map_err(|e| MinerError::io(path, e))?;
    f.sync_all().map_err(|e| MinerError::io(path, e))
}

/// The AdamW settings of a training run.
pub fn adamw_config(settings: &TrainSettings) -> AdamWConfig {
    AdamWConfig {
        weight_decay: settings.weight_decay,
        max_grad_norm: (settings.clip > 0.0).then_some(settings.clip),
        ..AdamWConfig::default()
    }
}

/// The loss and averaged gradients of `micro` micro-batches (the gradient of the mean NLL over
/// all their rows).
pub fn accumulated_gradients(
    trainer: &Trainer,
    batches: &[TokenIds],
) -> Result<(f32, Vec<(String, koth_model::Tensor)>)> {
    let mut loss_sum = 0f64;
    let mut sum: Option<Vec<(String, koth_model::Tensor)>> = None;
    for ids in batches {
        let (loss, grads) = trainer.gradients(ids)?;
        loss_sum += f64::from(loss);
        sum = Some(match sum {
            None => grads,
            Some(acc) => acc
                .into_iter()
                .zip(grads)
                .map(|((n, a), (_, g))| Ok((n, (a + g)?)))
                .collect::<std::result::Result<Vec<_>, candle_core::Error>>()
                .map_err(|e| MinerError::Training(e.to_string()))?,
        });
    }
    let k = batches.len();
    let grads = sum.ok_or_else(|| MinerError::Training("no micro-batches".into()))?;
    if k == 1 {
        return Ok((loss_sum as f32, grads));
    }
    let scale = 1.0 / k as f64;
    let grads = grads
        .into_iter()
        .map(|(n, g)| Ok((n, (g * scale)?)))
        .collect::<std::result::Result<Vec<_>, candle_core::Error>>()
        .map_err(|e| MinerError::Training(e.to_string()))?;
    Ok(((loss_sum / k as f64) as f32, grads))
}

/// Train from `start` (the king, on the training device and dtype) for the schedule's steps,
/// resuming from `checkpoint` when it holds this run (`key`). `control` sees every step and may
/// stop the run.
pub fn train(
    start: &Model,
    settings: &TrainSettings,
    data: &MinerData,
    key: &RunKey,
    checkpoint: &CheckpointDir,
    control: &mut dyn FnMut(&StepInfo) -> Flow,
) -> Result<TrainResult> {
    let adamw = adamw_config(settings);
    let (mut trainer, start_step, mut losses) =
        match checkpoint.load(key, adamw, start.dtype(), start.device())? {
            Some(resumed) => resumed,
            None => (Trainer::new(start, adamw)?, 0, Vec::new()),
        };
    let steps = settings.schedule.steps;
    let rows = settings.batch_size;
    let cols = settings.seq_len;
    let k = settings.grad_accum as u64;
    let vocab = start.config().vocab_size;
    let began = Instant::now();
    let mut stopped = false;
    let mut step = start_step;
    while step < steps {
        let t0 = Instant::now();
        let lr = settings.schedule.lr_at(step);
        let mut batches = Vec::with_capacity(k as usize);
        for m in 0..k {
            let tokens = data.micro_batch(key.attempt, step * k + m, rows)?;
            let ids = TokenIds::new(tokens, rows, cols)?;
            ids.check_vocab(vocab)?;
            batches.push(ids);
        }
        let (loss, grads) = accumulated_gradients(&trainer, &batches)?;
        let grad_norm = trainer.apply_gradients(grads, lr)?;
        losses.push(loss);
        step += 1;
        let secs = t0.elapsed().as_secs_f64().max(1e-9);
        let info = StepInfo {
            step,
            steps,
            loss,
            lr,
            grad_norm,
            tokens_per_s: settings.tokens_per_step() as f64 / secs,
            elapsed_s: began.elapsed().as_secs_f64(),
        };
        let periodic =
            settings.checkpoint_every > 0 && step % settings.checkpoint_every == 0 && step < steps;
        if periodic {
            let path = checkpoint.save(&trainer, key, step, &losses)?;
            tracing::debug!(step, path = %path.display(), "checkpoint");
        }
        match control(&info) {
            Flow::Continue => {}
            Flow::Stop { checkpoint: save } => {
                if save && !periodic && step < steps {
                    checkpoint.save(&trainer, key, step, &losses)?;
                }
                stopped = step < steps;
                break;
            }
        }
    }
    Ok(TrainResult {
        model: trainer.model().clone(),
        losses,
        steps_done: step,
        resumed_from: start_step,
        stopped,
    })
}
