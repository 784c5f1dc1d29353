//! A tiny, complete koth network on one machine: an embedded chain, a local store holding a
//! genesis king (a 2-layer model with a 64-token vocabulary), a synthetic data bundle, a
//! competition file, a keystore with a registered validator that holds a permit, and a
//! `validator.toml` pointing at all of it. Used by the tests of the validator and the CLI, and
//! handy for trying the validator by hand; everything is real (nothing is mocked), only small.
//! The network is built by `koth_devkit::NetworkBuilder` (the one builder the miner's devkit
//! and the devnet use too); this module adds the tiny model, its options and `validator.toml`.

use std::path::{Path, PathBuf};

use koth_chain::Keypair;
use koth_core::competition::{Delta, DuelRule, GateSwitches};
use koth_core::Digest;
use koth_devkit::{Data, Game, NetworkBuilder};
use koth_model::{AdamWConfig, DType, Device, Model, ModelConfig, TokenIds, Trainer};

use crate::config::ValidatorConfig;

pub use koth_devkit::{
    key, payload, put, put_raw, register, save_model, synthetic_tokens, DevkitError,
};

/// Vocabulary of the tiny models.
pub const VOCAB: u32 = 64;

/// Sizes of the network.
#[derive(Debug, Clone)]
pub struct TinyOptions {
    pub block_time_ms: u64,
    pub reveal_delay: u64,
    pub seq_len: u32,
    pub n_max: u32,
    pub batch_size: u32,
    pub size_cap_bytes: u64,
    pub listen: String,
    pub poll_interval_ms: u64,
    pub max_uids: u16,
    /// Tokens in the data bundle.
    pub tokens: usize,
    /// The competition's behavioural-fingerprint gate (`near_copy`).
    pub near_copy: bool,
    /// The competition's trainability probe (gate 5).
    pub trainability_probe: bool,
    /// `Some(blocks)`: a chain that prunes the lowest earner once `max_uids` are registered,
    /// sparing neurons younger than this many blocks (and validator permits).
    pub immunity_period: Option<u64>,
}

impl Default for TinyOptions {
    fn default() -> Self {
        Self {
            block_time_ms: 150,
            reveal_delay: 2,
            seq_len: 32,
            n_max: 512,
            batch_size: 64,
            size_cap_bytes: 1 << 20,
            listen: "127.0.0.1:0".into(),
            poll_interval_ms: 100,
            max_uids: 1024,
            tokens: 200_000,
            near_copy: false,
            trainability_probe: false,
            immunity_period: None,
        }
    }
}

/// Paths and keys of a tiny network.
pub struct TinyNet {
    pub root: PathBuf,
    pub chain_path: PathBuf,
    pub store_dir: PathBuf,
    /// `file:///…` of the store.
    pub store_url: String,
    pub keystore: PathBuf,
    pub owner: Keypair,
    pub validator: Keypair,
    pub bundle_path: PathBuf,
    pub competition_path: PathBuf,
    pub config_path: PathBuf,
    pub work_dir: PathBuf,
    pub king_dir: PathBuf,
    pub king: Digest,
}

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> DevkitError + '_ {
    move |e| DevkitError {
        step: what.to_string(),
        detail: e.to_string(),
    }
}

/// The tiny model's `config.json` values.
pub fn tiny_config() -> ModelConfig {
    let v = serde_json::json!({
        "model_type": "llama",
        "vocab_size": VOCAB,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "max_position_embeddings": 256,
        "tie_word_embeddings": false,
    });
    // A fixed, valid config: parsing it cannot fail.
    ModelConfig::from_json(&v.to_string(), "tiny").unwrap_or_else(|e| panic!("tiny config: {e}"))
}

/// Train a copy of the model in `king_dir` for `steps` steps on the synthetic data and save it
/// into `out`: a challenger that is genuinely better.
pub fn train_better(
    king_dir: &Path,
    out: &Path,
    steps: usize,
    seq_len: usize,
) -> Result<(), DevkitError> {
    let king = Model::load(king_dir, DType::F32, &Device::Cpu).map_err(err("loading the king"))?;
    let mut trainer = Trainer::new(&king, AdamWConfig::default()).map_err(err("trainer"))?;
    let rows = 8;
    for step in 0..steps {
        let tokens = synthetic_tokens(rows * seq_len, 1000 + step as u64);
        let ids = TokenIds::new(tokens, rows, seq_len).map_err(err("ids"))?;
        trainer.step(&ids, 2e-3).map_err(err("training step"))?;
    }
    save_model(trainer.model(), out)
}

/// Build the network under `root` (which must exist and be empty).
pub fn tiny_network(root: &Path, opts: &TinyOptions) -> Result<TinyNet, DevkitError> {
    let game = Game {
        reveal_delay_blocks: opts.reveal_delay,
        size_cap_bytes: opts.size_cap_bytes,
        gates: GateSwitches {
            near_copy: opts.near_copy,
            trainability_probe: opts.trainability_probe,
            ..GateSwitches::default()
        },
        ..Game::new(
            "koth-tiny",
            opts.seq_len,
            DuelRule::sequential(0.01, Delta::Absolute(0.0), opts.n_max, opts.batch_size),
        )
    };
    let net = NetworkBuilder::new(game, tiny_config())
        .block_time_ms(opts.block_time_ms)
        .max_uids(opts.max_uids)
        .immunity_period(opts.immunity_period)
        .king("king", 1)
        .data(Data::Synthetic {
            tokens: opts.tokens,
            vocab: VOCAB,
        })
        .build(root)?;
    let config_path = write_validator_config(
        root,
        "work",
        &opts.listen,
        &net.store_url,
        opts.poll_interval_ms,
    )?;
    Ok(TinyNet {
        work_dir: net.root.join("work"),
        root: net.root,
        chain_path: net.chain_path,
        store_dir: net.store_dir,
        store_url: net.store_url,
        keystore: net.keystore,
        owner: net.owner,
        validator: net.validator,
        bundle_path: net.bundle_path,
        competition_path: net.competition_path,
        config_path,
        king_dir: net.king_dir,
        king: net.king,
    })
}

/// The validator's config for a network laid out as `koth_devkit::NetworkBuilder` lays it out
/// (`competition.toml`, `chain.db`, the key `validator` in `keys/`, a local store at
/// `store_url`): the validator keeps its state in `work_dir`, listens on `listen`, polls every
/// `poll_interval_ms` and runs duels in process on the CPU. What [`write_validator_config`]
/// writes, and what `koth devnet` writes with its own timeout and holdout secret.
pub fn validator_config(
    work_dir: &str,
    listen: &str,
    store_url: &str,
    poll_interval_ms: u64,
) -> ValidatorConfig {
    let mut config = ValidatorConfig::new(
        koth_devkit::COMPETITION_FILE.into(),
        work_dir.into(),
        koth_devkit::CHAIN_FILE.into(),
        (
            koth_devkit::KEYS_DIR.into(),
            koth_devkit::VALIDATOR_KEY.into(),
        ),
        vec![store_url.to_string()],
    );
    config.listen = listen.to_string();
    config.poll_interval_ms = poll_interval_ms;
    config
}

/// Write `<root>/validator.toml`: [`validator_config`] with a 600 s duel timeout. Returns the
/// file's path.
pub fn write_validator_config(
    root: &Path,
    work_dir: &str,
    listen: &str,
    store_url: &str,
    poll_interval_ms: u64,
) -> Result<PathBuf, DevkitError> {
    let mut config = validator_config(work_dir, listen, store_url, poll_interval_ms);
    config.eval.timeout_s = 600;
    let path = root.join("validator.toml");
    let text = config.to_toml().map_err(err("validator.toml"))?;
    std::fs::write(&path, text).map_err(err("validator.toml"))?;
    Ok(path)
}
