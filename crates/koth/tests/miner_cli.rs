//! `koth miner` as real processes against a real `koth validator run` on the devnet-mini
//! corpus: two miners with different learning rates train from the genesis king, both
//! challengers have a lower held-out loss than the king, both are submitted, and the validator
//! crowns the better one. Plus: config errors name the key.

mod support;

use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use koth_chain::{Chain, EmbeddedChain};
use koth_core::Digest;
use koth_miner::devkit::{mini_network, MiniOptions};
use koth_miner::follow::FeedClient;
use koth_model::{DType, Device, Model, TokenIds};
use support::{free_port, koth, train};

fn spawn_miner(config: &Path, force: bool, log: &Path) -> Child {
    let mut c = koth();
    c.args(["miner", "once", "--log-json", "--config"])
        .arg(config);
    if force {
        c.arg("--force");
    }
    c.env("KOTH_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Mean held-out loss of the checkpoint in `dir` on `n` windows of the holdout bundle.
fn holdout_loss(dir: &Path, bundle: &Path, n: u64, seq_len: u32) -> f64 {
    let data = koth_data::Dataset::open(bundle).unwrap();
    let sample = data
        .sample(b"miner-cli/holdout-check", None, n, seq_len)
        .unwrap();
    let model = Model::load(dir, DType::F32, &Device::Cpu).unwrap();
    let mut sum = 0f64;
    for chunk in sample.windows.chunks(32) {
        let tokens = data.read_windows(chunk).unwrap();
        let ids = TokenIds::new(tokens, chunk.len(), seq_len as usize).unwrap();
        sum += model
            .sequence_losses(&ids)
            .unwrap()
            .iter()
            .map(|&x| f64::from(x))
            .sum::<f64>();
    }
    sum / sample.windows.len() as f64
}

fn record_of(out: &Output, log: &Path) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "miner failed ({:?}); stdout: {stdout}; log:\n{}",
        out.status,
        std::fs::read_to_string(log).unwrap_or_default()
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("stdout {stdout:?}: {e}"))
}

#[test]
fn two_miners_train_from_the_genesis_king_and_the_better_one_is_crowned() {
    let tmp = tempfile::tempdir().unwrap();
    let net = mini_network(tmp.path(), &MiniOptions::default()).unwrap();
    let port = free_port();
    let feed = format!("http://127.0.0.1:{port}");
    let validator_toml = koth_validator::devkit::write_validator_config(
        &net.root,
        "validator",
        &format!("127.0.0.1:{port}"),
        &net.store_url,
        100,
    )
    .unwrap();
    let good = net
        .write_miner_config(0, Some(&feed), 64, 11, &train("3e-3", "3e-4"))
        .unwrap();
    let weak = net
        .write_miner_config(1, Some(&feed), 64, 12, &train("1e-4", "1e-5"))
        .unwrap();

    // Both miners start from the genesis king. The validator starts once both have committed
    // (until then the miners find no feed and follow the chain, which names the genesis king),
    // so neither sees a crown while training.
    let good_log = tmp.path().join("good.log");
    let weak_log = tmp.path().join("weak.log");
    let good_child = spawn_miner(&good, false, &good_log);
    let weak_child = spawn_miner(&weak, true, &weak_log);
    let chain = EmbeddedChain::open(&net.chain_path).unwrap();
    let hotkeys: Vec<_> = net.miners.iter().map(|(_, k)| k.account()).collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let revealed = chain.revealed_commitments().unwrap();
        if hotkeys
            .iter()
            .all(|h| revealed.iter().any(|r| &r.hotkey == h))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the miners did not both commit; logs:\n{}\n{}",
            std::fs::read_to_string(&good_log).unwrap_or_default(),
            std::fs::read_to_string(&weak_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut validator = koth()
        .args(["validator", "run", "--config"])
        .arg(&validator_toml)
        .env("KOTH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.path().join("validator.log")).unwrap())
        .spawn()
        .unwrap();

    let good_out = good_child.wait_with_output().unwrap();
    let weak_out = weak_child.wait_with_output().unwrap();
    let good_rec = record_of(&good_out, &good_log);
    let weak_rec = record_of(&weak_out, &weak_log);
    let genesis = net.king.to_string();
    for r in [&good_rec, &weak_rec] {
        assert_eq!(
            r["king"],
            genesis.as_str(),
            "trained from the genesis king: {r}"
        );
        assert_eq!(r["submitted"], true, "{r}");
        assert_eq!(r["steps"], 40, "{r}");
    }
    assert_eq!(good_rec["local"]["verdict"], "crown", "{good_rec}");
    assert_eq!(good_rec["validator"]["outcome"], "crowned", "{good_rec}");
    let weak_outcome = weak_rec["validator"]["outcome"].as_str().unwrap_or("");
    assert!(
        weak_outcome == "crowned" || weak_outcome == "kept_king",
        "the weaker challenger gets a duel verdict: {weak_rec}"
    );
    let good_digest: Digest = good_rec["challenger"].as_str().unwrap().parse().unwrap();
    let weak_digest: Digest = weak_rec["challenger"].as_str().unwrap().parse().unwrap();
    assert_ne!(good_digest, weak_digest);

    // The validator's feed ends with the better challenger as king.
    let client = FeedClient::new(&feed, Duration::from_secs(10)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let state = loop {
        if let Ok(state) = client.state() {
            let king = state.king.as_ref().map(|k| k.digest);
            if king == Some(good_digest) && state.history.len() == 2 {
                break state;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the better challenger was not crowned"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    validator.kill().unwrap();
    validator.wait().unwrap();
    assert_eq!(
        state.king.and_then(|k| k.hotkey),
        Some(net.miners[0].1.account().to_ss58())
    );

    // Both challengers beat the king on the held-out source; the better one beats the weaker.
    let good_dir = tmp
        .path()
        .join("miner-1/challengers")
        .join(good_digest.hex());
    let weak_dir = tmp
        .path()
        .join("miner-2/challengers")
        .join(weak_digest.hex());
    let king_loss = holdout_loss(&net.king_dir, &net.holdout_bundle, 128, 64);
    let good_loss = holdout_loss(&good_dir, &net.holdout_bundle, 128, 64);
    let weak_loss = holdout_loss(&weak_dir, &net.holdout_bundle, 128, 64);
    eprintln!("held-out loss: king {king_loss:.4}, lr 3e-3 {good_loss:.4}, lr 1e-4 {weak_loss:.4}");
    assert!(good_loss < king_loss, "{good_loss} vs king {king_loss}");
    assert!(weak_loss < king_loss, "{weak_loss} vs king {king_loss}");
    assert!(good_loss < weak_loss, "{good_loss} vs {weak_loss}");

    // attempts.jsonl holds one line per attempt, as the contract says.
    let lines = std::fs::read_to_string(tmp.path().join("miner-1/attempts.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(lines.trim()).unwrap();
    assert_eq!(line["challenger"], good_digest.to_string().as_str());
    assert_eq!(line["validator"]["outcome"], "crowned");
    assert!(line["train_loss"].as_f64().unwrap() > 0.0);
    assert!(
        line["local"]["challenger_nll"].as_f64().unwrap()
            < line["local"]["king_nll"].as_f64().unwrap()
    );
}

#[test]
fn config_errors_name_the_key_and_exit_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let net = mini_network(
        tmp.path(),
        &MiniOptions {
            miners: 1,
            ..MiniOptions::default()
        },
    )
    .unwrap();
    let ok_train = train("1e-3", "1e-4");
    let cases = [
        (
            ok_train.replace("steps = 40", "steps = 40\nstepz = 3"),
            "stepz",
        ),
        (ok_train.replace("lr = 1e-3", "lr = -1.0"), "train.lr"),
        (
            ok_train.replace("min_lr = 1e-4", "min_lr = 1.0"),
            "train.min_lr",
        ),
        (
            ok_train.replace("device = \"cpu\"", "device = \"tpu:0\""),
            "train.device",
        ),
        (ok_train.replace("batch_size = 8\n", ""), "batch_size"),
    ];
    for (train, key) in cases {
        let path = net.write_miner_config(0, None, 64, 1, &train).unwrap();
        let out = koth()
            .args(["miner", "once", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{key}: accepted");
        assert!(stderr.contains(key), "{key}: {stderr}");
        assert!(stderr.contains("miner-1.toml"), "names the file: {stderr}");
    }
    // An unregistered hotkey and a missing competition file are named too.
    let ok = net.write_miner_config(0, None, 64, 1, &ok_train).unwrap();
    let text = std::fs::read_to_string(&ok).unwrap();
    std::fs::write(
        &ok,
        text.replace(
            "competition = \"competition.toml\"",
            "competition = \"nope.toml\"",
        ),
    )
    .unwrap();
    let out = koth()
        .args(["miner", "once", "--config"])
        .arg(&ok)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("nope.toml"), "{stderr}");
}

#[test]
fn the_local_rule_is_the_validators_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let net = mini_network(tmp.path(), &MiniOptions::default()).unwrap();
    let text = std::fs::read_to_string(&net.competition_path).unwrap();
    let mut bootstrap = koth_core::competition::Competition::from_toml_str(&text)
        .unwrap()
        .to_file();
    bootstrap.duel.test = koth_core::competition::DuelTest::Bootstrap;
    bootstrap.duel.bootstrap_resamples = Some(500);
    bootstrap.duel.delta = koth_core::competition::Delta::Relative(0.001);
    let variants = [text.clone(), bootstrap.to_toml().unwrap()];
    for t in variants {
        let c = koth_core::competition::Competition::from_toml_str(&t).unwrap();
        let n_max = u64::from(c.duel.n_max);
        assert_eq!(
            koth_miner::judge::rule_for(&c, n_max),
            koth_validator::duel_run::rule_of(&c),
            "{t}"
        );
    }
}

/// A challenger that the validator's rule, run locally, would not crown is neither stored nor
/// committed (the miner pays nothing for it) unless `--force` is given.
#[test]
fn a_challenger_the_local_duel_would_not_crown_is_not_submitted() {
    let tmp = tempfile::tempdir().unwrap();
    let net = mini_network(tmp.path(), &MiniOptions::default()).unwrap();
    // A learning rate so small that the challenger is the king to within rounding: the local
    // duel keeps the king.
    let config = net
        .write_miner_config(0, None, 64, 21, &train("1e-9", "1e-10"))
        .unwrap();
    let log = tmp.path().join("miner.log");
    let out = spawn_miner(&config, false, &log)
        .wait_with_output()
        .unwrap();
    let rec = record_of(&out, &log);
    assert_eq!(rec["status"], "not_submitted", "{rec}");
    assert_eq!(rec["submitted"], false, "{rec}");
    assert_eq!(rec["king"], net.king.to_string().as_str(), "{rec}");
    assert_ne!(rec["local"]["verdict"], "crown", "{rec}");
    assert_eq!(rec["local"]["crown"], false, "{rec}");
    let challenger: Digest = rec["challenger"].as_str().unwrap().parse().unwrap();

    // Nothing was stored under the challenger's digest…
    let store = koth_store::BlockingStore::open(
        &net.store_url.parse::<koth_store::Location>().unwrap(),
        &koth_store::S3Options::default(),
    )
    .unwrap();
    store
        .fetch_manifest(&net.king, u64::MAX)
        .expect("the king is in the store");
    match store.fetch_manifest(&challenger, u64::MAX) {
        Err(koth_store::StoreError::ManifestNotFound { .. }) => {}
        other => panic!("the challenger was stored, or the store failed: {other:?}"),
    }
    // …and nothing was committed: wait until anything committed by now would be revealed.
    let chain = EmbeddedChain::open(&net.chain_path).unwrap();
    let until = chain.block().unwrap().number + chain.params().reveal_delay + 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    while chain.block().unwrap().number < until {
        assert!(Instant::now() < deadline, "the chain stopped advancing");
        std::thread::sleep(Duration::from_millis(100));
    }
    let hotkey = net.miners[0].1.account();
    assert!(
        !chain
            .revealed_commitments()
            .unwrap()
            .iter()
            .any(|r| r.hotkey == hotkey),
        "the miner committed a challenger its local duel did not crown"
    );
}
