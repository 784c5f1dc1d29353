//! subtensor's stateful epoch schedule, as far as a committer needs it to predict the block at
//! which the chain reveals a timelocked weights commit.
//!
//! A port of bittensor-drand 2.0.0's `epoch_schedule.rs` (itself a port of subtensor's
//! `run_coinbase.rs` `should_run_epoch`, the epoch counter update of `run_coinbase`, and
//! `weights.rs` `current_epoch_with_lookahead`). Like bittensor-drand it does not model
//! `MaxEpochsPerBlock` deferral.

use serde::{Deserialize, Serialize};

use crate::TimelockError;

/// subtensor's `MAX_TEMPO`: an owner-set tempo is at most this many blocks, and a subnet whose
/// `BlocksSinceLastStep` passes it runs an epoch regardless.
pub const MAX_TEMPO: u16 = 50_400;
/// subtensor's `MAX_COMMIT_REVEAL_PEROIDS`: the largest `RevealPeriodEpochs` a subnet can have.
pub const MAX_COMMIT_REVEAL_PERIODS: u64 = 100;
/// The SDK reads the chain head; its extrinsic lands in the next block.
pub const COMMIT_INCLUSION_BLOCK_OFFSET: u64 = 1;
/// bittensor-drand aims the reveal round at the pulse due this many blocks after the reveal
/// block, so that the pulse is surely on chain when the reveal runs.
pub const SECURITY_BLOCK_OFFSET: u64 = 3;

/// The epoch storage of one subnet, read at one block: what the SDK's
/// `get_epoch_schedule_state` reads (`SubtensorModule.LastEpochBlock`, `PendingEpochAt`,
/// `SubnetEpochIndex`, `Tempo`, `BlocksSinceLastStep`, all at `current_block`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochScheduleState {
    /// Block at which the subnet's last epoch ran.
    pub last_epoch_block: u64,
    /// Block of an owner-triggered epoch still to run; 0 when none is pending.
    pub pending_epoch_at: u64,
    /// The subnet's epoch counter.
    pub subnet_epoch_index: u64,
    /// Blocks per epoch; 0 means the subnet runs no epochs.
    pub tempo: u16,
    /// Blocks since the subnet's last epoch step.
    pub blocks_since_last_step: u64,
    /// The block this snapshot was read at (the chain head).
    pub current_block: u64,
}

impl EpochScheduleState {
    /// Whether the subnet's epoch runs at `block` (subtensor's `should_run_epoch`): a pending
    /// owner-triggered epoch that is due, the `MAX_TEMPO` safety net, or `tempo` blocks since
    /// the last epoch.
    pub fn should_run_epoch(&self, block: u64) -> bool {
        if self.tempo == 0 {
            return false;
        }
        if self.pending_epoch_at > 0 && block >= self.pending_epoch_at {
            return true;
        }
        if self.blocks_since_last_step > u64::from(MAX_TEMPO) {
            return true;
        }
        block.saturating_sub(self.last_epoch_block) >= u64::from(self.tempo)
    }

    /// The epoch index the weights reveal sees at `block`: it runs before `run_coinbase` in
    /// `block_step`, and looks ahead one epoch when this block's epoch is about to run
    /// (subtensor's `current_epoch_with_lookahead`).
    pub fn epoch_before_coinbase(&self, block: u64) -> u64 {
        if self.should_run_epoch(block) {
            self.subnet_epoch_index.saturating_add(1)
        } else {
            self.subnet_epoch_index
        }
    }

    /// The state after `run_coinbase` at `block`: one more block since the last step, and, when
    /// the epoch runs, a reset of the step counter and the pending epoch and one more epoch.
    pub fn after_coinbase(&self, block: u64) -> Self {
        let mut next = self.clone();
        next.blocks_since_last_step = next.blocks_since_last_step.saturating_add(1);
        next.current_block = block;
        if next.should_run_epoch(block) {
            next.last_epoch_block = block;
            next.pending_epoch_at = 0;
            next.subnet_epoch_index = next.subnet_epoch_index.saturating_add(1);
            next.blocks_since_last_step = 0;
        }
        next
    }

    /// [`Self::after_coinbase`] for every block of `start..=end`, in order; the state itself
    /// when `start > end`.
    pub fn advance(&self, start: u64, end: u64) -> Self {
        let mut state = self.clone();
        if start > end {
            return state;
        }
        for block in start..=end {
            state = state.after_coinbase(block);
        }
        state
    }
}

/// The blocks the reveal search may simulate: one epoch of slack past the reveal period, at
/// the longest tempo.
pub fn max_simulation_blocks(reveal_period_epochs: u64) -> u64 {
    reveal_period_epochs
        .saturating_mul(u64::from(MAX_TEMPO))
        .saturating_add(u64::from(MAX_TEMPO))
}

/// The state just before the commit extrinsic's block, and that block.
fn state_at_extrinsic(head: &EpochScheduleState) -> (EpochScheduleState, u64) {
    let head_block = head.current_block;
    let extrinsic_block = head_block.saturating_add(COMMIT_INCLUSION_BLOCK_OFFSET);
    let before = if extrinsic_block <= head_block.saturating_add(1) {
        head.clone()
    } else {
        head.advance(head_block + 1, extrinsic_block - 1)
    };
    (before, extrinsic_block)
}

/// The epoch a commit made against `head` is recorded in: the epoch index the chain sees in
/// the block the extrinsic lands in.
pub fn commit_epoch(head: &EpochScheduleState) -> u64 {
    let (before, extrinsic_block) = state_at_extrinsic(head);
    before.epoch_before_coinbase(extrinsic_block)
}

/// The first block at which the chain reveals a commit submitted against `head` (the commit
/// lands in `head.current_block + 1`): the first block whose pre-coinbase epoch equals the
/// commit epoch plus `reveal_period_epochs`.
///
/// Errors: a zero tempo (no epochs, no reveal), a reveal period above subtensor's maximum of
/// [`MAX_COMMIT_REVEAL_PERIODS`] (bittensor-drand would simulate for as long as it is asked;
/// the chain refuses such a period), or no match within [`max_simulation_blocks`].
pub fn predict_first_reveal_block(
    head: &EpochScheduleState,
    reveal_period_epochs: u64,
) -> Result<u64, TimelockError> {
    if head.tempo == 0 {
        return Err(TimelockError::TempoZero);
    }
    if reveal_period_epochs > MAX_COMMIT_REVEAL_PERIODS {
        return Err(TimelockError::RevealPeriodTooLarge {
            got: reveal_period_epochs,
            max: MAX_COMMIT_REVEAL_PERIODS,
        });
    }
    let (mut state, extrinsic_block) = state_at_extrinsic(head);
    let target_epoch = state
        .epoch_before_coinbase(extrinsic_block)
        .saturating_add(reveal_period_epochs);
    let last = extrinsic_block.saturating_add(max_simulation_blocks(reveal_period_epochs));
    for block in extrinsic_block..=last {
        if state.epoch_before_coinbase(block) == target_epoch {
            return Ok(block);
        }
        state = state.after_coinbase(block);
    }
    Err(TimelockError::ScheduleBoundExceeded)
}
