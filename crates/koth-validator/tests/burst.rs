//! 500 submissions revealed in one block: all queued, copies and repeats deduplicated, every one
//! answered exactly once, and the state's size bounded by what must be remembered for ever (one
//! record per digest), not by how many submissions passed through.

mod common;

use std::collections::BTreeMap;

use common::*;
use koth_core::{Digest, RejectCode};
use koth_validator::{Effect, EntryId, Event, Outcome, Reveal, VerdictSummary};

const MINERS: u64 = 500;

fn burst(round: u64, commit: u64) -> Vec<Reveal> {
    let mut reveals: Vec<Reveal> = (0..MINERS)
        .map(|i| {
            let hk = format!("hk{i:03}");
            reveal(
                &hk,
                Some(i as u16),
                payload(digest(round * 10_000 + i), &hk),
                commit,
            )
        })
        .collect();
    // 50 copies of others' digests, committed one block later but read in the same poll.
    for i in 0..50 {
        let hk = format!("copier{i:02}");
        reveals.push(reveal(
            &hk,
            Some((MINERS + i) as u16),
            payload(digest(round * 10_000 + i), &hk),
            commit + 1,
        ));
    }
    // The chain reports 100 of them twice.
    let repeats: Vec<Reveal> = reveals.iter().take(100).cloned().collect();
    reveals.extend(repeats);
    reveals
}

/// Answer everything the core asks for until nothing is left; returns answers per entry.
fn drain(h: &mut Harness, mut effects: Vec<Effect>, answers_seen: &mut BTreeMap<EntryId, Outcome>) {
    let record = |fx: &[Effect], seen: &mut BTreeMap<EntryId, Outcome>| {
        for (id, outcome) in answers(fx) {
            assert!(
                seen.insert(id, outcome).is_none(),
                "entry {id} answered twice"
            );
        }
    };
    record(&effects, answers_seen);
    while let Some(fx) = command(&effects) {
        effects = match fx {
            Effect::RunGate { entry, gate, .. } => {
                h.feed(Event::GateStarted { entry, gate });
                if entry % 10 == 0 {
                    h.feed(Event::GatePassed { entry, gate })
                } else {
                    let code = gate.codes()[0];
                    h.feed(Event::GateFailed {
                        entry,
                        gate,
                        code,
                        message: format!("crafted {code}"),
                    })
                }
            }
            Effect::StartDuel {
                entry, king, seed, ..
            } => {
                h.feed(Event::DuelStarted { entry, king, seed });
                h.feed(Event::DuelFinished {
                    entry,
                    verdict: VerdictSummary {
                        accepted: false,
                        n: 256,
                        mu_hat: -0.01,
                        lower: Some(-0.02),
                        upper: Some(0.0),
                        verdict_digest: Digest::of(&entry.to_le_bytes()),
                        verdict_path: format!("verdicts/{entry}.json"),
                    },
                })
            }
            other => panic!("unexpected {other:?}"),
        };
        record(&effects, answers_seen);
    }
}

#[test]
fn five_hundred_reveals_in_one_block_are_queued_deduplicated_and_answered() {
    let mut h = Harness::new(rules());
    let mut seen = BTreeMap::new();
    let reveals = burst(0, 150);
    let fx = h.reveal(reveals.clone());
    // All 500 admitted (one active, 499 queued), the 50 copies refused at once.
    assert_eq!(h.state.entries.len(), MINERS as usize);
    assert_eq!(h.state.queue.len(), MINERS as usize - 1);
    let copies = answers(&fx)
        .iter()
        .filter(|(_, o)| {
            matches!(
                o,
                Outcome::Rejected {
                    code: RejectCode::DigestOwned,
                    ..
                }
            )
        })
        .count();
    assert_eq!(copies, 50);
    // The next poll sees the same commitments: the shell's filter finds nothing new, and even
    // unfiltered the core ignores them.
    assert!(reveals.iter().all(|r| !h.state.needs_intake(r)));
    let again = h.reveal(reveals);
    assert!(answers(&again).is_empty() && command(&again).is_none());
    assert_eq!(h.state.next_entry, MINERS + 50);
    drain(&mut h, fx, &mut seen);
    assert_eq!(seen.len() as u64, MINERS + 50);
    assert!(h.state.entries.is_empty() && h.state.queue.is_empty());
    assert!(h.state.slots.is_empty() && h.state.waiting.is_empty());
    assert_eq!(
        h.state.history.len(),
        64,
        "history is capped at history_len"
    );
    let size_one = serde_json::to_vec(&h.state).unwrap().len();

    // A second burst of new checkpoints from the same miners.
    let fx = h.reveal(burst(1, 200));
    drain(&mut h, fx, &mut seen);
    assert_eq!(seen.len() as u64, 2 * (MINERS + 50));
    let size_two = serde_json::to_vec(&h.state).unwrap().len();
    // Growth is the per-digest ownership records only (500 new digests, about 150 bytes of
    // JSON each); the 550 answered submissions themselves leave nothing behind but history.
    let growth = size_two.saturating_sub(size_one);
    eprintln!("state JSON after burst 1: {size_one} bytes; after burst 2: {size_two} bytes");
    assert!(growth < (MINERS as usize) * 200, "grew by {growth} bytes");
    assert_eq!(h.replayed(), h.state);
}
