//! Test networks for the `Chain` contract: the embedded chain in a temporary directory, and a
//! `SubtensorChain` against the loopback node (scripts/subtensor/loopback_node.py), which
//! encodes every storage value with Bittensor's Python SDK from the pinned metadata.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use koth_chain::{Chain, EmbeddedChain, InitParams, Keypair};
use koth_subtensor::loopback::{drand_at_round_1000, LoopbackNode, LoopbackOptions};
use koth_subtensor::{CommitmentMode, SubtensorChain, SubtensorConfig};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The python with bittensor==10.5.0 (installed from PyPI by the script when missing).
pub fn bittensor_python() -> PathBuf {
    koth_subtensor::loopback::bittensor_python()
        .expect("the subtensor tests need Bittensor's Python SDK")
}

pub fn key(i: u8) -> Keypair {
    Keypair::from_seed([i; 32])
}

/// The keys every test network has: two miners and a validator registered (the validator
/// with a permit), a stranger who is not, and the subnet owner.
pub struct Keys {
    pub owner: Keypair,
    pub miners: [Keypair; 2],
    pub validator: Keypair,
    pub stranger: Keypair,
}

pub fn keys() -> Keys {
    Keys {
        owner: key(1),
        miners: [key(11), key(12)],
        validator: key(21),
        stranger: key(31),
    }
}

pub struct Net {
    pub chain: Box<dyn Chain>,
    pub keys: Keys,
    pub kind: &'static str,
    node: Option<LoopbackNode>,
    _dir: tempfile::TempDir,
}

impl Net {
    /// Wait until the chain's (finalized) head is at least `number`.
    pub fn wait_for_block(&self, number: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.chain.block().unwrap().number < number {
            assert!(
                Instant::now() < deadline,
                "{}: block {number} not reached in 60 s",
                self.kind
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Poll `f` until it returns `Some`, for at most `secs` seconds.
    pub fn eventually<T>(&self, secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {what} within {secs} s",
                self.kind
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The loopback node's stderr log so far (decisions on extrinsics), for assertion messages.
    pub fn node_log(&self) -> String {
        self.node
            .as_ref()
            .map(LoopbackNode::log_text)
            .unwrap_or_default()
    }
}

/// The embedded chain with real time: 200 ms blocks, reveals 3 blocks after the commitment.
pub fn embedded() -> Net {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let path = dir.path().join("chain.db");
    let chain = EmbeddedChain::init(
        &path,
        &InitParams {
            netuid: 7,
            block_time_ms: 200,
            reveal_delay: 3,
            emission_per_block_rao: 1_000_000_000,
            max_uids: 16,
            owner: keys.owner.account(),
        },
    )
    .unwrap();
    for k in keys.miners.iter().chain([&keys.validator]) {
        chain.register(k, &keys.owner.account()).unwrap();
    }
    chain
        .grant_validator_permit(&keys.owner, &keys.validator.account())
        .unwrap();
    let reopened = EmbeddedChain::open(&path).unwrap();
    let net = Net {
        chain: Box::new(reopened),
        keys,
        kind: "embedded",
        node: None,
        _dir: dir,
    };
    // Registrations are sealed before the contract starts.
    let head = net.chain.block().unwrap().number;
    net.wait_for_block(head + 1);
    net
}

pub struct NodeOptions {
    pub commit_reveal_weights: bool,
    pub drand_start_round: u64,
    pub block_time_s: f64,
    /// `WeightsSetRateLimit` in blocks.
    pub weights_rate_limit: u64,
    /// How koth writes commitments (the chain config, not the node's).
    pub commitment: CommitmentMode,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            commit_reveal_weights: false,
            // Round 1000 is reached 6 blocks after start.
            drand_start_round: 994,
            block_time_s: 0.25,
            weights_rate_limit: 0,
            commitment: CommitmentMode::Timelocked,
        }
    }
}

/// A `SubtensorChain` on a fresh loopback node whose subnet has the [`keys`] registered.
pub fn subtensor(opts: NodeOptions) -> Net {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let neuron = |k: &Keypair, permit: bool| {
        serde_json::json!({
            "hotkey_ss58": k.account().to_ss58(),
            "coldkey_ss58": keys.owner.account().to_ss58(),
            "validator_permit": permit,
            "stake": if permit { 1000 } else { 0 },
        })
    };
    let state = serde_json::json!({
        "netuid": 7,
        "tempo": 10,
        "commit_reveal_weights_enabled": opts.commit_reveal_weights,
        "weights_set_rate_limit": opts.weights_rate_limit,
        "weights_version_key": 0,
        "min_allowed_weights": 1,
        "reveal_period_epochs": 1,
        "commit_reveal_weights_version": 4,
        "subnet_owner_coldkey_ss58": keys.owner.account().to_ss58(),
        "neurons": [
            neuron(&keys.miners[0], false),
            neuron(&keys.miners[1], false),
            neuron(&keys.validator, true),
        ],
    });
    let node = LoopbackNode::start(
        &bittensor_python(),
        &LoopbackOptions {
            state,
            block_time_s: opts.block_time_s,
            finality_lag: 2,
            drand_start_round: opts.drand_start_round,
            dir: dir.path().to_path_buf(),
        },
    )
    .unwrap();
    let mut cfg = SubtensorConfig::new(node.endpoint(), 7);
    cfg.block_time_ms = (opts.block_time_s * 1000.0) as u64;
    cfg.blocks_until_reveal = 3;
    cfg.commitment = opts.commitment;
    cfg.drand = drand_at_round_1000(now_secs());
    cfg.inclusion_blocks = 40;
    cfg.rpc_timeout_ms = 10_000;
    let chain = SubtensorChain::connect(cfg).unwrap_or_else(|e| {
        panic!(
            "connect to the loopback node: {e}\nits log:\n{}",
            node.log_text()
        )
    });
    Net {
        chain: Box::new(chain),
        keys,
        kind: "subtensor",
        node: Some(node),
        _dir: dir,
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
