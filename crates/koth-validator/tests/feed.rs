//! The feeds are pure functions of the state: check their shape and values on a small game.

mod common;

use common::*;
use koth_core::{Digest, RejectCode};
use koth_validator::feed::{api_state, dashboard_json, metrics_text, sse_frame};
use koth_validator::{Effect, Event, VerdictSummary};

fn verdict(accepted: bool) -> VerdictSummary {
    VerdictSummary {
        accepted,
        n: 96,
        mu_hat: 0.25,
        lower: Some(0.125),
        // As the bootstrap rule's crown: the rule computes no upper bound.
        upper: None,
        verdict_digest: Digest::of(b"verdict"),
        verdict_path: "verdicts/0.json".into(),
    }
}

#[test]
fn dashboard_has_teutonics_keys_and_follows_the_game() {
    let mut h = Harness::new(rules());
    let d = serde_json::to_value(dashboard_json(&h.state)).unwrap();
    assert_eq!(d["king"]["king_digest"], Digest::of(b"genesis").to_string());
    assert_eq!(d["king"]["model_repo"], "file:///kings/genesis");
    assert_eq!(d["king"]["reign_number"], 0);
    assert!(d["king"]["hotkey"].is_null());

    let fx = h.reveal(vec![
        reveal("alice", Some(1), payload(digest(1), "alice"), 101),
        reveal("bob", Some(2), payload(digest(2), "bob"), 102),
        reveal("carol", Some(3), payload(digest(3), "carol"), 103),
        reveal("mallory", Some(4), payload(digest(1), "mallory"), 104),
    ]);
    let Effect::StartDuel {
        entry, king, seed, ..
    } = pass_until_duel(&mut h, fx)
    else {
        panic!()
    };
    h.feed(Event::DuelStarted { entry, king, seed });
    h.feed(Event::DuelProgress {
        entry,
        n: 32,
        mu_hat: 0.5,
        lower: Some(0.25),
        upper: Some(0.75),
    });
    let d = serde_json::to_value(dashboard_json(&h.state)).unwrap();
    assert_eq!(d["current_eval"]["hotkey"], "alice");
    assert_eq!(d["current_eval"]["stage"], "duel");
    assert_eq!(d["current_eval"]["lower"], 0.25);
    let queue: Vec<&str> = d["queue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["hotkey"].as_str().unwrap())
        .collect();
    assert_eq!(queue, vec!["bob", "carol"]);
    assert_eq!(d["queue"][0]["position"], 1);
    assert_eq!(d["history"][0]["error_code"], "digest_owned");

    let fx = h.feed(Event::DuelFinished {
        entry,
        verdict: verdict(true),
    });
    let Some(Effect::Crown {
        entry,
        digest: dg,
        hotkey,
        reign,
        ..
    }) = command(&fx)
    else {
        panic!()
    };
    h.feed(Event::Crowned {
        entry,
        digest: dg,
        hotkey,
        reign,
        block: 120,
        block_hash: "0xab".into(),
        location: None,
    });
    let d = serde_json::to_value(dashboard_json(&h.state)).unwrap();
    assert_eq!(d["king"]["king_digest"], digest(1).to_string());
    assert_eq!(d["king"]["hotkey"], "alice");
    assert_eq!(d["king"]["uid"], 1);
    assert_eq!(d["king"]["reign_number"], 1);
    assert_eq!(d["king"]["model_repo"], "s3://bucket/alice");
    assert_eq!(d["history"][0]["hotkey"], "alice");
    assert_eq!(d["history"][0]["crowned"], true);
    assert_eq!(d["history"][0]["mu_hat"], 0.25);
    assert_eq!(d["history"][0]["lower"], 0.125);
    // Teutonic's shape keeps the key: a bound the rule did not compute is null, not μ̂.
    assert!(d["history"][0]["upper"].is_null(), "{}", d["history"][0]);
    assert_eq!(d["weights"][0]["hotkey"], "alice");
    assert_eq!(d["current_eval"]["hotkey"], "bob");

    // The wire shape, and the typed feed readers deserialise from it, unchanged by the trip.
    let typed = api_state(&h.state);
    let s = serde_json::to_value(&typed).unwrap();
    let back: koth_validator::feed::StateFeed = serde_json::from_value(s.clone()).unwrap();
    assert_eq!(back, typed);
    let dash = dashboard_json(&h.state);
    let back: koth_validator::feed::DashboardFeed =
        serde_json::from_value(serde_json::to_value(&dash).unwrap()).unwrap();
    assert_eq!(back, dash);
    assert_eq!(s["king"]["reign"], 1);
    assert_eq!(s["lineage"].as_array().unwrap().len(), 2);
    assert_eq!(s["lineage"][1]["reign"], 0);
    assert_eq!(s["current"]["phase"], "gate");
    assert_eq!(s["current"]["gate"], "fetch");
    assert_eq!(s["queue"][0]["hotkey"], "carol");
    assert_eq!(s["queue"][0]["class"], "normal");
    assert_eq!(s["history"][0]["result"], "crowned");
    assert_eq!(s["history"][0]["lower"], 0.125);
    let crowned = s["history"][0].as_object().unwrap();
    assert!(!crowned.contains_key("upper"), "{crowned:?}");
    assert_eq!(s["history"][1]["code"], "digest_owned");
    assert_eq!(
        s["history"][1]["explain"],
        RejectCode::DigestOwned.explain()
    );
    assert!(s["history"][1]["message"]
        .as_str()
        .unwrap()
        .contains("alice"));
    assert_eq!(s["rewards"]["expected"][0]["weight"], 1.0);
    assert!(s["rewards"]["why"][0]["why"]
        .as_str()
        .unwrap()
        .contains("alice"));
    assert_eq!(s["rewards"]["pending"], true);
    assert_eq!(s["counters"]["crowns"], 1);

    let m = metrics_text(&h.state);
    assert!(m.contains("koth_validator_crowns_total 1\n"), "{m}");
    assert!(m.contains("koth_validator_reign 1\n"), "{m}");
    assert!(
        m.contains("koth_validator_rejected_total{code=\"digest_owned\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("koth_validator_rejected_total{code=\"near_copy\"} 0\n"),
        "{m}"
    );
    // Every sample line is `name[{labels}] value`.
    for line in m.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(name.starts_with("koth_validator_"), "{line}");
        value.parse::<u64>().unwrap();
    }
}

#[test]
fn feeds_of_an_unstarted_state_are_well_formed() {
    let s = koth_validator::ValidatorState::new();
    let d = serde_json::to_value(dashboard_json(&s)).unwrap();
    assert!(d["king"].is_null());
    assert_eq!(d["queue"].as_array().unwrap().len(), 0);
    let a = serde_json::to_value(api_state(&s)).unwrap();
    assert_eq!(a["started"], false);
    assert!(a["rewards"].is_null());
}

#[test]
fn sse_frames_carry_seq_kind_and_one_line_of_json() {
    let logged = koth_validator::log::LoggedEvent {
        seq: 42,
        at_unix_ms: 0,
        event: Event::GateFailed {
            entry: 3,
            gate: koth_validator::Gate::Config,
            code: RejectCode::ConfigMismatch,
            message: "line one\nline two".into(),
        },
    };
    let frame = sse_frame(&logged);
    let lines: Vec<&str> = frame.split('\n').collect();
    assert_eq!(lines[0], "id: 42");
    assert_eq!(lines[1], "event: gate_failed");
    assert!(lines[2].starts_with("data: {"), "{frame}");
    assert_eq!(&lines[3..], &["", ""]);
    let back: Event = serde_json::from_str(lines[2].trim_start_matches("data: ")).unwrap();
    assert_eq!(back, logged.event);
}
