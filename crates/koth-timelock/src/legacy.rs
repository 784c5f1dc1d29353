//! The weights reveal of a chain from before subtensor's stateful epoch scheduler, as
//! bittensor-drand 1.x computes it.
//!
//! # When this applies
//!
//! On a chain whose runtime metadata has no `SubtensorModule.LastEpochBlock` (nor
//! `PendingEpochAt`, `SubnetEpochIndex`): subtensor up to at least spec 343 (commit
//! `3975359dd` of opentensor/subtensor, November 2025), the spec koth's pinned metadata and its
//! loopback node model. There a subnet's epochs are fixed by a formula rather than by state:
//!
//! `epoch_index(block) = (block + netuid + 1) / (tempo + 1)` (`weights.rs` `get_epoch_index`)
//!
//! and a timelocked weights commit (`commit_timelocked_mechanism_weights`) recorded in epoch
//! `e` is revealed by `reveal_crv3_commits` (`coinbase/reveal_commits.rs`, run for every subnet
//! in every block) in epoch `e + RevealPeriodEpochs`, at the first block of it whose drand pulse
//! is on chain. A chain whose metadata has `LastEpochBlock` runs the new scheduler: use
//! [`crate::weights_reveal`] with an [`crate::EpochScheduleState`] there instead.
//!
//! # The rule, as bittensor-drand 1.x has it
//!
//! bittensor-drand 1.0.0 through 1.3.0 share one `generate_commit` (`src/drand.rs`, behind the
//! SDK's `get_encrypted_commit(uids, weights, version_key, tempo, current_block, netuid,
//! subnet_reveal_period_epochs, block_time, hotkey)`; bittensor 9.x requires
//! `bittensor-drand>=1.0.0,<2`, bittensor 10.0 `>=1.2.0,<2`):
//!
//! 1. `current_epoch = (current_block + netuid + 1) / (tempo + 1)`;
//!    `reveal_epoch = current_epoch + subnet_reveal_period_epochs`;
//!    `first_reveal_blk = reveal_epoch * (tempo + 1) - (netuid + 1)` (saturating at 0);
//! 2. the pulse is aimed at `first_reveal_blk + SECURITY_BLOCK_OFFSET` (3 blocks):
//!    `blocks_until_ingest = first_reveal_blk + 3 - current_block` (saturating at 0),
//!    `target = now + blocks_until_ingest * block_time` seconds, in f64, with `now` the clock's
//!    fractional seconds (`as_secs_f64`);
//! 3. `reveal_round = floor((target - genesis) / period)`, cast to u64, at least 1. There is no
//!    pulse-delay subtraction and no ceiling: those were bittensor-drand 0.5.x's rule
//!    (`ceil(...) - SUBTENSOR_PULSE_DELAY` with a delay of 24 rounds), dropped in 1.0.0.
//!
//! The chain records a commit in the epoch of the block *after* the one it lands in
//! (`internal_commit_timelocked_weights` adds one when `should_run_epoch`, which holds in an
//! epoch's last block), while 1.x counts from `current_block`, the head the SDK read. The
//! extrinsic lands in `current_block + 1` at the earliest, so when `current_block` is one of the
//! last two blocks of its epoch (or the extrinsic is delayed past the epoch), the chain reveals
//! the commit one epoch (`tempo + 1` blocks) after [`WeightsReveal::reveal_block`]. The pulse
//! is on chain by then, so the reveal still works; it is just later than predicted. This module
//! reproduces 1.x, not the chain.
//!
//! # Where koth differs
//!
//! Only outside what the chain accepts, as elsewhere in this crate: a tempo of 0, a reveal
//! period above subtensor's `MAX_COMMIT_REVEAL_PEROIDS` (100), a block number so large that the
//! arithmetic overflows u64 (1.x wraps or saturates there), and a bad block time or clock reading
//! are errors.

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::drand::DrandNetwork;
use crate::epoch::{MAX_COMMIT_REVEAL_PERIODS, SECURITY_BLOCK_OFFSET};
use crate::payload::WeightsTlockPayload;
use crate::reveal::{round_at_ingest, WeightsReveal};
use crate::{tlock, TimelockError};

/// What a committer reads from a legacy chain at its head: the subnet, its
/// `SubtensorModule.Tempo` and `RevealPeriodEpochs`, and the head's block number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyEpoch {
    /// The subnet.
    pub netuid: u16,
    /// Blocks per epoch, minus one (an epoch is `tempo + 1` blocks); 0 runs no epochs.
    pub tempo: u16,
    /// The chain head the commit is made against (the SDK's `current_block`).
    pub current_block: u64,
    /// The subnet's `RevealPeriodEpochs`.
    pub reveal_period_epochs: u64,
}

impl LegacyEpoch {
    fn check(&self) -> Result<(), TimelockError> {
        if self.tempo == 0 {
            return Err(TimelockError::TempoZero);
        }
        if self.reveal_period_epochs > MAX_COMMIT_REVEAL_PERIODS {
            return Err(TimelockError::RevealPeriodTooLarge {
                got: self.reveal_period_epochs,
                max: MAX_COMMIT_REVEAL_PERIODS,
            });
        }
        Ok(())
    }

    fn tempo_plus_one(&self) -> u64 {
        u64::from(self.tempo) + 1
    }

    fn netuid_plus_one(&self) -> u64 {
        u64::from(self.netuid) + 1
    }

    /// The subnet's epoch index at `block`: `(block + netuid + 1) / (tempo + 1)`, subtensor's
    /// legacy `get_epoch_index`. Errors on a zero tempo or a block that overflows.
    pub fn epoch_index(&self, block: u64) -> Result<u64, TimelockError> {
        if self.tempo == 0 {
            return Err(TimelockError::TempoZero);
        }
        let offset = block
            .checked_add(self.netuid_plus_one())
            .ok_or(TimelockError::BlockOverflow)?;
        Ok(offset / self.tempo_plus_one())
    }

    /// The first block of `epoch`: `epoch * (tempo + 1) - (netuid + 1)`, saturating at block 0
    /// as both subtensor's `get_first_block_of_epoch` and bittensor-drand 1.x do.
    pub fn first_block_of_epoch(&self, epoch: u64) -> Result<u64, TimelockError> {
        if self.tempo == 0 {
            return Err(TimelockError::TempoZero);
        }
        Ok(epoch
            .checked_mul(self.tempo_plus_one())
            .ok_or(TimelockError::BlockOverflow)?
            .saturating_sub(self.netuid_plus_one()))
    }

    /// The epoch 1.x counts the commit in: that of `current_block`.
    pub fn current_epoch(&self) -> Result<u64, TimelockError> {
        self.epoch_index(self.current_block)
    }

    /// The epoch 1.x expects the reveal in: the current epoch plus the reveal period.
    pub fn reveal_epoch(&self) -> Result<u64, TimelockError> {
        self.check()?;
        self.current_epoch()?
            .checked_add(self.reveal_period_epochs)
            .ok_or(TimelockError::BlockOverflow)
    }

    /// The first block of [`Self::reveal_epoch`]: bittensor-drand 1.x's `first_reveal_blk`.
    pub fn first_reveal_block(&self) -> Result<u64, TimelockError> {
        self.first_block_of_epoch(self.reveal_epoch()?)
    }
}

/// The reveal of a timelocked weights commit made at `now_unix_secs` on a chain without the
/// stateful epoch scheduler (its metadata lacks `SubtensorModule.LastEpochBlock`), exactly as
/// bittensor-drand 1.x's `generate_commit` (the SDK's `get_encrypted_commit`) computes it with
/// `tempo`, `current_block`, `netuid`, `subnet_reveal_period_epochs` and `block_time`:
///
/// - `reveal_block` = [`LegacyEpoch::first_reveal_block`]:
///   `((current_block + netuid + 1) / (tempo + 1) + reveal_period_epochs) * (tempo + 1)
///   - (netuid + 1)`;
/// - `target = now + (reveal_block + 3 - current_block) * block_time` seconds (f64; the
///   block count saturating at 0);
/// - `reveal_round = floor((target - genesis) / period)`, at least 1.
///
/// `now_unix_secs` is fractional, as 1.x reads the clock (`as_secs_f64`). See [`crate::legacy`]
/// for the sources and for how the chain's own reveal epoch can be one later.
///
/// Errors: a zero tempo, a reveal period above 100 epochs, arithmetic past u64, a zero drand
/// period, a negative or non-finite block time or time.
pub fn legacy_weights_reveal(
    net: &DrandNetwork,
    e: &LegacyEpoch,
    block_time: f64,
    now_unix_secs: f64,
) -> Result<WeightsReveal, TimelockError> {
    let reveal_block = e.first_reveal_block()?;
    let ingest_block = reveal_block
        .checked_add(SECURITY_BLOCK_OFFSET)
        .ok_or(TimelockError::BlockOverflow)?;
    let reveal_round = round_at_ingest(
        net,
        ingest_block,
        e.current_block,
        block_time,
        now_unix_secs,
    )?;
    Ok(WeightsReveal {
        reveal_block,
        reveal_round,
    })
}

/// Encrypts a weights payload for `commit_timelocked_mechanism_weights` on a legacy chain, as
/// the SDK's `get_encrypted_commit` (bittensor-drand 1.x) does: the SCALE payload encrypted to
/// [`legacy_weights_reveal`]'s round. Returns the `commit` bytes and the reveal.
pub fn legacy_encrypt_weights<R: RngCore + CryptoRng>(
    net: &DrandNetwork,
    payload: &WeightsTlockPayload,
    e: &LegacyEpoch,
    block_time: f64,
    now_unix_secs: f64,
    rng: &mut R,
) -> Result<(Vec<u8>, WeightsReveal), TimelockError> {
    let reveal = legacy_weights_reveal(net, e, block_time, now_unix_secs)?;
    let ciphertext = tlock::encrypt(net, &payload.to_bytes(), reveal.reveal_round, rng)?;
    Ok((ciphertext, reveal))
}
