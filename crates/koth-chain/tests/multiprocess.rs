//! Several processes writing to one chain file at once lose nothing.
//!
//! The test re-runs its own test binary as child processes (with `KOTH_CHAIN_CHILD` set, the
//! `child_writer` test does the writing instead of returning at once), on the real clock with a
//! short block time, so sealing races between processes for real.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use koth_chain::{Chain, EmbeddedChain, InitParams, Keypair, ManualClock, RAO_PER_TOKEN};

const CHILDREN: u8 = 4;
const COMMITS: usize = 40;
const BLOCK_MS: u64 = 50;
const REVEAL_DELAY: u64 = 2;

fn child_key(i: u8) -> Keypair {
    Keypair::from_seed([100 + i; 32])
}

/// In a child: register, then commit `COMMITS` times, reading the chain in between.
#[test]
fn child_writer() {
    let (Ok(path), Ok(index)) = (
        std::env::var("KOTH_CHAIN_CHILD"),
        std::env::var("KOTH_CHAIN_CHILD_INDEX"),
    ) else {
        return; // not a child: nothing to do
    };
    let index: u8 = index.parse().unwrap();
    let chain = EmbeddedChain::open(&PathBuf::from(path)).unwrap();
    let key = child_key(index);
    chain.register(&key, &key.account()).unwrap();
    for i in 0..COMMITS {
        chain
            .commit(&key, &format!("v4|child{index}|commit{i}|x"))
            .unwrap();
        // Interleave reads, which seal blocks too.
        chain.block().unwrap();
        chain.revealed_commitments().unwrap();
        if i % 5 == 0 {
            std::thread::sleep(Duration::from_millis(7 * u64::from(index + 1)));
        }
    }
}

#[test]
fn several_processes_writing_at_once_lose_nothing() {
    if std::env::var("KOTH_CHAIN_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.db");
    let owner = Keypair::from_seed([1; 32]);
    let chain = EmbeddedChain::init(
        &path,
        &InitParams {
            netuid: 1,
            block_time_ms: BLOCK_MS,
            reveal_delay: REVEAL_DELAY,
            emission_per_block_rao: RAO_PER_TOKEN,
            max_uids: 64,
            owner: owner.account(),
        },
    )
    .unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..CHILDREN)
        .map(|i| {
            Command::new(&exe)
                .args(["child_writer", "--exact", "--test-threads=1"])
                .env("KOTH_CHAIN_CHILD", &path)
                .env("KOTH_CHAIN_CHILD_INDEX", i.to_string())
                // The child harness's own report would read like this test's; keep it, and
                // show it only if the child fails.
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // The parent reads (and so seals blocks) concurrently until every child is done.
    let started = Instant::now();
    let mut running = children;
    while !running.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "child writers hang"
        );
        chain.block().unwrap();
        std::thread::sleep(Duration::from_millis(3));
        let mut still = Vec::new();
        for mut child in running {
            if child.try_wait().unwrap().is_some() {
                let out = child.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "a child writer failed: {:?}\n{}\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            } else {
                still.push(child);
            }
        }
        running = still;
    }
    // Every commitment is revealed REVEAL_DELAY blocks after its block, at most the open block
    // head + 1. Instead of waiting, a handle whose clock is at the end of block
    // head + 1 + REVEAL_DELAY seals those blocks (the children are done, and a sealed head is
    // never lowered).
    let head = chain.block().unwrap().number;
    let p = chain.params();
    let ahead = ManualClock::new(p.genesis_time_ms + (head + 1 + REVEAL_DELAY) * p.block_time_ms);
    let chain = EmbeddedChain::open_with_clock(&path, Box::new(ahead)).unwrap();
    assert_eq!(chain.block().unwrap().number, head + 1 + REVEAL_DELAY);

    let metagraph = chain.metagraph().unwrap();
    assert_eq!(metagraph.neurons.len(), usize::from(CHILDREN));
    let all = chain.revealed_since(0).unwrap();
    assert_eq!(
        all.len(),
        usize::from(CHILDREN) * COMMITS,
        "every commitment is there"
    );
    for i in 0..CHILDREN {
        let key = child_key(i);
        assert_eq!(chain.nonce(&key.account()).unwrap(), 1 + COMMITS as u64);
        let mine: Vec<&str> = all
            .iter()
            .filter(|r| r.hotkey == key.account())
            .map(|r| r.payload.as_str())
            .collect();
        let expected: Vec<String> = (0..COMMITS)
            .map(|c| format!("v4|child{i}|commit{c}|x"))
            .collect();
        assert_eq!(mine, expected, "child {i}'s commitments, in order");
    }
    let newest = chain.revealed_commitments().unwrap();
    assert_eq!(newest.len(), usize::from(CHILDREN));
    assert!(newest
        .iter()
        .all(|r| r.payload.ends_with(&format!("commit{}|x", COMMITS - 1))));
    // Every block hash chains from genesis and replaying every extrinsic rebuilds the state.
    let report = chain.verify().unwrap();
    assert_eq!(
        report.extrinsics,
        u64::from(CHILDREN) * (1 + COMMITS as u64)
    );
    assert!(report.head.number > 0);
}
