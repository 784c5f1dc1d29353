//! What the miner tells its observer (the CLI's progress bar, log lines or JSON lines).

use koth_core::Digest;
use serde::Serialize;

use crate::follow::{KingRef, ValidatorVerdict};
use crate::judge::LocalVerdict;
use crate::train::StepInfo;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum MinerEvent {
    /// The king this attempt trains from.
    King {
        attempt: u64,
        king: KingRef,
    },
    /// The king's checkpoint is on disk, verified.
    Fetched {
        digest: Digest,
        path: String,
    },
    TrainStart {
        attempt: u64,
        king: Digest,
        /// Steps already done (resumed from a checkpoint) and in all.
        start_step: u64,
        steps: u64,
        tokens_per_step: u64,
    },
    Step(StepInfo),
    /// `[train] command` starts (instead of the built-in trainer).
    TrainerStart {
        attempt: u64,
        king: Digest,
        command: String,
        time_limit_s: u64,
    },
    /// One line the external trainer printed (stdout or stderr).
    TrainerOutput {
        line: String,
    },
    /// The external trainer exited 0 and wrote its checkpoint.
    TrainerDone {
        seconds: f64,
    },
    /// The validator's gates, run locally on the challenger (`koth miner check`).
    Checked(crate::check::GateReport),
    /// Training stopped on a signal; the checkpoint resumes it.
    Interrupted {
        step: u64,
    },
    /// The king changed under the attempt.
    KingChanged {
        old: Digest,
        new: Digest,
    },
    TrainDone {
        steps: u64,
        loss: f32,
    },
    /// The challenger is saved (not yet published).
    ChallengerSaved {
        digest: Digest,
        path: String,
    },
    /// A batch of the local duel.
    Judging {
        windows: u64,
        king_nll: f64,
        challenger_nll: f64,
    },
    Judged(LocalVerdict),
    NotSubmitted {
        reason: String,
    },
    /// The commitment was included in `block`; it is revealed at `reveal_block`. The
    /// checkpoint is put into the store once `block` is sealed, before `reveal_block`.
    Committed {
        block: u64,
        reveal_block: u64,
        payload: String,
    },
    /// The checkpoint is in the store; `block` is the chain's head when the upload finished
    /// (`None`: not readable), which should be before the commitment's `reveal_block`.
    Published {
        digest: Digest,
        location: String,
        block: Option<u64>,
        reveal_block: u64,
    },
    /// The commitment is on chain but the checkpoint could not be put into the store (or not
    /// before the commitment was sealed): the validator will answer whatever it finds.
    PublishFailed {
        digest: Digest,
        location: String,
        reason: String,
    },
    WaitingForVerdict {
        digest: Digest,
    },
    Verdict(ValidatorVerdict),
}

/// Receives the miner's events.
pub trait Observer {
    fn event(&mut self, event: &MinerEvent);
}

/// Discards every event.
pub struct Quiet;

impl Observer for Quiet {
    fn event(&mut self, _: &MinerEvent) {}
}

impl<F: FnMut(&MinerEvent)> Observer for F {
    fn event(&mut self, event: &MinerEvent) {
        self(event)
    }
}
