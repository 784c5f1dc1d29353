//! `observe::events`: what the shell observed becomes the events it logs, and nothing else. A
//! chain poll gives `tick` only when the head moved, `revealed` only with reveals the state does
//! not know or when a held reveal falls due (an empty one), and no event when nothing is new, so
//! the log does not grow with every poll; every event's block is the head read, raised to the
//! state's block when the head lags.

mod common;

use common::{reveal, rules, START};
use koth_core::Digest;
use koth_hill::observe::{events, Observation};
use koth_hill::{apply, Event, Reveal, ValidatorState, Weight};

/// The reveal delay of these games.
const W: u64 = 10;

fn started() -> ValidatorState {
    let mut state = ValidatorState::new();
    apply(
        &mut state,
        &Event::Started {
            rules: rules(Some(W)),
        },
    )
    .unwrap();
    state
}

/// `hotkey`'s commitment in block `commit`, revealed in block `revealed`.
fn committed(hotkey: &str, commit: u64, revealed: u64) -> Reveal {
    reveal(hotkey, 1, Digest::of(hotkey.as_bytes()), commit, revealed)
}

fn poll(state: &ValidatorState, head: u64, reveals: Vec<Reveal>) -> Vec<Event> {
    events(state, Observation::Chain { head, reveals })
}

fn tick(block: u64) -> Event {
    Event::Tick { block }
}

fn revealed(block: u64, reveals: Vec<Reveal>) -> Event {
    Event::Revealed { block, reveals }
}

/// Records `events` as the shell does: each must apply to the state the ones before it left.
fn record(state: &mut ValidatorState, events: &[Event]) {
    for e in events {
        apply(state, e).unwrap_or_else(|err| panic!("{} refused: {err}", e.kind()));
    }
}

#[test]
fn a_poll_with_nothing_new_gives_no_event() {
    let mut state = started();
    assert_eq!(poll(&state, START, vec![]), []);
    record(&mut state, &[tick(120)]);
    assert_eq!(poll(&state, 120, vec![]), []);
    // A head read behind the state's block is no news either.
    assert_eq!(poll(&state, 110, vec![]), []);
}

#[test]
fn a_moved_head_gives_a_tick_alone() {
    let state = started();
    assert_eq!(state.block, START);
    assert_eq!(poll(&state, START + 1, vec![]), [tick(START + 1)]);
}

#[test]
fn a_new_reveal_is_logged_and_a_known_one_is_not() {
    let mut state = started();
    let a = committed("alice", 105, 106);
    let events = poll(&state, 106, vec![a.clone()]);
    assert_eq!(events, [tick(106), revealed(106, vec![a.clone()])]);
    record(&mut state, &events);
    assert_eq!(state.held, vec![a.clone()]);

    // The chain keeps reporting it: known now, and not due before 105 + W = 115.
    assert_eq!(poll(&state, 106, vec![a.clone()]), []);
    assert_eq!(poll(&state, 110, vec![a.clone()]), [tick(110)]);

    // Of a poll, only the new reveal is carried; without a tick when the head did not move.
    let b = committed("bob", 105, 106);
    let events = poll(&state, 106, vec![a.clone(), b.clone()]);
    assert_eq!(events, [revealed(106, vec![b])]);
    record(&mut state, &events);
    assert_eq!(state.held.len(), 2);

    // A later commitment by a known hotkey is new.
    let a2 = committed("alice", 107, 108);
    assert_eq!(
        poll(&state, 108, vec![a, a2.clone()]),
        [tick(108), revealed(108, vec![a2])]
    );
}

#[test]
fn a_held_reveal_falling_due_gives_an_empty_revealed() {
    let mut state = started();
    let a = committed("alice", 105, 106);
    let events = poll(&state, 106, vec![a.clone()]);
    record(&mut state, &events);
    assert_eq!(state.held.len(), 1);

    // Due at 105 + W = 115: not at 114; at 115, with nothing new revealed.
    assert_eq!(poll(&state, 114, vec![a.clone()]), [tick(114)]);
    let events = poll(&state, 115, vec![a.clone()]);
    assert_eq!(events, [tick(115), revealed(115, vec![])]);
    record(&mut state, &events);
    assert!(state.held.is_empty());
    assert_eq!(poll(&state, 115, vec![a]), []);
}

#[test]
fn a_lagging_head_releases_a_due_reveal_at_the_state_block() {
    // The reveal was held by a `revealed` at 106 and the state has since ticked past its
    // release (115); the next head read lags behind the state: no tick, but a `revealed` at the
    // state's block decides it.
    let mut state = started();
    record(
        &mut state,
        &[revealed(106, vec![committed("alice", 105, 106)]), tick(120)],
    );
    assert_eq!(state.held.len(), 1);
    let events = poll(&state, 112, vec![]);
    assert_eq!(events, [revealed(120, vec![])]);
    record(&mut state, &events);
    assert!(state.held.is_empty());
}

#[test]
fn a_lagging_head_raises_the_revealed_block_to_the_state_block() {
    let mut state = started();
    record(&mut state, &[tick(130)]);
    let b = committed("bob", 125, 126);
    let events = poll(&state, 126, vec![b.clone()]);
    assert_eq!(events, [revealed(130, vec![b])]);
    record(&mut state, &events);
}

#[test]
fn crowned_and_weights_carry_the_head_raised_to_the_state_block() {
    let mut state = started();
    record(&mut state, &[tick(130)]);
    let digest = Digest::of(b"winner");
    let crowned = |head| Observation::Crowned {
        entry: 1,
        digest,
        hotkey: "alice".into(),
        reign: 1,
        head,
        head_hash: "0xhead".into(),
        location: "file:///kings".into(),
    };
    let crowned_at = |block| Event::Crowned {
        entry: 1,
        digest,
        hotkey: "alice".into(),
        reign: 1,
        block,
        block_hash: "0xhead".into(),
        location: Some("file:///kings".into()),
    };
    assert_eq!(events(&state, crowned(140)), [crowned_at(140)]);
    assert_eq!(events(&state, crowned(125)), [crowned_at(130)]);

    let weights = vec![Weight {
        hotkey: "alice".into(),
        weight: 1.0,
    }];
    let set = |head| {
        events(
            &state,
            Observation::WeightsSet {
                head,
                weights: weights.clone(),
            },
        )
    };
    let set_at = |block| Event::WeightsSet {
        block,
        weights: weights.clone(),
    };
    assert_eq!(set(131), [set_at(131)]);
    assert_eq!(set(129), [set_at(130)]);
}
