//! SIGKILL crash test of the core and its log: a child process runs a validator (a scripted
//! shell around a real `Journal` on a real SQLite log) and is killed with SIGKILL again and
//! again — mid-duel and mid-crown on purpose — then restarted on the same log. In the end
//! every submission has exactly one answer, no entry was crowned twice, the king is the last
//! accepted challenger, and everything the child acknowledged as appended is in the log.
//!
//! The child is this same test binary, re-run with `--ignored --exact crash_child` and the log
//! path in `KOTH_CRASH_CHILD_LOG`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use koth_core::competition::Competition;
use koth_core::{Digest, RejectCode};
use koth_validator::state::Phase;
use koth_validator::{
    apply, Effect, EntryId, Event, EventLog, Journal, Outcome, Reveal, ValidatorState,
    VerdictSummary,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

const COMPETITION: &str = r#"
name = "crash-test"
netuid = 7
genesis_king = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
genesis_location = "file:///kings/genesis"
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
size_cap_bytes = 1_000_000_000
max_infra_retries = 3

[reward]
policy = "winner_take_all"

[weights]
interval_blocks = 20
"#;

const KILLS: usize = 24;

fn competition() -> Competition {
    Competition::from_toml_str(COMPETITION).expect("test competition parses")
}

fn phase_name(state: &ValidatorState) -> &'static str {
    match state.active.as_ref().map(|a| &a.phase) {
        None => "idle",
        Some(Phase::Gate { .. }) => "gate",
        Some(Phase::Duel { .. }) => "duel",
        Some(Phase::Crowning { .. }) => "crowning",
    }
}

/// The next event a (scripted) shell would report, derived from the state alone so that it
/// carries on correctly after any restart. `chaos` allows failures.
fn next_event(state: &ValidatorState, rng: &mut ChaCha20Rng, chaos: bool) -> Option<Event> {
    let block = state.block;
    if state.weights.dirty && rng.random_bool(0.3) {
        return Some(Event::WeightsSet {
            block,
            weights: state.expected_weights(),
        });
    }
    let Some(active) = &state.active else {
        if state.is_paused() || !state.queue.is_empty() {
            return Some(Event::Tick { block: block + 1 });
        }
        if !chaos {
            return None;
        }
        // New submissions: three new miners, sometimes a copy of an earlier digest.
        let round = state.next_entry;
        let reveals: Vec<Reveal> = (0..3u64)
            .map(|i| {
                let hotkey = format!("m{round}-{i}");
                let d = if i == 2 && round > 3 && rng.random_bool(0.3) {
                    Digest::of(format!("ckpt-{}-0", round - 3).as_bytes())
                } else {
                    Digest::of(format!("ckpt-{round}-{i}").as_bytes())
                };
                Reveal {
                    hotkey: hotkey.clone(),
                    uid: Some((round * 3 + i) as u16),
                    payload: format!("v4|s3://b/{hotkey}|{d}|{hotkey}"),
                    commit_block: block + 1,
                    reveal_block: block + 3,
                    block_hash: format!("0x{:x}", block + 3),
                }
            })
            .collect();
        return Some(Event::Revealed {
            block: block + 3,
            reveals,
        });
    };
    let entry = active.entry;
    let e = &state.entries[&entry];
    Some(match &active.phase {
        Phase::Gate {
            gate,
            started: false,
        } => Event::GateStarted { entry, gate: *gate },
        Phase::Gate {
            gate,
            started: true,
        } => {
            let roll = rng.random_range(0..100);
            if chaos && roll < 5 {
                Event::InfraFault {
                    entry,
                    reason: "store timed out".into(),
                }
            } else if roll < 10 {
                let code = gate.codes()[0];
                Event::GateFailed {
                    entry,
                    gate: *gate,
                    code,
                    message: format!("crafted {code}"),
                }
            } else {
                Event::GatePassed { entry, gate: *gate }
            }
        }
        Phase::Duel {
            king,
            seed,
            running: false,
            ..
        } => Event::DuelStarted {
            entry,
            king: *king,
            seed: seed.clone(),
        },
        Phase::Duel { progress, .. } => {
            let n = progress.as_ref().map_or(0, |p| p.n);
            if chaos && rng.random_bool(0.05) {
                Event::InfraFault {
                    entry,
                    reason: "eval worker lost".into(),
                }
            } else if n < 128 {
                Event::DuelProgress {
                    entry,
                    n: n + 32,
                    mu_hat: 0.01,
                    lower: Some(-0.01),
                    upper: Some(0.03),
                }
            } else {
                Event::DuelFinished {
                    entry,
                    verdict: VerdictSummary {
                        accepted: rng.random_bool(0.5),
                        n,
                        mu_hat: 0.01,
                        lower: Some(0.002),
                        upper: Some(0.02),
                        verdict_digest: Digest::of(&entry.to_le_bytes()),
                        verdict_path: format!("verdicts/{entry}.json"),
                    },
                }
            }
        }
        Phase::Crowning { reign, .. } => Event::Crowned {
            entry,
            digest: e.digest,
            hotkey: e.hotkey.clone(),
            reign: *reign,
            block,
            block_hash: format!("0x{block:x}"),
            location: None,
        },
    })
}

#[test]
#[ignore = "child process of sigkill_at_any_instant_loses_nothing; run by it"]
fn crash_child() {
    let Ok(path) = std::env::var("KOTH_CRASH_CHILD_LOG") else {
        return;
    };
    let (mut journal, _effects) = Journal::open(Path::new(&path), &competition()).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(journal.log().len());
    let stdout = std::io::stdout();
    loop {
        let Some(event) = next_event(journal.state(), &mut rng, true) else {
            continue;
        };
        journal.record(event).unwrap();
        let phase = phase_name(journal.state());
        {
            let mut out = stdout.lock();
            writeln!(out, "ack {} {phase}", journal.log().len()).unwrap();
            out.flush().unwrap();
        }
        if phase == "duel" || phase == "crowning" {
            // Work takes time: give the parent a window to kill us in these phases.
            std::thread::sleep(std::time::Duration::from_millis(15));
        }
    }
}

/// Run the child until it acknowledges an event in `phase` (or `patience` acks pass), then
/// SIGKILL it. Returns the last acknowledged log length.
fn run_and_kill(exe: &Path, log: &Path, phase: &str, patience: usize) -> u64 {
    let mut child = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KOTH_CRASH_CHILD_LOG", log)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut last = 0;
    let mut seen = 0;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let mut parts = line.split_whitespace();
        if parts.next() != Some("ack") {
            continue;
        }
        last = parts.next().and_then(|s| s.parse().ok()).unwrap_or(last);
        seen += 1;
        if parts.next() == Some(phase) || seen >= patience {
            break;
        }
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("reap child");
    assert!(!status.success(), "child exited by itself: {status}");
    last
}

#[test]
fn sigkill_at_any_instant_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log_path: PathBuf = dir.path().join("validator.db");
    let exe = std::env::current_exe().unwrap();
    for kill in 0..KILLS {
        let phase = ["duel", "crowning", "gate"][kill % 3];
        let acked = run_and_kill(&exe, &log_path, phase, 60 + kill * 7);
        // Everything acknowledged is durable; the log replays cleanly.
        let log = EventLog::open(&log_path).unwrap();
        assert!(
            log.len() >= acked,
            "kill {kill}: acknowledged {acked} events, log has {}",
            log.len()
        );
        log.load_state().unwrap();
    }
    // Restart once more in-process and drain: no new submissions, no faults.
    let (mut journal, _) = Journal::open(&log_path, &competition()).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    let mut guard = 0;
    while let Some(event) = next_event(journal.state(), &mut rng, false) {
        if journal.state().entries.is_empty() && !journal.state().weights.dirty {
            break;
        }
        journal.record(event).unwrap();
        guard += 1;
        assert!(guard < 100_000, "does not drain");
    }
    let final_state = journal.state().clone();
    drop(journal);

    // Replay the whole log, collecting what every event caused.
    let log = EventLog::open(&log_path).unwrap();
    let mut state = ValidatorState::new();
    let mut answers: BTreeMap<EntryId, Vec<Outcome>> = BTreeMap::new();
    let mut crowned: BTreeMap<EntryId, usize> = BTreeMap::new();
    let mut last_accepted = None;
    let (mut recoveries, mut mid_duel, mut mid_crown) = (0, 0, 0);
    log.replay(|logged| {
        match &logged.event {
            Event::Recovered => {
                recoveries += 1;
                match phase_name(&state) {
                    "duel" => mid_duel += 1,
                    "crowning" => mid_crown += 1,
                    _ => {}
                }
            }
            Event::Crowned { entry, digest, .. } => {
                *crowned.entry(*entry).or_insert(0) += 1;
                last_accepted = Some(*digest);
            }
            _ => {}
        }
        for fx in apply(&mut state, &logged.event).unwrap() {
            if let Effect::Answer { entry, outcome, .. } = fx {
                answers.entry(entry).or_default().push(outcome);
            }
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(state, final_state, "replay differs from the live state");
    eprintln!(
        "{} events, {recoveries} restarts ({mid_duel} mid-duel, {mid_crown} mid-crown), {} submissions, {} crowns",
        log.len(),
        state.next_entry,
        state.counters.crowns
    );
    assert_eq!(recoveries, KILLS);
    assert!(mid_duel >= 3, "only {mid_duel} kills landed mid-duel");
    assert!(mid_crown >= 3, "only {mid_crown} kills landed mid-crown");
    assert!(
        state.next_entry >= 15,
        "too few submissions to mean anything"
    );
    // Every submission: exactly one verdict or one refusal (or superseded, which cannot happen
    // here: every miner submits once).
    for id in 0..state.next_entry {
        let got = answers.get(&id).map_or(0, Vec::len);
        assert_eq!(
            got,
            1,
            "entry {id} answered {got} times: {:?}",
            answers.get(&id)
        );
    }
    let copies = answers
        .values()
        .flatten()
        .filter(|o| {
            matches!(
                o,
                Outcome::Rejected {
                    code: RejectCode::DigestOwned,
                    ..
                }
            )
        })
        .count();
    eprintln!("{copies} copies refused");
    assert!(
        crowned.values().all(|n| *n == 1),
        "an entry was crowned twice"
    );
    assert_eq!(
        state.king().map(|k| k.digest),
        Some(last_accepted.unwrap_or(competition().genesis_king))
    );
}
