//! The acceptance test of `[train] command` (slow tier): `koth miner once` with the command set
//! to examples/trainers/hf_continue.py (PyTorch + transformers from PyPI, on the CPU; installed
//! by scripts/trainer-venv.sh when missing) against the devnet-mini king. The trainer's
//! checkpoint passes `koth miner check` and wins the local duel, is published and committed, and
//! a real `koth validator run` crowns it.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use koth_chain::{Chain, EmbeddedChain};
use koth_core::Digest;
use koth_miner::devkit::{mini_network, MiniOptions};
use support::{free_port, koth, repo};

/// The python with the pinned torch and transformers (installed from PyPI when missing).
fn trainer_python() -> String {
    let out = Command::new("bash")
        .arg(repo().join("scripts/trainer-venv.sh"))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/trainer-venv.sh failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .expect("scripts/trainer-venv.sh printed no python")
        .to_string()
}

const TRAIN: &str = r#"device = "cpu"
dtype = "f32"
lr = 3e-3
min_lr = 3e-4
warmup_steps = 4
steps = 40
batch_size = 8
seq_len = 64
time_limit_s = 900"#;

#[test]
fn a_transformers_trainer_is_checked_published_and_crowned() {
    let python = trainer_python();
    let script = repo().join("examples/trainers/hf_continue.py");
    let tmp = tempfile::tempdir().unwrap();
    let net = mini_network(tmp.path(), &MiniOptions::default()).unwrap();
    let port = free_port();
    let feed = format!("http://127.0.0.1:{port}");
    let train = format!(
        "{TRAIN}\ncommand = \"'{python}' '{}'\"",
        script.canonicalize().unwrap().display()
    );
    let miner_toml = net
        .write_miner_config(0, Some(&feed), 64, 11, &train)
        .unwrap();
    // A second miner with the same data and seed runs `koth miner check` (its own work_dir).
    let checker_toml = net
        .write_miner_config(1, Some(&feed), 64, 11, &train)
        .unwrap();

    let log = tmp.path().join("miner.log");
    let miner = koth()
        .args(["miner", "once", "--log-json", "--config"])
        .arg(&miner_toml)
        .env("KOTH_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let miner_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // The validator is not running yet (the miner follows the chain: the genesis king); wait
    // for the commitment.
    let chain = EmbeddedChain::open(&net.chain_path).unwrap();
    let hotkey = net.miners[0].1.account();
    let deadline = Instant::now() + Duration::from_secs(600);
    let payload = loop {
        if let Some(r) = chain
            .revealed_commitments()
            .unwrap()
            .into_iter()
            .find(|r| r.hotkey == hotkey)
        {
            break r.payload;
        }
        assert!(
            Instant::now() < deadline,
            "no commitment; log:\n{}",
            miner_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let digest: Digest = payload.split('|').nth(2).unwrap().parse().unwrap();
    let challenger = tmp.path().join("miner-1/challengers").join(digest.hex());

    // Hugging Face layout, the king's config byte for byte, no code.
    let mut names: Vec<String> = std::fs::read_dir(&challenger)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.contains(&"model.safetensors".to_string()),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.ends_with(".py")), "{names:?}");
    assert_eq!(
        std::fs::read(challenger.join("config.json")).unwrap(),
        std::fs::read(net.king_dir.join("config.json")).unwrap()
    );
    let trainer_log = std::fs::read_to_string(tmp.path().join("miner-1/trainer.log")).unwrap();
    assert!(trainer_log.contains("step 40/40"), "{trainer_log}");

    // `koth miner check` on it: every local gate passes and the local duel crowns.
    let out = koth()
        .args(["miner", "check", "--json", "--config"])
        .arg(&checker_toml)
        .arg(&challenger)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "koth miner check: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let check: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(check["gates"]["refusal"].is_null(), "{check}");
    for (i, gate) in ["fetch", "config", "tensors", "weights"].iter().enumerate() {
        assert_eq!(check["gates"]["gates"][i][0], *gate, "{check}");
        assert_eq!(check["gates"]["gates"][i][1], "passed", "{check}");
    }
    assert_eq!(check["local"]["crown"], true, "{check}");
    assert_eq!(check["king"], net.king.to_string().as_str(), "{check}");

    // The validator crowns it.
    let validator_toml = koth_validator::devkit::write_validator_config(
        &net.root,
        "validator",
        &format!("127.0.0.1:{port}"),
        &net.store_url,
        100,
    )
    .unwrap();
    let mut validator = koth()
        .args(["validator", "run", "--config"])
        .arg(&validator_toml)
        .env("KOTH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.path().join("validator.log")).unwrap())
        .spawn()
        .unwrap();
    let out = miner.wait_with_output().unwrap();
    validator.kill().unwrap();
    validator.wait().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "koth miner once: {:?}\n{stdout}\n{}",
        out.status,
        miner_log()
    );
    let record: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(record["status"], "submitted", "{record}");
    assert_eq!(
        record["challenger"],
        digest.to_string().as_str(),
        "{record}"
    );
    assert_eq!(record["local"]["verdict"], "crown", "{record}");
    assert_eq!(record["validator"]["outcome"], "crowned", "{record}");
    // The loop ran the same gates before publishing.
    assert!(
        miner_log().contains("\"event\":\"checked\""),
        "{}",
        miner_log()
    );
}
