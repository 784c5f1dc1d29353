//! The commit-reveal epoch schedule and the reveal rounds.
//!
//! The first part ports bittensor-drand 2.0.0's tests of `epoch_schedule.rs` with the vectors
//! of its `epoch_schedule_vectors.rs` (their names and sources kept; the sources cite
//! subtensor's tests). The rest pins the reveal-round rules at fixed times, worked by hand.

use koth_timelock::epoch::{
    commit_epoch, max_simulation_blocks, COMMIT_INCLUSION_BLOCK_OFFSET, MAX_COMMIT_REVEAL_PERIODS,
    MAX_TEMPO,
};
use koth_timelock::{
    commitment_reveal_round, predict_first_reveal_block, weights_reveal, DrandNetwork,
    EpochScheduleState, TimelockError, WeightsReveal,
};

fn state(
    last_epoch_block: u64,
    pending_epoch_at: u64,
    subnet_epoch_index: u64,
    tempo: u16,
    blocks_since_last_step: u64,
    current_block: u64,
) -> EpochScheduleState {
    EpochScheduleState {
        last_epoch_block,
        pending_epoch_at,
        subnet_epoch_index,
        tempo,
        blocks_since_last_step,
        current_block,
    }
}

struct PredictVector {
    name: &'static str,
    source: &'static str,
    state: EpochScheduleState,
    reveal_period_epochs: u64,
    expected: Result<u64, TimelockError>,
}

/// bittensor-drand's `predict_vectors()`.
fn predict_vectors() -> Vec<PredictVector> {
    vec![
        PredictVector {
            name: "tempo_zero",
            source: "epoch_schedule.rs tempo guard",
            state: state(10, 0, 0, 0, 0, 10),
            reveal_period_epochs: 1,
            expected: Err(TimelockError::TempoZero),
        },
        PredictVector {
            name: "cycle_reset",
            source: "subtensor tempo_control.rs:195 get_next_epoch_start_block_reflects_set_tempo_cycle_reset",
            state: state(10, 0, 0, 50, 0, 10),
            reveal_period_epochs: 1,
            expected: Ok(60),
        },
        PredictVector {
            name: "pending_fires_before_auto",
            source: "subtensor tempo_control.rs pending epoch path",
            state: state(80, 95, 0, 20, 0, 91),
            reveal_period_epochs: 1,
            expected: Ok(95),
        },
    ]
}

// ---- ported from bittensor-drand (epoch_schedule.rs `tests` and `integration`) ----

#[test]
fn should_run_epoch_tempo_zero() {
    assert!(!state(100, 0, 0, 0, 0, 120).should_run_epoch(200));
}

#[test]
fn should_run_epoch_auto_fire() {
    let s = state(100, 0, 0, 50, 0, 120);
    assert!(!s.should_run_epoch(149));
    assert!(s.should_run_epoch(150));
}

#[test]
fn predict_first_reveal_block_table() {
    for case in predict_vectors() {
        assert_eq!(
            predict_first_reveal_block(&case.state, case.reveal_period_epochs),
            case.expected,
            "case {} ({})",
            case.name,
            case.source
        );
    }
}

#[test]
fn commit_epoch_at_extrinsic_block_table() {
    // bittensor-drand's `commit_epoch_vectors()`: one case.
    let case = state(100, 0, 0, 50, 0, 120);
    assert_eq!(
        commit_epoch(&case),
        0,
        "case commit_epoch_at_extrinsic_block"
    );
}

#[test]
fn reveal_uses_exact_equality_not_gte() {
    let case = &predict_vectors()[2];
    let reveal_block = predict_first_reveal_block(&case.state, case.reveal_period_epochs).unwrap();
    assert!(reveal_block > case.state.current_block);

    // Walk the chain from the commit's block: no block before the reveal block reaches the
    // target epoch, and the reveal block does.
    let extrinsic_block = case.state.current_block + COMMIT_INCLUSION_BLOCK_OFFSET;
    let mut s = case.state.clone();
    let target_epoch = s.epoch_before_coinbase(extrinsic_block) + case.reveal_period_epochs;
    for block in extrinsic_block..reveal_block - 1 {
        assert_ne!(
            s.epoch_before_coinbase(block),
            target_epoch,
            "block {block} reached the target epoch before {reveal_block}"
        );
        s = s.after_coinbase(block);
    }
    s = s.after_coinbase(reveal_block - 1);
    assert_eq!(s.epoch_before_coinbase(reveal_block), target_epoch);
}

// ---- koth's own: the schedule around its edges ----

#[test]
fn a_commit_in_an_epochs_last_block_counts_for_the_next_epoch() {
    // tempo 10, last epoch at 100: the epoch runs again at 110. A commit read at head 109
    // lands in 110, where the reveal sees the look-ahead epoch 1, so it is revealed when epoch
    // 2 starts, at 120.
    let s = state(100, 0, 0, 10, 9, 109);
    assert_eq!(commit_epoch(&s), 1);
    assert_eq!(predict_first_reveal_block(&s, 1), Ok(120));
    // Read one block earlier, it lands in 109 (epoch 0) and is revealed at 110.
    let s = state(100, 0, 0, 10, 8, 108);
    assert_eq!(commit_epoch(&s), 0);
    assert_eq!(predict_first_reveal_block(&s, 1), Ok(110));
    // Three epochs of reveal period: three tempos later.
    assert_eq!(predict_first_reveal_block(&s, 3), Ok(130));
}

#[test]
fn the_max_tempo_safety_net_fires_an_epoch() {
    // A stalled subnet (more than MAX_TEMPO blocks since its last step) runs its epoch in the
    // next block whatever its tempo.
    let s = state(0, 0, 5, 1000, u64::from(MAX_TEMPO) + 1, 60_000);
    assert!(s.should_run_epoch(60_001));
    assert_eq!(commit_epoch(&s), 6);
    // After it fires the counters reset, and the next epoch is a tempo later.
    assert_eq!(predict_first_reveal_block(&s, 1), Ok(61_001));
}

#[test]
fn a_reveal_period_above_subtensors_maximum_is_refused() {
    let s = state(10, 0, 0, 50, 0, 10);
    assert_eq!(
        predict_first_reveal_block(&s, MAX_COMMIT_REVEAL_PERIODS + 1),
        Err(TimelockError::RevealPeriodTooLarge {
            got: MAX_COMMIT_REVEAL_PERIODS + 1,
            max: MAX_COMMIT_REVEAL_PERIODS
        })
    );
    assert_eq!(
        predict_first_reveal_block(&s, MAX_COMMIT_REVEAL_PERIODS),
        Ok(10 + 50 * MAX_COMMIT_REVEAL_PERIODS)
    );
    // The longest search stays bounded (and quick): the largest tempo and period.
    let slow = state(0, 0, 0, MAX_TEMPO, 0, 1);
    assert_eq!(
        predict_first_reveal_block(&slow, MAX_COMMIT_REVEAL_PERIODS),
        Ok(u64::from(MAX_TEMPO) * MAX_COMMIT_REVEAL_PERIODS)
    );
    assert_eq!(max_simulation_blocks(1), 2 * u64::from(MAX_TEMPO));
}

#[test]
fn the_schedule_does_not_overflow_at_the_end_of_u64() {
    let s = state(u64::MAX - 5, 0, u64::MAX, 3, 0, u64::MAX - 1);
    // No panic; whatever it answers is an answer.
    let _ = predict_first_reveal_block(&s, 2);
    let _ = commit_epoch(&s);
    let _ = s.advance(u64::MAX - 1, u64::MAX);
}

// ---- reveal rounds at fixed times ----

const G: u64 = 1_692_803_367; // quicknet genesis

#[test]
fn commitment_reveal_round_is_bittensor_drands_rule() {
    let net = DrandNetwork::quicknet();
    // ((now - genesis) + round(blocks * block_time)) / 3
    // 3000 s after genesis, 10 blocks of 12 s: (3000 + 120) / 3 = 1040.
    assert_eq!(commitment_reveal_round(&net, 10, 12.0, G + 3000), Ok(1040));
    // Integer division: 3001 and 3002 s after genesis give the same round.
    assert_eq!(commitment_reveal_round(&net, 10, 12.0, G + 3002), Ok(1040));
    assert_eq!(commitment_reveal_round(&net, 10, 12.0, G + 3003), Ok(1041));
    // The delay is rounded half away from zero: 3 * 0.25 = 0.75 -> 1; 2 * 0.25 = 0.5 -> 1.
    assert_eq!(commitment_reveal_round(&net, 3, 0.25, G + 2), Ok(1));
    assert_eq!(commitment_reveal_round(&net, 2, 0.25, G + 2), Ok(1));
    // 0.4 s rounds to 0: (2 + 0) / 3 = 0, no such round.
    assert_eq!(
        commitment_reveal_round(&net, 1, 0.4, G + 2),
        Err(TimelockError::RoundZero)
    );
    // Bittensor's mainnet: 360 blocks (one tempo) at 12 s on 2026-01-01T00:00:00Z.
    // (1767225600 - 1692803367 + 4320) / 3 = (74422233 + 4320) / 3 = 24808851.
    assert_eq!(
        commitment_reveal_round(&net, 360, 12.0, 1_767_225_600),
        Ok(24_808_851)
    );
}

#[test]
fn commitment_reveal_round_refuses_bad_input() {
    let net = DrandNetwork::quicknet();
    assert_eq!(
        commitment_reveal_round(&net, 10, 12.0, G - 1),
        Err(TimelockError::BeforeGenesis {
            now: G - 1,
            genesis: G
        })
    );
    for bad in [f64::NAN, f64::INFINITY, -1.0] {
        assert!(matches!(
            commitment_reveal_round(&net, 10, bad, G + 100),
            Err(TimelockError::BlockTime(_))
        ));
    }
    let mut zero = net.clone();
    zero.period = 0;
    assert_eq!(
        commitment_reveal_round(&zero, 10, 12.0, G + 100),
        Err(TimelockError::PeriodZero)
    );
}

#[test]
fn weights_reveal_is_bittensor_drands_rule() {
    let net = DrandNetwork::quicknet();
    // cycle_reset: reveal block 60; the round aims at block 63, 53 blocks after head 10.
    // At 3000.5 s after genesis with 12 s blocks: floor((3000.5 + 636) / 3) = 1212.
    let s = state(10, 0, 0, 50, 0, 10);
    assert_eq!(
        weights_reveal(&net, &s, 1, 12.0, G as f64 + 3000.5),
        Ok(WeightsReveal {
            reveal_block: 60,
            reveal_round: 1212
        })
    );
    // floor, not round: 3001.9 s -> floor(3637.9 / 3) = 1212; 3002.0 s -> 1212.666 -> 1212;
    // 3003.0 s -> 1213.
    assert_eq!(
        weights_reveal(&net, &s, 1, 12.0, G as f64 + 3001.9).map(|r| r.reveal_round),
        Ok(1212)
    );
    assert_eq!(
        weights_reveal(&net, &s, 1, 12.0, G as f64 + 3003.0).map(|r| r.reveal_round),
        Ok(1213)
    );
    // pending_fires_before_auto: reveal block 95, aim at 98, 7 blocks after head 91, 0.25 s
    // blocks: floor((100 + 1.75) / 3) = 33.
    let p = state(80, 95, 0, 20, 0, 91);
    assert_eq!(
        weights_reveal(&net, &p, 1, 0.25, G as f64 + 100.0),
        Ok(WeightsReveal {
            reveal_block: 95,
            reveal_round: 33
        })
    );
    // Before genesis the round is clamped to 1, as bittensor-drand does.
    assert_eq!(
        weights_reveal(&net, &p, 1, 0.25, 0.0).map(|r| r.reveal_round),
        Ok(1)
    );
}

#[test]
fn weights_reveal_refuses_bad_input() {
    let net = DrandNetwork::quicknet();
    let s = state(10, 0, 0, 50, 0, 10);
    assert_eq!(
        weights_reveal(&net, &state(10, 0, 0, 0, 0, 10), 1, 12.0, G as f64),
        Err(TimelockError::TempoZero)
    );
    assert!(matches!(
        weights_reveal(&net, &s, 1, f64::NAN, G as f64),
        Err(TimelockError::BlockTime(_))
    ));
    for bad in [f64::NAN, -1.0, f64::INFINITY] {
        assert!(matches!(
            weights_reveal(&net, &s, 1, 12.0, bad),
            Err(TimelockError::Time(_))
        ));
    }
}

#[test]
fn drand_round_clock() {
    let net = DrandNetwork::quicknet();
    assert_eq!(net.round_at(G - 1), Ok(0));
    assert_eq!(net.round_at(G), Ok(1));
    assert_eq!(net.round_at(G + 2), Ok(1));
    assert_eq!(net.round_at(G + 3), Ok(2));
    assert_eq!(net.round_time(1), Ok(G));
    assert_eq!(net.round_time(1000), Ok(G + 2997));
    assert_eq!(net.round_time(0), Err(TimelockError::RoundZero));
}
