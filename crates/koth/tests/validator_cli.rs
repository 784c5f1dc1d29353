//! The real `koth validator run` process, SIGKILLed at random moments — mid-duel and mid-crown
//! included — and restarted, at least 20 times. In the end every submission has exactly one
//! answer, no entry was crowned twice, the king is the last accepted challenger, the chain's
//! weights pay the king, and nothing is lost.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use koth_chain::{Chain, EmbeddedChain};
use koth_validator::devkit::{self, key, payload, put, register, TinyOptions};
use koth_validator::event::Event;
use koth_validator::state::Phase;
use support::koth;

fn start(config: &Path, crown_delay_ms: u64) -> Child {
    koth()
        .args(["validator", "run", "--config"])
        .arg(config)
        .env("KOTH_FAULT_CROWN_DELAY_MS", crown_delay_ms.to_string())
        .env("KOTH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn state_of(log: &Path) -> Option<koth_validator::ValidatorState> {
    koth_validator::log::open_read_only(log)
        .and_then(|l| l.load_state())
        .ok()
}

/// A cheap deterministic generator for kill timings (the test must not depend on luck to
/// pass, but the moments should vary).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = TinyOptions {
        seq_len: 64,
        n_max: 3072,
        batch_size: 32,
        tokens: 600_000,
        ..TinyOptions::default()
    };
    let net = devkit::tiny_network(tmp.path(), &opts).unwrap();
    let chain = EmbeddedChain::open(&net.chain_path).unwrap();

    // Challengers: some genuinely better (trained), some indistinguishable from the king (a
    // re-saved copy with one weight nudged: a long duel that keeps the king), one bad config.
    let mut submissions = Vec::new();
    let miners: Vec<_> = (30u8..37).map(key).collect();
    for m in &miners {
        register(&chain, m).unwrap();
    }
    for (i, m) in miners.iter().enumerate() {
        let dir = tmp.path().join(format!("c{i}"));
        match i % 3 {
            0 => devkit::train_better(&net.king_dir, &dir, 5 + 5 * i, 64).unwrap(),
            1 => {
                let king = koth_model::Model::load(
                    &net.king_dir,
                    koth_model::DType::F32,
                    &koth_model::Device::Cpu,
                )
                .unwrap();
                let nudged = king
                    .map_tensors(|name, t| {
                        if name.ends_with("lm_head.weight") {
                            Ok(t.affine(1.0 + 1e-6 * (i as f64 + 1.0), 0.0)?)
                        } else {
                            Ok(t.clone())
                        }
                    })
                    .unwrap();
                devkit::save_model(&nudged, &dir).unwrap();
            }
            _ => {
                std::fs::create_dir_all(&dir).unwrap();
                for e in std::fs::read_dir(&net.king_dir).unwrap() {
                    let e = e.unwrap();
                    std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
                }
                let mut cfg: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap())
                        .unwrap();
                cfg["hidden_size"] = serde_json::json!(64 + i);
                std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
            }
        }
        let digest = put(&net.store_url, &dir).unwrap();
        chain
            .commit(m, &payload(&net.store_url, &digest, m))
            .unwrap();
        submissions.push(m.account().to_ss58());
    }

    let log = net.work_dir.join("validator.db");
    let mut rng = Lcg(42);
    let mut kills = 0;
    let mut mid_duel = 0;
    let mut mid_crown = 0;
    let deadline = Instant::now() + Duration::from_secs(150);
    while kills < 60 && Instant::now() < deadline {
        // The log as the previous (killed) process left it: a targeted phase counts only once
        // this process has replayed it (its `recovered` is logged), not the stale one.
        let recovered_before = state_of(&log).map(|s| s.counters.recoveries);
        let mut child = start(&net.config_path, 600);
        // Kill either at a random moment or as soon as a targeted phase shows in the log.
        let target = rng.next() % 3; // 0: random, 1: mid-duel, 2: mid-crown
        let wait = Duration::from_millis(300 + rng.next() % 1500);
        let t0 = Instant::now();
        let phase_at_kill;
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let s = state_of(&log);
            let this_run = match (&s, recovered_before) {
                (Some(s), Some(before)) => s.counters.recoveries > before,
                (Some(_), None) => true,
                (None, _) => false,
            };
            let phase = s
                .as_ref()
                .filter(|_| this_run)
                .and_then(|s| s.active.as_ref().map(|a| a.phase.clone()));
            let hit = matches!(
                (&phase, target),
                (Some(Phase::Duel { running: true, .. }), 1) | (Some(Phase::Crowning { .. }), 2)
            );
            if hit
                || t0.elapsed()
                    > wait.max(Duration::from_millis(if target == 0 { 0 } else { 4000 }))
            {
                phase_at_kill = phase;
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        match phase_at_kill {
            Some(Phase::Duel { running: true, .. }) => mid_duel += 1,
            Some(Phase::Crowning { .. }) => mid_crown += 1,
            _ => {}
        }
        if let Some(s) = state_of(&log) {
            let all_done =
                s.history.len() == submissions.len() && s.queue.is_empty() && s.active.is_none();
            // At least 20 restarts that replayed the log (a kill at a random moment may land
            // before a start got that far).
            if all_done && kills >= 20 && s.counters.recoveries >= 20 {
                break;
            }
        }
    }
    assert!(kills >= 20, "only {kills} kills before the deadline");
    assert!(mid_duel >= 1, "no kill landed mid-duel ({kills} kills)");
    assert!(mid_crown >= 1, "no kill landed mid-crown ({kills} kills)");

    // Let it finish undisturbed.
    let mut child = start(&net.config_path, 0);
    let finish = Instant::now() + Duration::from_secs(120);
    let state = loop {
        std::thread::sleep(Duration::from_millis(200));
        if let Some(s) = state_of(&log) {
            let done = s.history.len() == submissions.len()
                && s.queue.is_empty()
                && s.active.is_none()
                && s.weights.last_set_block.is_some()
                && !s.weights.dirty;
            if done {
                break s;
            }
        }
        assert!(
            Instant::now() < finish,
            "validator did not finish after the kills"
        );
    };
    child.kill().unwrap();
    child.wait().unwrap();

    // Invariants from the log itself.
    let ro = koth_validator::log::open_read_only(&log).unwrap();
    let mut crowned_entries: BTreeMap<u64, u32> = BTreeMap::new();
    let mut last_accepted = None;
    let mut entry_digest = BTreeMap::new();
    ro.replay(|e| {
        if let Event::DuelFinished { entry, verdict } = &e.event {
            if verdict.accepted {
                last_accepted = Some(*entry);
            }
        }
        Ok(())
    })
    .unwrap();
    // Entry → digest from the state history (all finished entries are in it).
    for f in &state.history {
        if let Some(d) = f.digest {
            entry_digest.insert(f.id, d);
        }
    }
    // Every crown names its entry's digest, and no entry is crowned twice.
    ro.replay(|e| {
        if let Event::Crowned { entry, digest, .. } = &e.event {
            *crowned_entries.entry(*entry).or_default() += 1;
            assert_eq!(
                Some(digest),
                entry_digest.get(entry),
                "crowned the wrong digest"
            );
        }
        Ok(())
    })
    .unwrap();
    assert!(
        crowned_entries.values().all(|&n| n == 1),
        "an entry was crowned twice: {crowned_entries:?}"
    );
    let last_accepted = last_accepted.expect("at least one challenger must have been crowned");
    let king = state.king().unwrap();
    assert_eq!(
        king.entry,
        Some(last_accepted),
        "the king is not the last accepted challenger"
    );
    // Every submission answered exactly once.
    let mut answers: BTreeMap<&str, u32> = BTreeMap::new();
    for f in &state.history {
        *answers.entry(f.hotkey.as_str()).or_default() += 1;
    }
    for s in &submissions {
        assert_eq!(
            answers.get(s.as_str()),
            Some(&1),
            "{s} answered {:?} times",
            answers.get(s.as_str())
        );
    }
    assert_eq!(state.counters.answered as usize, submissions.len());
    assert!(state.counters.recoveries >= 20);
    // Nothing charged to a miner for our crashes: no gate refusal except the bad config ones.
    for f in &state.history {
        if let koth_validator::event::Outcome::Rejected { code, .. } = &f.outcome {
            assert_eq!(code.code(), "config_mismatch", "{f:?}");
        }
    }
    // The chain pays the king.
    let uid = chain
        .metagraph()
        .unwrap()
        .neurons
        .iter()
        .find(|n| Some(n.hotkey.to_ss58()) == king.hotkey)
        .unwrap()
        .uid;
    let w = chain.weights().unwrap();
    let v = w
        .iter()
        .find(|v| v.validator_hotkey == net.validator.account())
        .expect("validator weights on chain");
    assert_eq!(v.weights, vec![(uid, 65535)]);
    eprintln!(
        "kills {kills}: {mid_duel} mid-duel, {mid_crown} mid-crown; crowns {}",
        crowned_entries.len()
    );
}

#[test]
fn config_errors_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let net = devkit::tiny_network(
        tmp.path(),
        &TinyOptions {
            tokens: 20_000,
            ..TinyOptions::default()
        },
    )
    .unwrap();
    let text = std::fs::read_to_string(&net.config_path).unwrap();
    let cases = [
        (
            "listen = \"127.0.0.1:0\"",
            "listen = \"nonsense\"",
            "`listen`",
        ),
        ("name = \"validator\"", "name = \"nobody\"", "key.name"),
        ("path = \"chain.db\"", "path = \"missing.db\"", "chain.path"),
        (
            "worker = \"in-process\"",
            "worker = \"ftp://x\"",
            "eval.worker",
        ),
        ("dtype = \"f32\"", "dtype = \"f7\"", "eval.dtype"),
    ];
    for (from, to, needle) in cases {
        assert!(text.contains(from), "{from}");
        let bad = tmp.path().join("bad.toml");
        std::fs::write(&bad, text.replace(from, to)).unwrap();
        let out = koth()
            .args(["validator", "run", "--config"])
            .arg(&bad)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{needle}: {err}");
    }
    // An unregistered key: a fresh key in the keystore that the chain does not know.
    koth_chain::Keystore::new(&net.keystore)
        .insert("stranger", &key(99))
        .unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        text.replace("name = \"validator\"", "name = \"stranger\""),
    )
    .unwrap();
    let out = koth()
        .args(["validator", "run", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not registered"), "{err}");
    // status reads a log read-only.
    let out = koth()
        .args(["validator", "status", "--log"])
        .arg(net.work_dir.join("validator.db"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "status on a missing log must fail");
}
