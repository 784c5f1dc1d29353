//! The miner library against a real embedded chain and store (no validator process): a king
//! change mid-training abandons the attempt.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use koth_chain::{Chain, EmbeddedChain};
use koth_miner::devkit::{mini_config, mini_network, MiniOptions};
use koth_miner::{AttemptStatus, Miner, MinerConfig, MinerEvent};
use koth_model::{DType, Device, Model};
use koth_store::{BlockingStore, S3Options};

const TRAIN: &str = r#"device = "cpu"
dtype = "f32"
lr = 1e-3
min_lr = 1e-4
warmup_steps = 2
steps = 400
batch_size = 2
seq_len = 32"#;

#[test]
fn a_king_change_mid_training_abandons_the_attempt() {
    let tmp = tempfile::tempdir().unwrap();
    let net = mini_network(tmp.path(), &MiniOptions::default()).unwrap();
    let chain = EmbeddedChain::open(&net.chain_path).unwrap();
    // Miner 2 owns another model, committed and revealed before miner 1 starts.
    let other_dir = tmp.path().join("other");
    Model::init(&mini_config().unwrap(), 99, DType::F32, &Device::Cpu)
        .unwrap()
        .save(&other_dir)
        .unwrap();
    let store =
        BlockingStore::open(&net.store_url.parse().unwrap(), &S3Options::default()).unwrap();
    let other = store.put(&other_dir).unwrap().digest;
    let (_, key2) = &net.miners[1];
    chain
        .commit(
            key2,
            &format!("v4|{}|{other}|{}", net.store_url, key2.account().to_ss58()),
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !chain
        .revealed_commitments()
        .unwrap()
        .iter()
        .any(|r| r.hotkey == key2.account())
    {
        assert!(Instant::now() < deadline, "no reveal");
        std::thread::sleep(Duration::from_millis(100));
    }
    let uid2 = chain
        .metagraph()
        .unwrap()
        .by_hotkey(&key2.account())
        .unwrap()
        .uid;

    let path = net.write_miner_config(0, None, 32, 5, TRAIN).unwrap();
    let miner = Miner::open(MinerConfig::load(&path).unwrap()).unwrap();
    let stop = AtomicBool::new(false);
    let mut crowned_at = None;
    let mut steps_seen = 0;
    let mut observer = |e: &MinerEvent| {
        if let MinerEvent::Step(s) = e {
            steps_seen = s.step;
            if s.step == 3 {
                // The validator crowns miner 2's model: its weights now pay miner 2.
                chain.set_weights(&net.validator, &[(uid2, 1.0)]).unwrap();
                crowned_at = Some(s.step);
            }
        }
    };
    let record = miner.attempt(false, &stop, &mut observer).unwrap();
    assert_eq!(crowned_at, Some(3));
    assert_eq!(record.status, AttemptStatus::KingChanged, "{record:?}");
    assert_eq!(record.king, net.king);
    assert!(record.challenger.is_none() && !record.submitted);
    // The change lands after step 3; the miner may see it before step 4 starts (its poll raced
    // ahead of the next step) or a few steps later, never before it happened.
    assert!(
        record.steps >= 3 && record.steps < 400,
        "abandoned soon after the change: {} steps",
        record.steps
    );
    assert_eq!(steps_seen, record.steps);
    let lines = std::fs::read_to_string(tmp.path().join("miner-1/attempts.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(lines.trim()).unwrap();
    assert_eq!(line["status"], "king_changed");
    assert!(!tmp.path().join("miner-1/train/checkpoint").exists());
    // The next attempt follows the new king.
    assert_eq!(miner.follower().king().unwrap().digest, other);
}
