//! The legacy (pre-epoch-scheduler) weights reveal: bittensor-drand 1.x's `generate_commit`.
//!
//! - Reference values: every case of tests/fixtures/drand1x_legacy_reveal.json is
//!   bittensor-drand 1.2.0's own `get_encrypted_commit` at a pinned clock reading (written by
//!   tests/legacy_reference/generate.py; the 1.0.0, 1.1.0 and 1.3.0 wheels wrote the same
//!   answers), and koth must give the same round to the bit.
//! - The tests of bittensor-drand 1.x (`src/drand.rs` `test_generate_commit_structure`,
//!   `tests/test_commit_reveal.py`), ported with their inputs and their checks at fixed times.
//! - subtensor 3975359dd (spec 343): the reveal block is the first block of the epoch the chain
//!   reveals in, by a model of its `get_epoch_index` written here.
//! - Bad input: errors, never panics.

mod common;

use koth_timelock::epoch::{MAX_COMMIT_REVEAL_PERIODS, SECURITY_BLOCK_OFFSET};
use koth_timelock::legacy::LegacyEpoch;
use koth_timelock::rand_core::OsRng;
use koth_timelock::{
    decrypt_with_signature, legacy_encrypt_weights, legacy_weights_reveal, DrandNetwork,
    TimelockError, WeightsReveal, WeightsTlockPayload, CIPHERTEXT_OVERHEAD, QUICKNET_GENESIS_TIME,
};

const GENESIS: f64 = QUICKNET_GENESIS_TIME as f64;

fn epoch(netuid: u16, tempo: u16, current_block: u64, reveal_period_epochs: u64) -> LegacyEpoch {
    LegacyEpoch {
        netuid,
        tempo,
        current_block,
        reveal_period_epochs,
    }
}

/// `Duration::as_secs_f64` of a unix time in nanoseconds, as bittensor-drand reads the clock.
fn secs_f64(now_ns: u64) -> f64 {
    (now_ns / 1_000_000_000) as f64 + (now_ns % 1_000_000_000) as f64 / 1e9
}

fn reveal(e: &LegacyEpoch, block_time: f64, now: f64) -> Result<WeightsReveal, TimelockError> {
    legacy_weights_reveal(&DrandNetwork::quicknet(), e, block_time, now)
}

// ---- bittensor-drand 1.x's answers at pinned clock readings ---------------------------------

#[test]
fn every_round_matches_bittensor_drand_1x_at_a_pinned_clock() {
    let f = common::read_json("tests/fixtures/drand1x_legacy_reveal.json");
    assert!(f["bittensor_drand_version"]
        .as_str()
        .unwrap()
        .starts_with("1."));
    let cases = f["cases"].as_array().unwrap();
    assert!(cases.len() >= 150, "{} cases", cases.len());
    let (mut matched, mut refused) = (0, 0);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let u = |k: &str| {
            c[k].as_u64()
                .unwrap_or_else(|| panic!("{name}: no u64 {k}"))
        };
        let block_time = f64::from_bits(u("block_time_bits"));
        // The decimal form is for reading; serde_json may parse it one ulp off, so the exact
        // value is taken from the bits.
        let decimal = c["block_time"].as_f64().unwrap();
        assert!((block_time - decimal).abs() <= block_time * 1e-15, "{name}");
        let e = epoch(
            u16::try_from(u("netuid")).unwrap(),
            u16::try_from(u("tempo")).unwrap(),
            u("current_block"),
            u("reveal_period_epochs"),
        );
        let ours = reveal(&e, block_time, secs_f64(u("now_ns")));
        if name.starts_with("refused_") {
            // 1.x answers these (tempo 0, a period the chain refuses, a wrapped block number);
            // koth does not.
            assert!(
                matches!(
                    ours,
                    Err(TimelockError::TempoZero
                        | TimelockError::RevealPeriodTooLarge { .. }
                        | TimelockError::BlockOverflow)
                ),
                "{name}: {ours:?}"
            );
            refused += 1;
            continue;
        }
        assert!(c.get("error").is_none(), "{name}: 1.x failed: {c}");
        let ours = ours.unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(ours.reveal_round, u("reveal_round"), "{name}: {e:?}");
        matched += 1;
    }
    assert_eq!(refused, 3);
    assert!(matched >= 150);
}

#[test]
fn the_refused_cases_are_what_the_chain_refuses() {
    let q = DrandNetwork::quicknet();
    assert_eq!(
        legacy_weights_reveal(&q, &epoch(1, 0, 1000, 2), 12.0, 1.8e9),
        Err(TimelockError::TempoZero)
    );
    assert_eq!(
        legacy_weights_reveal(&q, &epoch(1, 100, 1000, 101), 12.0, 1.8e9),
        Err(TimelockError::RevealPeriodTooLarge {
            got: 101,
            max: MAX_COMMIT_REVEAL_PERIODS
        })
    );
    assert_eq!(
        legacy_weights_reveal(&q, &epoch(1, 100, u64::MAX - 1, 2), 12.0, 1.8e9),
        Err(TimelockError::BlockOverflow)
    );
}

// ---- bittensor-drand 1.x's own tests, ported --------------------------------------------------

/// `compute_expected_reveal_round` of bittensor-drand 1.x's tests/test_commit_reveal.py: the
/// test's own model, with the clock read as whole seconds (`int(time.time())`).
fn py_expected(
    now: u64,
    tempo: u64,
    current_block: u64,
    netuid: u64,
    period: u64,
    block_time: u64,
) -> (u64, u64, u64) {
    let current_epoch = (current_block + netuid + 1) / (tempo + 1);
    let reveal_epoch = current_epoch + period;
    let first_reveal_blk = reveal_epoch * (tempo + 1) - (netuid + 1);
    let target_ingest_blk = first_reveal_blk + 3;
    let blocks_until_ingest = target_ingest_blk.saturating_sub(current_block);
    let secs_until_ingest = blocks_until_ingest * block_time;
    let target_secs = now + secs_until_ingest;
    let round = ((target_secs - QUICKNET_GENESIS_TIME) / 3).max(1);
    (round, target_secs, secs_until_ingest)
}

/// The Python tests' constants: a pulse delay of 24 rounds of 3 s (1.x no longer subtracts it;
/// the tests still check the lead time against it).
const SUBTENSOR_PULSE_DELAY: u64 = 24;
const PERIOD: u64 = 3;

/// Clock readings the ported tests run at (their `start_time = int(time.time())` is one of
/// these; the SDK's own reading is a fraction of a second later).
const START_TIMES: [u64; 4] = [1_700_000_000, 1_750_000_001, 1_800_803_367, 2_000_000_002];

fn sdk_now(start: u64) -> f64 {
    start as f64 + 0.137
}

#[test]
fn py_test_get_encrypted_commits() {
    // uids [1, 2], weights [11, 22], version_key 50, tempo 100, block 1000, netuid 1,
    // reveal_period 2, block_time 12.
    let e = epoch(1, 100, 1000, 2);
    for start in START_TIMES {
        let r = reveal(&e, 12.0, sdk_now(start)).unwrap();
        assert!(r.reveal_round > 0);
        let (expected, _, _) = py_expected(start, 100, 1000, 1, 2, 12);
        assert!(
            r.reveal_round.abs_diff(expected) <= 1,
            "{r:?} vs {expected}"
        );
        // Whole-second start, integer block time, period 3: the model is exact here.
        assert_eq!(r.reveal_round, expected);
        assert_eq!(r.reveal_block, 1109);
    }
}

#[test]
fn py_test_generate_commit_success() {
    // tempo 50, block 500, netuid 100, period 2, block_time 12.
    let e = epoch(100, 50, 500, 2);
    for start in START_TIMES {
        let r = reveal(&e, 12.0, sdk_now(start)).unwrap();
        let (expected, _, time_until_reveal) = py_expected(start, 50, 500, 100, 2, 12);
        assert!(r.reveal_round.abs_diff(expected) <= 1);
        let required_lead_time = SUBTENSOR_PULSE_DELAY * PERIOD;
        let computed_reveal_time =
            QUICKNET_GENESIS_TIME + (r.reveal_round + SUBTENSOR_PULSE_DELAY) * PERIOD;
        assert!(computed_reveal_time - start >= required_lead_time);
        assert!(time_until_reveal >= required_lead_time);
        // (500 + 101) / 51 = 11; epoch 13 starts at 13 * 51 - 101 = 562.
        assert_eq!(r.reveal_block, 562);
    }
}

#[test]
fn py_test_generate_commit_various_tempos() {
    // netuid 1, block 100_000, period 1, block_time 12.
    let expected_blocks = [
        (10, 100_010),
        (50, 100_009),
        (100, 100_089),
        (250, 100_147),
        (360, 100_356),
        (500, 100_198),
        (750, 100_632),
        (1000, 100_098),
    ];
    for start in START_TIMES {
        for (tempo, block) in expected_blocks {
            let r = reveal(&epoch(1, tempo, 100_000, 1), 12.0, sdk_now(start)).unwrap();
            assert!(r.reveal_round > 0, "tempo {tempo}");
            let (expected, _, time_until_reveal) =
                py_expected(start, u64::from(tempo), 100_000, 1, 1, 12);
            assert!(r.reveal_round.abs_diff(expected) <= 1, "tempo {tempo}");
            assert_eq!(r.reveal_block, block, "tempo {tempo}");
            let required_lead_time = SUBTENSOR_PULSE_DELAY * PERIOD;
            if time_until_reveal >= required_lead_time {
                let computed_reveal_time =
                    QUICKNET_GENESIS_TIME + (r.reveal_round + SUBTENSOR_PULSE_DELAY) * PERIOD;
                assert!(computed_reveal_time - start >= required_lead_time);
            }
        }
    }
}

/// src/drand.rs `test_generate_commit_structure` (tempo 20, block 1000, netuid 1, 3 epochs,
/// 12 s blocks, uids [1, 2, 3], values [100, 200, 300], version key 42, hotkey [1, 2, 3]): a
/// non-empty ciphertext, a positive round, and, once the round's signature is known, the
/// payload decrypts. 1.x fetches the signature from drand; here the clock is set so that the
/// round is 1000, whose published signature is in tests/fixtures/quicknet.json.
#[test]
fn drand_rs_test_generate_commit_structure() {
    let q = common::quicknet();
    let net = DrandNetwork::quicknet();
    let e = epoch(1, 20, 1000, 3);
    // 1002 / 21 = 47; epoch 50 starts at 50 * 21 - 2 = 1048; the pulse aimed at 1051 is
    // 51 blocks = 612 s away, so at genesis + 2388 s the round is (2388 + 612) / 3 = 1000.
    let now = GENESIS + 2388.0;
    let payload = WeightsTlockPayload {
        hotkey: vec![1, 2, 3],
        uids: vec![1, 2, 3],
        values: vec![100, 200, 300],
        version_key: 42,
    };
    let (ct, r) = legacy_encrypt_weights(&net, &payload, &e, 12.0, now, &mut OsRng).unwrap();
    assert_eq!(
        r,
        WeightsReveal {
            reveal_block: 1048,
            reveal_round: 1000
        }
    );
    assert_eq!(ct.len(), payload.to_bytes().len() + CIPHERTEXT_OVERHEAD);
    let plaintext = decrypt_with_signature(&ct, &q.signature).unwrap();
    assert_eq!(
        WeightsTlockPayload::from_bytes(&plaintext).unwrap(),
        payload
    );
    // 1.x's structure test at any other time: the same block, a positive round.
    for start in START_TIMES {
        let r = reveal(&e, 12.0, sdk_now(start)).unwrap();
        assert_eq!(r.reveal_block, 1048);
        assert!(r.reveal_round > 0);
    }
}

// ---- worked by hand ---------------------------------------------------------------------------

#[test]
fn hand_worked_vectors() {
    // Times on a round boundary so that the arithmetic is whole: round(t) = (t - genesis) / 3.
    let t = GENESIS + 3.0 * 36_000_000.0;
    let cases: &[(LegacyEpoch, f64, f64, u64, u64)] = &[
        // netuid 3, tempo 360: epochs start at 361 e - 4. Block 6_800_150 is in epoch 18836,
        // which ends at 6_800_152; epoch 18837 starts at 6_800_153.
        (
            epoch(3, 360, 6_800_150, 1),
            12.0,
            t,
            6_800_153,
            36_000_000 + 6 * 4,
        ),
        (
            epoch(3, 360, 6_800_152, 1),
            12.0,
            t,
            6_800_153,
            36_000_000 + 4 * 4,
        ),
        (
            epoch(3, 360, 6_800_153, 1),
            12.0,
            t,
            6_800_514,
            36_000_000 + 364 * 4,
        ),
        // Two epochs ahead, quarter-second blocks: (12_345 + 3) / 11 = 1122, epoch 1124 starts
        // at 1124 * 11 - 3 = 12_361; 19 blocks of 0.25 s = 4.75 s, plus 0.25 s: round +1.
        (epoch(2, 10, 12_345, 2), 0.25, t + 0.25, 12_361, 36_000_001),
        // Period 0: the reveal epoch is the current one, which starts at 999_992; the aimed
        // pulse (3 blocks on) is 3 blocks ahead of a head at its start, or behind a later head
        // (0 blocks, saturating).
        (epoch(7, 99, 999_992, 0), 12.0, t, 999_992, 36_000_012),
        (epoch(7, 99, 999_996, 0), 12.0, t, 999_992, 36_000_000),
        // Block 0 of netuid 0, tempo 360: epoch e starts at 361 e - 1, so epoch 0 is blocks
        // 0..=359 and the reveal epoch 1 starts at 360.
        (epoch(0, 360, 0, 1), 12.0, t, 360, 36_000_000 + 363 * 4),
        // The saturating first block: with period 0 the reveal epoch of block 0 is epoch 0
        // ((0 + 101) / 65536), whose start 0 - 101 saturates to block 0.
        (epoch(100, 65535, 0, 0), 12.0, t, 0, 36_000_000 + 3 * 4),
        // Before genesis the round clamps to 1; at zero block time it is the time itself.
        (epoch(1, 100, 1000, 2), 12.0, 0.0, 1109, 1),
        (epoch(3, 360, 1000, 1), 0.0, t + 2.9, 1079, 36_000_000),
    ];
    for &(e, block_time, now, block, round) in cases {
        let r = reveal(&e, block_time, now).unwrap();
        assert_eq!(
            r,
            WeightsReveal {
                reveal_block: block,
                reveal_round: round
            },
            "{e:?} at {now}"
        );
        assert_eq!(e.first_reveal_block().unwrap(), block);
    }
}

#[test]
fn the_round_is_floored_not_ceiled_and_has_no_pulse_delay() {
    // bittensor-drand 0.5.x aimed at ceil(...) - 24 with no block offset; 1.x floors, adds 3
    // blocks and subtracts nothing. 1000 blocks of tempo 100, netuid 1, period 2: 112 blocks
    // to the aimed pulse, 1344 s, 448 rounds.
    let e = epoch(1, 100, 1000, 2);
    let base = GENESIS + 3.0 * 1_000_000.0;
    assert_eq!(reveal(&e, 12.0, base).unwrap().reveal_round, 1_000_448);
    assert_eq!(
        reveal(&e, 12.0, base + 2.999).unwrap().reveal_round,
        1_000_448
    );
    assert_eq!(
        reveal(&e, 12.0, base + 3.0).unwrap().reveal_round,
        1_000_449
    );
    assert_eq!(
        reveal(&e, 12.0, base - 0.001).unwrap().reveal_round,
        1_000_447
    );
    assert_eq!(SECURITY_BLOCK_OFFSET, 3);
}

// ---- subtensor 3975359dd (spec 343) -----------------------------------------------------------

/// subtensor's legacy `get_epoch_index` (subnets/weights.rs at 3975359dd), written again here.
fn chain_epoch_index(netuid: u16, tempo: u16, block: u64) -> u64 {
    (block + u64::from(netuid) + 1) / (u64::from(tempo) + 1)
}

/// `blocks_until_next_epoch(..) == 0` (coinbase/run_coinbase.rs): the epoch's last block.
fn chain_should_run_epoch(netuid: u16, tempo: u16, block: u64) -> bool {
    let rem = (block + u64::from(netuid) + 1) % (u64::from(tempo) + 1);
    u64::from(tempo) - rem == 0
}

#[test]
fn the_reveal_block_is_the_first_block_of_the_chains_reveal_epoch() {
    let mut checked = 0;
    for netuid in [0u16, 1, 2, 3, 7, 64, 255, 1000, 65535] {
        for tempo in [1u16, 2, 3, 10, 99, 100, 360, 1000, 50_400, 65535] {
            let t1 = u64::from(tempo) + 1;
            let mut blocks: Vec<u64> = (0..6).collect();
            for base in [1000u64, 6_800_153, 123_456_789] {
                // Around an epoch boundary of this subnet.
                let start = chain_epoch_index(netuid, tempo, base) * t1;
                let start = start.saturating_sub(u64::from(netuid) + 1);
                blocks.extend(start.saturating_sub(3)..start + 3);
            }
            for &block in &blocks {
                for period in [0u64, 1, 2, 5, 100] {
                    let e = epoch(netuid, tempo, block, period);
                    let rb = e.first_reveal_block().unwrap();
                    let reveal_epoch = chain_epoch_index(netuid, tempo, block) + period;
                    assert_eq!(e.epoch_index(block).unwrap() + period, reveal_epoch);
                    assert_eq!(e.reveal_epoch().unwrap(), reveal_epoch);
                    // `get_reveal_blocks(netuid, block).0`: in the reveal epoch, and its first
                    // block unless the epoch's start lies before block 0.
                    let start = reveal_epoch * t1;
                    if start > u64::from(netuid) {
                        assert_eq!(chain_epoch_index(netuid, tempo, rb), reveal_epoch);
                        if rb > 0 {
                            assert!(chain_epoch_index(netuid, tempo, rb - 1) < reveal_epoch);
                        }
                    } else {
                        assert_eq!(rb, 0);
                    }
                    if period > 0 {
                        assert!(rb > block, "{e:?}");
                    }
                    // The chain counts the commit in the epoch after its block when that block
                    // ends an epoch, and the extrinsic lands at head + 1: it reveals one epoch
                    // later than 1.x predicts exactly when head + 2 is in a later epoch.
                    let inclusion = block + 1;
                    let chain_commit_epoch = chain_epoch_index(netuid, tempo, inclusion)
                        + u64::from(chain_should_run_epoch(netuid, tempo, inclusion));
                    assert_eq!(
                        chain_commit_epoch,
                        chain_epoch_index(netuid, tempo, block + 2)
                    );
                    let later = chain_commit_epoch + period - reveal_epoch;
                    assert!(later <= 1);
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 10_000);
}

// ---- bad input ----------------------------------------------------------------------------------

#[test]
fn bad_input_is_an_error_never_a_panic() {
    let q = DrandNetwork::quicknet();
    let ok = epoch(1, 100, 1000, 2);
    assert!(matches!(
        legacy_weights_reveal(&q, &ok, f64::NAN, 1.8e9),
        Err(TimelockError::BlockTime(_))
    ));
    assert_eq!(
        legacy_weights_reveal(&q, &ok, -1.0, 1.8e9),
        Err(TimelockError::BlockTime(-1.0))
    );
    assert_eq!(
        legacy_weights_reveal(&q, &ok, f64::INFINITY, 1.8e9),
        Err(TimelockError::BlockTime(f64::INFINITY))
    );
    assert_eq!(
        legacy_weights_reveal(&q, &ok, 12.0, -1.0),
        Err(TimelockError::Time(-1.0))
    );
    assert!(matches!(
        legacy_weights_reveal(&q, &ok, 12.0, f64::NAN),
        Err(TimelockError::Time(_))
    ));
    let mut zero_period = q.clone();
    zero_period.period = 0;
    assert_eq!(
        legacy_weights_reveal(&zero_period, &ok, 12.0, 1.8e9),
        Err(TimelockError::PeriodZero)
    );
    assert_eq!(ok.epoch_index(u64::MAX), Err(TimelockError::BlockOverflow));
    assert_eq!(
        epoch(1, 0, 5, 1).epoch_index(5),
        Err(TimelockError::TempoZero)
    );
    assert_eq!(
        epoch(1, 0, 5, 1).first_block_of_epoch(5),
        Err(TimelockError::TempoZero)
    );
    assert_eq!(
        ok.first_block_of_epoch(u64::MAX),
        Err(TimelockError::BlockOverflow)
    );
    // The reveal epoch's first block past u64: index ~ u64::MAX / 65536, times 65536.
    assert_eq!(
        epoch(0, 65535, u64::MAX - 70_000, 100).first_reveal_block(),
        Err(TimelockError::BlockOverflow)
    );
    // Every extreme combination answers without panicking.
    for netuid in [0, 1, u16::MAX] {
        for tempo in [0, 1, u16::MAX] {
            for block in [
                0,
                1,
                u64::MAX / 2,
                u64::MAX - 200_000,
                u64::MAX - 1,
                u64::MAX,
            ] {
                for period in [0, 1, 100, 101, u64::MAX] {
                    for block_time in [0.0, 1e-9, 12.0, 1e300, f64::MAX] {
                        for now in [0.0, 1.8e9, 1e300, f64::MAX] {
                            let e = epoch(netuid, tempo, block, period);
                            if let Ok(r) = reveal(&e, block_time, now) {
                                assert!(r.reveal_round >= 1);
                                assert_eq!(Ok(r.reveal_block), e.first_reveal_block());
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn encryption_uses_the_same_reveal() {
    let net = DrandNetwork::quicknet();
    let payload = WeightsTlockPayload::new([9; 32], vec![0, 5], vec![65535, 1], 7);
    let e = epoch(3, 360, 6_800_000, 1);
    let now = 1.9e9 + 0.5;
    let (ct, r) = legacy_encrypt_weights(&net, &payload, &e, 12.0, now, &mut OsRng).unwrap();
    assert_eq!(r, reveal(&e, 12.0, now).unwrap());
    assert_eq!(ct.len(), payload.to_bytes().len() + CIPHERTEXT_OVERHEAD);
    assert_eq!(
        legacy_encrypt_weights(&net, &payload, &epoch(3, 0, 1, 1), 12.0, now, &mut OsRng),
        Err(TimelockError::TempoZero)
    );
}
