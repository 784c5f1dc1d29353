//! One contract for koth-chain's `Chain` trait, run against both implementations: the
//! embedded SQLite chain, and `SubtensorChain` against a loopback node whose storage answers
//! are SCALE-encoded by Bittensor's Python SDK from the pinned runtime metadata.
//!
//! Each contract clause is a function over a [`Net`]; each test runs one clause on one chain.

mod support;

use koth_chain::ChainError;
use support::{embedded, subtensor, Net, NodeOptions};

/// Blocks: the head moves forward, its hash is what `block_hash` answers and stays the same,
/// and a block beyond the head has no hash yet.
fn blocks_are_final_and_numbered(net: &Net) {
    let a = net.chain.block().unwrap();
    assert_eq!(
        net.chain.block_hash(a.number).unwrap(),
        Some(a.hash),
        "{}",
        net.kind
    );
    assert_eq!(
        net.chain.block_hash(a.number + 10_000).unwrap(),
        None,
        "{}",
        net.kind
    );
    net.wait_for_block(a.number + 2);
    let b = net.chain.block().unwrap();
    assert!(b.number >= a.number + 2);
    assert_ne!(a.hash, b.hash);
    // A final block's hash never changes.
    assert_eq!(
        net.chain.block_hash(a.number).unwrap(),
        Some(a.hash),
        "{}",
        net.kind
    );
    assert_eq!(
        net.chain.block_hash(b.number).unwrap(),
        Some(b.hash),
        "{}",
        net.kind
    );
    let genesis = net
        .chain
        .block_hash(0)
        .unwrap()
        .expect("block 0 has a hash");
    assert_eq!(genesis, net.chain.params().genesis_hash, "{}", net.kind);
}

/// The metagraph lists the registered hotkeys, each with its uid, coldkey and permit.
fn metagraph_lists_registrations(net: &Net) {
    let meta = net.chain.metagraph().unwrap();
    assert_eq!(meta.netuid, net.chain.params().netuid);
    let k = &net.keys;
    for m in &k.miners {
        let n = meta.by_hotkey(&m.account()).expect("miner registered");
        assert!(!n.validator_permit, "{}: a miner has no permit", net.kind);
        assert_eq!(n.coldkey, k.owner.account(), "{}", net.kind);
        assert_eq!(meta.by_uid(n.uid).unwrap().hotkey, m.account());
    }
    let v = meta
        .by_hotkey(&k.validator.account())
        .expect("validator registered");
    assert!(
        v.validator_permit,
        "{}: the validator has its permit",
        net.kind
    );
    assert!(meta.by_hotkey(&k.stranger.account()).is_none());
    let mut uids: Vec<u16> = meta.neurons.iter().map(|n| n.uid).collect();
    uids.dedup();
    assert_eq!(
        uids.len(),
        meta.neurons.len(),
        "{}: uids are distinct",
        net.kind
    );
}

/// A commitment is hidden until its reveal, then readable by everyone with the signer's uid;
/// the signer's nonce moves by one.
fn commitments_reveal_after_their_delay(net: &Net) {
    let miner = &net.keys.miners[0];
    let payload = format!("koth:v1:contract:{}", net.kind);
    let nonce = net.chain.nonce(&miner.account()).unwrap();
    let receipt = net.chain.commit(miner, &payload).unwrap();
    assert_eq!(receipt.nonce, nonce, "{}", net.kind);
    assert_eq!(
        net.chain.nonce(&miner.account()).unwrap(),
        nonce + 1,
        "{}",
        net.kind
    );
    assert_eq!(receipt.kind, "commit");
    let visible = |net: &Net| {
        net.chain
            .revealed_commitments()
            .unwrap()
            .into_iter()
            .find(|r| r.hotkey == miner.account() && r.payload == payload)
    };
    // A look right after the write, and the head read after that look.
    let early = visible(net);
    let head_after_early = net.chain.block().unwrap().number;
    let reveal = net.eventually(60, "the commitment is revealed", || visible(net));
    // Hidden until its reveal block: the early look saw a head before it, so saw nothing.
    if head_after_early < reveal.reveal_block {
        assert!(
            early.is_none(),
            "{}: readable at block {head_after_early}, before its reveal at {}",
            net.kind,
            reveal.reveal_block
        );
    }
    let meta = net.chain.metagraph().unwrap();
    assert_eq!(reveal.uid, meta.by_hotkey(&miner.account()).unwrap().uid);
    assert!(reveal.reveal_block > receipt.block, "{}", net.kind);
    // The commit block is the block that included the commitment, on both chains (subtensor
    // keeps only the reveal block with the bytes; the adapter reads the commitment back).
    assert_eq!(reveal.commit_block, receipt.block, "{}", net.kind);
    assert!(reveal.reveal_block <= net.chain.block().unwrap().number);
    assert!(reveal.commit_block <= reveal.reveal_block);
    // revealed_since is strict on the reveal block.
    let since = net.chain.revealed_since(reveal.reveal_block - 1).unwrap();
    assert!(since.iter().any(|r| r.payload == payload), "{}", net.kind);
    let after = net.chain.revealed_since(reveal.reveal_block).unwrap();
    assert!(!after.iter().any(|r| r.payload == payload), "{}", net.kind);
    // A newer commitment replaces the older one in revealed_commitments; both stay in
    // revealed_since, in chain order.
    let second = format!("{payload}:2");
    net.chain.commit(miner, &second).unwrap();
    net.eventually(60, "the second commitment is revealed", || {
        net.chain
            .revealed_commitments()
            .unwrap()
            .into_iter()
            .find(|r| r.hotkey == miner.account() && r.payload == second)
    });
    let all = net.chain.revealed_since(0).unwrap();
    let pos = |p: &str| all.iter().position(|r| r.payload == p).unwrap();
    assert!(pos(&payload) < pos(&second), "{}: chain order", net.kind);
    let newest: Vec<_> = net
        .chain
        .revealed_commitments()
        .unwrap()
        .into_iter()
        .filter(|r| r.hotkey == miner.account())
        .collect();
    assert_eq!(newest.len(), 1, "{}: one (the newest) per hotkey", net.kind);
    assert_eq!(newest[0].payload, second);
}

/// A validator's weights land as Bittensor stores them (max-upscaled u16), attributed to it.
fn weights_are_stored_max_upscaled(net: &Net) {
    let meta = net.chain.metagraph().unwrap();
    let uid = |k: &koth_chain::Keypair| meta.by_hotkey(&k.account()).unwrap().uid;
    let (m0, m1) = (uid(&net.keys.miners[0]), uid(&net.keys.miners[1]));
    let receipt = net
        .chain
        .set_weights(&net.keys.validator, &[(m0, 1.0), (m1, 0.5)])
        .unwrap();
    assert_eq!(receipt.kind, "set_weights");
    let row = net.eventually(60, "the weights are readable", || {
        net.chain
            .weights()
            .unwrap()
            .into_iter()
            .find(|w| w.validator_hotkey == net.keys.validator.account())
    });
    assert_eq!(row.validator_uid, uid(&net.keys.validator));
    let mut w = row.weights.clone();
    w.sort();
    let mut want = vec![(m0, 65535u16), (m1, 32768u16)];
    want.sort();
    assert_eq!(w, want, "{}", net.kind);
    assert!(row.set_block >= 1 && row.set_block <= net.chain.block().unwrap().number + 2);
}

/// Writes that the chain's rules forbid are refused, with a reason, and change nothing.
fn forbidden_writes_are_refused(net: &Net) {
    let stranger = &net.keys.stranger;
    let before = net.chain.revealed_since(0).unwrap().len();
    let e = net
        .chain
        .commit(stranger, "koth:v1:stranger")
        .expect_err("an unregistered hotkey cannot commit");
    assert!(
        matches!(e, ChainError::Rejected(_) | ChainError::Refused { .. }),
        "{}: {e}",
        net.kind
    );
    let meta = net.chain.metagraph().unwrap();
    let m0 = meta.by_hotkey(&net.keys.miners[0].account()).unwrap().uid;
    let e = net
        .chain
        .set_weights(&net.keys.miners[1], &[(m0, 1.0)])
        .expect_err("a hotkey without a permit cannot set weights");
    assert!(
        matches!(e, ChainError::Rejected(_) | ChainError::Refused { .. }),
        "{}: {e}",
        net.kind
    );
    let head = net.chain.block().unwrap().number;
    net.wait_for_block(head + 3);
    assert_eq!(
        net.chain.revealed_since(0).unwrap().len(),
        before,
        "{}",
        net.kind
    );
    assert!(
        !net.chain
            .weights()
            .unwrap()
            .iter()
            .any(|w| w.validator_hotkey == net.keys.miners[1].account()),
        "{}",
        net.kind
    );
}

/// subtensor only: weights inside the subnet's rate limit are refused before anything is sent
/// (a validator retrying every tick must not put a failing extrinsic in every block).
#[test]
fn subtensor_refuses_weights_inside_the_rate_limit_without_sending() {
    let net = subtensor(NodeOptions {
        weights_rate_limit: 1000,
        ..NodeOptions::default()
    });
    let meta = net.chain.metagraph().unwrap();
    let m0 = meta.by_hotkey(&net.keys.miners[0].account()).unwrap().uid;
    net.chain
        .set_weights(&net.keys.validator, &[(m0, 1.0)])
        .unwrap_or_else(|e| panic!("{e}\n{}", net.node_log()));
    // Wait until the finalized head has the first LastUpdate.
    net.eventually(30, "the first weights are final", || {
        net.chain
            .weights()
            .unwrap()
            .into_iter()
            .find(|w| w.validator_hotkey == net.keys.validator.account())
    });
    let sent_before = net.node_log().matches("set_weights from").count();
    let e = net
        .chain
        .set_weights(&net.keys.validator, &[(m0, 0.5)])
        .expect_err("inside the rate limit");
    let text = e.to_string();
    assert!(
        text.contains("WeightsSetRateLimit is 1000 blocks"),
        "{text}"
    );
    assert!(text.contains("nothing was sent"), "{text}");
    assert_eq!(
        net.node_log().matches("set_weights from").count(),
        sent_before,
        "no extrinsic reached the node"
    );
}

/// subtensor only: with commit-reveal on, weights go out timelocked
/// (`commit_timelocked_mechanism_weights`, reveal round from the epoch schedule) and the chain
/// applies them silently when the round's pulse arrives in the reveal epoch.
#[test]
fn subtensor_commit_reveal_weights_are_timelocked_then_revealed_by_the_chain() {
    let net = subtensor(NodeOptions {
        commit_reveal_weights: true,
        ..NodeOptions::default()
    });
    let meta = net.chain.metagraph().unwrap();
    let uid = |k: &koth_chain::Keypair| meta.by_hotkey(&k.account()).unwrap().uid;
    let (m0, m1) = (uid(&net.keys.miners[0]), uid(&net.keys.miners[1]));
    let receipt = net
        .chain
        .set_weights(&net.keys.validator, &[(m0, 1.0), (m1, 0.5)])
        .unwrap_or_else(|e| panic!("{e}\n{}", net.node_log()));
    assert!(
        net.node_log()
            .contains("SubtensorModule.commit_timelocked_mechanism_weights from"),
        "{}",
        net.node_log()
    );
    assert!(!net.node_log().contains("SubtensorModule.set_weights from"));
    // Not readable until the chain reveals them.
    let visible =
        || {
            net.chain.weights().unwrap().into_iter().find(|w| {
                w.validator_hotkey == net.keys.validator.account() && !w.weights.is_empty()
            })
        };
    let row = net.eventually(60, "the committed weights are revealed", visible);
    let mut w = row.weights.clone();
    w.sort();
    let mut want = vec![(m0, 65535u16), (m1, 32768u16)];
    want.sort();
    assert_eq!(w, want, "{}", net.node_log());
    assert!(net.chain.block().unwrap().number > receipt.block);
}

/// subtensor only: `commitment = "raw"` writes `Data::Raw` (or `BigRaw` beyond 128 bytes),
/// public from the block that includes it (its reveal block); beyond BigRaw's 512 bytes it is
/// refused before sending.
#[test]
fn subtensor_raw_commitments_are_public_at_once() {
    let net = subtensor(NodeOptions {
        commitment: koth_subtensor::CommitmentMode::Raw,
        ..NodeOptions::default()
    });
    let miner = &net.keys.miners[1];
    let receipt = net
        .chain
        .commit(miner, "koth:v1:raw")
        .unwrap_or_else(|e| panic!("{e}\n{}", net.node_log()));
    let reveal = net.eventually(30, "the raw commitment is readable", || {
        net.chain
            .revealed_commitments()
            .unwrap()
            .into_iter()
            .find(|r| r.hotkey == miner.account())
    });
    assert_eq!(reveal.payload, "koth:v1:raw");
    assert_eq!(
        reveal.reveal_block, receipt.block,
        "public from its own block"
    );
    // A real koth payload is longer than Raw's 128 bytes: it goes out as BigRaw.
    let long = format!(
        "v4|s3://bucket/challengers|sha256:{}|{}",
        "ab".repeat(32),
        miner.account()
    );
    assert!(long.len() > 128);
    net.chain
        .commit(miner, &long)
        .unwrap_or_else(|e| panic!("{e}\n{}", net.node_log()));
    net.eventually(30, "the BigRaw commitment is readable", || {
        net.chain
            .revealed_commitments()
            .unwrap()
            .into_iter()
            .find(|r| r.hotkey == miner.account() && r.payload == long)
    });
    let e = net
        .chain
        .commit(miner, &"x".repeat(513))
        .expect_err("BigRaw holds at most 512 bytes");
    assert!(e.to_string().contains("512"), "{e}");
}

macro_rules! contract {
    ($($clause:ident),* $(,)?) => {
        mod on_embedded {
            use super::*;
            $( #[test] fn $clause() { super::$clause(&embedded()); } )*
        }
        mod on_subtensor {
            use super::*;
            $( #[test] fn $clause() {
                let net = subtensor(NodeOptions::default());
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| super::$clause(&net)));
                if let Err(p) = run {
                    eprintln!("loopback node log:\n{}", net.node_log());
                    std::panic::resume_unwind(p);
                }
            } )*
        }
    };
}

contract!(
    blocks_are_final_and_numbered,
    metagraph_lists_registrations,
    commitments_reveal_after_their_delay,
    weights_are_stored_max_upscaled,
    forbidden_writes_are_refused,
);
