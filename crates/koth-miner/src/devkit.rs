//! A small but complete network for the miner's tests and for trying the miner by hand: the
//! devnet-mini corpus (`fixtures/devnet-mini`, Shakespeare tokenized with a 4096-token BPE), an
//! embedded chain with a validator holding a permit and registered miner hotkeys, a store with
//! a genesis king (a freshly initialised 2-layer llama, vocab 4096, hidden 64), a competition
//! file whose duel data is the held-out source, and `miner.toml` files (a `validator.toml` for it
//! is `koth_validator::devkit::write_validator_config`). The network is built by
//! `koth_devkit::NetworkBuilder`, the one builder the validator's devkit and the devnet use too.
//! Everything is real; only small.

use std::path::{Path, PathBuf};

use koth_chain::{Chain, Keypair};
use koth_core::competition::{Delta, DuelRule};
use koth_core::Digest;
use koth_devkit::{CopiedData, Data, DevkitError, Game, NetworkBuilder};
use koth_model::{DType, Device, Model, ModelConfig};

use crate::config::{DataSection, MinerFile};

/// Sizes of the mini network.
#[derive(Debug, Clone)]
pub struct MiniOptions {
    pub block_time_ms: u64,
    pub reveal_delay: u64,
    /// Tokens per duel window (the competition's `seq_len`).
    pub seq_len: u32,
    pub n_max: u32,
    pub duel_batch: u32,
    /// The duel's absolute effect floor in nats.
    pub delta_nats: f64,
    /// Number of miner hotkeys to create and register (`miner-1`, `miner-2`, …).
    pub miners: usize,
}

impl Default for MiniOptions {
    fn default() -> Self {
        Self {
            block_time_ms: 200,
            reveal_delay: 2,
            seq_len: 64,
            n_max: 256,
            duel_batch: 32,
            delta_nats: 0.01,
            miners: 2,
        }
    }
}

/// Paths and keys of a mini network.
pub struct MiniNet {
    pub root: PathBuf,
    pub chain_path: PathBuf,
    pub keystore: PathBuf,
    pub store_url: String,
    pub owner: Keypair,
    pub validator: Keypair,
    /// `(keystore name, key)` of each miner.
    pub miners: Vec<(String, Keypair)>,
    pub train_bundle: PathBuf,
    pub holdout_bundle: PathBuf,
    pub competition_path: PathBuf,
    pub king_dir: PathBuf,
    pub king: Digest,
}

/// A `[train]` table of two optimizer steps on the CPU: enough to make a challenger that differs
/// from the king, for tests that need one quickly.
pub const SHORT_TRAIN: &str = r#"device = "cpu"
dtype = "f32"
lr = 1e-3
min_lr = 1e-4
warmup_steps = 1
steps = 2
batch_size = 2
seq_len = 32"#;

/// The fixture corpus in this repository.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/devnet-mini")
}

/// The mini model's config: llama, vocab 4096, hidden 64, 2 layers.
pub fn mini_config() -> Result<ModelConfig, MiniNetError> {
    let v = serde_json::json!({
        "model_type": "llama",
        "vocab_size": 4096,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "max_position_embeddings": 256,
        "tie_word_embeddings": false,
    });
    ModelConfig::from_json(&v.to_string(), "mini").map_err(err("the mini model config"))
}

/// A step of building the mini network failed (`step`), and why (`detail`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("building the mini network: {step}: {detail}")]
pub struct MiniNetError {
    pub step: String,
    pub detail: String,
}

fn err<E: std::fmt::Display>(step: &'static str) -> impl FnOnce(E) -> MiniNetError {
    move |e| MiniNetError {
        step: step.to_string(),
        detail: e.to_string(),
    }
}

impl From<DevkitError> for MiniNetError {
    fn from(e: DevkitError) -> Self {
        MiniNetError {
            step: e.step,
            detail: e.detail,
        }
    }
}

/// Build the network under `root` (existing and empty).
pub fn mini_network(root: &Path, opts: &MiniOptions) -> Result<MiniNet, MiniNetError> {
    let game = Game {
        reveal_delay_blocks: opts.reveal_delay,
        size_cap_bytes: 64 << 20,
        ..Game::new(
            "koth-devnet-mini",
            opts.seq_len,
            DuelRule::sequential(
                0.01,
                Delta::Absolute(opts.delta_nats),
                opts.n_max,
                opts.duel_batch,
            ),
        )
    };
    let net = NetworkBuilder::new(game, mini_config()?)
        .miners(opts.miners)
        .block_time_ms(opts.block_time_ms)
        .max_uids(256)
        .king("genesis-king", 1)
        .data(Data::Copied(CopiedData::all(
            fixture_dir(),
            "data",
            "data/holdout-bundle.json",
        )))
        .build(root)?;
    Ok(MiniNet {
        train_bundle: net.root.join("data/train-bundle.json"),
        holdout_bundle: net.bundle_path,
        chain_path: net.chain_path,
        keystore: net.keystore,
        store_url: net.store_url,
        owner: net.owner,
        validator: net.validator,
        miners: net.miners,
        competition_path: net.competition_path,
        king_dir: net.king_dir,
        king: net.king,
        root: net.root,
    })
}

impl MiniNet {
    /// Miner `index` (0-based) owns another model: a fresh one (init seed `seed`) saved under
    /// `dir`, put in the store and committed, and this returns once `chain` has revealed it:
    /// its digest and the miner's uid. How a test puts a rival king in place.
    pub fn commit_rival(
        &self,
        chain: &dyn Chain,
        index: usize,
        seed: u64,
        dir: &Path,
    ) -> Result<(Digest, u16), MiniNetError> {
        let (_, key) = self.miners.get(index).ok_or_else(|| MiniNetError {
            step: "rival".into(),
            detail: format!("no miner {index}: the network has {}", self.miners.len()),
        })?;
        Model::init(&mini_config()?, seed, DType::F32, &Device::Cpu)
            .map_err(err("init"))?
            .save(dir)
            .map_err(err("saving the rival model"))?;
        let digest = koth_devkit::put(&self.store_url, dir)?;
        chain
            .commit(key, &koth_devkit::payload(&self.store_url, &digest, key))
            .map_err(err("committing the rival model"))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let revealed = chain
                .revealed_commitments()
                .map_err(err("reading reveals"))?;
            if revealed.iter().any(|r| r.hotkey == key.account()) {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(MiniNetError {
                    step: "rival".into(),
                    detail: "the commitment was not revealed within 30 s".into(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let uid = chain
            .metagraph()
            .map_err(err("metagraph"))?
            .by_hotkey(&key.account())
            .map(|n| n.uid)
            .ok_or_else(|| MiniNetError {
                step: "rival".into(),
                detail: format!("miner {index} is not registered"),
            })?;
        Ok((digest, uid))
    }

    /// Write `<name>.toml` for miner `index` (0-based) with the given `[train]` body and
    /// optional feed; its path.
    pub fn write_miner_config(
        &self,
        index: usize,
        feed: Option<&str>,
        holdout_windows: u64,
        seed: u64,
        train: &str,
    ) -> Result<PathBuf, MiniNetError> {
        let (name, _) = self.miners.get(index).ok_or_else(|| MiniNetError {
            step: "miner config".into(),
            detail: format!("no miner {index}: the network has {}", self.miners.len()),
        })?;
        // The `[train]` body is taken as a raw table: the reader's tests pass malformed ones.
        let train: toml::Table = toml::from_str(train).map_err(err("the [train] body"))?;
        let text = MinerFile::local(
            name,
            &self.store_url,
            (feed.map(str::to_string), 300),
            DataSection {
                bundle: "data/train-bundle.json".into(),
                holdout_windows,
                seed,
            },
            train,
        )
        .polling_every(200)
        .to_toml()
        .map_err(err("miner.toml"))?;
        let path = self.root.join(format!("{name}.toml"));
        std::fs::write(&path, text).map_err(err("miner.toml"))?;
        Ok(path)
    }
}
