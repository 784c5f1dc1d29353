//! The SQLite event log: append/replay, durability across reopen, refusal of foreign, damaged
//! or tampered files, and the append-only triggers.

mod common;

use std::path::Path;

use common::*;
use koth_core::{Digest, RejectCode};
use koth_validator::log::{open_read_only, LogError, APPLICATION_ID};
use koth_validator::{apply, Effect, Event, EventLog, Gate, ValidatorState, VerdictSummary};
use rusqlite::Connection;

/// Drive a realistic sequence through log + core the way the shell does: check, append, apply.
fn scripted_run(log: &mut EventLog) -> ValidatorState {
    let mut state = ValidatorState::new();
    let mut feed = |state: &mut ValidatorState, e: Event| -> Vec<Effect> {
        koth_validator::check(state, &e).expect("valid");
        log.append(&e).expect("append");
        apply(state, &e).expect("apply")
    };
    feed(&mut state, Event::Started { rules: rules() });
    let reveals: Vec<_> = (0..6)
        .map(|i| {
            let hk = format!("hk{i}");
            reveal(&hk, Some(i as u16), payload(digest(i), &hk), 101 + i)
        })
        .collect();
    let mut effects = feed(
        &mut state,
        Event::Revealed {
            block: 110,
            reveals,
        },
    );
    let mut block = 110;
    let mut round = 0u64;
    while let Some(fx) = command(&effects) {
        round += 1;
        effects = match fx {
            Effect::RunGate { entry, gate, .. } => {
                feed(&mut state, Event::GateStarted { entry, gate });
                if entry == 2 && gate == Gate::Config {
                    feed(
                        &mut state,
                        Event::GateFailed {
                            entry,
                            gate,
                            code: RejectCode::ConfigMismatch,
                            message: "key `hidden_size`: king has 256, challenger has 512".into(),
                        },
                    )
                } else if entry == 3 && gate == Gate::Fetch && round < 10 {
                    let fx = feed(
                        &mut state,
                        Event::InfraFault {
                            entry,
                            reason: "store unreachable".into(),
                        },
                    );
                    assert!(fx.is_empty());
                    block += 1;
                    feed(&mut state, Event::Tick { block })
                } else {
                    feed(&mut state, Event::GatePassed { entry, gate })
                }
            }
            Effect::StartDuel {
                entry, king, seed, ..
            } => {
                feed(&mut state, Event::DuelStarted { entry, king, seed });
                feed(
                    &mut state,
                    Event::DuelProgress {
                        entry,
                        n: 64,
                        // Values that need every bit of an f64 to round-trip.
                        mu_hat: 0.1 + 0.2,
                        lower: Some(-1.0 / 3.0),
                        upper: Some(std::f64::consts::PI / 1e7),
                    },
                );
                feed(
                    &mut state,
                    Event::DuelFinished {
                        entry,
                        verdict: VerdictSummary {
                            accepted: entry % 2 == 0,
                            n: 128,
                            mu_hat: 1.0 / 7.0,
                            lower: Some(1.0 / 11.0),
                            // Some verdicts without an upper bound: absent from the row.
                            upper: (entry % 3 != 0).then_some(1.0 / 3.0),
                            verdict_digest: Digest::of(&entry.to_le_bytes()),
                            verdict_path: format!("verdicts/{entry}.json"),
                        },
                    },
                )
            }
            Effect::Crown {
                entry,
                digest,
                hotkey,
                reign,
                ..
            } => {
                block += 1;
                feed(
                    &mut state,
                    Event::Crowned {
                        entry,
                        digest,
                        hotkey,
                        reign,
                        block,
                        block_hash: format!("0x{block:x}"),
                        location: None,
                    },
                )
            }
            _ => unreachable!(),
        };
    }
    state
}

#[test]
fn replaying_the_log_rebuilds_the_live_state_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("validator.db");
    let live = {
        let mut log = EventLog::create(&path).unwrap();
        let live = scripted_run(&mut log);
        assert!(live.counters.crowns >= 2, "{:?}", live.counters);
        assert_eq!(live.counters.rejected.get("config_mismatch"), Some(&1));
        assert_eq!(log.load_state().unwrap(), live);
        live
    };
    // Reopen: same state, and appends continue the sequence.
    let mut log = EventLog::open(&path).unwrap();
    let n = log.len();
    assert_eq!(log.load_state().unwrap(), live);
    let mut state = live.clone();
    let tick = Event::Tick {
        block: state.block + 5,
    };
    let seq = log.append(&tick).unwrap();
    apply(&mut state, &tick).unwrap();
    assert_eq!(seq as u64, n + 1);
    drop(log);
    let ro = open_read_only(&path).unwrap();
    assert_eq!(ro.load_state().unwrap(), state);
    let log = EventLog::open(&path).unwrap();
    let tail = log.read_from(seq - 1, 10).unwrap();
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[1].event, tick);
    assert_eq!(tail[1].seq, seq);
    assert!(log.read_from(1, 3).unwrap().len() == 3);
}

#[test]
fn an_old_log_whose_verdict_bounds_are_numbers_still_replays() {
    // A game up to a running duel, appended as the shell appends it.
    let mut h = Harness::new(rules());
    let alice = payload(digest(1), "alice");
    let fx = h.reveal(vec![reveal("alice", Some(1), alice, START + 1)]);
    let Effect::StartDuel {
        entry, king, seed, ..
    } = pass_until_duel(&mut h, fx)
    else {
        panic!("no duel")
    };
    h.feed(Event::DuelStarted { entry, king, seed });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let mut log = EventLog::create(&path).unwrap();
    for e in &h.log {
        log.append(e).unwrap();
    }
    let seq = log.len() as i64 + 1;
    drop(log);
    // The `duel_finished` row as a build before the bounds were optional wrote it: both bounds
    // are numbers (the upper one the tested mean standing in for a bound not computed).
    let vd = Digest::of(b"old verdict");
    let json = format!(
        r#"{{"kind":"duel_finished","entry":{entry},"verdict":{{"accepted":false,"n":512,"mu_hat":0.001,"lower":-0.002,"upper":0.001,"verdict_digest":"{vd}","verdict_path":"verdicts/old.json"}}}}"#
    );
    raw(&path)
        .execute(
            "INSERT INTO events (seq, at_unix_ms, v, kind, json) VALUES (?1, 0, 1, 'duel_finished', ?2)",
            rusqlite::params![seq, json],
        )
        .unwrap();
    let replayed = EventLog::open(&path).unwrap().load_state().unwrap();
    // The numbers read back as `Some`: the same state as the event applied live.
    h.feed(Event::DuelFinished {
        entry,
        verdict: VerdictSummary {
            accepted: false,
            n: 512,
            mu_hat: 0.001,
            lower: Some(-0.002),
            upper: Some(0.001),
            verdict_digest: vd,
            verdict_path: "verdicts/old.json".into(),
        },
    });
    assert_eq!(replayed, h.state);
    assert_eq!(replayed.history.len(), 1);
}

fn raw(path: &Path) -> Connection {
    Connection::open(path).unwrap()
}

fn small_log(path: &Path) {
    let mut log = EventLog::create(path).unwrap();
    log.append(&Event::Started { rules: rules() }).unwrap();
    log.append(&Event::Tick { block: 200 }).unwrap();
}

#[test]
fn updates_deletes_and_out_of_order_inserts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.db");
    small_log(&path);
    let conn = raw(&path);
    for sql in [
        "UPDATE events SET json = '{}' WHERE seq = 2",
        "DELETE FROM events WHERE seq = 2",
        "DELETE FROM events",
        "INSERT INTO events (seq, at_unix_ms, v, kind, json) VALUES (5, 0, 1, 'tick', '{\"kind\":\"tick\",\"block\":300}')",
        "INSERT OR REPLACE INTO events (seq, at_unix_ms, v, kind, json) VALUES (2, 0, 1, 'tick', '{\"kind\":\"tick\",\"block\":300}')",
    ] {
        let err = conn.execute(sql, []).unwrap_err().to_string();
        assert!(err.contains("append-only") || err.contains("UNIQUE"), "{sql}: {err}");
    }
    drop(conn);
    let log = EventLog::open(&path).unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log.load_state().unwrap().block, 200);
}

#[test]
fn foreign_empty_garbage_and_newer_files_are_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    // Not SQLite at all.
    let garbage = dir.path().join("garbage.db");
    let bytes = b"this is not a database, it is a miner's config.json".repeat(100);
    std::fs::write(&garbage, &bytes).unwrap();
    let err = EventLog::open(&garbage).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
    assert_eq!(
        std::fs::read(&garbage).unwrap(),
        bytes,
        "the file was modified"
    );
    // Empty file: never initialised over.
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let err = EventLog::open(&empty).unwrap_err();
    assert!(matches!(err, LogError::Foreign { found: 0, .. }), "{err}");
    assert!(matches!(
        EventLog::open_or_create(&empty).unwrap_err(),
        LogError::Foreign { .. }
    ));
    assert!(matches!(
        EventLog::create(&empty).unwrap_err(),
        LogError::Exists { .. }
    ));
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
    // Another application's SQLite file.
    let other = dir.path().join("other.db");
    raw(&other)
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1); PRAGMA application_id = 42;")
        .unwrap();
    let err = EventLog::open(&other).unwrap_err();
    assert!(matches!(err, LogError::Foreign { found: 42, .. }), "{err}");
    assert!(err.to_string().contains("not a koth event log"), "{err}");
    // A koth log from a newer build.
    let newer = dir.path().join("newer.db");
    small_log(&newer);
    raw(&newer)
        .execute_batch("PRAGMA user_version = 99;")
        .unwrap();
    assert!(matches!(
        EventLog::open(&newer).unwrap_err(),
        LogError::Schema { found: 99, .. }
    ));
    // A koth log whose append-only trigger was dropped.
    let tampered = dir.path().join("tampered.db");
    small_log(&tampered);
    raw(&tampered)
        .execute_batch("DROP TRIGGER events_no_delete;")
        .unwrap();
    let err = EventLog::open(&tampered).unwrap_err();
    assert!(err.to_string().contains("events_no_delete"), "{err}");
    // Missing file: open refuses, open_or_create creates.
    let missing = dir.path().join("missing.db");
    assert!(matches!(
        EventLog::open(&missing).unwrap_err(),
        LogError::Missing { .. }
    ));
    let created = EventLog::open_or_create(&missing).unwrap();
    assert!(created.is_empty());
    let _ = APPLICATION_ID;
}

#[test]
fn rows_that_do_not_decode_or_apply_stop_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    // A row that is not an event.
    let path = dir.path().join("bad-json.db");
    small_log(&path);
    raw(&path)
        .execute(
            "INSERT INTO events (seq, at_unix_ms, v, kind, json) VALUES (3, 0, 1, 'tick', '{\"kind\":\"tick\",\"blok\":1}')",
            [],
        )
        .unwrap();
    let log = EventLog::open(&path).unwrap();
    let err = log.load_state().unwrap_err();
    assert!(matches!(err, LogError::BadRow { seq: 3, .. }), "{err}");
    // A row of an unknown event version.
    let path = dir.path().join("bad-version.db");
    small_log(&path);
    raw(&path)
        .execute(
            "INSERT INTO events (seq, at_unix_ms, v, kind, json) VALUES (3, 0, 2, 'tick', '{\"kind\":\"tick\",\"block\":300}')",
            [],
        )
        .unwrap();
    let err = EventLog::open(&path).unwrap().load_state().unwrap_err();
    assert!(err.to_string().contains("version 2"), "{err}");
    // A well-formed event that does not fit the state before it.
    let path = dir.path().join("bad-apply.db");
    small_log(&path);
    raw(&path)
        .execute(
            "INSERT INTO events (seq, at_unix_ms, v, kind, json) VALUES (3, 0, 1, 'gate_passed', '{\"kind\":\"gate_passed\",\"entry\":7,\"gate\":\"fetch\"}')",
            [],
        )
        .unwrap();
    let err = EventLog::open(&path).unwrap().load_state().unwrap_err();
    assert!(matches!(err, LogError::Replay { seq: 3, .. }), "{err}");
    // A log that does not begin with `started`.
    let path = dir.path().join("headless.db");
    let mut log = EventLog::create(&path).unwrap();
    log.append(&Event::Tick { block: 1 }).unwrap();
    let err = log.load_state().unwrap_err();
    assert!(matches!(err, LogError::BadRow { seq: 1, .. }), "{err}");
}

#[test]
fn damaged_pages_are_detected_before_anything_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.db");
    {
        let mut log = EventLog::create(&path).unwrap();
        log.append(&Event::Started { rules: rules() }).unwrap();
        for b in 0..400u64 {
            log.append(&Event::Tick { block: 200 + b }).unwrap();
        }
    }
    // Closing the last connection checkpoints the WAL into the main file.
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 3 * 4096, "{}", bytes.len());
    for b in &mut bytes[2 * 4096 + 16..2 * 4096 + 2048] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let result = EventLog::open(&path).and_then(|log| log.load_state());
    assert!(result.is_err(), "a damaged log was accepted");
}

#[test]
fn a_second_writer_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.db");
    let first = EventLog::create(&path).unwrap();
    let err = EventLog::open(&path).unwrap_err();
    assert!(matches!(err, LogError::Locked { .. }), "{err}");
    drop(first);
    EventLog::open(&path).unwrap();
}

const COMPETITION: &str = r#"
name = "journal-test"
netuid = 1
genesis_king = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
start_block = 10

[architecture]
family = "llama"
locked_keys = ["hidden_size"]

[data]
bundle = "bundle.json"
bundle_sha256 = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
seq_len = 128

[duel]
test = "sequential"
alpha = 0.01
delta = { absolute = 0.001 }
n_max = 512
batch_size = 32

[intake]
reveal_delay_blocks = 2
size_cap_bytes = 1000

[reward]
policy = "winner_take_all"

[weights]
interval_blocks = 20
"#;

#[test]
fn journal_starts_recovers_and_refuses_another_competition() {
    use koth_core::competition::Competition;
    use koth_validator::{Journal, JournalError, Reveal};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.db");
    let comp = Competition::from_toml_str(COMPETITION).unwrap();
    let (mut j, fx) = Journal::open(&path, &comp).unwrap();
    assert!(fx.is_empty());
    assert_eq!(
        j.state().rules.as_ref().unwrap().competition_sha256,
        comp.sha256()
    );
    let d = digest(1);
    let fx = j
        .record(Event::Revealed {
            block: 20,
            reveals: vec![Reveal {
                hotkey: "alice".into(),
                uid: Some(1),
                payload: payload(d, "alice"),
                commit_block: 15,
                reveal_block: 17,
                block_hash: "0x11".into(),
            }],
        })
        .unwrap();
    assert!(matches!(
        command(&fx),
        Some(Effect::RunGate { entry: 0, .. })
    ));
    // A refused event is not logged.
    let n = j.log().len();
    let err = j
        .record(Event::GatePassed {
            entry: 0,
            gate: Gate::Config,
        })
        .unwrap_err();
    assert!(matches!(err, JournalError::Refused { .. }), "{err}");
    assert_eq!(j.log().len(), n);
    // An over-long message is refused; clipped it is accepted.
    j.record(Event::GateStarted {
        entry: 0,
        gate: Gate::Fetch,
    })
    .unwrap();
    let long = "x".repeat(10_000);
    assert!(j
        .record(Event::InfraFault {
            entry: 0,
            reason: long.clone(),
        })
        .is_err());
    j.record(Event::InfraFault {
        entry: 0,
        reason: koth_validator::event::clip_text(&long),
    })
    .unwrap();
    let live = j.state().clone();
    drop(j);
    // Restart: state replayed, `recovered` appended.
    let (j, _) = Journal::open(&path, &comp).unwrap();
    let mut expected = live;
    expected.counters.recoveries += 1;
    assert_eq!(j.state(), &expected);
    drop(j);
    // The same log with another competition file is refused and left as it was.
    let other =
        Competition::from_toml_str(&COMPETITION.replace("netuid = 1", "netuid = 2")).unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = Journal::open(&path, &other).unwrap_err();
    assert!(
        matches!(err, JournalError::CompetitionMismatch { .. }),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn rules_come_from_the_competition_file() {
    use koth_core::competition::Competition;
    let comp = Competition::from_toml_str(COMPETITION).unwrap();
    let r = koth_validator::Rules::from_competition(&comp);
    assert_eq!(r.competition_sha256, Digest::of(COMPETITION.as_bytes()));
    assert_eq!(r.start_block, 10);
    assert_eq!(r.weights_interval_blocks, 20);
    assert_eq!(r.max_infra_retries, 5);
    assert!(!r.near_copy && !r.trainability_probe);
}
