//! What the shell observed, turned into the events it logs: the shell reads the world and hands
//! the reading to [`events`]; the rules decide here which events that reading calls for, and
//! the shell records exactly those, in order, and nothing else.
//!
//! The log stays small: a chain poll that brings nothing new (the head did not move, every
//! reveal is known, no held reveal fell due) gives no event at all, so polling the chain every
//! block does not grow the log. And an event's block never goes back: a chain head read below
//! the block the state has been told about (a lagging node, a second RPC endpoint) is raised to
//! the state's block, so `apply` never refuses what the shell observed.

use koth_core::Digest;

use crate::event::{EntryId, Event, Reveal, Weight};
use crate::state::ValidatorState;

/// One reading of the world by the shell, after it acted or polled.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// One poll of the chain: its head and the commitments revealed at or before it, as the
    /// chain reports them (known ones included: [`events`] keeps only the new ones).
    Chain { head: u64, reveals: Vec<Reveal> },
    /// The crown the core asked for is carried out: the king copied into the validator's own
    /// store at `location` (read back against its digest), then the chain head read.
    Crowned {
        entry: EntryId,
        digest: Digest,
        hotkey: String,
        reign: u64,
        head: u64,
        head_hash: String,
        location: String,
    },
    /// The chain accepted these weights; `head` is the chain head read after.
    WeightsSet { head: u64, weights: Vec<Weight> },
}

/// The events `observation` calls for, in the order the shell records them (each applies to
/// the state the ones before it leave). A chain poll gives:
/// - `tick` at the head, only when the head moved past the state's block;
/// - `revealed` at the head (raised to the state's block) with the reveals the state does not
///   know yet ([`ValidatorState::needs_intake`]), only when there is one, or when a held reveal
///   falls due at that block ([`ValidatorState::held_due`]): a held reveal is decided only by a
///   `revealed` event, which certifies that every commitment revealed up to its block was read
///   (PROTOCOL §3).
///
/// A crown or weights carried out give their one event, at the head read after, raised to the
/// state's block.
pub fn events(state: &ValidatorState, observation: Observation) -> Vec<Event> {
    match observation {
        Observation::Chain { head, reveals } => {
            let mut events = Vec::new();
            if head > state.block {
                events.push(Event::Tick { block: head });
            }
            // A `tick` changes neither the held reveals nor the known ones, and leaves the
            // state's block at `block`: `revealed` is decided on the state as it is now.
            let block = event_block(state, head);
            let reveals: Vec<Reveal> = reveals
                .into_iter()
                .filter(|r| state.needs_intake(r))
                .collect();
            if !reveals.is_empty() || state.held_due(block) {
                events.push(Event::Revealed { block, reveals });
            }
            events
        }
        Observation::Crowned {
            entry,
            digest,
            hotkey,
            reign,
            head,
            head_hash,
            location,
        } => vec![Event::Crowned {
            entry,
            digest,
            hotkey,
            reign,
            block: event_block(state, head),
            block_hash: head_hash,
            location: Some(location),
        }],
        Observation::WeightsSet { head, weights } => vec![Event::WeightsSet {
            block: event_block(state, head),
            weights,
        }],
    }
}

/// The block an event observed at chain head `head` carries: the head, or the state's block if
/// the head read is behind it (blocks in the log never go back).
fn event_block(state: &ValidatorState, head: u64) -> u64 {
    head.max(state.block)
}

#[cfg(test)]
mod tests {
    use koth_core::competition::RewardPolicy;

    use super::*;
    use crate::core::apply;
    use crate::event::Rules;

    const START: u64 = 100;
    const W: u64 = 10;

    fn started() -> ValidatorState {
        let mut state = ValidatorState::new();
        let rules = Rules {
            competition_sha256: Digest::of(b"competition"),
            genesis_king: Digest::of(b"genesis"),
            genesis_location: None,
            start_block: START,
            weights_interval_blocks: 1000,
            reward: RewardPolicy::WinnerTakeAll,
            max_infra_retries: 3,
            history_len: 64,
            near_copy: false,
            trainability_probe: false,
            reveal_delay_blocks: Some(W),
            near_copy_history: 16,
            king_pool_batches: 0,
        };
        apply(&mut state, &Event::Started { rules }).unwrap();
        state
    }

    fn reveal(hotkey: &str, commit: u64, revealed: u64) -> Reveal {
        let digest = Digest::of(hotkey.as_bytes());
        Reveal {
            hotkey: hotkey.into(),
            uid: Some(1),
            payload: format!("v4|file:///store/{hotkey}|{digest}|{hotkey}"),
            commit_block: commit,
            reveal_block: revealed,
            block_hash: format!("0x{revealed:064x}"),
        }
    }

    fn poll(state: &ValidatorState, head: u64, reveals: Vec<Reveal>) -> Vec<Event> {
        events(state, Observation::Chain { head, reveals })
    }

    /// Records `events` as the shell does: each must apply.
    fn record(state: &mut ValidatorState, events: &[Event]) {
        for e in events {
            apply(state, e).unwrap_or_else(|err| panic!("{} refused: {err}", e.kind()));
        }
    }

    #[test]
    fn a_poll_with_nothing_new_gives_no_event() {
        let mut state = started();
        record(&mut state, &[Event::Tick { block: 120 }]);
        assert_eq!(poll(&state, 120, Vec::new()), Vec::<Event>::new());
        // A head read behind the state's block is no news either.
        assert_eq!(poll(&state, 110, Vec::new()), Vec::<Event>::new());
    }

    #[test]
    fn a_moved_head_gives_a_tick_alone() {
        let state = started();
        assert_eq!(state.block, START);
        assert_eq!(
            poll(&state, 101, Vec::new()),
            vec![Event::Tick { block: 101 }]
        );
    }

    #[test]
    fn a_new_reveal_is_logged_and_a_known_one_is_not() {
        let mut state = started();
        let a = reveal("alice", 105, 106);
        let events = poll(&state, 106, vec![a.clone()]);
        assert_eq!(
            events,
            vec![
                Event::Tick { block: 106 },
                Event::Revealed {
                    block: 106,
                    reveals: vec![a.clone()],
                },
            ]
        );
        record(&mut state, &events);
        assert_eq!(state.held, vec![a.clone()]);

        // The chain keeps reporting it: known now, and not yet due (105 + W = 115).
        assert_eq!(poll(&state, 106, vec![a.clone()]), Vec::<Event>::new());
        assert_eq!(
            poll(&state, 110, vec![a.clone()]),
            vec![Event::Tick { block: 110 }]
        );

        // Only the new one of a poll is carried.
        let b = reveal("bob", 107, 108);
        let events = poll(&state, 108, vec![a.clone(), b.clone()]);
        assert_eq!(
            events,
            vec![
                Event::Tick { block: 108 },
                Event::Revealed {
                    block: 108,
                    reveals: vec![b],
                },
            ]
        );
        record(&mut state, &events);
    }

    #[test]
    fn a_held_reveal_falling_due_gives_an_empty_revealed() {
        let mut state = started();
        let a = reveal("alice", 105, 106);
        let events = poll(&state, 106, vec![a.clone()]);
        record(&mut state, &events);
        assert_eq!(state.held.len(), 1);

        // Due at 105 + W = 115: not at 114, at 115, with nothing new revealed.
        assert_eq!(
            poll(&state, 114, vec![a.clone()]),
            vec![Event::Tick { block: 114 }]
        );
        let events = poll(&state, 115, vec![a.clone()]);
        assert_eq!(
            events,
            vec![
                Event::Tick { block: 115 },
                Event::Revealed {
                    block: 115,
                    reveals: Vec::new(),
                },
            ]
        );
        record(&mut state, &events);
        assert!(state.held.is_empty());
        assert_eq!(poll(&state, 115, vec![a]), Vec::<Event>::new());
    }

    #[test]
    fn a_held_reveal_already_due_at_the_state_block_is_released_by_a_lagging_head() {
        // The reveal is held at a block past its release (its revealed event came with a
        // head that had not reached it) and the next head read lags: no tick, but the
        // revealed event at the state's block decides it.
        let mut state = started();
        let a = reveal("alice", 105, 106);
        record(
            &mut state,
            &[Event::Revealed {
                block: 106,
                reveals: vec![a],
            }],
        );
        record(&mut state, &[Event::Tick { block: 120 }]);
        assert_eq!(state.held.len(), 1);
        let events = poll(&state, 112, Vec::new());
        assert_eq!(
            events,
            vec![Event::Revealed {
                block: 120,
                reveals: Vec::new(),
            }]
        );
        record(&mut state, &events);
        assert!(state.held.is_empty());
    }

    #[test]
    fn a_lagging_head_raises_the_revealed_block_to_the_state_block() {
        let mut state = started();
        record(&mut state, &[Event::Tick { block: 130 }]);
        let b = reveal("bob", 125, 126);
        let events = poll(&state, 126, vec![b.clone()]);
        assert_eq!(
            events,
            vec![Event::Revealed {
                block: 130,
                reveals: vec![b],
            }]
        );
        record(&mut state, &events);
    }

    #[test]
    fn crowned_and_weights_carry_the_head_raised_to_the_state_block() {
        let mut state = started();
        record(&mut state, &[Event::Tick { block: 130 }]);
        let crowned = |head| Observation::Crowned {
            entry: 1,
            digest: Digest::of(b"winner"),
            hotkey: "alice".into(),
            reign: 1,
            head,
            head_hash: "0xhead".into(),
            location: "file:///kings".into(),
        };
        let crowned_at = |block| Event::Crowned {
            entry: 1,
            digest: Digest::of(b"winner"),
            hotkey: "alice".into(),
            reign: 1,
            block,
            block_hash: "0xhead".into(),
            location: Some("file:///kings".into()),
        };
        assert_eq!(events(&state, crowned(140)), vec![crowned_at(140)]);
        assert_eq!(events(&state, crowned(125)), vec![crowned_at(130)]);

        let weights = vec![Weight {
            hotkey: "alice".into(),
            weight: 1.0,
        }];
        let set = |head| Observation::WeightsSet {
            head,
            weights: weights.clone(),
        };
        let set_at = |block| Event::WeightsSet {
            block,
            weights: weights.clone(),
        };
        assert_eq!(events(&state, set(131)), vec![set_at(131)]);
        assert_eq!(events(&state, set(129)), vec![set_at(130)]);
    }
}
