//! Who owns a digest (PROTOCOL §3): the commitment in the earliest commit block, whoever
//! revealed first. A revealed commitment is held until the chain's reveals up to its commit
//! block + W have been read (W = the competition's reveal delay, the longest reveal lag
//! accepted), then held reveals are decided in (commit block, hotkey, payload) order. A copier
//! can only learn the bytes once the owner's commitment is on chain (the miner publishes after
//! that), so its commitment is in a later block; choosing a shorter reveal lag to reveal first
//! does not help it. A reveal later than W is refused `reveal_too_late`.

mod common;

use common::{reveal, rules};
use koth_core::{Digest, RejectCode};
use koth_hill::feed::{api_state, dashboard_json};
use koth_hill::{apply, Effect, Event, Outcome, Reveal, ValidatorState};

/// Applies events (panicking on a refusal) and keeps the log.
struct Hill {
    state: ValidatorState,
    log: Vec<Event>,
}

impl Hill {
    fn new(w: Option<u64>) -> Self {
        let mut h = Hill {
            state: ValidatorState::new(),
            log: Vec::new(),
        };
        h.feed(Event::Started { rules: rules(w) });
        h
    }

    fn feed(&mut self, event: Event) -> Vec<Effect> {
        let fx = apply(&mut self.state, &event)
            .unwrap_or_else(|e| panic!("{} refused: {e}", event.kind()));
        self.log.push(event);
        fx
    }

    fn revealed(&mut self, block: u64, reveals: Vec<Reveal>) -> Vec<Effect> {
        self.feed(Event::Revealed { block, reveals })
    }

    /// Replaying the log from scratch rebuilds exactly this state, held reveals included.
    fn assert_replays(&self) {
        let mut fresh = ValidatorState::new();
        for e in &self.log {
            apply(&mut fresh, e).unwrap();
        }
        assert_eq!(fresh, self.state);
    }
}

/// `(hotkey, outcome)` of every answer among `fx`.
fn answers(fx: &[Effect]) -> Vec<(String, Outcome)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Answer {
                hotkey, outcome, ..
            } => Some((hotkey.clone(), outcome.clone())),
            _ => None,
        })
        .collect()
}

/// The hotkey whose entry the core started gating, if it started one.
fn gated(h: &Hill, fx: &[Effect]) -> Option<String> {
    fx.iter().find_map(|e| match e {
        Effect::RunGate { entry, .. } => h.state.entries.get(entry).map(|e| e.hotkey.clone()),
        _ => None,
    })
}

fn refusal(outcome: &Outcome) -> (RejectCode, &str) {
    match outcome {
        Outcome::Rejected {
            code,
            gate: None,
            message,
        } => (*code, message.as_str()),
        other => panic!("expected a refusal at intake, got {other:?}"),
    }
}

#[test]
fn a_copier_who_commits_later_but_reveals_first_does_not_get_the_digest() {
    let w = 10;
    let d = Digest::of(b"the owner's checkpoint");
    let owner = reveal("5Owner", 1, d, 110, 120);
    // The copier listed the store once the owner's commitment was on chain (block 110), so it
    // commits in block 111 at the earliest. It reveals after 1 block instead of 10, and its
    // hotkey sorts before the owner's.
    let copier = reveal("5Aaa", 2, d, 111, 112);
    assert!(copier.hotkey < owner.hotkey);

    let mut h = Hill::new(Some(w));
    let fx = h.revealed(112, vec![copier.clone()]);
    assert!(
        fx.is_empty(),
        "the copier's reveal is held, not decided: {fx:?}"
    );
    assert_eq!(h.state.held, vec![copier.clone()]);
    assert!(!h.state.digests.contains_key(&d), "nobody owns it yet");
    // Held reveals are shown as such: in the feed with their release block, counted on the
    // dashboard, not in the queue.
    let feed = api_state(&h.state);
    assert_eq!(feed.held.len(), 1);
    assert_eq!(
        (
            feed.held[0].hotkey.as_str(),
            feed.held[0].digest,
            feed.held[0].release_block
        ),
        ("5Aaa", Some(d), 121)
    );
    assert!(feed.queue.is_empty() && feed.current.is_none());
    assert_eq!(dashboard_json(&h.state).stats.held, 1);

    // The chain head passes the copier's release block, but a tick does not certify that the
    // reveals up to it were read: nothing is decided on a tick.
    let fx = h.feed(Event::Tick { block: 130 });
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(h.state.held.len(), 1);

    // The poll that reads the owner's reveal (late, at 130) decides both, owner first.
    let fx = h.revealed(130, vec![owner.clone()]);
    assert_eq!(gated(&h, &fx).as_deref(), Some("5Owner"));
    let a = answers(&fx);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].0, "5Aaa");
    let (code, message) = refusal(&a[0].1);
    assert_eq!(code, RejectCode::DigestOwned);
    assert!(
        message.contains("at block 110 by hotkey 5Owner") && message.contains("at block 111"),
        "{message}"
    );
    let rec = &h.state.digests[&d];
    assert_eq!(
        (rec.owner.as_deref(), rec.commit_block),
        (Some("5Owner"), Some(110))
    );
    assert!(h.state.held.is_empty());
    h.assert_replays();

    // Polled on time, the owner is decided at its release block 120 and the copier at 121.
    let mut h = Hill::new(Some(w));
    assert!(h.revealed(112, vec![copier.clone()]).is_empty());
    let fx = h.revealed(120, vec![owner.clone()]);
    assert_eq!(gated(&h, &fx).as_deref(), Some("5Owner"));
    assert!(answers(&fx).is_empty());
    assert_eq!(h.state.held, vec![copier.clone()]);
    let fx = h.revealed(121, Vec::new());
    let a = answers(&fx);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(
        (a[0].0.as_str(), refusal(&a[0].1).0),
        ("5Aaa", RejectCode::DigestOwned)
    );
    h.assert_replays();

    // Both read in one poll, in either order: the same decision.
    for reveals in [
        vec![copier.clone(), owner.clone()],
        vec![owner.clone(), copier.clone()],
    ] {
        let mut h = Hill::new(Some(w));
        let fx = h.revealed(125, reveals);
        assert_eq!(gated(&h, &fx).as_deref(), Some("5Owner"));
        let a = answers(&fx);
        assert_eq!(
            (a.len(), a[0].0.as_str(), refusal(&a[0].1).0),
            (1, "5Aaa", RejectCode::DigestOwned)
        );
    }
}

#[test]
fn a_reveal_later_than_w_is_refused_and_one_at_w_is_not_delayed() {
    let w = 3;
    let d = Digest::of(b"slow");
    let mut h = Hill::new(Some(w));
    // Lag 4 > W = 3: refused at once, naming both blocks and W; the digest stays free.
    let fx = h.revealed(114, vec![reveal("5Slow", 1, d, 110, 114)]);
    let a = answers(&fx);
    assert_eq!(a.len(), 1, "{a:?}");
    let (code, message) = refusal(&a[0].1);
    assert_eq!(code, RejectCode::RevealTooLate);
    assert_eq!(code.code(), "reveal_too_late");
    for part in ["block 110", "block 114", "at most 3"] {
        assert!(message.contains(part), "{part}: {message}");
    }
    assert!(!h.state.digests.contains_key(&d));
    assert!(h.state.held.is_empty());
    let finished = h.state.history.back().unwrap();
    assert_eq!(
        (
            finished.digest,
            finished.commit_block,
            finished.reveal_block
        ),
        (Some(d), 110, 114)
    );

    // Lag exactly W (every reveal on the embedded chain): decided in the event that reads it,
    // nothing held. The same digest from another hotkey, committed later, is now its own.
    let fx = h.revealed(115, vec![reveal("5Fast", 2, d, 112, 115)]);
    assert_eq!(gated(&h, &fx).as_deref(), Some("5Fast"));
    assert!(h.state.held.is_empty());
    h.assert_replays();
}

#[test]
fn equal_commit_blocks_go_to_the_hotkey_that_sorts_first() {
    // Two commitments of one digest in the same block can only be independent holders of the
    // same bytes (nobody could copy them before either was included). The tie is broken by
    // hotkey, then payload, whichever revealed first.
    let w = 5;
    let d = Digest::of(b"same bytes");
    let bob = reveal("5Bob", 1, d, 110, 111);
    let alice = reveal("5Alice", 2, d, 110, 115);
    let mut h = Hill::new(Some(w));
    assert!(h.revealed(111, vec![bob.clone()]).is_empty());
    let fx = h.revealed(115, vec![alice.clone()]);
    assert_eq!(gated(&h, &fx).as_deref(), Some("5Alice"));
    let a = answers(&fx);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].0, "5Bob");
    let (code, message) = refusal(&a[0].1);
    assert_eq!(code, RejectCode::DigestOwned);
    assert!(
        message.contains("same block (110) by hotkey 5Alice"),
        "{message}"
    );
    h.assert_replays();

    // One hotkey's two commitments in one block: the payload orders them, and the later one
    // in that order replaces the earlier in the queue.
    let mut h = Hill::new(Some(w));
    let (d1, d2) = (Digest::of(b"one"), Digest::of(b"two"));
    let mut second = reveal("5Carol", 3, d2, 120, 125);
    let mut first = reveal("5Carol", 3, d1, 120, 125);
    if second.payload < first.payload {
        std::mem::swap(&mut first, &mut second);
    }
    let fx = h.revealed(125, vec![second.clone(), first.clone()]);
    // Both are news (one block, different payloads); decided in payload order.
    assert_eq!(h.state.next_entry, 2, "{fx:?}");
    let first_digest: Digest = first.payload.split('|').nth(2).unwrap().parse().unwrap();
    assert_eq!(h.state.digests[&first_digest].first_entry, Some(0));
}

#[test]
fn a_log_started_before_the_rule_keeps_its_old_order() {
    // A `started` event without `reveal_delay_blocks` (written before reveals were held) reads
    // back as `None`, and such a log replays as it was run: nothing held, no lag refused, the
    // first reveal owns a digest.
    let mut json = serde_json::to_value(Event::Started {
        rules: rules(Some(3)),
    })
    .unwrap();
    json["rules"]
        .as_object_mut()
        .unwrap()
        .remove("reveal_delay_blocks");
    let started: Event = serde_json::from_value(json).unwrap();
    let Event::Started { rules: old } = &started else {
        panic!()
    };
    assert_eq!(old.reveal_delay_blocks, None);
    let mut h = Hill::new(None);
    let d = Digest::of(b"x");
    let fx = h.revealed(
        130,
        vec![
            reveal("5Owner", 1, d, 110, 120),
            reveal("5Aaa", 2, d, 111, 112),
        ],
    );
    assert_eq!(gated(&h, &fx).as_deref(), Some("5Aaa"));
    assert!(h.state.held.is_empty());
    // The new rules serialise W, and the field round-trips.
    let text = serde_json::to_string(&rules(Some(7))).unwrap();
    assert!(text.contains("\"reveal_delay_blocks\":7"), "{text}");
}
