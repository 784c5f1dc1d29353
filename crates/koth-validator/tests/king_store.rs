//! The king belongs to the validator (the shell in this process, on a tiny network): a crowned
//! challenger is copied into the validator's own store (`[store] king_location`, here its
//! default `file://<work_dir>/kings`) and verified before the crown is logged; the crown event,
//! the state and the feeds name the copy. The winner then deletes their store and the validator
//! loses its cache: a fresh miner still fetches the king from where the feed says, and the next
//! duel still loads it. The copy is idempotent (a crown carried out again after a restart) and
//! heals a damaged copy.

mod common;
#[path = "support/hostile.rs"]
mod hostile;

use common::answer_of;
use koth_chain::{Chain, EmbeddedChain};
use koth_core::Digest;
use koth_store::{BlockingStore, CheckpointCache, GetOptions, Location, S3Options};
use koth_validator::devkit::{self, key, payload, put, register, TinyOptions};
use koth_validator::event::{Event, Outcome};
use koth_validator::king_store::KingStore;
use koth_validator::{Shell, ValidatorConfig};

fn store(location: &str) -> BlockingStore {
    BlockingStore::open(
        &location.parse::<Location>().unwrap(),
        &S3Options::default(),
    )
    .unwrap()
}

#[test]
fn a_crowned_king_is_copied_into_the_validators_store_and_outlives_its_owners_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = TinyOptions {
        tokens: 60_000,
        ..TinyOptions::default()
    };
    let net = devkit::tiny_network(tmp.path(), &opts).unwrap();
    let chain = EmbeddedChain::open(&net.chain_path).unwrap();
    // Alice publishes into a store of her own inside the allowed one, and will delete it.
    let alice_store_dir = net.store_dir.join("alice");
    let alice_store = format!("file://{}", alice_store_dir.display());
    let better_dir = tmp.path().join("better");
    devkit::train_better(&net.king_dir, &better_dir, 30, 32).unwrap();
    let better = put(&alice_store, &better_dir).unwrap();
    let alice = key(40);
    register(&chain, &alice).unwrap();
    chain
        .commit(&alice, &payload(&alice_store, &better, &alice))
        .unwrap();

    let cfg = ValidatorConfig::load(&net.config_path).unwrap();
    let kings = format!("file://{}", net.work_dir.join("kings").display());
    assert_eq!(cfg.king_location, kings, "the default king store");
    let mut shell = Shell::open(cfg.clone()).unwrap();
    let f = answer_of(&mut shell, &alice, 120);
    assert!(
        matches!(
            f.outcome,
            Outcome::Dueled {
                crowned: Some(1),
                ..
            }
        ),
        "{:?}",
        f.outcome
    );
    // The crown event, the reign and the feeds name the validator's copy; the history keeps
    // what alice committed.
    let mut crowned = Vec::new();
    shell
        .journal()
        .log()
        .replay(|e| {
            if let Event::Crowned { location, .. } = &e.event {
                crowned.push(location.clone());
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(crowned, vec![Some(kings.clone())]);
    let state = shell.journal().state().clone();
    assert_eq!(state.king().unwrap().digest, better);
    assert_eq!(
        state.king().unwrap().location.as_deref(),
        Some(kings.as_str())
    );
    assert_eq!(f.location.as_deref(), Some(alice_store.as_str()));
    let feed = koth_validator::feed::api_state(&state);
    let king = feed.king.as_ref().unwrap();
    assert_eq!(king.location.as_deref(), Some(kings.as_str()));
    // The copy is there, and every byte of it checks out.
    store(&kings).verify(&better, u64::MAX).unwrap();

    // Alice deletes her store; the validator loses its cached copy of the king.
    std::fs::remove_dir_all(&alice_store_dir).unwrap();
    std::fs::remove_dir_all(net.work_dir.join("cache").join(better.hex())).unwrap();

    // (a) A fresh miner follows the king from the feed and fetches it by digest from there.
    let fresh = tmp.path().join("fresh-miner");
    store(king.location.as_deref().unwrap())
        .get(&king.digest, &fresh, &GetOptions::default())
        .unwrap();
    assert!(fresh.join("model.safetensors").is_file());

    // (b) The next duel still loads the king (fetched again from the validator's copy).
    let (dir, seed) = (tmp.path().join("honest"), 1.0);
    hostile::variant(&net.king_dir, &dir, seed);
    let honest = put(&net.store_url, &dir).unwrap();
    let bob = key(41);
    register(&chain, &bob).unwrap();
    chain
        .commit(&bob, &payload(&net.store_url, &honest, &bob))
        .unwrap();
    let f = answer_of(&mut shell, &bob, 120);
    assert!(
        matches!(f.outcome, Outcome::Dueled { crowned: None, .. }),
        "{:?}",
        f.outcome
    );
    assert_eq!(f.retries, 0);
    assert_eq!(shell.journal().state().counters.infra_faults, 0);
    drop(shell);

    // The copy is idempotent (what a crown redone after a restart does) and heals a damaged
    // copy; with the cache and the owner's store both gone there is nothing to copy from, which
    // is an error that names both.
    let cache = CheckpointCache::open(&tmp.path().join("other-cache"), 1 << 30).unwrap();
    store(&kings)
        .get(&better, &cache.path_of(&better), &GetOptions::default())
        .unwrap();
    let ks = KingStore {
        location: &kings,
        s3: &S3Options::default(),
        size_cap_bytes: opts.size_cap_bytes,
    };
    assert_eq!(ks.keep(&cache, &better, &alice_store).unwrap(), kings);
    let blob = net
        .work_dir
        .join("kings/blobs/sha256")
        .join(Digest::of(&std::fs::read(better_dir.join("model.safetensors")).unwrap()).hex());
    std::fs::write(&blob, b"damaged").unwrap();
    assert!(store(&kings).verify(&better, u64::MAX).is_err());
    assert_eq!(ks.keep(&cache, &better, &alice_store).unwrap(), kings);
    store(&kings).verify(&better, u64::MAX).unwrap();
    let empty = CheckpointCache::open(&tmp.path().join("empty-cache"), 1 << 30).unwrap();
    let err = ks
        .keep(&empty, &better, &alice_store)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&better.to_string()) && err.contains(&alice_store),
        "{err}"
    );
}
