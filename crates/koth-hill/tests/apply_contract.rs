//! The contract of `apply`: on `Err` the state is unchanged, and `check` agrees with `apply`.
//!
//! Seeded random walks (every failure reproduces from its seed) drive the core the way a shell
//! would, from its own effects, and at every step throw events at it that mostly do not fit:
//! random kinds for random entries, wrong gates and phases, stale or backward blocks, bounds
//! that are not finite, text over the limit. Some steps also damage the state the way only a
//! corrupt log or a bug could (an active entry whose record is gone, a missing king), where the
//! handlers' internal consistency checks fail half-way through an event. Whatever `apply`
//! refuses, the state afterwards must equal the state before.

use koth_core::competition::RewardPolicy;
use koth_core::{Digest, RejectCode};
use koth_hill::state::DuelBounds;
use koth_hill::{
    apply, check, Effect, EntryId, Event, Gate, Reveal, Rules, SeedMaterial, ValidatorState,
    VerdictSummary, Weight,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

const HOTKEYS: [&str; 5] = ["h0", "h1", "h2", "h3", "h4"];

fn rules(rng: &mut ChaCha20Rng) -> Rules {
    Rules {
        competition_sha256: Digest::of(b"competition"),
        genesis_king: Digest::of(b"genesis"),
        genesis_location: Some("file:///kings/genesis".into()),
        start_block: 100,
        weights_interval_blocks: 10,
        reward: RewardPolicy::WinnerTakeAll,
        max_infra_retries: 2,
        history_len: 8,
        near_copy: rng.random_bool(0.5),
        trainability_probe: rng.random_bool(0.5),
        // Reveals decided at once (W = the walk's lag of 3), held for a while (W = 5: random
        // reveals with lags below W wait for a later `revealed`), or a log from before the hold.
        reveal_delay_blocks: [Some(3), Some(5), None][rng.random_range(0..3)],
        near_copy_history: 16,
        king_pool_batches: 0,
    }
}

/// A verdict over `n` windows; its record's digest is derived from `n`.
fn verdict(accepted: bool, n: u64) -> VerdictSummary {
    let (mu_hat, lower, upper) = (0.01, Some(0.001), Some(0.02));
    let (verdict_digest, verdict_path) =
        (Digest::of(&n.to_le_bytes()), format!("/verdicts/{n}.json"));
    VerdictSummary {
        accepted,
        n,
        mu_hat,
        lower,
        upper,
        verdict_digest,
        verdict_path,
    }
}

/// An event that fits what the core asked for last (so the walk makes progress).
fn answer_to(effect: &Effect, rng: &mut ChaCha20Rng, state: &ValidatorState) -> Vec<Event> {
    match effect {
        Effect::RunGate { entry, gate, .. } => {
            let outcome = match rng.random_range(0..6) {
                0 => Event::GateFailed {
                    entry: *entry,
                    gate: *gate,
                    code: gate.codes()[0],
                    message: "refused".into(),
                },
                1 => Event::InfraFault {
                    entry: *entry,
                    reason: "lost the worker".into(),
                },
                _ => Event::GatePassed {
                    entry: *entry,
                    gate: *gate,
                },
            };
            vec![
                Event::GateStarted {
                    entry: *entry,
                    gate: *gate,
                },
                outcome,
            ]
        }
        Effect::StartDuel {
            entry, king, seed, ..
        } => {
            let end = match rng.random_range(0..5) {
                0 => Event::InfraFault {
                    entry: *entry,
                    reason: "timeout".into(),
                },
                1 => Event::DuelRefused {
                    entry: *entry,
                    code: RejectCode::WeightsInvalid,
                    message: "non-finite loss".into(),
                },
                n => Event::DuelFinished {
                    entry: *entry,
                    verdict: verdict(n >= 3, 64 * n as u64),
                },
            };
            vec![
                Event::DuelStarted {
                    entry: *entry,
                    king: *king,
                    seed: seed.clone(),
                },
                Event::DuelProgress {
                    entry: *entry,
                    n: 32,
                    mu_hat: 0.01,
                    lower: None,
                    upper: None,
                },
                end,
            ]
        }
        Effect::Crown {
            entry,
            digest,
            hotkey,
            reign,
            ..
        } => vec![Event::Crowned {
            entry: *entry,
            digest: *digest,
            hotkey: hotkey.clone(),
            reign: *reign,
            block: state.block + 1,
            block_hash: "0xcrown".into(),
            location: (reign % 2 == 1).then(|| "file:///validator/kings".into()),
        }],
        Effect::SetWeights { weights } => vec![Event::WeightsSet {
            block: state.block,
            weights: weights.clone(),
        }],
        Effect::Answer { .. } => Vec::new(),
    }
}

/// An event of a random kind with random fields: most do not fit the state.
fn random_event(rng: &mut ChaCha20Rng, state: &ValidatorState) -> Event {
    let entry: EntryId = rng.random_range(0..state.next_entry + 2);
    let gate = Gate::PIPELINE[rng.random_range(0..Gate::PIPELINE.len())];
    let block = state.block.saturating_add_signed(rng.random_range(-3..4));
    let number = |rng: &mut ChaCha20Rng| match rng.random_range(0..4) {
        0 => f64::NAN,
        1 => f64::INFINITY,
        _ => rng.random_range(-1.0..1.0),
    };
    let text = |rng: &mut ChaCha20Rng| {
        if rng.random_bool(0.2) {
            "x".repeat(koth_hill::event::MAX_TEXT_BYTES + 1)
        } else {
            "t".into()
        }
    };
    let hotkey = HOTKEYS[rng.random_range(0..HOTKEYS.len())];
    match rng.random_range(0..15) {
        0 => Event::Tick { block },
        1 => Event::Revealed {
            block,
            reveals: vec![Reveal {
                hotkey: hotkey.into(),
                uid: Some(1),
                payload: format!(
                    "v4|file:///s/{hotkey}|{}|{hotkey}",
                    Digest::of(&rng.random::<u64>().to_le_bytes())
                ),
                commit_block: block,
                reveal_block: block.saturating_add_signed(rng.random_range(-1..3)),
                block_hash: text(rng),
            }],
        },
        2 => Event::GateStarted { entry, gate },
        3 => Event::GatePassed { entry, gate },
        4 => Event::GateFailed {
            entry,
            gate,
            code: RejectCode::ALL[rng.random_range(0..RejectCode::ALL.len())],
            message: text(rng),
        },
        5 => Event::InfraFault {
            entry,
            reason: text(rng),
        },
        6 => Event::DuelStarted {
            entry,
            king: Digest::of(b"genesis"),
            seed: SeedMaterial {
                competition_sha256: Digest::of(b"competition"),
                reveal_block_hash: "0x".into(),
                hotkey: hotkey.into(),
            },
        },
        7 => Event::DuelProgress {
            entry,
            n: rng.random_range(0..100),
            mu_hat: number(rng),
            lower: rng.random_bool(0.5).then(|| number(rng)),
            upper: rng.random_bool(0.5).then(|| number(rng)),
        },
        8 => Event::DuelFinished {
            entry,
            verdict: VerdictSummary {
                mu_hat: number(rng),
                lower: rng.random_bool(0.5).then(|| number(rng)),
                upper: rng.random_bool(0.5).then(|| number(rng)),
                ..verdict(rng.random_bool(0.5), 64)
            },
        },
        9 => Event::DuelRefused {
            entry,
            code: RejectCode::ALL[rng.random_range(0..RejectCode::ALL.len())],
            message: text(rng),
        },
        10 => Event::Crowned {
            entry,
            digest: Digest::of(b"x"),
            hotkey: hotkey.into(),
            reign: rng.random_range(0..4),
            block,
            block_hash: text(rng),
            // The validator's copy of the king: none, one, or one that is not a location.
            location: match rng.random_range(0..4) {
                0 => None,
                1 => Some("file:///kings with space".into()),
                2 => Some(String::new()),
                _ => Some(text(rng)),
            },
        },
        11 => Event::WeightsSet {
            block,
            weights: vec![Weight {
                hotkey: hotkey.into(),
                weight: number(rng),
            }],
        },
        12 => Event::Started { rules: rules(rng) },
        _ => Event::Recovered,
    }
}

/// Damage the state as only a corrupt log or a bug could.
fn damage(rng: &mut ChaCha20Rng, state: &mut ValidatorState) {
    match rng.random_range(0..4) {
        0 => {
            if let Some(a) = &state.active {
                state.entries.remove(&a.entry);
            }
        }
        1 => state.reigns.clear(),
        2 => {
            if let Some(k) = state.queue.first().cloned() {
                state.entries.remove(&k.id);
            }
        }
        _ => {
            if let Some(a) = &mut state.active {
                if let koth_hill::state::Phase::Duel { progress, .. } = &mut a.phase {
                    *progress = Some(DuelBounds {
                        n: u64::MAX,
                        mu_hat: 0.0,
                        lower: None,
                        upper: None,
                    });
                }
            }
        }
    }
}

/// Apply `event`; on `Err` the state must be exactly what it was, and `check` must have said so.
fn apply_keeping_contract(state: &mut ValidatorState, event: &Event) -> Option<Vec<Effect>> {
    let before = state.clone();
    let checked = check(state, event);
    assert_eq!(state, &before, "check changed the state on {event:?}");
    match apply(state, event) {
        Ok(effects) => {
            assert!(checked.is_ok(), "check refused {event:?} but apply took it");
            Some(effects)
        }
        Err(e) => {
            assert_eq!(
                state, &before,
                "apply refused {event:?} ({e}) but changed the state"
            );
            assert_eq!(
                checked.err(),
                Some(e),
                "check and apply disagree on {event:?}"
            );
            None
        }
    }
}

fn walk(seed: u64, steps: usize) -> (usize, usize) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut state = ValidatorState::new();
    // Before `started`, everything else is refused.
    let early = random_event(&mut rng, &state);
    apply_keeping_contract(&mut state, &early);
    let start = Event::Started {
        rules: rules(&mut rng),
    };
    let mut pending: Vec<Effect> = apply_keeping_contract(&mut state, &start).unwrap_or_default();
    let (mut refused, mut applied) = (0, 0);
    let mut commit = 100u64;
    for _ in 0..steps {
        // Now and then a new commitment, so there is always something to gate and duel.
        if rng.random_bool(0.2) {
            commit += 1;
            let hotkey = HOTKEYS[rng.random_range(0..HOTKEYS.len())];
            let d = Digest::of(&commit.to_le_bytes());
            let event = Event::Revealed {
                block: state.block.max(commit + 3),
                reveals: vec![Reveal {
                    hotkey: hotkey.into(),
                    uid: Some(1),
                    payload: format!("v4|file:///s/{hotkey}|{d}|{hotkey}"),
                    commit_block: commit,
                    reveal_block: commit + 3,
                    block_hash: format!("0x{commit}"),
                }],
            };
            if let Some(fx) = apply_keeping_contract(&mut state, &event) {
                pending.extend(fx);
            }
        }
        // Events that mostly do not fit, on the healthy state or on a damaged copy of it.
        for _ in 0..3 {
            let event = random_event(&mut rng, &state);
            if rng.random_bool(0.1) {
                let mut damaged = state.clone();
                damage(&mut rng, &mut damaged);
                if apply_keeping_contract(&mut damaged, &event).is_none() {
                    refused += 1;
                }
                continue;
            }
            match apply_keeping_contract(&mut state, &event) {
                Some(fx) => {
                    applied += 1;
                    pending.extend(fx);
                }
                None => refused += 1,
            }
        }
        // Then do what the core asked for last, as a shell would.
        let Some(effect) = pending
            .iter()
            .rev()
            .find(|e| !matches!(e, Effect::Answer { .. }))
            .cloned()
        else {
            let tick = Event::Tick {
                block: state.block + 1,
            };
            pending.extend(apply_keeping_contract(&mut state, &tick).unwrap_or_default());
            continue;
        };
        pending.clear();
        for event in answer_to(&effect, &mut rng, &state) {
            match apply_keeping_contract(&mut state, &event) {
                Some(fx) => {
                    applied += 1;
                    pending.extend(fx);
                }
                None => refused += 1,
            }
        }
    }
    (applied, refused)
}

#[test]
fn a_refused_event_leaves_the_state_unchanged() {
    let (mut applied, mut refused) = (0, 0);
    for seed in 0..60 {
        let (a, r) = walk(seed, 300);
        applied += a;
        refused += r;
    }
    // The walks must exercise both sides of the contract.
    assert!(applied > 10_000, "only {applied} events applied");
    assert!(refused > 10_000, "only {refused} events refused");
}

#[test]
fn an_infra_fault_on_a_damaged_state_is_refused_without_a_trace() {
    // The active entry's record is gone (a damaged log): the fault handler finds out only after
    // it has started to requeue the entry. The refusal must leave everything as it was.
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut state = ValidatorState::new();
    apply(
        &mut state,
        &Event::Started {
            rules: rules(&mut rng),
        },
    )
    .unwrap();
    let d = Digest::of(b"c");
    apply(
        &mut state,
        &Event::Revealed {
            block: 110,
            reveals: vec![Reveal {
                hotkey: "h0".into(),
                uid: Some(1),
                payload: format!("v4|file:///s/h0|{d}|h0"),
                commit_block: 105,
                reveal_block: 108,
                block_hash: "0x1".into(),
            }],
        },
    )
    .unwrap();
    let entry = state
        .active
        .as_ref()
        .expect("the entry is being gated")
        .entry;
    state.entries.remove(&entry);
    let before = state.clone();
    let fault = Event::InfraFault {
        entry,
        reason: "lost".into(),
    };
    assert!(apply(&mut state, &fault).is_err());
    assert_eq!(state, before);
}
