//! A small but complete network for the miner's tests and for trying the miner by hand: the
//! devnet-mini corpus (`fixtures/devnet-mini`, Shakespeare tokenized with a 4096-token BPE), an
//! embedded chain with a validator holding a permit and registered miner hotkeys, a store with
//! a genesis king (a freshly initialised 2-layer llama, vocab 4096, hidden 64), a competition
//! file whose duel data is the held-out source, and `miner.toml` files (a `validator.toml` for it
//! is `koth_validator::devkit::write_validator_config`).
//! Everything is real; only small.

use std::path::{Path, PathBuf};

use koth_chain::{Chain, EmbeddedChain, InitParams, Keypair, Keystore};
use koth_core::competition::{
    ArchitectureLock, CompetitionFile, DataSpec, Delta, DuelRule, GateSwitches, HoldoutPolicy,
    IntakeRules, RewardPolicy, WeightsSchedule,
};
use koth_core::Digest;
use koth_model::{DType, Device, Model, ModelConfig};
use koth_store::{BlockingStore, Location, S3Options};

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
    pub step: &'static str,
    pub detail: String,
}

fn err<E: std::fmt::Display>(step: &'static str) -> impl FnOnce(E) -> MiniNetError {
    move |e| MiniNetError {
        step,
        detail: e.to_string(),
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), MiniNetError> {
    std::fs::create_dir_all(to).map_err(err("creating a data dir"))?;
    for entry in std::fs::read_dir(from).map_err(err("reading the fixture"))? {
        let entry = entry.map_err(err("reading the fixture"))?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(err("copying the fixture"))?;
        }
    }
    Ok(())
}

/// Build the network under `root` (existing and empty).
pub fn mini_network(root: &Path, opts: &MiniOptions) -> Result<MiniNet, MiniNetError> {
    let root = root.to_path_buf();
    let data = root.join("data");
    copy_tree(&fixture_dir(), &data)?;
    let owner = Keypair::from_seed([1; 32]);
    let validator = Keypair::from_seed([2; 32]);
    let chain_path = root.join("chain.db");
    let chain = EmbeddedChain::init(
        &chain_path,
        &InitParams {
            netuid: 7,
            block_time_ms: opts.block_time_ms,
            reveal_delay: opts.reveal_delay,
            emission_per_block_rao: 1_000_000_000,
            max_uids: 256,
            owner: owner.account(),
        },
    )
    .map_err(err("chain init"))?;
    chain
        .register(&validator, &validator.account())
        .map_err(err("registering the validator"))?;
    chain
        .grant_validator_permit(&owner, &validator.account())
        .map_err(err("validator permit"))?;
    let keystore = root.join("keys");
    let ks = Keystore::new(&keystore);
    ks.insert("validator", &validator)
        .map_err(err("keystore"))?;
    let mut miners = Vec::new();
    for i in 0..opts.miners {
        let key = Keypair::from_seed([40 + i as u8; 32]);
        let name = format!("miner-{}", i + 1);
        chain
            .register(&key, &key.account())
            .map_err(err("registering a miner"))?;
        ks.insert(&name, &key).map_err(err("keystore"))?;
        miners.push((name, key));
    }
    let store_dir = root.join("store");
    std::fs::create_dir_all(&store_dir).map_err(err("store dir"))?;
    let store_url = format!("file://{}", store_dir.display());
    let king_dir = root.join("genesis-king");
    let model = Model::init(&mini_config()?, 1, DType::F32, &Device::Cpu).map_err(err("init"))?;
    model
        .save(&king_dir)
        .map_err(err("saving the genesis king"))?;
    let loc: Location = store_url.parse().map_err(err("store location"))?;
    let store = BlockingStore::open(&loc, &S3Options::default()).map_err(err("store"))?;
    let king = store
        .put(&king_dir)
        .map_err(err("putting the king"))?
        .digest;
    let holdout_bundle = data.join("holdout-bundle.json");
    let bundle_sha = koth_data::Bundle::read(&holdout_bundle)
        .map_err(err("holdout bundle"))?
        .sha256();
    // Lock every structural key the saved king's config has.
    let king_config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(king_dir.join("config.json")).map_err(err("the king's config.json"))?,
    )
    .map_err(err("the king's config.json"))?;
    let locked = ArchitectureLock::structural_keys_of(&king_config);
    let competition = CompetitionFile {
        name: "koth-devnet-mini".into(),
        netuid: 7,
        genesis_king: king,
        genesis_location: Some(store_url.clone()),
        start_block: 0,
        architecture: ArchitectureLock::hf("llama", locked),
        data: DataSpec {
            bundle: "data/holdout-bundle.json".into(),
            bundle_sha256: bundle_sha,
            seq_len: opts.seq_len,
            holdout: HoldoutPolicy::None,
        },
        duel: DuelRule::sequential(
            0.01,
            Delta::Absolute(opts.delta_nats),
            opts.n_max,
            opts.duel_batch,
        ),
        intake: IntakeRules {
            reveal_delay_blocks: opts.reveal_delay,
            size_cap_bytes: 64 << 20,
            max_infra_retries: 50,
            history_len: 256,
        },
        gates: GateSwitches::default(),
        reward: RewardPolicy::WinnerTakeAll,
        weights: WeightsSchedule {
            interval_blocks: 100,
        },
    }
    .to_toml()
    .map_err(err("competition.toml"))?;
    let competition_path = root.join("competition.toml");
    std::fs::write(&competition_path, competition).map_err(err("competition.toml"))?;
    Ok(MiniNet {
        chain_path,
        keystore,
        store_url,
        owner,
        validator,
        miners,
        train_bundle: data.join("train-bundle.json"),
        holdout_bundle,
        competition_path,
        king_dir,
        king,
        root,
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
            step: "rival",
            detail: format!("no miner {index}: the network has {}", self.miners.len()),
        })?;
        Model::init(&mini_config()?, seed, DType::F32, &Device::Cpu)
            .map_err(err("init"))?
            .save(dir)
            .map_err(err("saving the rival model"))?;
        let loc: Location = self.store_url.parse().map_err(err("store location"))?;
        let store = BlockingStore::open(&loc, &S3Options::default()).map_err(err("store"))?;
        let digest = store
            .put(dir)
            .map_err(err("putting the rival model"))?
            .digest;
        chain
            .commit(
                key,
                &format!("v4|{}|{digest}|{}", self.store_url, key.account().to_ss58()),
            )
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
                    step: "rival",
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
                step: "rival",
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
            step: "miner config",
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
