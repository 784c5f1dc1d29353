//! `[train] command` with small shell-script trainers on the mini network (real chain, store
//! and data): a trainer that exits non-zero, writes nothing or passes its time limit is reported
//! with its last output lines and nothing is published; one that copies the king gets every
//! KOTH_* variable and is judged like any challenger; one that leaves a `.py` in its output is
//! refused with the validator's code before anything is stored.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use koth_chain::{Chain, EmbeddedChain};
use koth_miner::devkit::{mini_network, MiniNet, MiniOptions};
use koth_miner::{AttemptStatus, Miner, MinerConfig, MinerError, Quiet};

fn train_body(script: &str, time_limit_s: u64) -> String {
    format!(
        r#"device = "cpu"
dtype = "f32"
lr = 1e-3
min_lr = 1e-4
warmup_steps = 1
steps = 3
batch_size = 2
seq_len = 32
command = "sh '{script}'"
time_limit_s = {time_limit_s}"#
    )
}

/// A miner whose trainer is the shell script `body`, written to `<root>/<name>.sh`.
fn miner_with(net: &MiniNet, name: &str, body: &str, time_limit_s: u64) -> Miner {
    let script = format!("{name}.sh");
    std::fs::write(net.root.join(&script), body).unwrap();
    let path = net
        .write_miner_config(0, None, 32, 9, &train_body(&script, time_limit_s))
        .unwrap();
    Miner::open(MinerConfig::load(&path).unwrap()).unwrap()
}

/// Nothing but the genesis king in the store, and no commitment on the chain.
fn nothing_published(net: &MiniNet) {
    let store_dir = Path::new(net.store_url.trim_start_matches("file://"));
    let manifests: Vec<_> = std::fs::read_dir(store_dir.join("manifests/sha256"))
        .unwrap()
        .collect();
    assert_eq!(manifests.len(), 1, "only the king is stored");
    // A commitment would be revealed after `reveal_delay` (2) blocks of 200 ms.
    std::thread::sleep(Duration::from_millis(800));
    let chain = EmbeddedChain::open(&net.chain_path).unwrap();
    assert!(chain.revealed_commitments().unwrap().is_empty());
}

fn trainer_error(e: MinerError) -> (String, Vec<String>, String) {
    let text = e.to_string();
    match e {
        MinerError::Trainer {
            reason, last_lines, ..
        } => (reason, last_lines, text),
        other => panic!("expected a trainer error, got {other}"),
    }
}

#[test]
fn a_trainer_that_fails_is_reported_with_its_last_lines_and_nothing_is_published() {
    let tmp = tempfile::tempdir().unwrap();
    let net = mini_network(tmp.path(), &MiniOptions::default()).unwrap();
    let stop = AtomicBool::new(false);

    // Exits non-zero after a lot of output: the last lines, stdout and stderr alike.
    let miner = miner_with(
        &net,
        "fails",
        "i=1; while [ $i -le 30 ]; do echo \"step $i\"; i=$((i+1)); done\n\
         sleep 0.5\necho 'CUDA out of memory' >&2\nexit 3\n",
        60,
    );
    let (reason, lines, text) = trainer_error(miner.attempt(false, &stop, &mut Quiet).unwrap_err());
    assert_eq!(reason, "exited with status 3", "{text}");
    assert_eq!(lines.len(), koth_miner::external::TAIL_LINES, "{text}");
    // stdout and stderr are two pipes (order holds within each); the script pauses before its
    // last line so that it is also the last to arrive.
    assert_eq!(
        lines.last().map(String::as_str),
        Some("CUDA out of memory"),
        "{text}"
    );
    assert!(lines.contains(&"step 30".to_string()), "{text}");
    assert!(
        !lines.contains(&"step 1".to_string()),
        "only the last lines: {text}"
    );
    assert!(text.contains("nothing was published"), "{text}");
    let log = std::fs::read_to_string(miner.config().work_dir.join("trainer.log")).unwrap();
    assert!(
        log.contains("step 1\n") && log.contains("CUDA out of memory"),
        "{log}"
    );
    nothing_published(&net);

    // Exits 0 without writing a checkpoint.
    let miner = miner_with(&net, "lazy", "echo 'all done, honest'\n", 60);
    let (reason, lines, text) = trainer_error(miner.attempt(false, &stop, &mut Quiet).unwrap_err());
    assert!(
        reason.contains("wrote nothing into KOTH_OUTPUT_DIR"),
        "{text}"
    );
    assert_eq!(lines, ["all done, honest"]);
    nothing_published(&net);

    // Runs past its time limit, with a child in the background: the whole group is killed.
    let miner = miner_with(
        &net,
        "slow",
        "echo started\nsleep 300 &\necho $! > \"$KOTH_WORK_DIR/child.pid\"\nsleep 300\n",
        1,
    );
    let t0 = Instant::now();
    let (reason, lines, text) = trainer_error(miner.attempt(false, &stop, &mut Quiet).unwrap_err());
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    assert!(reason.contains("time limit of 1 s"), "{text}");
    assert_eq!(lines, ["started"]);
    let pid = std::fs::read_to_string(miner.config().work_dir.join("child.pid")).unwrap();
    let stat = format!("/proc/{}/stat", pid.trim());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Gone, or a zombie waiting for its new parent to reap it: either way not running.
        match std::fs::read_to_string(&stat) {
            Err(_) => break,
            Ok(s) if s.contains(") Z ") => break,
            Ok(_) => {
                assert!(Instant::now() < deadline, "the background child still runs");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    nothing_published(&net);
}

#[test]
fn a_trainers_output_is_checked_and_judged_like_any_challenger() {
    let tmp = tempfile::tempdir().unwrap();
    let net = mini_network(tmp.path(), &MiniOptions::default()).unwrap();
    let stop = AtomicBool::new(false);

    // Copies the king and records its environment: every KOTH_* variable is there, the
    // training windows are where they say, and a copy of the king is not crowned locally.
    let miner = miner_with(
        &net,
        "copy",
        "env | grep '^KOTH_' | sort > \"$KOTH_WORK_DIR/env.txt\"\n\
         wc -c < \"$KOTH_TRAIN_TOKENS\" > \"$KOTH_WORK_DIR/tokens.bytes\"\n\
         cp \"$KOTH_KING_DIR\"/* \"$KOTH_OUTPUT_DIR\"/\n",
        60,
    );
    let record = miner.attempt(false, &stop, &mut Quiet).unwrap();
    assert_eq!(record.status, AttemptStatus::NotSubmitted, "{record:?}");
    assert_eq!(record.challenger, Some(net.king), "the king's own bytes");
    assert!(!record.local.as_ref().unwrap().crown);
    let work = &miner.config().work_dir;
    let env = std::fs::read_to_string(work.join("env.txt")).unwrap();
    let var = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing from {env}"))
            .to_string()
    };
    assert_eq!(var("KOTH_KING_DIGEST"), net.king.to_string());
    assert_eq!(var("KOTH_SEQ_LEN"), "32");
    assert_eq!(var("KOTH_SEED"), "9");
    assert_eq!(var("KOTH_STEPS"), "3");
    assert_eq!(var("KOTH_BATCH_SIZE"), "2");
    assert_eq!(var("KOTH_DEVICE"), "cpu");
    assert_eq!(var("KOTH_TIME_LIMIT_S"), "60");
    for name in [
        "KOTH_KING_DIR",
        "KOTH_OUTPUT_DIR",
        "KOTH_TRAIN_BUNDLE",
        "KOTH_TRAIN_TOKENS",
        "KOTH_TRAIN_WINDOWS",
        "KOTH_ATTEMPT",
        "KOTH_WORK_DIR",
        "KOTH_DTYPE",
        "KOTH_LR",
        "KOTH_MIN_LR",
        "KOTH_WARMUP_STEPS",
        "KOTH_GRAD_ACCUM",
        "KOTH_WEIGHT_DECAY",
        "KOTH_CLIP",
    ] {
        assert!(!var(name).is_empty(), "{name}");
    }
    // 3 steps × 2 rows × 32 tokens × 4 bytes.
    let windows: u64 = var("KOTH_TRAIN_WINDOWS").parse().unwrap();
    assert_eq!(windows, 6);
    let bytes = std::fs::read_to_string(work.join("tokens.bytes")).unwrap();
    assert_eq!(bytes.trim(), (6 * 32 * 4).to_string());
    nothing_published(&net);

    // Leaves a Python file next to the weights: the validator's fetch gate would refuse it, so
    // the miner refuses it first, with the same code, and stores nothing.
    let miner = miner_with(
        &net,
        "python",
        "cp \"$KOTH_KING_DIR\"/* \"$KOTH_OUTPUT_DIR\"/\n\
         echo 'import os' > \"$KOTH_OUTPUT_DIR/modeling_custom.py\"\n",
        60,
    );
    let record = miner.attempt(true, &stop, &mut Quiet).unwrap();
    assert_eq!(record.status, AttemptStatus::Refused, "{record:?}");
    let refusal = record.refusal.unwrap();
    assert_eq!(refusal.code, koth_core::RejectCode::FileRefused);
    assert_eq!(refusal.gate, "fetch");
    assert!(
        refusal.message.contains("modeling_custom.py"),
        "{refusal:?}"
    );
    assert!(
        !record.submitted,
        "--force never submits a refused checkpoint"
    );
    nothing_published(&net);
}

#[test]
fn a_signal_ends_the_trainers_group_and_publishes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let net = mini_network(tmp.path(), &MiniOptions::default()).unwrap();
    let miner = miner_with(&net, "long", "echo started\nsleep 300\n", 600);
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let record = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_secs(1));
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        miner.attempt(false, &stop, &mut Quiet).unwrap()
    });
    assert_eq!(record.status, AttemptStatus::Interrupted, "{record:?}");
    assert!(record.challenger.is_none() && !record.submitted);
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    nothing_published(&net);
}

#[test]
fn a_new_king_ends_the_trainer_and_the_attempt() {
    let tmp = tempfile::tempdir().unwrap();
    let net = mini_network(tmp.path(), &MiniOptions::default()).unwrap();
    let chain = EmbeddedChain::open(&net.chain_path).unwrap();
    // Miner 2 commits another model; once the validator's weights pay miner 2, it is king.
    let (other, uid2) = net
        .commit_rival(&chain, 1, 99, &tmp.path().join("other"))
        .unwrap();

    let miner = miner_with(&net, "long", "echo started\nsleep 300\n", 600);
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let record = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_secs(1));
            chain.set_weights(&net.validator, &[(uid2, 1.0)]).unwrap();
        });
        miner.attempt(false, &stop, &mut Quiet).unwrap()
    });
    assert_eq!(record.status, AttemptStatus::KingChanged, "{record:?}");
    assert_eq!(record.king, net.king);
    assert!(record.challenger.is_none() && !record.submitted);
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    let lines = std::fs::read_to_string(miner.config().work_dir.join("attempts.jsonl")).unwrap();
    assert!(lines.contains("\"status\":\"king_changed\""), "{lines}");
    assert_eq!(miner.follower().king().unwrap().digest, other);
    std::thread::sleep(Duration::from_millis(800));
    let miner1 = net.miners[0].1.account();
    assert!(!chain
        .revealed_commitments()
        .unwrap()
        .iter()
        .any(|r| r.hotkey == miner1));
}
