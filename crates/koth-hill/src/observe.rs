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

// Tested in `tests/observe.rs`: each decision, the polls that give no event and the block
// raising.
