//! Randomised event sequences (seeded, so every failure reproduces) driven by a simulated shell
//! that obeys the core's effects but fails, crashes and sends stale reports at random. After
//! every event the invariants are checked; at every crash and at the end, replaying the log
//! must rebuild the live state exactly.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use koth_core::{Digest, RejectCode};
use koth_validator::state::QueueKey;
use koth_validator::state::{Phase, QueueClass};
use koth_validator::{apply, Effect, EntryId, Event, Outcome, ValidatorState, VerdictSummary};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

const HOTKEYS: [&str; 8] = ["h0", "h1", "h2", "h3", "h4", "h5", "h6", "unreg"];

/// What the simulated shell is doing for the core right now.
#[derive(Debug, Clone)]
enum Work {
    Gate {
        entry: EntryId,
        gate: koth_validator::Gate,
        started: bool,
    },
    Duel {
        entry: EntryId,
        start: Effect,
        started: bool,
        n: u64,
    },
    Crown(Effect),
}

#[derive(Default)]
struct Tally {
    answered: BTreeMap<EntryId, usize>,
    finished_digests: BTreeMap<Digest, usize>,
    crowned_entries: BTreeMap<EntryId, usize>,
    last_accepted: Option<Digest>,
    accepted_entry_digest: BTreeMap<EntryId, Digest>,
}

struct Sim {
    rng: ChaCha20Rng,
    state: ValidatorState,
    log: Vec<Event>,
    work: Option<Work>,
    weights_due: Option<Vec<koth_validator::Weight>>,
    tally: Tally,
    crashes: usize,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut r = rules();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        r.near_copy = rng.random_bool(0.5);
        r.trainability_probe = rng.random_bool(0.5);
        r.history_len = rng.random_range(4..40);
        let mut sim = Sim {
            rng,
            state: ValidatorState::new(),
            log: Vec::new(),
            work: None,
            weights_due: None,
            tally: Tally::default(),
            crashes: 0,
        };
        sim.apply_ok(Event::Started { rules: r });
        sim
    }

    /// Apply an event the shell believes valid; check invariants; take the effects on.
    fn apply_ok(&mut self, event: Event) {
        let before = self.state.clone();
        let effects = match apply(&mut self.state, &event) {
            Ok(fx) => fx,
            Err(e) => panic!("valid event {event:?} refused: {e}"),
        };
        self.log.push(event.clone());
        self.check_transition(&before, &event, &effects);
        check_invariants(&self.state);
        for fx in effects {
            match fx {
                Effect::RunGate { entry, gate, .. } => {
                    self.work = Some(Work::Gate {
                        entry,
                        gate,
                        started: false,
                    })
                }
                Effect::StartDuel { entry, .. } => {
                    self.work = Some(Work::Duel {
                        entry,
                        start: fx.clone(),
                        started: false,
                        n: 0,
                    })
                }
                Effect::Crown { .. } => self.work = Some(Work::Crown(fx.clone())),
                Effect::SetWeights { weights } => self.weights_due = Some(weights),
                Effect::Answer { entry, .. } => {
                    *self.tally.answered.entry(entry).or_insert(0) += 1;
                }
            }
        }
    }

    /// Properties of one step, comparing the state before and after.
    fn check_transition(&mut self, before: &ValidatorState, event: &Event, effects: &[Effect]) {
        // No entry is answered twice.
        for fx in effects {
            if let Effect::Answer { entry, .. } = fx {
                assert_eq!(
                    self.tally.answered.get(entry),
                    None,
                    "entry {entry} answered twice"
                );
            }
        }
        match event {
            Event::InfraFault { entry, .. } => {
                // Infrastructure faults never charge the miner: the entry stays live, unless the
                // miner's own newer commitment superseded it, or it has now been interrupted
                // more than the bound, which answers it `infra_exhausted` (not a verdict).
                let limit = koth_validator::core::infra_attempts_limit(
                    self.state.rules.as_ref().unwrap().max_infra_retries,
                );
                let answered: Vec<&Effect> = effects
                    .iter()
                    .filter(|e| matches!(e, Effect::Answer { entry: x, .. } if x == entry))
                    .collect();
                match answered.as_slice() {
                    [] => assert!(
                        self.state.entries.contains_key(entry),
                        "faulted entry {entry} vanished"
                    ),
                    [Effect::Answer {
                        outcome: Outcome::Superseded { .. },
                        ..
                    }] => {}
                    [Effect::Answer {
                        outcome:
                            Outcome::Rejected {
                                code: RejectCode::InfraExhausted,
                                ..
                            },
                        ..
                    }] => {
                        let retries = before.entries[entry].retries;
                        assert_eq!(retries, limit, "exhausted after {retries} interruptions");
                        // Not a verdict: the digest is free to be committed again.
                        let d = before.entries[entry].digest;
                        assert!(
                            !self.tally.finished_digests.contains_key(&d),
                            "an exhausted digest counted as dueled"
                        );
                    }
                    other => panic!("an infra fault charged entry {entry}: {other:?}"),
                }
            }
            Event::DuelRefused { entry, .. } => {
                // The entry is answered (the miner's own fault) and its digest is final.
                let d = before.entries[entry].digest;
                let count = self.tally.finished_digests.entry(d).or_insert(0);
                *count += 1;
                assert_eq!(*count, 1, "digest {d} ended a duel twice");
                assert!(
                    effects.iter().any(|e| matches!(
                        e,
                        Effect::Answer { entry: x, outcome: Outcome::Rejected { .. }, .. } if x == entry
                    )),
                    "a duel refusal did not answer entry {entry}"
                );
            }
            Event::DuelFinished { entry, verdict } => {
                let d = before.entries[entry].digest;
                let count = self.tally.finished_digests.entry(d).or_insert(0);
                *count += 1;
                assert_eq!(*count, 1, "digest {d} dueled to a verdict twice");
                if verdict.accepted {
                    self.tally.accepted_entry_digest.insert(*entry, d);
                }
            }
            Event::Crowned { entry, digest, .. } => {
                let count = self.tally.crowned_entries.entry(*entry).or_insert(0);
                *count += 1;
                assert_eq!(*count, 1, "entry {entry} crowned twice");
                assert_eq!(self.tally.accepted_entry_digest.get(entry), Some(digest));
                self.tally.last_accepted = Some(*digest);
            }
            _ => {}
        }
        // The king is the last accepted challenger (or genesis before any).
        let king = self.state.king().map(|k| k.digest);
        assert_eq!(
            king,
            Some(self.tally.last_accepted.unwrap_or(Digest::of(b"genesis")))
        );
        // An entry that became active was the first in line.
        let newly_active = self
            .state
            .active
            .as_ref()
            .map(|a| a.entry)
            .filter(|id| before.active.as_ref().map(|a| a.entry) != Some(*id));
        if let Some(id) = newly_active {
            let e = &self.state.entries[&id];
            let key = before
                .queue
                .iter()
                .find(|k| k.id == id)
                .cloned()
                .unwrap_or(QueueKey {
                    class: QueueClass::Normal,
                    reveal_block: e.reveal_block,
                    hotkey: e.hotkey.clone(),
                    id,
                });
            for k in &self.state.queue {
                assert!(key < *k, "started {key:?} while {k:?} was ahead of it");
            }
        }
    }

    fn random_reveal(&mut self) -> koth_validator::Reveal {
        let i = self.rng.random_range(0..HOTKEYS.len());
        let hotkey = HOTKEYS[i];
        let uid = if hotkey == "unreg" {
            None
        } else {
            Some(i as u16)
        };
        let payload = match self.rng.random_range(0..20) {
            0 => "v4|broken".to_string(),
            1 => payload(Digest::of(b"genesis"), hotkey),
            // A small pool of digests: copies, re-commits and repeats happen often.
            _ => payload(digest(self.rng.random_range(0..16)), hotkey),
        };
        // Commit blocks straddle the start block; some repeat the last processed one.
        let commit = self.state.block.saturating_sub(self.rng.random_range(0..4));
        koth_validator::Reveal {
            hotkey: hotkey.into(),
            uid,
            payload,
            commit_block: commit,
            reveal_block: commit + 3,
            block_hash: format!("0x{commit:x}"),
        }
    }

    fn step(&mut self, allow_chaos: bool) {
        let roll = self.rng.random_range(0..100);
        match roll {
            0..=14 if allow_chaos => {
                let n = self.rng.random_range(1..4);
                let reveals: Vec<_> = (0..n).map(|_| self.random_reveal()).collect();
                let block = self.state.block + self.rng.random_range(0..3);
                let block = reveals.iter().map(|r| r.reveal_block).fold(block, u64::max);
                self.apply_ok(Event::Revealed { block, reveals });
            }
            15..=24 => {
                let block = self.state.block + self.rng.random_range(0..3);
                self.apply_ok(Event::Tick { block });
            }
            25..=28 if allow_chaos => self.crash(),
            29..=31 => self.stale(),
            32..=35 => {
                if let Some(weights) = self.weights_due.take() {
                    let block = self.state.block;
                    self.apply_ok(Event::WeightsSet { block, weights });
                }
            }
            _ => self.work_step(allow_chaos),
        }
    }

    fn crash(&mut self) {
        self.crashes += 1;
        // Everything in flight is lost with the process.
        self.work = None;
        self.weights_due = None;
        let replayed = replay(&self.log);
        assert_eq!(replayed, self.state, "replay differs from the live state");
        self.state = replayed;
        self.apply_ok(Event::Recovered);
    }

    /// Reports that must be refused and change nothing.
    fn stale(&mut self) {
        let ghost = self.state.next_entry + 1000;
        let mut bogus = vec![
            Event::GatePassed {
                entry: ghost,
                gate: koth_validator::Gate::Fetch,
            },
            Event::DuelFinished {
                entry: ghost,
                verdict: verdict(true, 1),
            },
            Event::InfraFault {
                entry: ghost,
                reason: "late".into(),
            },
        ];
        if self.state.block > 0 {
            bogus.push(Event::Tick {
                block: self.state.block - 1,
            });
        }
        if let Some(Work::Duel {
            entry,
            started: true,
            n,
            ..
        }) = &self.work
        {
            bogus.push(Event::DuelProgress {
                entry: *entry,
                n: *n,
                mu_hat: f64::NAN,
                lower: Some(0.0),
                upper: Some(1.0),
            });
        }
        if let Some(Work::Gate {
            entry,
            gate,
            started: true,
        }) = &self.work
        {
            let foreign = if *gate == koth_validator::Gate::Fingerprint {
                RejectCode::TooLarge
            } else {
                RejectCode::NearCopy
            };
            bogus.push(Event::GateFailed {
                entry: *entry,
                gate: *gate,
                code: foreign,
                message: "wrong code".into(),
            });
        }
        for e in bogus {
            let before = self.state.clone();
            assert!(
                apply(&mut self.state, &e).is_err(),
                "stale {e:?} was accepted"
            );
            assert_eq!(self.state, before);
        }
    }

    fn work_step(&mut self, allow_chaos: bool) {
        let Some(work) = self.work.clone() else {
            let block = self.state.block + 1;
            self.apply_ok(Event::Tick { block });
            return;
        };
        let chaos = |rng: &mut ChaCha20Rng, p: f64| allow_chaos && rng.random_bool(p);
        match work {
            Work::Gate {
                entry,
                gate,
                started: false,
            } => {
                self.work = Some(Work::Gate {
                    entry,
                    gate,
                    started: true,
                });
                self.apply_ok(Event::GateStarted { entry, gate });
            }
            Work::Gate {
                entry,
                gate,
                started: true,
            } => {
                self.work = None;
                if chaos(&mut self.rng, 0.1) {
                    self.apply_ok(Event::InfraFault {
                        entry,
                        reason: "gate could not decide".into(),
                    });
                } else if self.rng.random_bool(if allow_chaos { 0.12 } else { 0.05 }) {
                    let codes = gate.codes();
                    let code = codes[self.rng.random_range(0..codes.len())];
                    self.apply_ok(Event::GateFailed {
                        entry,
                        gate,
                        code,
                        message: format!("crafted {code}"),
                    });
                } else {
                    self.apply_ok(Event::GatePassed { entry, gate });
                }
            }
            Work::Duel {
                entry,
                start,
                started: false,
                ..
            } => {
                let Effect::StartDuel { king, seed, .. } = start.clone() else {
                    unreachable!()
                };
                self.work = Some(Work::Duel {
                    entry,
                    start,
                    started: true,
                    n: 0,
                });
                self.apply_ok(Event::DuelStarted { entry, king, seed });
            }
            Work::Duel {
                entry,
                start,
                started: true,
                n,
            } => {
                if chaos(&mut self.rng, 0.1) {
                    self.work = None;
                    self.apply_ok(Event::InfraFault {
                        entry,
                        reason: "eval worker lost".into(),
                    });
                } else if self.rng.random_bool(0.05) {
                    // The challenger's own failure in the duel (it does not load).
                    self.work = None;
                    self.apply_ok(Event::DuelRefused {
                        entry,
                        code: RejectCode::WeightsInvalid,
                        message: "the challenger failed to load".into(),
                    });
                } else if n < 96 && self.rng.random_bool(0.6) {
                    let n = n + 32;
                    self.work = Some(Work::Duel {
                        entry,
                        start,
                        started: true,
                        n,
                    });
                    let mu = self.rng.random_range(-0.05..0.05);
                    self.apply_ok(Event::DuelProgress {
                        entry,
                        n,
                        mu_hat: mu,
                        lower: Some(mu - 0.01),
                        upper: Some(mu + 0.01),
                    });
                } else {
                    self.work = None;
                    let accepted = self.rng.random_bool(0.4);
                    self.apply_ok(Event::DuelFinished {
                        entry,
                        verdict: verdict(accepted, n.max(1)),
                    });
                }
            }
            Work::Crown(effect) => {
                let Effect::Crown {
                    entry,
                    digest,
                    hotkey,
                    reign,
                    ..
                } = effect.clone()
                else {
                    unreachable!()
                };
                self.work = None;
                if chaos(&mut self.rng, 0.15) {
                    self.apply_ok(Event::InfraFault {
                        entry,
                        reason: "could not pin the checkpoint".into(),
                    });
                } else {
                    let block = self.state.block;
                    let crowned = Event::Crowned {
                        entry,
                        digest,
                        hotkey,
                        reign,
                        block,
                        block_hash: format!("0x{block:x}"),
                        location: None,
                    };
                    self.apply_ok(crowned.clone());
                    // The same crown again is refused.
                    let before = self.state.clone();
                    assert!(apply(&mut self.state, &crowned).is_err());
                    assert_eq!(self.state, before);
                }
            }
        }
    }
}

fn verdict(accepted: bool, n: u64) -> VerdictSummary {
    VerdictSummary {
        accepted,
        n,
        mu_hat: 0.01,
        lower: Some(0.001),
        upper: Some(0.02),
        verdict_digest: Digest::of(&n.to_le_bytes()),
        verdict_path: format!("verdicts/{n}.json"),
    }
}

fn replay(log: &[Event]) -> ValidatorState {
    let mut s = ValidatorState::new();
    for e in log {
        apply(&mut s, e).expect("replay of an applied event must apply");
    }
    s
}

/// Invariants that hold after every event.
fn check_invariants(s: &ValidatorState) {
    let active = s.active.as_ref().map(|a| a.entry);
    // Live entries are exactly queued ∪ active ∪ waiting, each in one place.
    let queued: BTreeSet<EntryId> = s.queue.iter().map(|k| k.id).collect();
    assert_eq!(queued.len(), s.queue.len());
    let waiting: BTreeSet<EntryId> = s.waiting.values().copied().collect();
    let mut live: BTreeSet<EntryId> = queued.union(&waiting).copied().collect();
    assert_eq!(live.len(), queued.len() + waiting.len());
    if let Some(a) = active {
        assert!(!queued.contains(&a) && !waiting.contains(&a));
        live.insert(a);
    }
    assert_eq!(live, s.entries.keys().copied().collect::<BTreeSet<_>>());
    // One slot per hotkey: at most one entry queued or active, and the slot map agrees.
    let mut per_hotkey: BTreeMap<&str, Vec<EntryId>> = BTreeMap::new();
    for id in queued.iter().chain(active.iter()) {
        per_hotkey
            .entry(s.entries[id].hotkey.as_str())
            .or_default()
            .push(*id);
    }
    for (hotkey, ids) in &per_hotkey {
        assert_eq!(ids.len(), 1, "hotkey {hotkey} holds entries {ids:?}");
        assert_eq!(s.slots.get(*hotkey), Some(&ids[0]));
    }
    assert_eq!(s.slots.len(), per_hotkey.len());
    // A waiting entry waits only behind its own hotkey's active entry.
    for (hotkey, id) in &s.waiting {
        assert_eq!(&s.entries[id].hotkey, hotkey);
        let a = active.expect("waiting without an active entry");
        assert_eq!(&s.entries[&a].hotkey, hotkey);
    }
    // Queue keys agree with their entries.
    for k in &s.queue {
        let e = &s.entries[&k.id];
        assert_eq!((k.reveal_block, &k.hotkey), (e.reveal_block, &e.hotkey));
    }
    // Every live digest is recorded as live for its entry and never dueled... unless re-queued
    // after a restart mid-crown, which cannot happen: crowning entries stay active.
    for (id, e) in &s.entries {
        let rec = &s.digests[&e.digest];
        assert_eq!(rec.live, Some(*id));
        let crowning = matches!(
            s.active.as_ref(),
            Some(a) if a.entry == *id && matches!(a.phase, Phase::Crowning { .. })
        );
        assert!(!rec.dueled || crowning, "a dueled digest is live again");
    }
    if let Some(r) = &s.rules {
        assert!(s.history.len() <= r.history_len as usize);
    }
    // Everyone who got an id is live or answered.
    assert_eq!(
        s.counters.answered + s.entries.len() as u64,
        s.next_entry,
        "an entry is neither live nor answered"
    );
}

fn run(seed: u64, steps: usize) -> Sim {
    let mut sim = Sim::new(seed);
    assert_eq!(sim.state.block, START);
    for _ in 0..steps {
        sim.step(true);
    }
    // Drain: no more reveals or faults; everything admitted must get its answer.
    let mut guard = 0;
    while !(sim.state.entries.is_empty()) {
        sim.step(false);
        guard += 1;
        assert!(guard < 100_000, "seed {seed}: the queue does not drain");
    }
    assert_eq!(replay(&sim.log), sim.state, "seed {seed}: replay differs");
    // Every submission that got an id has exactly one answer.
    for id in 0..sim.state.next_entry {
        assert_eq!(
            sim.tally.answered.get(&id),
            Some(&1),
            "seed {seed}: entry {id} answered {:?} times",
            sim.tally.answered.get(&id)
        );
    }
    sim
}

#[test]
fn random_event_sequences_keep_every_invariant() {
    let mut totals = (0, 0, 0, 0);
    for seed in 0..150 {
        let sim = run(seed, 400);
        totals.0 += sim.state.next_entry;
        totals.1 += sim.state.counters.crowns;
        totals.2 += sim.crashes;
        totals.3 += sim.state.counters.infra_faults;
    }
    // The simulation must actually exercise the paths it claims to.
    let (entries, crowns, crashes, faults) = totals;
    eprintln!("entries {entries}, crowns {crowns}, crashes {crashes}, infra faults {faults}");
    assert!(entries > 3000, "entries {entries}");
    assert!(crowns > 100, "crowns {crowns}");
    assert!(crashes > 500, "crashes {crashes}");
    assert!(faults > 300, "faults {faults}");
}
