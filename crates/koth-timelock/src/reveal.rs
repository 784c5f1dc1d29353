//! Which drand round a commitment or a weights commit is encrypted to, computed as
//! bittensor-drand 2.0.0 computes it, with the time passed in rather than read from a clock.

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::drand::DrandNetwork;
use crate::epoch::{predict_first_reveal_block, EpochScheduleState, SECURITY_BLOCK_OFFSET};
use crate::payload::{commitment_plaintext, WeightsTlockPayload};
use crate::{tlock, TimelockError};

fn check_block_time(block_time: f64) -> Result<(), TimelockError> {
    if block_time.is_finite() && block_time >= 0.0 {
        Ok(())
    } else {
        Err(TimelockError::BlockTime(block_time))
    }
}

/// The reveal round of a timelocked commitment made at `now_unix_secs`, as the SDK's
/// `get_encrypted_commitment(data, blocks_until_reveal, block_time)` (bittensor-drand's
/// `encrypt_commitment`, behind `set_reveal_commitment`) computes it:
///
/// `((now - genesis) + round(blocks_until_reveal * block_time)) / period`
///
/// in whole seconds (`now` truncated to a second, the delay rounded half away from zero,
/// integer division). There is no security offset on this path. Errors: a bad block time, a
/// zero period, a time before genesis, or a result of round 0.
pub fn commitment_reveal_round(
    net: &DrandNetwork,
    blocks_until_reveal: u64,
    block_time: f64,
    now_unix_secs: u64,
) -> Result<u64, TimelockError> {
    net.check_period()?;
    check_block_time(block_time)?;
    if now_unix_secs < net.genesis_time {
        return Err(TimelockError::BeforeGenesis {
            now: now_unix_secs,
            genesis: net.genesis_time,
        });
    }
    // As bittensor-drand: f64 product, rounded, then cast (saturating) to u64.
    let delay = (blocks_until_reveal as f64 * block_time).round() as u64;
    let round = (now_unix_secs - net.genesis_time).saturating_add(delay) / net.period;
    if round == 0 {
        return Err(TimelockError::RoundZero);
    }
    Ok(round)
}

/// Timelock-encrypts a commitment string as `set_reveal_commitment` does: the SCALE string
/// ([`commitment_plaintext`]) encrypted to [`commitment_reveal_round`]. Returns the ciphertext
/// and the round, the two fields of `Data::TimelockEncrypted`.
pub fn encrypt_commitment<R: RngCore + CryptoRng>(
    net: &DrandNetwork,
    data: &str,
    blocks_until_reveal: u64,
    block_time: f64,
    now_unix_secs: u64,
    rng: &mut R,
) -> Result<(Vec<u8>, u64), TimelockError> {
    let round = commitment_reveal_round(net, blocks_until_reveal, block_time, now_unix_secs)?;
    let ciphertext = tlock::encrypt(net, &commitment_plaintext(data), round, rng)?;
    Ok((ciphertext, round))
}

/// When a timelocked weights commit is revealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsReveal {
    /// The first block at which the chain reveals the commit ([`predict_first_reveal_block`]
    /// for [`weights_reveal`]; [`crate::LegacyEpoch::first_reveal_block`] for
    /// [`crate::legacy_weights_reveal`]).
    pub reveal_block: u64,
    /// The drand round the commit is encrypted to: the pulse due at `reveal_block` plus
    /// [`SECURITY_BLOCK_OFFSET`] blocks, rounded down.
    pub reveal_round: u64,
}

/// The round both bittensor-drand rules (1.x `generate_commit`, 2.0 `generate_commit_v2`)
/// encrypt a weights commit to: the pulse due when `ingest_block` is produced, counting
/// `block_time` seconds a block from `current_block` at `now_unix_secs`:
/// `floor((now + (ingest_block - current_block) * block_time - genesis) / period)`, the block
/// count saturating at 0, the f64 cast saturating (negative to 0), and at least round 1.
pub(crate) fn round_at_ingest(
    net: &DrandNetwork,
    ingest_block: u64,
    current_block: u64,
    block_time: f64,
    now_unix_secs: f64,
) -> Result<u64, TimelockError> {
    net.check_period()?;
    check_block_time(block_time)?;
    if !(now_unix_secs.is_finite() && now_unix_secs >= 0.0) {
        return Err(TimelockError::Time(now_unix_secs));
    }
    let blocks_until_ingest = ingest_block.saturating_sub(current_block);
    let target_secs = now_unix_secs + blocks_until_ingest as f64 * block_time;
    // As bittensor-drand: floor in f64, cast (saturating, negative to 0), at least round 1.
    let round = ((target_secs - net.genesis_time as f64) / net.period as f64).floor() as u64;
    Ok(round.max(1))
}

/// The reveal of a timelocked weights commit made at `now_unix_secs` against the chain head
/// `state`, as the SDK's `get_encrypted_commit_v2` (bittensor-drand's `generate_commit_v2`)
/// computes it:
///
/// - `reveal_block` = [`predict_first_reveal_block`]`(state, reveal_period_epochs)`;
/// - `target = now + (reveal_block + 3 - current_block) * block_time` seconds (f64);
/// - `reveal_round = floor((target - genesis) / period)`, at least 1.
///
/// `now_unix_secs` is fractional, as bittensor-drand reads the clock (`as_secs_f64`).
pub fn weights_reveal(
    net: &DrandNetwork,
    state: &EpochScheduleState,
    reveal_period_epochs: u64,
    block_time: f64,
    now_unix_secs: f64,
) -> Result<WeightsReveal, TimelockError> {
    net.check_period()?;
    check_block_time(block_time)?;
    if !(now_unix_secs.is_finite() && now_unix_secs >= 0.0) {
        return Err(TimelockError::Time(now_unix_secs));
    }
    let reveal_block = predict_first_reveal_block(state, reveal_period_epochs)?;
    let ingest_block = reveal_block.saturating_add(SECURITY_BLOCK_OFFSET);
    let reveal_round = round_at_ingest(
        net,
        ingest_block,
        state.current_block,
        block_time,
        now_unix_secs,
    )?;
    Ok(WeightsReveal {
        reveal_block,
        reveal_round,
    })
}

/// Encrypts a weights payload as `commit_timelocked_mechanism_weights` wants it (the SDK's
/// `get_encrypted_commit_v2`): the SCALE payload encrypted to [`weights_reveal`]'s round.
/// Returns the `commit` bytes and the reveal.
pub fn encrypt_weights<R: RngCore + CryptoRng>(
    net: &DrandNetwork,
    payload: &WeightsTlockPayload,
    state: &EpochScheduleState,
    reveal_period_epochs: u64,
    block_time: f64,
    now_unix_secs: f64,
    rng: &mut R,
) -> Result<(Vec<u8>, WeightsReveal), TimelockError> {
    let reveal = weights_reveal(net, state, reveal_period_epochs, block_time, now_unix_secs)?;
    let ciphertext = tlock::encrypt(net, &payload.to_bytes(), reveal.reveal_round, rng)?;
    Ok((ciphertext, reveal))
}
