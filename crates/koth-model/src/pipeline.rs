//! The micro-batch pipeline over a placed model's stages.
//!
//! A scoring batch is cut into micro-batches of whole sequences (rows, in order). Stage `k`
//! works on micro-batch `i` while stage `k + 1` works on `i − 1`, so the devices of a
//! multi-device placement overlap instead of taking turns.
//!
//! Two schedules, one result:
//! - [`Schedule::Sequential`]: one thread runs micro-batch 0 through every stage, then
//!   micro-batch 1, … (no overlap; the CPU's choice, whose ops are multi-threaded already, and
//!   that of stages sharing a device).
//! - [`Schedule::Threads`]: one thread per stage, joined by bounded channels (capacity 1: a
//!   stage runs at most one micro-batch ahead of the next, so at most about three micro-batches
//!   of activations are alive per stage). Stage 0 reads the micro-batches in order; every
//!   stage handles them first in, first out; the last sends each micro-batch's per-row losses
//!   to the caller, who puts them back in row order. Before a stage hands a tensor over it
//!   drains its device's stream: candle's CUDA device issues work on the calling thread's
//!   per-thread stream, so the next stage's thread would not otherwise wait for it.
//!
//! Each micro-batch goes through exactly the ops of the one-stage model, in the same order, so
//! the losses are those of scoring the same micro-batches one after another on one device,
//! whatever the schedule, the number of stages, or which devices they share. Whether they also
//! equal the losses of the whole batch at once depends on the matmul kernels (on the CPU they
//! do for the golden models, `tests/placement.rs`; cuBLAS may choose a different algorithm for
//! another row count), so the micro-batch size is part of a verdict's batch layout, fixed by
//! [`Pipeline`] and the sequence length.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use candle_core::{Device, Tensor};

use crate::error::{ModelError, Result};
use crate::model::{Model, ScoreOptions, TokenIds};
use crate::ops::OpPath;

/// Tokens per micro-batch when no row count is set: the planner's default micro-batch
/// (`koth model plan --batch 4 --seq 2048`).
pub const DEFAULT_MICRO_BATCH_TOKENS: usize = 4 * 2048;

/// How the stages are driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schedule {
    /// [`Schedule::Threads`] when the model has several stages, one of them on a CUDA device,
    /// and no two on the same device; [`Schedule::Sequential`] otherwise. Virtual stages stay
    /// sequential: threads on one candle CUDA device share its cuBLAS handle (and workspace)
    /// from different streams, which is not known to be safe; `Threads` can still be asked for.
    #[default]
    Auto,
    /// One thread, micro-batch after micro-batch, stage after stage.
    Sequential,
    /// One thread per stage, bounded channels between them.
    Threads,
}

/// How a batch is scored through a placed model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pipeline {
    /// Sequences per micro-batch; `None`: `max(1, DEFAULT_MICRO_BATCH_TOKENS / seq_len)`.
    pub micro_batch_rows: Option<usize>,
    pub schedule: Schedule,
}

impl Pipeline {
    /// Rows per micro-batch for sequences of `seq_len` tokens (at least one).
    pub fn rows_for(&self, seq_len: usize) -> usize {
        self.micro_batch_rows
            .unwrap_or(DEFAULT_MICRO_BATCH_TOKENS / seq_len.max(1))
            .max(1)
    }

    /// The schedule [`Schedule::Auto`] stands for on `model`.
    pub fn schedule_for(&self, model: &Model) -> Schedule {
        match self.schedule {
            Schedule::Auto => {
                let stages = model.placement().stages();
                let shared = stages
                    .iter()
                    .enumerate()
                    .any(|(i, a)| stages[..i].iter().any(|b| b.device.same_device(&a.device)));
                if stages.len() > 1 && !shared && stages.iter().any(|s| s.device.is_cuda()) {
                    Schedule::Threads
                } else {
                    Schedule::Sequential
                }
            }
            other => other,
        }
    }
}

/// Each row's mean next-token NLL from per-token NLL f32 [B, T-1]: the row means reduced in
/// f32 where the losses are, then brought to the host.
pub(crate) fn row_means(nll: &Tensor) -> Result<Vec<f32>> {
    Ok(nll
        .mean_keepdim(1)?
        .squeeze(1)?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?)
}

/// The micro-batches of `ids`, `rows` sequences each (the last may be shorter).
pub fn micro_batches(ids: &TokenIds, rows: usize) -> Result<Vec<TokenIds>> {
    let rows = rows.max(1);
    let mut out = Vec::with_capacity(ids.rows().div_ceil(rows));
    let mut start = 0;
    while start < ids.rows() {
        let n = rows.min(ids.rows() - start);
        out.push(ids.slice_rows(start, n)?);
        start += n;
    }
    Ok(out)
}

/// Per-row mean NLL of `ids` through `model`'s stages, micro-batch by micro-batch.
pub(crate) fn sequence_losses(
    model: &Model,
    ids: &TokenIds,
    path: OpPath,
    opts: ScoreOptions,
    pipeline: &Pipeline,
) -> Result<Vec<f32>> {
    // Checked on the whole batch, so that an error names the row of the caller's batch.
    ids.check_vocab(model.config().vocab_size)?;
    let micro = micro_batches(ids, pipeline.rows_for(ids.cols()))?;
    let per_micro = match pipeline.schedule_for(model) {
        Schedule::Threads if model.placement().len() > 1 && micro.len() > 1 => {
            let devices: Vec<Device> = model
                .placement()
                .stages()
                .iter()
                .map(|s| s.device.clone())
                .collect();
            run_threads(&devices, &micro, |s, ids, x| {
                model.run_stage(s, ids, x, path, opts)
            })?
        }
        _ => micro
            .iter()
            .map(|mb| {
                let mut x = None;
                for s in 0..model.placement().len() {
                    x = Some(model.run_stage(s, mb, x, path, opts)?);
                }
                row_means(&x.ok_or_else(|| ModelError::Invalid("no stage ran".into()))?)
            })
            .collect::<Result<Vec<_>>>()?,
    };
    let losses: Vec<f32> = per_micro.into_iter().flatten().collect();
    if losses.len() != ids.rows() {
        return Err(ModelError::Invalid(format!(
            "the pipeline returned {} losses for {} rows",
            losses.len(),
            ids.rows()
        )));
    }
    Ok(losses)
}

/// What one stage hands to the next: the micro-batch's index, its ids (the last stage needs the
/// targets) and the residual stream.
type Handoff = Result<(usize, TokenIds, Tensor)>;

/// Where a stage sends its results: the next stage, or (the last) the caller.
enum Output {
    Next(SyncSender<Handoff>),
    Caller(SyncSender<Result<(usize, Vec<f32>)>>),
}

impl Output {
    /// False when the receiver has gone (a later stage or the caller stopped).
    fn send(&self, r: Handoff) -> bool {
        match self {
            Output::Next(tx) => tx.send(r).is_ok(),
            Output::Caller(tx) => tx
                .send(r.and_then(|(i, _, nll)| Ok((i, row_means(&nll)?))))
                .is_ok(),
        }
    }
}

/// One stage's thread: stage 0 reads the micro-batches in order, the others what the previous
/// stage hands over; each result goes on as soon as the stage's stream has finished it. The
/// first error is passed on and ends the stage.
fn stage_loop<F>(
    s: usize,
    device: &Device,
    micro: &[TokenIds],
    stage: &F,
    input: Option<Receiver<Handoff>>,
    output: Output,
) where
    F: Fn(usize, &TokenIds, Option<Tensor>) -> Result<Tensor>,
{
    let step = |ids: &TokenIds, x: Option<Tensor>| -> Result<Tensor> {
        let y = stage(s, ids, x)?;
        device.synchronize()?;
        Ok(y)
    };
    let forward = |r: Handoff| -> bool {
        let failed = r.is_err();
        output.send(r) && !failed
    };
    match input {
        None => {
            for (i, ids) in micro.iter().enumerate() {
                if !forward(step(ids, None).map(|y| (i, ids.clone(), y))) {
                    break;
                }
            }
        }
        Some(rx) => {
            for msg in rx {
                let r = msg.and_then(|(i, ids, x)| step(&ids, Some(x)).map(|y| (i, ids, y)));
                if !forward(r) {
                    break;
                }
            }
        }
    }
}

/// One thread per stage (`devices[s]` is stage `s`'s device; `stage(s, ids, input)` runs it);
/// returns each micro-batch's row losses in micro-batch order, or the first error.
fn run_threads<F>(devices: &[Device], micro: &[TokenIds], stage: F) -> Result<Vec<Vec<f32>>>
where
    F: Fn(usize, &TokenIds, Option<Tensor>) -> Result<Tensor> + Sync,
{
    let stages = devices.len();
    let count = micro.len();
    // The weights were uploaded from this thread: let every device finish before other threads
    // (other streams) read them.
    for d in devices {
        d.synchronize()?;
    }
    let (out_tx, out_rx) = sync_channel::<Result<(usize, Vec<f32>)>>(1);
    std::thread::scope(|scope| {
        let stage = &stage;
        let mut handles = Vec::with_capacity(stages);
        let mut input: Option<Receiver<Handoff>> = None;
        for (s, device) in devices.iter().enumerate() {
            let from = input.take();
            let output = if s + 1 < stages {
                let (tx, rx) = sync_channel::<Handoff>(1);
                input = Some(rx);
                Output::Next(tx)
            } else {
                Output::Caller(out_tx.clone())
            };
            handles.push(scope.spawn(move || stage_loop(s, device, micro, stage, from, output)));
        }
        // The last stage holds the only sender: the loop below ends when it does.
        drop(out_tx);
        let mut results: Vec<Vec<f32>> = Vec::with_capacity(count);
        let mut failure = None;
        for r in &out_rx {
            match r {
                Ok((i, losses)) if i == results.len() => results.push(losses),
                Ok((i, _)) => {
                    failure = Some(ModelError::Invalid(format!(
                        "the pipeline delivered micro-batch {i} out of order (expected {})",
                        results.len()
                    )));
                    break;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // A stage still sending finds its receiver gone and stops; then wait for all of them.
        drop(out_rx);
        let mut panicked = false;
        for h in handles {
            panicked |= h.join().is_err();
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if panicked {
            return Err(ModelError::Invalid("a pipeline stage panicked".into()));
        }
        if results.len() != count {
            return Err(ModelError::Invalid(format!(
                "the pipeline delivered {} of {count} micro-batches",
                results.len()
            )));
        }
        Ok(results)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stage that adds `s + 1` to every value after a pseudo-random pause, so the threads
    /// interleave differently from run to run; stage 0 starts from the ids.
    fn stage_fn(
        fail_at: Option<(usize, usize)>,
    ) -> impl Fn(usize, &TokenIds, Option<Tensor>) -> Result<Tensor> + Sync {
        move |s, ids, x| {
            let first = ids.as_slice()[0] as u64;
            std::thread::sleep(std::time::Duration::from_micros(
                (first * 37 + s as u64 * 11) % 300,
            ));
            if fail_at == Some((s, first as usize)) {
                return Err(ModelError::Invalid(format!("stage {s} failed on {first}")));
            }
            let x = match x {
                None => {
                    let v: Vec<f32> = ids.as_slice().iter().map(|&i| i as f32).collect();
                    Tensor::from_vec(v, (ids.rows(), ids.cols()), &Device::Cpu)?
                }
                Some(x) => x,
            };
            Ok((x + (s + 1) as f64)?)
        }
    }

    fn batch(rows: usize) -> TokenIds {
        // Row r is [r, r]: its mean is r.
        let ids = (0..rows).flat_map(|r| [r as u32, r as u32]).collect();
        TokenIds::new(ids, rows, 2).unwrap()
    }

    #[test]
    fn the_threads_deliver_every_micro_batch_in_order() {
        for stages in [1, 2, 5] {
            for rows in [1, 3, 4] {
                let ids = batch(13);
                let micro = micro_batches(&ids, rows).unwrap();
                let devices = vec![Device::Cpu; stages];
                let out = run_threads(&devices, &micro, stage_fn(None)).unwrap();
                let flat: Vec<f32> = out.into_iter().flatten().collect();
                let add = (stages * (stages + 1) / 2) as f32;
                let want: Vec<f32> = (0..13).map(|r| r as f32 + add).collect();
                assert_eq!(flat, want, "{stages} stages, {rows} rows");
            }
        }
    }

    #[test]
    fn the_first_error_of_any_stage_ends_the_run() {
        for stages in [2, 4] {
            for s in 0..stages {
                for at in [0, 6, 12] {
                    let ids = batch(13);
                    let micro = micro_batches(&ids, 1).unwrap();
                    let devices = vec![Device::Cpu; stages];
                    let e = run_threads(&devices, &micro, stage_fn(Some((s, at))))
                        .unwrap_err()
                        .to_string();
                    assert_eq!(e, format!("stage {s} failed on {at}"));
                }
            }
        }
    }

    #[test]
    fn micro_batches_cover_the_rows_in_order() {
        let ids = batch(7);
        let mb = micro_batches(&ids, 3).unwrap();
        let rows: Vec<usize> = mb.iter().map(|m| m.rows()).collect();
        assert_eq!(rows, vec![3, 3, 1]);
        let all: Vec<u32> = mb.iter().flat_map(|m| m.as_slice().to_vec()).collect();
        assert_eq!(all, ids.as_slice());
        assert_eq!(micro_batches(&ids, 0).unwrap().len(), 7);
        assert_eq!(micro_batches(&ids, 99).unwrap().len(), 1);
        assert_eq!(Pipeline::default().rows_for(2048), 4);
        assert_eq!(Pipeline::default().rows_for(100_000), 1);
        let fixed = Pipeline {
            micro_batch_rows: Some(0),
            schedule: Schedule::Threads,
        };
        assert_eq!(fixed.rows_for(16), 1);
    }
}
