//! `cargo bench -p koth-chain`: write throughput of the embedded chain (one handle, and four
//! handles writing at once), the cost of sealing a long idle stretch lazily, and `verify`.
//! Each figure is printed with what was measured; no assertion on speed.

use std::time::Instant;

use koth_chain::{Chain, EmbeddedChain, InitParams, Keypair, ManualClock, RAO_PER_TOKEN};

fn init(dir: &std::path::Path, name: &str, clock: ManualClock, owner: &Keypair) -> EmbeddedChain {
    EmbeddedChain::init_with_clock(
        &dir.join(name),
        &InitParams {
            netuid: 1,
            block_time_ms: 2_000,
            reveal_delay: 3,
            emission_per_block_rao: RAO_PER_TOKEN,
            max_uids: 256,
            owner: owner.account(),
        },
        Box::new(clock),
    )
    .expect("init")
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let owner = Keypair::from_seed([0; 32]);
    let t0 = 1_700_000_000_000u64;

    // 1. One handle: register + N commits (each: BEGIN IMMEDIATE, sign, verify, insert, fsync).
    let clock = ManualClock::new(t0);
    let chain = init(dir.path(), "one.db", clock.clone(), &owner);
    let miner = Keypair::from_seed([1; 32]);
    chain.register(&miner, &miner.account()).expect("register");
    let n = 300;
    let start = Instant::now();
    for i in 0..n {
        chain
            .commit(&miner, &format!("v4|hf:org/model|sha256:{i:064x}|x"))
            .expect("commit");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "commit, 1 handle: {n} commits in {secs:.3} s = {:.0} commits/s ({:.2} ms each)",
        n as f64 / secs,
        secs * 1e3 / n as f64
    );

    // 2. Four handles (separate SQLite connections) on four threads, writing at once.
    let path = dir.path().join("one.db");
    let threads = 4;
    let per = 100;
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let path = path.clone();
            let clock = clock.clone();
            s.spawn(move || {
                let chain = EmbeddedChain::open_with_clock(&path, Box::new(clock)).expect("open");
                let key = Keypair::from_seed([10 + t as u8; 32]);
                chain.register(&key, &key.account()).expect("register");
                for i in 0..per {
                    chain
                        .commit(&key, &format!("v4|t{t}|{i}|x"))
                        .expect("commit");
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let total = threads * (per + 1);
    println!(
        "commit, {threads} handles at once: {total} extrinsics in {secs:.3} s = {:.0}/s",
        total as f64 / secs
    );

    // 3. Lazy sealing after a long idle stretch: one day of 2 s blocks.
    let validator = Keypair::from_seed([2; 32]);
    chain
        .register(&validator, &validator.account())
        .expect("register");
    chain
        .grant_validator_permit(&owner, &validator.account())
        .expect("grant");
    chain
        .set_weights(&validator, &[(0, 1.0), (1, 0.5)])
        .expect("weights");
    let blocks = 43_200u64;
    clock.advance(blocks * 2_000);
    let start = Instant::now();
    let head = chain.block().expect("block");
    let secs = start.elapsed().as_secs_f64();
    println!(
        "seal {blocks} idle blocks in one read: {secs:.3} s ({:.1} µs/block), head {}",
        secs * 1e6 / blocks as f64,
        head.number
    );

    // 4. verify: integrity check, every hash, every signature, full replay.
    let start = Instant::now();
    let report = chain.verify().expect("verify");
    let secs = start.elapsed().as_secs_f64();
    println!(
        "verify: {} blocks, {} extrinsics in {secs:.3} s",
        report.blocks, report.extrinsics
    );
}
