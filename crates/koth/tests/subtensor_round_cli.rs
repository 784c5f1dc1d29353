//! A whole round on Bittensor's chain format: `koth miner once` and `koth validator run`, both
//! configured with `[chain] kind = "subtensor"`, play against the loopback subtensor node
//! (scripts/subtensor/loopback_node.py; every storage answer SCALE-encoded by Bittensor's
//! Python SDK from the pinned runtime metadata). The miner trains from the genesis king and
//! commits a timelocked `set_commitment`; the node reveals it when drand's round arrives; the
//! validator reads the reveal, duels, crowns, and sets weights with `set_weights`; the weights
//! are read back from the node, by `SubtensorChain` and by `koth chain weights --network`.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use koth_chain::Chain;
use koth_miner::devkit::{mini_network, MiniOptions};
use koth_subtensor::loopback::{
    bittensor_python, drand_at_round_1000, LoopbackNode, LoopbackOptions,
};
use koth_subtensor::{ChainSection, SubtensorChain, SubtensorConfig};
use support::{free_port, koth, train};

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Point the config file at `path`'s `[chain]` to the subtensor node.
fn use_subtensor(path: &Path, chain: &ChainSection) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut doc: toml::Table = toml::from_str(&text).unwrap();
    doc.insert(
        "chain".into(),
        toml::Value::try_from(chain).expect("the [chain] section serializes"),
    );
    std::fs::write(path, toml::to_string(&doc).unwrap()).unwrap();
}

#[test]
fn a_miner_and_a_validator_play_a_round_through_the_subtensor_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let net = mini_network(
        tmp.path(),
        &MiniOptions {
            miners: 1,
            // The competition's W, the longest reveal lag the validator accepts: a timelocked
            // commitment is revealed once the node has its drand round, a few blocks after
            // `blocks_until_reveal` (measured: 5 blocks with 3).
            reveal_delay: 20,
            ..MiniOptions::default()
        },
    )
    .unwrap();
    let (_, miner_key) = &net.miners[0];
    // The subnet on the node: the validator (with a permit and stake) and the miner, as
    // `btcli subnet register` would have left them.
    let neuron = |k: &koth_chain::Keypair, permit: bool| {
        serde_json::json!({
            "hotkey_ss58": k.account().to_ss58(),
            "coldkey_ss58": net.owner.account().to_ss58(),
            "validator_permit": permit,
            "stake": if permit { 1_000_000_000_000u64 } else { 0 },
        })
    };
    let node = LoopbackNode::start(
        &bittensor_python().unwrap(),
        &LoopbackOptions {
            state: serde_json::json!({
                "netuid": 7,
                "tempo": 100,
                "commit_reveal_weights_enabled": false,
                "weights_set_rate_limit": 0,
                "weights_version_key": 0,
                "min_allowed_weights": 1,
                "subnet_owner_coldkey_ss58": net.owner.account().to_ss58(),
                "neurons": [neuron(&net.validator, true), neuron(miner_key, false)],
            }),
            block_time_s: 0.25,
            finality_lag: 2,
            // Round 1000 (whose signature the node has) is stored 20 blocks in.
            drand_start_round: 980,
            dir: tmp.path().join("node"),
        },
    )
    .unwrap();
    let mut cfg = SubtensorConfig::new(node.endpoint(), 7);
    cfg.block_time_ms = 250;
    cfg.blocks_until_reveal = 3;
    cfg.drand = drand_at_round_1000(now_secs());
    cfg.inclusion_blocks = 40;
    let section = ChainSection::subtensor(cfg.clone());

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
    use_subtensor(&validator_toml, &section);
    let miner_toml = net
        .write_miner_config(0, Some(&feed), 64, 11, &train("3e-3", "3e-4"))
        .unwrap();
    use_subtensor(&miner_toml, &section);

    // The miner trains and commits (timelocked); the validator starts once the chain has
    // revealed the commitment.
    let miner_log = tmp.path().join("miner.log");
    let miner = koth()
        .args(["miner", "once", "--log-json", "--config"])
        .arg(&miner_toml)
        .env("KOTH_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&miner_log).unwrap())
        .spawn()
        .unwrap();
    let chain = SubtensorChain::connect(cfg).unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let reveal = loop {
        if let Some(r) = chain
            .revealed_commitments()
            .unwrap()
            .into_iter()
            .find(|r| r.hotkey == miner_key.account())
        {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the miner's commitment was not revealed; miner log:\n{}\nnode log:\n{}",
            std::fs::read_to_string(&miner_log).unwrap_or_default(),
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        reveal.payload.starts_with("v4|"),
        "the revealed payload is koth's: {reveal:?}"
    );
    assert!(
        node.log_text().contains("revealed commitment of"),
        "the node revealed a timelocked commitment"
    );
    let validator_log = tmp.path().join("validator.log");
    let mut validator = koth()
        .args(["validator", "run", "--config"])
        .arg(&validator_toml)
        .env("KOTH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&validator_log).unwrap())
        .spawn()
        .unwrap();

    let out = miner.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "miner failed; stdout {stdout}; log:\n{}",
        std::fs::read_to_string(&miner_log).unwrap_or_default()
    );
    let record: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(record["submitted"], true, "{record}");
    assert_eq!(
        record["validator"]["outcome"],
        "crowned",
        "{record}\nvalidator log:\n{}",
        std::fs::read_to_string(&validator_log).unwrap_or_default()
    );

    // The validator's weights reach the chain: all of it to the miner it crowned.
    let miner_uid = chain
        .metagraph()
        .unwrap()
        .by_hotkey(&miner_key.account())
        .unwrap()
        .uid;
    let deadline = Instant::now() + Duration::from_secs(120);
    let row = loop {
        if let Some(w) = chain
            .weights()
            .unwrap()
            .into_iter()
            .find(|w| w.validator_hotkey == net.validator.account())
        {
            break w;
        }
        assert!(
            Instant::now() < deadline,
            "no weights on chain; validator log:\n{}\nnode log:\n{}",
            std::fs::read_to_string(&validator_log).unwrap_or_default(),
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    validator.kill().unwrap();
    validator.wait().unwrap();
    assert_eq!(row.weights, vec![(miner_uid, 65535)], "{row:?}");
    assert!(node.log_text().contains("SubtensorModule.set_weights from"));

    // The read-only CLI sees the same weights on the node.
    let out = koth()
        .args(["chain", "weights", "--json", "--network"])
        .arg(node.endpoint())
        .args(["--netuid", "7"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let weights: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        weights[0]["validator_hotkey"],
        net.validator.account().to_ss58().as_str()
    );
    assert_eq!(weights[0]["weights"][0][0], miner_uid);
    assert_eq!(weights[0]["weights"][0][1], 65535);
}

#[test]
fn the_read_only_chain_commands_read_a_subtensor_node_and_name_a_bad_one() {
    let tmp = tempfile::tempdir().unwrap();
    let v = koth_chain::Keypair::from_seed([2; 32]);
    let m = koth_chain::Keypair::from_seed([11; 32]);
    let node = LoopbackNode::start(
        &bittensor_python().unwrap(),
        &LoopbackOptions {
            state: serde_json::json!({
                "netuid": 7,
                "subnet_owner_coldkey_ss58": v.account().to_ss58(),
                "neurons": [
                    {"hotkey_ss58": v.account().to_ss58(), "coldkey_ss58": v.account().to_ss58(), "validator_permit": true, "stake": 1},
                    {"hotkey_ss58": m.account().to_ss58(), "coldkey_ss58": v.account().to_ss58(), "validator_permit": false, "stake": 0},
                ],
                "revealed_commitments": [
                    {"hotkey_ss58": m.account().to_ss58(), "data": "koth:v1:revealed", "block": 1},
                ],
            }),
            block_time_s: 0.1,
            finality_lag: 0,
            drand_start_round: 1000,
            dir: tmp.path().to_path_buf(),
        },
    )
    .unwrap();
    let run = |args: &[&str]| {
        koth()
            .args(["chain"])
            .args(args)
            .args(["--json", "--network", &node.endpoint(), "--netuid", "7"])
            .output()
            .unwrap()
    };
    let out = run(&["metagraph"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(meta["netuid"], 7);
    assert_eq!(meta["neurons"][0]["hotkey"], v.account().to_ss58().as_str());
    assert_eq!(meta["neurons"][0]["validator_permit"], true);
    assert_eq!(meta["neurons"][1]["hotkey"], m.account().to_ss58().as_str());
    let out = run(&["reveals"]);
    assert!(out.status.success());
    let reveals: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reveals[0]["uid"], 1);
    assert_eq!(reveals[0]["payload"], "koth:v1:revealed", "{reveals}");

    // A subnet that does not exist, and a node that is not there: non-zero, named.
    let out = koth()
        .args([
            "chain",
            "metagraph",
            "--network",
            &node.endpoint(),
            "--netuid",
            "9",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("subnet 9 does not exist"), "{stderr}");
    drop(node);
    let out = koth()
        .args([
            "chain",
            "metagraph",
            "--network",
            "ws://127.0.0.1:1",
            "--netuid",
            "7",
        ])
        .env("KOTH_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
    // --network without --netuid is a usage error.
    let out = koth()
        .args(["chain", "weights", "--network", "ws://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--netuid"));
}
