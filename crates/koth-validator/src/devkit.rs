//! A tiny, complete koth network on one machine: an embedded chain, a local store holding a
//! genesis king (a 2-layer model with a 64-token vocabulary), a synthetic data bundle, a
//! competition file, a keystore with a registered validator that holds a permit, and a
//! `validator.toml` pointing at all of it. Used by the tests of the validator and the CLI, and
//! handy for trying the validator by hand; everything is real (nothing is mocked), only small.

use std::path::{Path, PathBuf};

use koth_chain::{Chain, EmbeddedChain, InitParams, Keypair, Keystore};
use koth_core::checkpoint::{CheckpointManifest, FileEntry};
use koth_core::competition::{
    ArchitectureLock, CompetitionFile, DataSpec, Delta, DuelRule, GateSwitches, HoldoutPolicy,
    IntakeRules, RewardPolicy, WeightsSchedule,
};
use koth_core::npy::{encode_header, NpyDtype};
use koth_core::Digest;
use koth_data::bundle::{Bundle, SourceSpec};
use koth_data::TokenizerIdentity;
use koth_model::{AdamWConfig, DType, Device, Model, ModelConfig, TokenIds, Trainer};
use koth_store::{BlockingStore, Location, S3Options};

use crate::config::ValidatorConfig;

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

/// A step of building the network failed: which step, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{step}: {detail}")]
pub struct DevkitError {
    pub step: String,
    pub detail: String,
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

/// The synthetic token stream: a few repeating phrases with deterministic noise, learnable in
/// a few steps.
pub fn synthetic_tokens(n: usize, seed: u64) -> Vec<u32> {
    let phrases: [&[u32]; 4] = [
        &[3, 17, 42, 8, 29, 55, 1, 60],
        &[5, 9, 13, 21, 34, 2],
        &[11, 12, 13, 14, 15, 16, 17],
        &[40, 41, 7, 7, 40, 41],
    ];
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let p = phrases[((state >> 33) % 4) as usize];
        out.extend_from_slice(p);
    }
    out.truncate(n);
    out
}

/// Write `model` in Hugging Face layout into `dir`.
pub fn save_model(model: &Model, dir: &Path) -> Result<(), DevkitError> {
    model
        .save(dir)
        .map_err(err(&format!("saving a model to {}", dir.display())))
}

/// Put a checkpoint directory into the store; its digest.
pub fn put(store_url: &str, dir: &Path) -> Result<Digest, DevkitError> {
    let loc: Location = store_url.parse().map_err(err("store location"))?;
    let store = BlockingStore::open(&loc, &S3Options::default()).map_err(err("opening store"))?;
    Ok(store
        .put(dir)
        .map_err(err(&format!("putting {}", dir.display())))?
        .digest)
}

/// Write files into the store's layout directly, bypassing `put`'s file policy: how a
/// malicious miner's upload looks (a `.py` file, say). Returns the manifest's digest.
pub fn put_raw(store_dir: &Path, files: &[(&str, Vec<u8>)]) -> Result<Digest, DevkitError> {
    let mut entries = Vec::new();
    for (path, bytes) in files {
        let sha = Digest::of(bytes);
        let blob = store_dir.join("blobs/sha256").join(sha.hex());
        std::fs::create_dir_all(blob.parent().unwrap_or(store_dir)).map_err(err("blob dir"))?;
        std::fs::write(&blob, bytes).map_err(err("writing a blob"))?;
        entries.push(FileEntry {
            path: path.to_string(),
            size: bytes.len() as u64,
            sha256: sha,
        });
    }
    let manifest = CheckpointManifest::new(entries).map_err(err("manifest"))?;
    let digest = manifest.digest();
    let path = store_dir
        .join("manifests/sha256")
        .join(format!("{}.json", digest.hex()));
    std::fs::create_dir_all(path.parent().unwrap_or(store_dir)).map_err(err("manifest dir"))?;
    std::fs::write(&path, manifest.canonical_bytes()).map_err(err("writing a manifest"))?;
    Ok(digest)
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

/// Generate a new keypair from a fixed seed (tests want stable identities).
pub fn key(seed: u8) -> Keypair {
    Keypair::from_seed([seed; 32])
}

/// Register `hotkey` on the chain (its own coldkey).
pub fn register(chain: &dyn Chain, hotkey: &Keypair) -> Result<(), DevkitError> {
    chain
        .register(hotkey, &hotkey.account())
        .map(|_| ())
        .map_err(err("register"))
}

/// Build the network under `root` (which must exist and be empty).
pub fn tiny_network(root: &Path, opts: &TinyOptions) -> Result<TinyNet, DevkitError> {
    let root = root.to_path_buf();
    let owner = key(1);
    let validator = key(2);
    // Chain.
    let chain_path = root.join("chain.db");
    let chain = EmbeddedChain::init_with_pruning(
        &chain_path,
        &InitParams {
            netuid: 7,
            block_time_ms: opts.block_time_ms,
            reveal_delay: opts.reveal_delay,
            emission_per_block_rao: 1_000_000_000,
            max_uids: opts.max_uids,
            owner: owner.account(),
        },
        opts.immunity_period,
        Box::new(koth_chain::SystemClock),
    )
    .map_err(err("chain init"))?;
    register(&chain, &validator)?;
    chain
        .grant_validator_permit(&owner, &validator.account())
        .map_err(err("validator permit"))?;
    // Keystore.
    let keystore = root.join("keys");
    Keystore::new(&keystore)
        .insert("validator", &validator)
        .map_err(err("keystore"))?;
    // Store and genesis king.
    let store_dir = root.join("store");
    std::fs::create_dir_all(&store_dir).map_err(err("store dir"))?;
    let store_url = format!("file://{}", store_dir.display());
    let king_dir = root.join("king");
    let king_model =
        Model::init(&tiny_config(), 1, DType::F32, &Device::Cpu).map_err(err("init king"))?;
    save_model(&king_model, &king_dir)?;
    let king = put(&store_url, &king_dir)?;
    // Lock every structural key the saved config has (a locked key the king lacks would make
    // the config gate undecidable).
    let king_config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(king_dir.join("config.json")).map_err(err("king config"))?,
    )
    .map_err(err("king config"))?;
    let locked = ArchitectureLock::structural_keys_of(&king_config);
    // Data.
    let data_dir = root.join("data/synthetic");
    std::fs::create_dir_all(&data_dir).map_err(err("data dir"))?;
    let tokens = synthetic_tokens(opts.tokens, 7);
    let half_n = tokens.len() / 2;
    for (i, part) in [&tokens[..half_n], &tokens[half_n..]].iter().enumerate() {
        let mut bytes = encode_header(NpyDtype::U32, &[part.len()]);
        for t in part.iter() {
            bytes.extend_from_slice(&t.to_le_bytes());
        }
        std::fs::write(data_dir.join(format!("shard-{i:05}.npy")), bytes).map_err(err("shard"))?;
    }
    let identity = TokenizerIdentity {
        name: "tiny-synthetic".into(),
        sha256: Digest::of(b"tiny-synthetic-tokenizer"),
        vocab_size: VOCAB,
        eos_id: 0,
        eos_token: "<eos>".into(),
    };
    let manifest = koth_data::ingest::manifest_for_existing(&data_dir, "synthetic", &identity)
        .map_err(err("data manifest"))?;
    std::fs::write(data_dir.join("manifest.json"), manifest.to_bytes()).map_err(err("manifest"))?;
    let bundle_path = root.join("data/bundle.json");
    let bundle = Bundle::build(
        &bundle_path,
        &[SourceSpec {
            name: "synthetic".into(),
            manifest: data_dir.clone(),
            weight: 1,
            private: false,
        }],
    )
    .map_err(err("bundle"))?;
    bundle
        .write_new(&bundle_path)
        .map_err(err("bundle write"))?;
    // Competition.
    let competition = CompetitionFile {
        name: "koth-tiny".into(),
        netuid: 7,
        genesis_king: king,
        genesis_location: Some(store_url.clone()),
        start_block: 0,
        architecture: ArchitectureLock::hf("llama", locked),
        data: DataSpec {
            bundle: "data/bundle.json".into(),
            bundle_sha256: bundle.sha256(),
            seq_len: opts.seq_len,
            holdout: HoldoutPolicy::None,
        },
        duel: DuelRule::sequential(0.01, Delta::Absolute(0.0), opts.n_max, opts.batch_size),
        intake: IntakeRules {
            reveal_delay_blocks: opts.reveal_delay,
            size_cap_bytes: opts.size_cap_bytes,
            max_infra_retries: 50,
            history_len: 256,
        },
        gates: GateSwitches {
            near_copy: opts.near_copy,
            trainability_probe: opts.trainability_probe,
            ..GateSwitches::default()
        },
        reward: RewardPolicy::WinnerTakeAll,
        weights: WeightsSchedule {
            interval_blocks: 100,
        },
    };
    let competition_path = root.join("competition.toml");
    let text = competition.to_toml().map_err(err("competition"))?;
    std::fs::write(&competition_path, text).map_err(err("competition"))?;
    let work_dir = root.join("work");
    let config_path = write_validator_config(
        &root,
        "work",
        &opts.listen,
        &store_url,
        opts.poll_interval_ms,
    )?;
    Ok(TinyNet {
        root,
        chain_path,
        store_dir,
        store_url,
        keystore,
        owner,
        validator,
        bundle_path,
        competition_path,
        config_path,
        work_dir,
        king_dir,
        king,
    })
}

/// Write `<root>/validator.toml` for a network laid out as [`tiny_network`] lays it out
/// (`competition.toml`, `chain.db`, the key `validator` in `keys/`, a local store at
/// `store_url`): the validator keeps its state in `work_dir`, listens on `listen`, polls every
/// `poll_interval_ms` and runs duels in process on the CPU. Returns the file's path.
pub fn write_validator_config(
    root: &Path,
    work_dir: &str,
    listen: &str,
    store_url: &str,
    poll_interval_ms: u64,
) -> Result<PathBuf, DevkitError> {
    let mut config = ValidatorConfig::new(
        "competition.toml".into(),
        work_dir.into(),
        "chain.db".into(),
        ("keys".into(), "validator".into()),
        vec![store_url.to_string()],
    );
    config.listen = listen.to_string();
    config.poll_interval_ms = poll_interval_ms;
    config.eval.timeout_s = 600;
    let path = root.join("validator.toml");
    let text = config.to_toml().map_err(err("validator.toml"))?;
    std::fs::write(&path, text).map_err(err("validator.toml"))?;
    Ok(path)
}

/// `v4|<location>|<digest>|<hotkey>`.
pub fn payload(location: &str, digest: &Digest, hotkey: &Keypair) -> String {
    format!("v4|{location}|{digest}|{}", hotkey.account().to_ss58())
}
