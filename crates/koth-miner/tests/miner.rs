//! The miner library against a real embedded chain and store (no validator process): a king
//! change mid-training abandons the attempt; a submission is committed first, put into the store
//! only once its commitment is in a sealed block, and there before the commitment is revealed
//! (or the record says it was not).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use koth_chain::{Chain, EmbeddedChain};
use koth_core::Digest;
use koth_miner::devkit::{mini_network, MiniNet, MiniOptions, SHORT_TRAIN};
use koth_miner::{AttemptRecord, AttemptStatus, Miner, MinerConfig, MinerEvent};

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
    let (other, uid2) = net
        .commit_rival(&chain, 1, 99, &tmp.path().join("other"))
        .unwrap();

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

/// What a poller saw: whether the challenger's manifest was in the store, and the chain's
/// sealed head read just after looking.
#[derive(Debug, Clone, Copy)]
struct Sample {
    stored: bool,
    head: u64,
}

/// One forced attempt of miner 1 on `net` (the local verdict does not matter), with a thread
/// polling the store and the chain head every 2 ms. Returns the record, the samples, the
/// `Committed` event's blocks and what the observer saw at `Committed` and `Published`.
struct Submitted {
    record: AttemptRecord,
    samples: Vec<Sample>,
    commit_block: u64,
    reveal_block: u64,
    stored_at_commit: bool,
    /// At `Published`: stored, the chain head, and whether the commitment was revealed yet.
    at_published: Option<(bool, u64, bool)>,
}

fn submit_once(net: &MiniNet) -> Submitted {
    let chain = EmbeddedChain::open(&net.chain_path).unwrap();
    let manifests =
        PathBuf::from(net.store_url.trim_start_matches("file://")).join("manifests/sha256");
    let stored = |d: &Digest| manifests.join(format!("{}.json", d.hex())).exists();
    let path = net.write_miner_config(0, None, 32, 7, SHORT_TRAIN).unwrap();
    let miner = Miner::open(MinerConfig::load(&path).unwrap()).unwrap();
    let hotkey = net.miners[0].1.account();
    let stop = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let digest: Mutex<Option<Digest>> = Mutex::new(None);
    let samples = Mutex::new(Vec::new());
    let mut committed = None;
    let mut stored_at_commit = true;
    let mut at_published = None;
    let record = std::thread::scope(|scope| {
        scope.spawn(|| {
            let chain = EmbeddedChain::open(&net.chain_path).unwrap();
            // One more sample after the attempt returned, so the upload is always seen.
            loop {
                let last = done.load(Ordering::SeqCst);
                if let Some(d) = *digest.lock().unwrap() {
                    let s = stored(&d);
                    let head = chain.block().unwrap().number;
                    samples.lock().unwrap().push(Sample { stored: s, head });
                }
                if last {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let mut observer = |e: &MinerEvent| match e {
            MinerEvent::ChallengerSaved { digest: d, .. } => *digest.lock().unwrap() = Some(*d),
            MinerEvent::Committed {
                block,
                reveal_block,
                ..
            } => {
                stored_at_commit = stored(&digest.lock().unwrap().unwrap());
                committed = Some((*block, *reveal_block));
            }
            MinerEvent::Published { digest: d, .. } => {
                let head = chain.block().unwrap().number;
                let revealed = chain
                    .revealed_commitments()
                    .unwrap()
                    .iter()
                    .any(|r| r.hotkey == hotkey && r.payload.contains(&d.to_string()));
                at_published = Some((stored(d), head, revealed));
            }
            // No validator runs here: do not wait for a verdict.
            MinerEvent::WaitingForVerdict { .. } => stop.store(true, Ordering::SeqCst),
            _ => {}
        };
        let record = miner.attempt(true, &stop, &mut observer).unwrap();
        done.store(true, Ordering::SeqCst);
        record
    });
    let (commit_block, reveal_block) = committed.expect("a Committed event");
    Submitted {
        record,
        samples: samples.into_inner().unwrap(),
        commit_block,
        reveal_block,
        stored_at_commit,
        at_published,
    }
}

#[test]
fn the_miner_commits_first_and_publishes_after_the_commitment_is_sealed_before_its_reveal() {
    let tmp = tempfile::tempdir().unwrap();
    // 10 blocks of 200 ms between the commitment's block and its reveal.
    let opts = MiniOptions {
        reveal_delay: 10,
        ..MiniOptions::default()
    };
    let net = mini_network(tmp.path(), &opts).unwrap();
    let s = submit_once(&net);
    assert_eq!(s.record.status, AttemptStatus::Submitted, "{:?}", s.record);
    let digest = s.record.challenger.unwrap();
    assert_eq!(s.reveal_block, s.commit_block + 10);

    // Not in the store when the commitment was sent.
    assert!(!s.stored_at_commit, "published before committing");
    // Never seen in the store while the commitment's block was not sealed yet (each sample's
    // head is read after looking at the store, so a present sample with a head below the
    // commit block means it was there before the commitment was on chain).
    let early: Vec<_> = s
        .samples
        .iter()
        .filter(|x| x.stored && x.head < s.commit_block)
        .collect();
    assert!(
        early.is_empty(),
        "in the store before block {}: {early:?}",
        s.commit_block
    );
    // Absent while the commitment was on its way, then present, before the reveal.
    assert!(
        s.samples.iter().any(|x| !x.stored),
        "the poller saw the store before the upload"
    );
    let first = s
        .samples
        .iter()
        .find(|x| x.stored)
        .expect("the poller saw the checkpoint in the store");
    assert!(
        first.head >= s.commit_block && first.head < s.reveal_block,
        "first seen in the store at block {}; committed at {}, revealed at {}",
        first.head,
        s.commit_block,
        s.reveal_block
    );
    let (stored, head, revealed) = s.at_published.expect("a Published event");
    assert!(stored && !revealed, "published after the reveal");
    assert!(
        head >= s.commit_block && head < s.reveal_block,
        "head {head}"
    );

    // The record says when, and that nothing went wrong.
    let p = s.record.publish.clone().expect("the publish record");
    assert_eq!(
        (p.commit_block, p.reveal_block, p.problem.as_deref()),
        (s.commit_block, s.reveal_block, None)
    );
    let published = p.published_block.unwrap();
    assert!(published >= s.commit_block && published < s.reveal_block);
    // The chain agrees: the commitment revealed later is in the block the receipt named, and
    // names what is now in the store.
    let chain = EmbeddedChain::open(&net.chain_path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let reveal = loop {
        let hotkey = net.miners[0].1.account();
        if let Some(r) = chain
            .revealed_commitments()
            .unwrap()
            .into_iter()
            .find(|r| r.hotkey == hotkey)
        {
            break r;
        }
        assert!(Instant::now() < deadline, "never revealed");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        (reveal.commit_block, reveal.reveal_block),
        (s.commit_block, s.reveal_block)
    );
    assert!(reveal.payload.contains(&digest.to_string()));
    let line = std::fs::read_to_string(tmp.path().join("miner-1/attempts.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(line["publish"]["commit_block"], s.commit_block);
    assert!(line["publish"].get("problem").is_none(), "{line}");
}

#[test]
fn an_upload_that_finishes_after_the_reveal_is_recorded_as_late() {
    // With no reveal delay the commitment is revealed in the very block the miner waits for
    // before it publishes: the upload cannot be in time, and the record and events say so.
    let tmp = tempfile::tempdir().unwrap();
    let opts = MiniOptions {
        reveal_delay: 0,
        ..MiniOptions::default()
    };
    let net = mini_network(tmp.path(), &opts).unwrap();
    let s = submit_once(&net);
    assert_eq!(s.record.status, AttemptStatus::Submitted, "{:?}", s.record);
    assert!(!s.stored_at_commit);
    assert!(s
        .samples
        .iter()
        .all(|x| !x.stored || x.head >= s.commit_block));
    let p = s.record.publish.clone().unwrap();
    assert_eq!(p.reveal_block, p.commit_block);
    let problem = p.problem.expect("the late upload is recorded");
    assert!(
        problem.contains("at or after the commitment's reveal"),
        "{problem}"
    );
    let line = std::fs::read_to_string(tmp.path().join("miner-1/attempts.jsonl")).unwrap();
    assert!(
        line.contains("at or after the commitment's reveal"),
        "{line}"
    );
}
