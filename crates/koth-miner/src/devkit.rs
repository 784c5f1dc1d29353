//! A small but complete network for the miner's tests and for trying the miner by hand: the
//! devnet-mini corpus (`fixtures/devnet-mini`, Shakespeare tokenized with a 4096-token BPE), an
//! embedded chain with a validator holding a permit and registered miner hotkeys, a store with
//! a genesis king (a freshly initialised 2-layer llama, vocab 4096, hidden 64), a competition
//! file whose duel data is the held-out source, a `validator.toml`, and `miner.toml` files.
//! Everything is real; only small.

use std::path::{Path, PathBuf};

use koth_chain::{Chain, EmbeddedChain, InitParams, Keypair, Keystore};
use koth_core::Digest;
use koth_model::{DType, Device, Model, ModelConfig};
use koth_store::{BlockingStore, Location, S3Options};

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
pub fn mini_config() -> Result<ModelConfig, String> {
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
    ModelConfig::from_json(&v.to_string(), "mini").map_err(|e| e.to_string())
}

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
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
pub fn mini_network(root: &Path, opts: &MiniOptions) -> Result<MiniNet, String> {
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
    let competition = format!(
        r#"name = "koth-devnet-mini"
netuid = 7
genesis_king = "{king}"
genesis_location = "{store_url}"
start_block = 0

[architecture]
family = "llama"
locked_keys = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size", "rope_theta", "rms_norm_eps", "max_position_embeddings", "tie_word_embeddings", "head_dim"]
free_keys = ["transformers_version", "torch_dtype", "_name_or_path", "use_cache"]
allowed_dtypes = ["F32", "BF16"]

[data]
bundle = "data/holdout-bundle.json"
bundle_sha256 = "{bundle_sha}"
seq_len = {seq_len}

[duel]
test = "sequential"
alpha = 0.01
delta = {{ absolute = {delta} }}
n_max = {n_max}
batch_size = {batch}

[intake]
reveal_delay_blocks = {delay}
size_cap_bytes = 67108864
max_infra_retries = 50

[reward]
policy = "winner_take_all"

[weights]
interval_blocks = 100
"#,
        seq_len = opts.seq_len,
        delta = opts.delta_nats,
        n_max = opts.n_max,
        batch = opts.duel_batch,
        delay = opts.reveal_delay,
    );
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
    /// Write `validator.toml` listening on `listen` (e.g. `127.0.0.1:38123`); its path.
    pub fn write_validator_config(&self, listen: &str) -> Result<PathBuf, String> {
        let text = format!(
            r#"competition = "competition.toml"
work_dir = "validator"
listen = "{listen}"
poll_interval_ms = 100

[chain]
path = "chain.db"

[key]
keystore = "keys"
name = "validator"

[store]
allowed_locations = ["{store}"]

[eval]
worker = "in-process"
timeout_s = 600
device = "cpu"
dtype = "f32"
"#,
            store = self.store_url
        );
        let path = self.root.join("validator.toml");
        std::fs::write(&path, text).map_err(err("validator.toml"))?;
        Ok(path)
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
    ) -> Result<PathBuf, String> {
        let (name, _) = self
            .miners
            .get(index)
            .ok_or_else(|| format!("no miner {index}"))?;
        let validator = match feed {
            Some(url) => format!("[validator]\nfeed = \"{url}\"\nverdict_timeout_s = 300\n"),
            None => "[validator]\nverdict_timeout_s = 300\n".into(),
        };
        let text = format!(
            r#"competition = "competition.toml"
work_dir = "{name}"
poll_interval_ms = 200

[chain]
path = "chain.db"

[key]
keystore = "keys"
name = "{name}"

[store]
location = "{store}"

{validator}
[data]
bundle = "data/train-bundle.json"
holdout_windows = {holdout_windows}
seed = {seed}

[train]
{train}
"#,
            store = self.store_url,
        );
        let path = self.root.join(format!("{name}.toml"));
        std::fs::write(&path, text).map_err(err("miner.toml"))?;
        Ok(path)
    }
}
