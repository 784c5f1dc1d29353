//! The embedded SQLite chain end to end, on a manual clock so block boundaries are exact.

use std::fs;
use std::path::Path;

use koth_chain::{
    Call, Chain, ChainError, EmbeddedChain, ExtrinsicError, InitParams, Keypair, ManualClock,
    SignedExtrinsic, RAO_PER_TOKEN,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

const T0: u64 = 1_700_000_000_000;
const BLOCK_MS: u64 = 100;

fn params(owner: &Keypair, reveal_delay: u64) -> InitParams {
    InitParams {
        netuid: 3,
        block_time_ms: BLOCK_MS,
        reveal_delay,
        emission_per_block_rao: RAO_PER_TOKEN,
        max_uids: 256,
        owner: owner.account(),
    }
}

fn new_chain(dir: &Path, owner: &Keypair, reveal_delay: u64) -> (EmbeddedChain, ManualClock) {
    let clock = ManualClock::new(T0);
    let chain = EmbeddedChain::init_with_clock(
        &dir.join("chain.db"),
        &params(owner, reveal_delay),
        Box::new(clock.clone()),
    )
    .unwrap();
    (chain, clock)
}

fn key(i: u8) -> Keypair {
    Keypair::from_seed([i; 32])
}

#[test]
fn blocks_follow_the_clock_and_hashes_chain() {
    let dir = tempfile::tempdir().unwrap();
    let owner = key(0);
    let (chain, clock) = new_chain(dir.path(), &owner, 2);
    let genesis = chain.block().unwrap();
    assert_eq!(genesis.number, 0);
    assert_eq!(genesis.hash, chain.params().genesis_hash);
    clock.advance(BLOCK_MS - 1);
    assert_eq!(
        chain.block().unwrap().number,
        0,
        "block 1 is not sealed before its time"
    );
    clock.advance(1);
    assert_eq!(chain.block().unwrap().number, 1);
    assert_eq!(chain.block_hash(2).unwrap(), None);
    clock.advance(5 * BLOCK_MS + 50);
    let head = chain.block().unwrap();
    assert_eq!(head.number, 6);
    assert_eq!(chain.block_hash(6).unwrap(), Some(head.hash));
    let hashes: Vec<_> = (0..=6)
        .map(|n| chain.block_hash(n).unwrap().unwrap())
        .collect();
    let mut unique = hashes.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 7, "every block has its own hash");
    // A clock stepping backwards never reopens a sealed block.
    clock.set(T0);
    assert_eq!(chain.block().unwrap(), head);
    let miner = key(1);
    let receipt = chain.register(&miner, &miner.account()).unwrap();
    assert_eq!(receipt.block, 7, "writes go into the block after the head");
    let report = chain.verify().unwrap();
    assert_eq!(report.head, head);
    assert_eq!(report.extrinsics, 1);
}

#[test]
fn a_second_process_sees_the_same_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let owner = key(0);
    let (chain, clock) = new_chain(dir.path(), &owner, 2);
    let miner = key(1);
    chain.register(&miner, &miner.account()).unwrap();
    chain.commit(&miner, "v4|a|b|c").unwrap();
    clock.advance(10 * BLOCK_MS);
    let other =
        EmbeddedChain::open_with_clock(&dir.path().join("chain.db"), Box::new(clock.clone()))
            .unwrap();
    assert_eq!(other.params(), chain.params());
    // Whichever handle seals first, both agree on every hash.
    let head = other.block().unwrap();
    assert_eq!(chain.block().unwrap(), head);
    for n in 0..=head.number {
        assert_eq!(chain.block_hash(n).unwrap(), other.block_hash(n).unwrap());
    }
    assert_eq!(other.revealed_commitments().unwrap().len(), 1);
}

/// Randomized: a commitment is invisible through every read method before its reveal block is
/// sealed, and visible from then on; the newest revealed per hotkey is returned.
#[test]
fn commitments_are_hidden_until_their_reveal_block() {
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    for round in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let owner = key(0);
        let reveal_delay = rng.random_range(0..6u64);
        let (chain, clock) = new_chain(dir.path(), &owner, reveal_delay);
        let miners: Vec<Keypair> = (1..=3).map(key).collect();
        for m in &miners {
            chain.register(m, &owner.account()).unwrap();
        }
        let mut posted: Vec<(usize, String, u64)> = Vec::new(); // (miner, payload, commit block)
        for step in 0..40 {
            if rng.random_bool(0.4) {
                let who = rng.random_range(0..miners.len());
                let payload = format!("v4|round{round}|step{step}|{who}");
                let receipt = chain.commit(&miners[who], &payload).unwrap();
                assert_eq!(receipt.block, chain.block().unwrap().number + 1);
                posted.push((who, payload, receipt.block));
            }
            clock.advance(rng.random_range(0..2 * BLOCK_MS));
            let head = chain.block().unwrap().number;
            let visible = chain.revealed_since(0).unwrap();
            let expected: Vec<&String> = posted
                .iter()
                .filter(|(_, _, b)| b + reveal_delay <= head)
                .map(|(_, p, _)| p)
                .collect();
            let mut got: Vec<&String> = visible.iter().map(|r| &r.payload).collect();
            let mut want = expected.clone();
            got.sort();
            want.sort();
            assert_eq!(
                got, want,
                "round {round} step {step} head {head} R {reveal_delay}"
            );
            for r in &visible {
                assert_eq!(r.reveal_block, r.commit_block + reveal_delay);
                assert!(r.reveal_block <= head);
            }
            // Newest revealed per hotkey.
            let newest = chain.revealed_commitments().unwrap();
            for (i, m) in miners.iter().enumerate() {
                let want = posted
                    .iter()
                    .rfind(|(w, _, b)| *w == i && b + reveal_delay <= head)
                    .map(|(_, p, _)| p.clone());
                let got = newest
                    .iter()
                    .find(|r| r.hotkey == m.account())
                    .map(|r| r.payload.clone());
                assert_eq!(got, want);
            }
        }
        chain.verify().unwrap();
    }
}

#[test]
fn refused_writes_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let owner = key(0);
    let (chain, clock) = new_chain(dir.path(), &owner, 1);
    let miner = key(1);
    let stranger = key(9);
    let genesis = chain.params().genesis_hash;
    chain.register(&miner, &miner.account()).unwrap();

    let mut forged = SignedExtrinsic::sign(
        &miner,
        genesis,
        1,
        Call::Commit {
            payload: "x".into(),
        },
    );
    forged.signature[17] ^= 0x40;
    let err = chain.submit(&forged).unwrap_err();
    assert!(
        matches!(err.rejection(), Some(ExtrinsicError::BadSignature { .. })),
        "{err}"
    );

    let err = chain.commit(&stranger, "x").unwrap_err();
    assert_eq!(
        err.rejection(),
        Some(&ExtrinsicError::NotRegistered(stranger.account()))
    );

    let err = chain.set_weights(&miner, &[(0, 1.0)]).unwrap_err();
    assert!(
        matches!(
            err.rejection(),
            Some(ExtrinsicError::NotValidator { uid: 0, .. })
        ),
        "{err}"
    );

    let err = chain
        .grant_validator_permit(&miner, &miner.account())
        .unwrap_err();
    assert!(
        matches!(err.rejection(), Some(ExtrinsicError::NotOwner { .. })),
        "{err}"
    );

    let ok = SignedExtrinsic::sign(
        &miner,
        genesis,
        1,
        Call::Commit {
            payload: "once".into(),
        },
    );
    chain.submit(&ok).unwrap();
    clock.advance(3 * BLOCK_MS);
    let err = chain.submit(&ok).unwrap_err();
    assert!(
        matches!(
            err.rejection(),
            Some(ExtrinsicError::BadNonce {
                expected: 2,
                got: 1,
                ..
            })
        ),
        "{err}"
    );

    assert_eq!(chain.nonce(&miner.account()).unwrap(), 2);
    assert_eq!(chain.nonce(&stranger.account()).unwrap(), 0);
    let revealed = chain.revealed_since(0).unwrap();
    assert_eq!(revealed.len(), 1);
    assert_eq!(revealed[0].payload, "once");
    assert!(chain.weights().unwrap().is_empty());
    let report = chain.verify().unwrap();
    assert_eq!(
        report.extrinsics, 2,
        "only the two accepted extrinsics are on chain"
    );
}

#[test]
fn weights_drive_emission_and_verify_replays_it() {
    let dir = tempfile::tempdir().unwrap();
    let owner = key(0);
    let (chain, clock) = new_chain(dir.path(), &owner, 1);
    let validator = key(1);
    let (m1, m2) = (key(2), key(3));
    for k in [&validator, &m1, &m2] {
        chain.register(k, &owner.account()).unwrap();
    }
    chain
        .grant_validator_permit(&owner, &validator.account())
        .unwrap();
    let metagraph = chain.metagraph().unwrap();
    assert_eq!(metagraph.neurons.len(), 3);
    assert!(metagraph.neurons[0].validator_permit);
    assert!(!metagraph.neurons[1].validator_permit);
    // Before any weights, nothing is paid.
    clock.advance(5 * BLOCK_MS);
    assert!(chain.emission().unwrap().iter().all(|e| e.rao == 0));
    let receipt = chain
        .set_weights(&validator, &[(1, 3.0), (2, 1.0)])
        .unwrap();
    let weights = chain.weights().unwrap();
    assert_eq!(weights.len(), 1);
    assert_eq!(weights[0].weights, vec![(1, 65535), (2, 21845)]);
    assert_eq!(weights[0].set_block, receipt.block);
    // The block that includes the weights and the 9 after it pay by them.
    clock.set(T0 + (receipt.block + 9) * BLOCK_MS);
    assert_eq!(chain.block().unwrap().number, receipt.block + 9);
    let emission = chain.emission().unwrap();
    let per_block_m1 = RAO_PER_TOKEN * 65535 / (65535 + 21845);
    let per_block_m2 = RAO_PER_TOKEN - per_block_m1;
    assert_eq!(emission[0].rao, 0);
    assert_eq!(emission[1].rao, 10 * per_block_m1);
    assert_eq!(emission[2].rao, 10 * per_block_m2);
    assert_eq!(
        emission.iter().map(|e| e.rao).sum::<u64>(),
        10 * RAO_PER_TOKEN
    );
    // New weights apply from the block that includes them.
    let r2 = chain.set_weights(&validator, &[(2, 1.0)]).unwrap();
    clock.set(T0 + (r2.block + 4) * BLOCK_MS);
    let after = chain.emission().unwrap();
    assert_eq!(after[1].rao, 10 * per_block_m1);
    assert_eq!(after[2].rao, 10 * per_block_m2 + 5 * RAO_PER_TOKEN);
    chain.verify().unwrap();
}

#[test]
fn tampering_with_the_file_is_detected_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let owner = key(0);
    let (chain, clock) = new_chain(dir.path(), &owner, 1);
    let miner = key(1);
    chain.register(&miner, &miner.account()).unwrap();
    chain.commit(&miner, "v4|honest|sha256:aa|x").unwrap();
    clock.advance(5 * BLOCK_MS);
    chain.verify().unwrap();
    drop(chain);
    let conn = rusqlite::Connection::open(dir.path().join("chain.db")).unwrap();
    conn.execute("UPDATE commitments SET payload = 'v4|evil|sha256:bb|x'", [])
        .unwrap();
    drop(conn);
    let chain =
        EmbeddedChain::open_with_clock(&dir.path().join("chain.db"), Box::new(clock)).unwrap();
    let err = chain.verify().unwrap_err();
    assert!(matches!(err, ChainError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("commitment"), "{err}");
}

fn open_err(path: &Path) -> ChainError {
    EmbeddedChain::open(path).unwrap_err()
}

#[test]
fn missing_foreign_corrupt_and_existing_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let owner = key(0);
    let p = params(&owner, 2);

    // Missing: an error that says how to create one, and nothing is created.
    let missing = dir.path().join("nope.db");
    let err = open_err(&missing);
    assert!(matches!(err, ChainError::Missing { .. }));
    assert!(err.to_string().contains("koth chain init"), "{err}");
    assert!(!missing.exists());

    // Garbage bytes.
    let garbage = dir.path().join("garbage.db");
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    fs::write(&garbage, &bytes).unwrap();
    let err = open_err(&garbage);
    assert!(matches!(err, ChainError::NotAChain { .. }), "{err}");
    assert!(err.to_string().contains("not an SQLite database"), "{err}");
    assert_eq!(fs::read(&garbage).unwrap(), bytes);

    // Empty file (SQLite would treat it as a fresh database).
    let empty = dir.path().join("empty.db");
    fs::write(&empty, b"").unwrap();
    assert!(matches!(open_err(&empty), ChainError::NotAChain { .. }));
    assert_eq!(fs::read(&empty).unwrap(), b"");

    // A valid SQLite database of another application.
    let foreign = dir.path().join("foreign.db");
    {
        let c = rusqlite::Connection::open(&foreign).unwrap();
        c.execute_batch("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes(body) VALUES ('hi');")
            .unwrap();
    }
    let before = fs::read(&foreign).unwrap();
    let err = open_err(&foreign);
    assert!(matches!(err, ChainError::NotAChain { .. }), "{err}");
    assert!(err.to_string().contains("another application"), "{err}");
    assert_eq!(fs::read(&foreign).unwrap(), before);

    // A directory.
    assert!(matches!(open_err(dir.path()), ChainError::NotAChain { .. }));

    // init never overwrites: not a chain, not garbage, not even an empty file.
    for existing in [&garbage, &empty, &foreign] {
        let before = fs::read(existing).unwrap();
        let err = EmbeddedChain::init(existing, &p).unwrap_err();
        assert!(matches!(err, ChainError::AlreadyExists { .. }), "{err}");
        assert_eq!(&fs::read(existing).unwrap(), &before);
    }
    let path = dir.path().join("chain.db");
    let chain = EmbeddedChain::init(&path, &p).unwrap();
    let genesis = chain.params().genesis_hash;
    drop(chain);
    let err = EmbeddedChain::init(&path, &p).unwrap_err();
    assert!(matches!(err, ChainError::AlreadyExists { .. }), "{err}");
    assert_eq!(
        EmbeddedChain::open(&path).unwrap().params().genesis_hash,
        genesis
    );

    // A chain file whose pages are damaged.
    let damaged = dir.path().join("damaged.db");
    {
        let c = EmbeddedChain::init(&damaged, &p).unwrap();
        let m = key(1);
        c.register(&m, &m.account()).unwrap();
    }
    // Fold the WAL into the main file, then overwrite everything after the header page.
    {
        let c = rusqlite::Connection::open(&damaged).unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }
    let mut bytes = fs::read(&damaged).unwrap();
    let page = 4096.min(bytes.len());
    for b in bytes[page..].iter_mut() {
        *b = 0xA5;
    }
    fs::write(&damaged, &bytes).unwrap();
    let result = EmbeddedChain::open(&damaged).and_then(|c| c.verify().map(|_| ()));
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            ChainError::Corrupt { .. } | ChainError::NotAChain { .. }
        ),
        "{err}"
    );

    // Meta edited by hand (a different reveal delay) no longer matches the genesis hash.
    let edited = dir.path().join("edited.db");
    drop(EmbeddedChain::init(&edited, &p).unwrap());
    {
        let c = rusqlite::Connection::open(&edited).unwrap();
        c.execute("UPDATE meta SET value = '0' WHERE key = 'reveal_delay'", [])
            .unwrap();
    }
    let err = open_err(&edited);
    assert!(matches!(err, ChainError::Corrupt { .. }), "{err}");

    // A future schema version.
    let future = dir.path().join("future.db");
    drop(EmbeddedChain::init(&future, &p).unwrap());
    {
        let c = rusqlite::Connection::open(&future).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
    }
    assert!(matches!(
        open_err(&future),
        ChainError::SchemaVersion { found: 99, .. }
    ));
}

#[test]
fn a_pruning_chain_replaces_the_lowest_earner_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let owner = key(0);
    let clock = ManualClock::new(T0);
    let path = dir.path().join("chain.db");
    let p = InitParams {
        max_uids: 3,
        ..params(&owner, 2)
    };
    let chain =
        EmbeddedChain::init_with_pruning(&path, &p, Some(4), Box::new(clock.clone())).unwrap();
    assert_eq!(chain.params().immunity_period, Some(4));
    let (validator, earner, idle, newcomer) = (key(1), key(2), key(3), key(4));
    chain.register(&validator, &owner.account()).unwrap();
    chain
        .grant_validator_permit(&owner, &validator.account())
        .unwrap();
    chain.register(&earner, &owner.account()).unwrap();
    chain.register(&idle, &owner.account()).unwrap();
    chain.commit(&idle, "v4|loc|digest|idle").unwrap();
    chain.set_weights(&validator, &[(1, 1.0)]).unwrap();
    clock.advance(2 * BLOCK_MS);
    // Block 2 is the head, a registration would go into block 3: uids 1 and 2 (registered in
    // block 1) are immune until block 5, uid 0 holds a validator permit.
    let refused = chain.register(&newcomer, &owner.account()).unwrap_err();
    assert!(
        matches!(&refused, ChainError::Rejected(e) if **e == ExtrinsicError::SubnetFull { max: 3 }),
        "{refused:?}"
    );
    clock.advance(3 * BLOCK_MS);
    // Into block 6: both are prunable; `idle` earned nothing, `earner` holds the weights.
    let receipt = chain.register(&newcomer, &owner.account()).unwrap();
    assert_eq!(receipt.block, 6);
    clock.advance(BLOCK_MS);
    let meta = chain.metagraph().unwrap();
    assert_eq!(meta.neurons.len(), 3);
    assert_eq!(meta.by_uid(2).unwrap().hotkey, newcomer.account());
    assert!(meta.by_hotkey(&idle.account()).is_none());
    assert_eq!(meta.by_hotkey(&earner.account()).unwrap().uid, 1);
    // The pruned hotkey's revealed commitment is still on record (the chain never forgets),
    // but its signer has no uid now: a validator reading the metagraph refuses it.
    let reveals = chain.revealed_commitments().unwrap();
    assert!(reveals.iter().any(|r| r.hotkey == idle.account()));
    // uid 2's emission restarted at zero (it earned nothing before and nothing since).
    let emission = chain.emission().unwrap();
    assert_eq!(emission.iter().find(|e| e.uid == 2).map(|e| e.rao), Some(0));
    assert!(emission.iter().find(|e| e.uid == 1).unwrap().rao > 0);
    // Replaying every extrinsic rebuilds the same state, and the file reopens with its
    // immunity period.
    chain.verify().unwrap();
    drop(chain);
    let reopened = EmbeddedChain::open_with_clock(&path, Box::new(clock.clone())).unwrap();
    assert_eq!(reopened.params().immunity_period, Some(4));
    reopened.verify().unwrap();
    // A chain made without pruning still refuses a full subnet.
    let plain = EmbeddedChain::init_with_clock(
        &dir.path().join("plain.db"),
        &InitParams {
            max_uids: 1,
            ..params(&owner, 2)
        },
        Box::new(clock.clone()),
    )
    .unwrap();
    assert_eq!(plain.params().immunity_period, None);
    plain.register(&earner, &owner.account()).unwrap();
    clock.advance(100 * BLOCK_MS);
    assert!(plain.register(&idle, &owner.account()).is_err());
}
