//! The core's rules one at a time: intake codes, replacement, ordering, the gate pipeline,
//! infrastructure faults, recovery, crowning and weights.

mod common;

use common::*;
use koth_core::competition::RewardPolicy;
use koth_core::{Digest, RejectCode};
use koth_validator::state::{GateResult, QueueClass};
use koth_validator::{
    ApplyError, Effect, EntryId, Event, Gate, Outcome, Reveal, SeedMaterial, VerdictSummary,
};

fn verdict(accepted: bool, n: u64) -> VerdictSummary {
    VerdictSummary {
        accepted,
        n,
        mu_hat: if accepted { 0.02 } else { -0.01 },
        lower: Some(if accepted { 0.01 } else { -0.02 }),
        upper: Some(if accepted { 0.03 } else { 0.0 }),
        verdict_digest: Digest::of(&n.to_le_bytes()),
        verdict_path: format!("verdicts/{n}.json"),
    }
}

/// Pass every gate the core asks for; returns the `StartDuel` effect.
fn pass_gates(h: &mut Harness, mut effect: Effect) -> Effect {
    loop {
        match effect {
            Effect::RunGate { entry, gate, .. } => {
                h.feed(Event::GateStarted { entry, gate });
                let fx = h.feed(Event::GatePassed { entry, gate });
                effect = command(&fx).expect("a next step after a passed gate");
            }
            other => return other,
        }
    }
}

/// Run the duel asked for by `start` to a verdict; returns the effects of `DuelFinished`.
fn duel(h: &mut Harness, start: &Effect, accepted: bool) -> Vec<Effect> {
    let Effect::StartDuel {
        entry, king, seed, ..
    } = start.clone()
    else {
        panic!("expected StartDuel, got {start:?}")
    };
    h.feed(Event::DuelStarted { entry, king, seed });
    h.feed(Event::DuelProgress {
        entry,
        n: 32,
        mu_hat: 0.01,
        lower: Some(-0.5),
        upper: Some(0.5),
    });
    h.feed(Event::DuelFinished {
        entry,
        verdict: verdict(accepted, 64 + entry),
    })
}

fn crown(h: &mut Harness, effect: &Effect, block: u64) -> Vec<Effect> {
    let Effect::Crown {
        entry,
        digest,
        hotkey,
        reign,
        ..
    } = effect.clone()
    else {
        panic!("expected Crown, got {effect:?}")
    };
    h.feed(Event::Crowned {
        entry,
        digest,
        hotkey,
        reign,
        block,
        block_hash: format!("0x{block:064x}"),
        location: None,
    })
}

fn rejected_code(outcome: &Outcome) -> Option<RejectCode> {
    match outcome {
        Outcome::Rejected { code, .. } => Some(*code),
        _ => None,
    }
}

#[test]
fn intake_refusals_each_have_their_code_and_a_sentence() {
    let mut h = Harness::new(rules());
    let fx = h.reveal(vec![
        reveal("alice", Some(1), payload(digest(1), "alice"), 101),
        reveal("mallory", Some(2), "v3|x|y|z".into(), 101),
        reveal("stranger", None, payload(digest(2), "stranger"), 101),
        reveal(
            "carol",
            Some(3),
            payload(Digest::of(b"genesis"), "carol"),
            101,
        ),
    ]);
    let a = answers(&fx);
    let code_of = |hotkey_payload_entry: EntryId| {
        a.iter()
            .find(|(e, _)| *e == hotkey_payload_entry)
            .and_then(|(_, o)| rejected_code(o))
    };
    // Intake order within a batch: reveal block, commit block, hotkey.
    // alice=0, carol=1, mallory=2, stranger=3.
    assert_eq!(code_of(1), Some(RejectCode::DigestOwned));
    assert_eq!(code_of(2), Some(RejectCode::PayloadMalformed));
    assert_eq!(code_of(3), Some(RejectCode::HotkeyUnregistered));
    for (_, o) in &a {
        let Outcome::Rejected { gate, message, .. } = o else {
            panic!("{o:?}")
        };
        assert_eq!(*gate, None);
        assert!(!message.is_empty());
    }
    // A copy of alice's digest by bob: refused, naming the owner.
    let fx = h.reveal(vec![reveal("bob", Some(4), payload(digest(1), "bob"), 102)]);
    let a = answers(&fx);
    assert_eq!(a.len(), 1);
    let Outcome::Rejected { code, message, .. } = &a[0].1 else {
        panic!()
    };
    assert_eq!(*code, RejectCode::DigestOwned);
    assert!(message.contains("alice"), "{message}");
    // Only alice was admitted (and is being gated).
    assert_eq!(h.state.active.as_ref().map(|a| a.entry), Some(0));
    assert!(h.state.queue.is_empty());
    assert_eq!(h.state.slots.len(), 1);
}

#[test]
fn reveals_at_or_before_the_start_block_and_repeats_are_ignored() {
    let mut h = Harness::new(rules());
    let old = reveal("alice", Some(1), payload(digest(1), "alice"), START);
    assert!(h.state.needs_intake(&old));
    let fx = h.reveal(vec![old.clone()]);
    assert!(fx.is_empty());
    assert_eq!(h.state.next_entry, 0);
    assert!(!h.state.needs_intake(&old));
    let new = reveal("bob", Some(2), payload(digest(2), "bob"), START + 1);
    let fx = h.reveal(vec![new.clone()]);
    assert!(matches!(
        command(&fx),
        Some(Effect::RunGate {
            entry: 0,
            gate: Gate::Fetch,
            ..
        })
    ));
    // The chain shows bob's newest commitment again on every poll: nothing new.
    assert!(!h.state.needs_intake(&new));
    let fx = h.reveal(vec![new]);
    assert!(fx.is_empty());
    assert_eq!(h.state.next_entry, 1);
}

#[test]
fn queue_order_is_reveal_block_then_hotkey_whatever_the_input_order() {
    let mut h = Harness::new(rules());
    // Occupy the pipeline so everything else queues.
    h.reveal(vec![reveal("zed", Some(9), payload(digest(9), "zed"), 101)]);
    let mut batch = vec![
        reveal("dave", Some(4), payload(digest(4), "dave"), 105),
        reveal("carol", Some(3), payload(digest(3), "carol"), 103),
        reveal("bob", Some(2), payload(digest(2), "bob"), 103),
        reveal("alice", Some(1), payload(digest(1), "alice"), 107),
    ];
    batch.reverse();
    h.reveal(batch);
    let order: Vec<&str> = h
        .state
        .queue_in_order()
        .map(|e| e.hotkey.as_str())
        .collect();
    assert_eq!(order, vec!["bob", "carol", "dave", "alice"]);
}

#[test]
fn a_newer_reveal_replaces_a_queued_entry_but_waits_for_an_active_one() {
    let mut h = Harness::new(rules());
    let fx = h.reveal(vec![
        reveal("alice", Some(1), payload(digest(1), "alice"), 101),
        reveal("bob", Some(2), payload(digest(2), "bob"), 101),
    ]);
    assert!(matches!(
        command(&fx),
        Some(Effect::RunGate { entry: 0, .. })
    ));
    // bob (queued) replaces his entry: the old one is answered as superseded.
    let fx = h.reveal(vec![reveal("bob", Some(2), payload(digest(3), "bob"), 110)]);
    assert_eq!(answers(&fx), vec![(1, Outcome::Superseded { by: 2 })]);
    assert_eq!(h.state.slots["bob"], 2);
    // alice (active) is never replaced: her newer entry waits.
    let fx = h.reveal(vec![reveal(
        "alice",
        Some(1),
        payload(digest(4), "alice"),
        111,
    )]);
    assert!(answers(&fx).is_empty());
    assert_eq!(h.state.waiting["alice"], 3);
    assert_eq!(h.state.active.as_ref().unwrap().entry, 0);
    // An even newer one supersedes the waiting one.
    let fx = h.reveal(vec![reveal(
        "alice",
        Some(1),
        payload(digest(5), "alice"),
        112,
    )]);
    assert_eq!(answers(&fx), vec![(3, Outcome::Superseded { by: 4 })]);
    // Entry 0 fails a gate: the waiting entry 4 joins the queue behind bob (reveal block).
    h.feed(Event::GateStarted {
        entry: 0,
        gate: Gate::Fetch,
    });
    let fx = h.feed(Event::GateFailed {
        entry: 0,
        gate: Gate::Fetch,
        code: RejectCode::ManifestUnreachable,
        message: "404 from s3://bucket/alice".into(),
    });
    assert_eq!(
        rejected_code(&answers(&fx)[0].1),
        Some(RejectCode::ManifestUnreachable)
    );
    assert!(matches!(
        command(&fx),
        Some(Effect::RunGate { entry: 2, .. })
    ));
    let order: Vec<EntryId> = h.state.queue_in_order().map(|e| e.id).collect();
    assert_eq!(order, vec![4]);
    // Re-committing a digest that is already queued is nothing new.
    let fx = h.reveal(vec![reveal(
        "alice",
        Some(1),
        payload(digest(5), "alice"),
        113,
    )]);
    assert!(fx.is_empty());
    assert_eq!(h.state.next_entry, 5);
}

#[test]
fn gates_run_in_order_and_disabled_ones_are_recorded_not_passed() {
    let mut h = Harness::new(rules());
    let fx = h.reveal(vec![reveal(
        "alice",
        Some(1),
        payload(digest(1), "alice"),
        101,
    )]);
    let mut seen = Vec::new();
    let mut effect = command(&fx).unwrap();
    while let Effect::RunGate {
        entry,
        gate,
        king,
        challenger,
        ..
    } = effect
    {
        assert_eq!(king, Digest::of(b"genesis"));
        assert_eq!(challenger, digest(1));
        seen.push(gate);
        // Results before `GateStarted`, or for another gate, are refused.
        h.refuse(Event::GatePassed { entry, gate });
        h.feed(Event::GateStarted { entry, gate });
        h.refuse(Event::GateStarted { entry, gate });
        let fx = h.feed(Event::GatePassed { entry, gate });
        effect = command(&fx).unwrap();
    }
    assert_eq!(
        seen,
        vec![Gate::Fetch, Gate::Config, Gate::Tensors, Gate::Weights]
    );
    let Effect::StartDuel { seed, .. } = &effect else {
        panic!("{effect:?}")
    };
    assert_eq!(
        *seed,
        SeedMaterial {
            competition_sha256: Digest::of(b"competition"),
            reveal_block_hash: format!("0x{:064x}", 104),
            hotkey: "alice".into(),
        }
    );
    let (entry, _) = h.state.active_entry().unwrap();
    let results: Vec<(Gate, GateResult)> = entry.gates.iter().map(|g| (g.gate, g.result)).collect();
    assert_eq!(
        results,
        vec![
            (Gate::Fetch, GateResult::Passed),
            (Gate::Config, GateResult::Passed),
            (Gate::Tensors, GateResult::Passed),
            (Gate::Weights, GateResult::Passed),
            (Gate::Trainability, GateResult::NotEnabled),
            (Gate::Fingerprint, GateResult::NotEnabled),
        ]
    );
}

#[test]
fn every_reject_code_reaches_an_answer() {
    let mut r = rules();
    r.near_copy = true;
    r.trainability_probe = true;
    let mut h = Harness::new(r);
    let mut reached = std::collections::HashSet::new();
    // Intake codes, from crafted reveals.
    let fx = h.reveal(vec![
        reveal("m", Some(1), "v4|loc|sha256:00|m".into(), 101),
        reveal("u", None, payload(digest(100), "u"), 101),
        reveal("g", Some(2), payload(Digest::of(b"genesis"), "g"), 101),
        // Revealed 4 blocks after its commit block; the rules accept at most 3.
        Reveal {
            reveal_block: 105,
            ..reveal("l", Some(3), payload(digest(101), "l"), 101)
        },
    ]);
    for (_, o) in answers(&fx) {
        reached.insert(rejected_code(&o).unwrap());
    }
    // Gate codes: one submission per code, failed at the gate that owns the code.
    let mut commit = 200;
    for (i, (gate_to_fail, code)) in Gate::PIPELINE
        .iter()
        .flat_map(|g| g.codes().iter().map(move |c| (*g, *c)))
        .enumerate()
    {
        commit += 1;
        let hotkey = format!("miner{i}");
        let fx = h.reveal(vec![reveal(
            &hotkey,
            Some(10 + i as u16),
            payload(digest(i as u64), &hotkey),
            commit,
        )]);
        let mut effect = command(&fx).expect("idle pipeline starts the new entry");
        loop {
            let Effect::RunGate { entry, gate, .. } = effect else {
                panic!("{effect:?}")
            };
            h.feed(Event::GateStarted { entry, gate });
            if gate == gate_to_fail {
                // A code that belongs to another gate is refused.
                let foreign = if gate.codes().contains(&RejectCode::TooLarge) {
                    RejectCode::NearCopy
                } else {
                    RejectCode::TooLarge
                };
                h.refuse(Event::GateFailed {
                    entry,
                    gate,
                    code: foreign,
                    message: "x".into(),
                });
                let fx = h.feed(Event::GateFailed {
                    entry,
                    gate,
                    code,
                    message: format!("crafted {code}"),
                });
                let a = answers(&fx);
                assert_eq!(a.len(), 1);
                let Outcome::Rejected {
                    code: got, gate: g, ..
                } = &a[0].1
                else {
                    panic!()
                };
                assert_eq!((*got, *g), (code, Some(gate)));
                reached.insert(*got);
                break;
            }
            let fx = h.feed(Event::GatePassed { entry, gate });
            effect = command(&fx).unwrap();
        }
    }
    // `infra_exhausted` is no gate's code: the core answers it to an entry our side kept failing.
    commit += 1;
    let fx = h.reveal(vec![reveal(
        "x",
        Some(99),
        payload(digest(999), "x"),
        commit,
    )]);
    let Some(Effect::RunGate { entry, .. }) = command(&fx) else {
        panic!("{fx:?}")
    };
    let (_, outcome) = fault_until_answered(&mut h, entry);
    reached.insert(rejected_code(&outcome).unwrap());
    assert_eq!(reached.len(), RejectCode::ALL.len(), "{reached:?}");
}

/// Fail `entry`'s fetch gate with an infrastructure fault (ticking through every pause) until
/// the core answers it. Returns the faults it took and the answer.
fn fault_until_answered(h: &mut Harness, entry: EntryId) -> (u32, Outcome) {
    let mut faults = 0;
    loop {
        h.feed(Event::GateStarted {
            entry,
            gate: Gate::Fetch,
        });
        let fx = h.feed(Event::InfraFault {
            entry,
            reason: "our disk is full".into(),
        });
        faults += 1;
        if let Some((_, outcome)) = answers(&fx).into_iter().find(|(id, _)| *id == entry) {
            return (faults, outcome);
        }
        assert!(faults < 1000, "never answered");
        let until = h.state.paused_until.expect("a fault pauses the queue");
        let fx = h.tick(until);
        match command(&fx) {
            Some(Effect::RunGate { entry: e, .. }) if e == entry => {}
            other => panic!("expected the faulting entry to run again, got {other:?}"),
        }
    }
}

#[test]
fn an_entry_that_keeps_faulting_is_answered_infra_exhausted_within_the_stated_bound() {
    let r = rules();
    let limit = koth_validator::core::infra_attempts_limit(r.max_infra_retries);
    assert_eq!(limit, 2 * r.max_infra_retries);
    let mut h = Harness::new(r.clone());
    let fx = h.reveal(vec![reveal(
        "alice",
        Some(1),
        payload(digest(1), "alice"),
        101,
    )]);
    let Some(Effect::RunGate { entry: 0, .. }) = command(&fx) else {
        panic!("{fx:?}")
    };
    let start = h.state.block;
    let (faults, outcome) = fault_until_answered(&mut h, 0);
    assert_eq!(faults, limit + 1);
    let Outcome::Rejected {
        code,
        gate,
        message,
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(code, RejectCode::InfraExhausted);
    assert_eq!(gate, Some(Gate::Fetch));
    assert!(message.contains("not a verdict"), "{message}");
    // The queue was held paused no longer than the stated bound (the last pause included).
    let held = h.state.paused_until.unwrap() - start;
    assert!(
        held <= koth_validator::core::max_pause_blocks(r.max_infra_retries),
        "{held} blocks"
    );
    assert_eq!(koth_validator::core::max_pause_blocks(5), 223);
    assert_eq!(h.state.counters.answered, 1);
    assert!(h.state.entries.is_empty());
    assert_eq!(h.replayed(), h.state);
}

#[test]
fn infra_faults_requeue_at_the_head_pause_and_do_not_consume_before_the_limit() {
    let mut h = Harness::new(rules());
    let fx = h.reveal(vec![
        reveal("alice", Some(1), payload(digest(1), "alice"), 101),
        reveal("bob", Some(2), payload(digest(2), "bob"), 101),
    ]);
    let Some(Effect::RunGate { entry: 0, .. }) = command(&fx) else {
        panic!("{fx:?}")
    };
    let block = h.state.block;
    for retry in 1..=3u32 {
        h.feed(Event::GateStarted {
            entry: 0,
            gate: Gate::Fetch,
        });
        let fx = h.feed(Event::InfraFault {
            entry: 0,
            reason: "store timed out".into(),
        });
        assert!(fx.is_empty(), "paused: nothing starts at once: {fx:?}");
        assert_eq!(h.state.entries[&0].retries, retry);
        assert_eq!(h.state.queue.first().unwrap().id, 0, "back at the head");
        assert_eq!(h.state.queue.first().unwrap().class, QueueClass::Retry);
        // The pause doubles per retry: 1, 2, 4 blocks.
        let until = h.state.paused_until.unwrap();
        assert_eq!(until, h.state.block + (1 << (retry - 1)));
        if until > h.state.block + 1 {
            assert!(h.tick(until - 1).is_empty());
        }
        let fx = h.tick(until);
        assert!(matches!(
            command(&fx),
            Some(Effect::RunGate {
                entry: 0,
                gate: Gate::Fetch,
                ..
            })
        ));
    }
    assert!(h.state.block > block);
    // One more fault than max_infra_retries (3): alice goes behind bob, still not consumed.
    h.feed(Event::GateStarted {
        entry: 0,
        gate: Gate::Fetch,
    });
    h.feed(Event::InfraFault {
        entry: 0,
        reason: "out of memory".into(),
    });
    let order: Vec<(EntryId, QueueClass)> = h.state.queue.iter().map(|k| (k.id, k.class)).collect();
    assert_eq!(
        order,
        vec![(1, QueueClass::Normal), (0, QueueClass::Demoted)]
    );
    assert_eq!(h.state.counters.answered, 0);
    // A fault in a duel is the same: the duel is redone, never charged.
    let until = h.state.paused_until.unwrap();
    let fx = h.tick(until);
    let start = pass_gates(&mut h, command(&fx).unwrap());
    let Effect::StartDuel {
        entry: 1,
        king,
        seed,
        ..
    } = start.clone()
    else {
        panic!()
    };
    h.feed(Event::DuelStarted {
        entry: 1,
        king,
        seed,
    });
    h.feed(Event::InfraFault {
        entry: 1,
        reason: "eval worker lost".into(),
    });
    assert_eq!(h.state.queue.first().unwrap().id, 1);
    assert_eq!(h.state.counters.answered, 0);
    assert_eq!(h.replayed(), h.state);
}

#[test]
fn a_restart_requeues_the_interrupted_duel_and_redoes_an_interrupted_crown() {
    let mut h = Harness::new(rules());
    let fx = h.reveal(vec![reveal(
        "alice",
        Some(1),
        payload(digest(1), "alice"),
        101,
    )]);
    let start = pass_gates(&mut h, command(&fx).unwrap());
    let Effect::StartDuel {
        entry, king, seed, ..
    } = start.clone()
    else {
        panic!()
    };
    h.feed(Event::DuelStarted { entry, king, seed });
    // SIGKILL here; the shell replays and appends `Recovered`.
    let fx = h.feed(Event::Recovered);
    assert_eq!(h.state.entries[&0].retries, 1);
    assert!(
        matches!(
            command(&fx),
            Some(Effect::RunGate {
                entry: 0,
                gate: Gate::Fetch,
                ..
            })
        ),
        "{fx:?}"
    );
    let start = pass_gates(&mut h, command(&fx).unwrap());
    let fx = duel(&mut h, &start, true);
    let crown_fx = command(&fx).unwrap();
    assert!(matches!(
        crown_fx,
        Effect::Crown {
            entry: 0,
            reign: 1,
            ..
        }
    ));
    // SIGKILL before the crown was carried out: the verdict stands, the crown is redone.
    let fx = h.feed(Event::Recovered);
    assert_eq!(command(&fx), Some(crown_fx.clone()));
    assert!(h.state.queue.is_empty());
    let fx = crown(&mut h, &crown_fx, 130);
    assert_eq!(h.state.king().unwrap().digest, digest(1));
    assert_eq!(h.state.king().unwrap().hotkey.as_deref(), Some("alice"));
    assert!(fx.contains(&Effect::SetWeights {
        weights: vec![koth_validator::Weight {
            hotkey: "alice".into(),
            weight: 1.0
        }]
    }));
    // No crown twice.
    let Effect::Crown {
        entry,
        digest: d,
        hotkey,
        reign,
        ..
    } = crown_fx
    else {
        panic!()
    };
    let err = h.refuse(Event::Crowned {
        entry,
        digest: d,
        hotkey,
        reign,
        block: 131,
        block_hash: "0x1".into(),
        location: None,
    });
    assert!(matches!(err, ApplyError::NotActive { .. }), "{err}");
    // A restart with nothing in flight changes nothing but the counter.
    let mut before = h.state.clone();
    h.feed(Event::Recovered);
    before.counters.recoveries += 1;
    assert_eq!(h.state, before);
    assert_eq!(h.replayed(), h.state);
}

#[test]
fn a_crowned_digest_is_never_dueled_again_and_the_next_duel_is_against_the_new_king() {
    let mut h = Harness::new(rules());
    let fx = h.reveal(vec![
        reveal("alice", Some(1), payload(digest(1), "alice"), 101),
        reveal("bob", Some(2), payload(digest(2), "bob"), 102),
    ]);
    let start = pass_gates(&mut h, command(&fx).unwrap());
    let fx = duel(&mut h, &start, true);
    let fx = crown(&mut h, &command(&fx).unwrap(), 120);
    // Bob's entry starts right after the crown, against alice's checkpoint.
    let Some(Effect::RunGate { entry: 1, king, .. }) = command(&fx) else {
        panic!("{fx:?}")
    };
    assert_eq!(king, digest(1));
    let start = pass_gates(&mut h, command(&fx).unwrap());
    let fx = duel(&mut h, &start, false);
    assert!(matches!(
        answers(&fx)[0].1,
        Outcome::Dueled { crowned: None, .. }
    ));
    // Alice re-commits her crowned digest, bob his dueled one: both refused.
    let fx = h.reveal(vec![
        reveal("alice", Some(1), payload(digest(1), "alice"), 130),
        reveal("bob", Some(2), payload(digest(2), "bob"), 130),
    ]);
    let codes: Vec<_> = answers(&fx).iter().map(|(_, o)| rejected_code(o)).collect();
    assert_eq!(
        codes,
        vec![Some(RejectCode::DigestOwned), Some(RejectCode::DigestOwned)]
    );
    assert_eq!(h.state.counters.crowns, 1);
}

#[test]
fn the_validators_copy_of_the_king_is_the_reigns_location_for_gates_duels_and_feeds() {
    let mut h = Harness::new(rules());
    let fx = h.reveal(vec![
        reveal("alice", Some(1), payload(digest(1), "alice"), 101),
        reveal("bob", Some(2), payload(digest(2), "bob"), 102),
    ]);
    let start = pass_gates(&mut h, command(&fx).unwrap());
    let fx = duel(&mut h, &start, true);
    let crown_fx = command(&fx).unwrap();
    let Effect::Crown {
        entry,
        digest: d,
        hotkey,
        reign,
        location,
        previous,
    } = crown_fx.clone()
    else {
        panic!("expected Crown, got {crown_fx:?}")
    };
    // The effect says where the winner committed it (to fetch it again if the cache lost it),
    // and which king it replaces (the shell releases it without reading the state).
    assert_eq!(location, "s3://bucket/alice");
    assert!(previous.is_some() && previous != Some(d), "{previous:?}");
    let crowned = |location: Option<&str>| Event::Crowned {
        entry,
        digest: d,
        hotkey: hotkey.clone(),
        reign,
        block: 120,
        block_hash: "0xab".into(),
        location: location.map(str::to_string),
    };
    // A location the shell could not have meant is refused, and changes nothing.
    for bad in ["", "s3://validator/kings x", "file:///kings\n"] {
        let err = h.refuse(crowned(Some(bad)));
        assert!(
            matches!(err, ApplyError::BadLocation("crowned.location")),
            "{bad:?}: {err}"
        );
    }
    let fx = h.feed(crowned(Some("s3://validator/kings")));
    let king = h.state.king().unwrap();
    assert_eq!(king.location.as_deref(), Some("s3://validator/kings"));
    // The history keeps what alice committed.
    assert_eq!(
        h.state.history.back().unwrap().location.as_deref(),
        Some("s3://bucket/alice")
    );
    // Bob's gates and duel are given the validator's copy, not alice's location.
    let Some(Effect::RunGate { king_location, .. }) = command(&fx) else {
        panic!("{fx:?}")
    };
    assert_eq!(king_location.as_deref(), Some("s3://validator/kings"));
    let start = pass_gates(&mut h, command(&fx).unwrap());
    let Effect::StartDuel { king_location, .. } = &start else {
        panic!("{start:?}")
    };
    assert_eq!(king_location.as_deref(), Some("s3://validator/kings"));
    // The feeds name it too.
    let feed = koth_validator::feed::api_state(&h.state);
    assert_eq!(
        feed.king.and_then(|k| k.location).as_deref(),
        Some("s3://validator/kings")
    );
    let dash = serde_json::to_value(koth_validator::feed::dashboard_json(&h.state)).unwrap();
    assert_eq!(dash["king"]["model_repo"], "s3://validator/kings");
    // Replaying the log gives the same reign, location included.
    assert_eq!(h.replayed(), h.state);
    // A log written before kings were copied (no `location`): the committed location stays.
    let old = r#"{"kind":"crowned","entry":0,"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","hotkey":"a","reign":1,"block":1,"block_hash":"0x1"}"#;
    match serde_json::from_str::<Event>(old).unwrap() {
        Event::Crowned { location, .. } => assert_eq!(location, None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_challengers_own_failure_in_the_duel_is_answered_and_its_digest_is_final() {
    let mut h = Harness::new(rules());
    let fx = h.reveal(vec![reveal(
        "alice",
        Some(1),
        payload(digest(1), "alice"),
        101,
    )]);
    let start = pass_gates(&mut h, command(&fx).unwrap());
    let Effect::StartDuel {
        entry, king, seed, ..
    } = start.clone()
    else {
        panic!("{start:?}")
    };
    let refused = |code| Event::DuelRefused {
        entry,
        code,
        message: "the challenger failed to load: model.safetensors: truncated".into(),
    };
    // Only once the duel runs, and only with the duel's code.
    assert!(matches!(
        h.refuse(refused(RejectCode::WeightsInvalid)),
        ApplyError::WrongPhase { .. }
    ));
    h.feed(Event::DuelStarted { entry, king, seed });
    assert!(matches!(
        h.refuse(refused(RejectCode::NearCopy)),
        ApplyError::CodeNotOfGate { .. }
    ));
    let fx = h.feed(refused(RejectCode::WeightsInvalid));
    let a = answers(&fx);
    assert_eq!(a.len(), 1);
    let Outcome::Rejected {
        code,
        gate,
        message,
    } = &a[0].1
    else {
        panic!("{a:?}")
    };
    assert_eq!(
        (*code, *gate),
        (RejectCode::WeightsInvalid, Some(Gate::Duel))
    );
    assert!(message.contains("failed to load"));
    assert_eq!(h.state.counters.infra_faults, 0);
    assert!(h.state.active.is_none() && h.state.queue.is_empty());
    // The same bytes would fail again: the digest is final.
    let fx = h.reveal(vec![reveal(
        "alice",
        Some(1),
        payload(digest(1), "alice"),
        120,
    )]);
    assert_eq!(
        answers(&fx)
            .iter()
            .map(|(_, o)| rejected_code(o))
            .collect::<Vec<_>>(),
        vec![Some(RejectCode::DigestOwned)]
    );
    assert_eq!(h.replayed(), h.state);
}

#[test]
fn weights_on_every_crown_and_every_w_blocks_until_set() {
    let mut r = rules();
    r.reward = RewardPolicy::SplitLastK {
        k: 2,
        shares: Some(vec![0.75, 0.25]),
    };
    let mut h = Harness::new(r);
    // Genesis only: nobody to pay, no weights.
    assert!(h.tick(START + 50).is_empty());
    let fx = h.reveal(vec![
        reveal("alice", Some(1), payload(digest(1), "alice"), 160),
        reveal("bob", Some(2), payload(digest(2), "bob"), 161),
    ]);
    let start = pass_gates(&mut h, command(&fx).unwrap());
    let fx = duel(&mut h, &start, true);
    let fx = crown(&mut h, &command(&fx).unwrap(), 170);
    let bob_gate = command(&fx).expect("bob's entry starts after the crown");
    let Some(Effect::SetWeights { weights }) = fx
        .iter()
        .find(|e| matches!(e, Effect::SetWeights { .. }))
        .cloned()
    else {
        panic!("{fx:?}")
    };
    assert_eq!(weights.len(), 1, "genesis' share is dropped: {weights:?}");
    // Not yet set: due again on the next tick.
    let fx = h.tick(171);
    assert!(matches!(fx.as_slice(), [Effect::SetWeights { .. }]));
    h.feed(Event::WeightsSet {
        block: 171,
        weights: weights.clone(),
    });
    assert!(h.tick(172).is_empty());
    assert!(h.tick(180).is_empty());
    assert!(matches!(
        h.tick(181).as_slice(),
        [Effect::SetWeights { .. }]
    ));
    h.feed(Event::WeightsSet {
        block: 181,
        weights,
    });
    // Bob wins: 0.75 to the king, 0.25 to the one before.
    let start = pass_gates(&mut h, bob_gate);
    let fx = duel(&mut h, &start, true);
    let fx = crown(&mut h, &command(&fx).unwrap(), 190);
    let Some(Effect::SetWeights { weights }) = fx
        .iter()
        .find(|e| matches!(e, Effect::SetWeights { .. }))
        .cloned()
    else {
        panic!("{fx:?}")
    };
    let pairs: Vec<(&str, f64)> = weights
        .iter()
        .map(|w| (w.hotkey.as_str(), w.weight))
        .collect();
    assert_eq!(pairs, vec![("alice", 0.25), ("bob", 0.75)]);
    assert!(h.state.weights.dirty);
    // Weights computed before a crown do not clear the flag.
    h.feed(Event::WeightsSet {
        block: 190,
        weights: vec![koth_validator::Weight {
            hotkey: "alice".into(),
            weight: 1.0,
        }],
    });
    assert!(h.state.weights.dirty);
    assert_eq!(h.replayed(), h.state);
}

#[test]
fn with_king_loss_reuse_every_duel_of_a_reign_names_the_reigns_pool() {
    let mut h = Harness::new(koth_validator::Rules {
        king_pool_batches: 4,
        ..rules()
    });
    let fx = h.reveal(vec![
        reveal("alice", Some(1), payload(digest(1), "alice"), 101),
        reveal("bob", Some(2), payload(digest(2), "bob"), 102),
        reveal("carol", Some(3), payload(digest(3), "carol"), 103),
    ]);
    let pool_of = |e: &Effect| match e {
        Effect::StartDuel { king_pool, .. } => king_pool.clone().expect("a pool is named"),
        other => panic!("expected StartDuel, got {other:?}"),
    };
    // Alice's duel against the genesis king.
    let start = pass_gates(&mut h, command(&fx).unwrap());
    let genesis_pool = pool_of(&start);
    assert_eq!(genesis_pool.batches, 4);
    assert!(genesis_pool.seed_material.contains("reign 0"));
    // Alice is crowned: Bob's duel names the new reign's pool (its crowning block's hash).
    let fx = duel(&mut h, &start, true);
    let fx = crown(&mut h, &command(&fx).unwrap(), 120);
    let start = pass_gates(&mut h, command(&fx).unwrap());
    let alice_pool = pool_of(&start);
    assert_ne!(alice_pool, genesis_pool);
    assert!(alice_pool.seed_material.contains("reign 1"));
    // Bob loses: Carol's duel is in the same reign, on the same pool.
    let fx = duel(&mut h, &start, false);
    let start = pass_gates(&mut h, command(&fx).unwrap());
    assert_eq!(pool_of(&start), alice_pool);
    // Without reuse no pool is named.
    let mut h = Harness::new(rules());
    let fx = h.reveal(vec![reveal(
        "alice",
        Some(1),
        payload(digest(1), "alice"),
        101,
    )]);
    let start = pass_gates(&mut h, command(&fx).unwrap());
    assert!(matches!(
        start,
        Effect::StartDuel {
            king_pool: None,
            ..
        }
    ));
}
