//! One builder of a complete koth network on one machine: an embedded chain with a registered
//! validator that holds a permit (and registered miners), a keystore, a local store holding a
//! genesis king, the duel's data and a competition file, laid out in one directory.
//!
//! ```text
//! chain.db            the embedded chain
//! keys/               keystore: validator (owner when asked), miner-1 … miner-N
//! store/              the checkpoint store (file://), holding the genesis king
//! <king dir>/         the genesis king's files (a freshly initialised model)
//! <data>              the duel's data: synthetic shards and a bundle, or a copied directory
//! competition.toml    the game
//! ```
//!
//! Every network koth builds goes through [`NetworkBuilder`]: the validator's devkit
//! (`koth_validator::devkit::tiny_network`, for the validator's and the CLI's tests), the
//! miner's (`koth_miner::devkit::mini_network`) and `koth devnet`'s workspace. They differ only
//! in options. The roles' own config files (`validator.toml`, `miner.toml`) are written by the
//! roles' typed writers on top of a built [`Network`]: this crate sits below both roles and
//! depends on neither. Everything is real (nothing is mocked), only small.

use std::path::{Path, PathBuf};

use koth_chain::{Chain, EmbeddedChain, InitParams, Keypair, Keystore};
use koth_core::checkpoint::{CheckpointManifest, FileEntry};
use koth_core::competition::{
    ArchitectureLock, Competition, CompetitionError, CompetitionFile, DataSpec, DuelRule,
    GateSwitches, HoldoutPolicy, IntakeRules, RewardPolicy, WeightsSchedule,
};
use koth_core::npy::{encode_header, NpyDtype};
use koth_core::Digest;
use koth_data::bundle::{Bundle, SourceSpec};
use koth_data::TokenizerIdentity;
use koth_model::{DType, Device, Model, ModelConfig};
use koth_store::{BlockingStore, Location, S3Options};

/// The subnet every built network runs on.
pub const NETUID: u16 = 7;
/// The chain's file, in the network's directory.
pub const CHAIN_FILE: &str = "chain.db";
/// The keystore's directory, in the network's directory.
pub const KEYS_DIR: &str = "keys";
/// The validator's key in the keystore.
pub const VALIDATOR_KEY: &str = "validator";
/// The subnet owner's key in the keystore (when [`NetworkBuilder::owner_in_keystore`]).
pub const OWNER_KEY: &str = "owner";
/// The store's directory, in the network's directory.
pub const STORE_DIR: &str = "store";
/// The competition file, in the network's directory.
pub const COMPETITION_FILE: &str = "competition.toml";
/// The synthetic data's bundle, relative to the network's directory.
pub const SYNTHETIC_BUNDLE: &str = "data/bundle.json";

/// A step of building a network failed: which step, and why.
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

/// Name of miner `index` (0-based) in the keystore: `miner-1`, `miner-2`, …
pub fn miner_name(index: usize) -> String {
    format!("miner-{}", index + 1)
}

/// `file:///…/store` of a network whose directory is `root`.
pub fn store_url(root: &Path) -> String {
    format!("file://{}", root.join(STORE_DIR).display())
}

/// A keypair from a fixed seed (tests want stable identities).
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

/// `v4|<location>|<digest>|<hotkey>`.
pub fn payload(location: &str, digest: &Digest, hotkey: &Keypair) -> String {
    format!("v4|{location}|{digest}|{}", hotkey.account().to_ss58())
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

/// The synthetic token stream: a few repeating phrases with deterministic noise, learnable in
/// a few steps (every token is below 64).
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

/// The network's identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Fixed seeds, stable from build to build (tests): the owner is [`key`]`(1)`, the
    /// validator `key(2)`, miner `i` (0-based) `key(40 + i)`.
    Seeded,
    /// Fresh random keys (a devnet).
    Fresh,
}

/// The data the duel scores on.
#[derive(Debug, Clone)]
pub enum Data {
    /// `tokens` [`synthetic_tokens`] (seed 7) in two `.npy` shards under `data/synthetic`,
    /// with a manifest for a tokenizer of `vocab` tokens, bundled as [`SYNTHETIC_BUNDLE`].
    Synthetic { tokens: usize, vocab: u32 },
    /// A copy of a directory holding bundles.
    Copied(CopiedData),
}

/// A directory copied into the network (a corpus, a fixture), one of whose bundles the duel
/// scores on.
#[derive(Debug, Clone)]
pub struct CopiedData {
    /// The directory to copy.
    pub from: PathBuf,
    /// Where the copy goes, relative to the network's directory.
    pub into: String,
    /// Entries (at any depth) whose file name this returns true for are not copied.
    pub skip: fn(&str) -> bool,
    /// The duel's bundle, relative to the network's directory (inside the copy).
    pub duel_bundle: String,
    /// The duel's bundle's sha256 when the caller already knows it; read from the copied
    /// bundle otherwise.
    pub duel_bundle_sha256: Option<Digest>,
}

impl CopiedData {
    /// Copy all of `from` into `into`; the duel scores on `duel_bundle` (relative to the
    /// network's directory), whose sha256 is read from the copy.
    pub fn all(from: PathBuf, into: &str, duel_bundle: &str) -> Self {
        CopiedData {
            from,
            into: into.to_string(),
            skip: |_| false,
            duel_bundle: duel_bundle.to_string(),
            duel_bundle_sha256: None,
        }
    }
}

/// The game the competition file states, apart from what building decides (the genesis king,
/// its location, the start block, the architecture lock and the data bundle).
#[derive(Debug, Clone)]
pub struct Game {
    /// The competition's name.
    pub name: String,
    /// A comment written above the file's first line (without the `# `).
    pub header: Option<String>,
    /// Tokens per duel window.
    pub seq_len: u32,
    pub holdout: HoldoutPolicy,
    pub duel: DuelRule,
    /// The intake's reveal window W, and the embedded chain's reveal delay.
    pub reveal_delay_blocks: u64,
    pub size_cap_bytes: u64,
    pub max_infra_retries: u32,
    pub history_len: u32,
    pub gates: GateSwitches,
    pub reward: RewardPolicy,
    pub weights_interval_blocks: u64,
}

impl Game {
    /// A game named `name` with windows of `seq_len` tokens and `duel`: no holdout, a reveal
    /// delay of 2 blocks, a 64 MiB size cap, 50 infrastructure retries, 256 reigns of history,
    /// the default gates, winner takes all, weights every 100 blocks.
    pub fn new(name: &str, seq_len: u32, duel: DuelRule) -> Self {
        Game {
            name: name.to_string(),
            header: None,
            seq_len,
            holdout: HoldoutPolicy::None,
            duel,
            reveal_delay_blocks: 2,
            size_cap_bytes: 64 << 20,
            max_infra_retries: 50,
            history_len: 256,
            gates: GateSwitches::default(),
            reward: RewardPolicy::WinnerTakeAll,
            weights_interval_blocks: 100,
        }
    }

    /// The competition file of this game: genesis king `king` at `location`, starting at
    /// `start_block`, locking `architecture`, scoring on `bundle` (relative to the network's
    /// directory) whose sha256 is `bundle_sha256`.
    pub fn file(
        &self,
        king: &Digest,
        location: &str,
        start_block: u64,
        architecture: ArchitectureLock,
        bundle: &str,
        bundle_sha256: Digest,
    ) -> CompetitionFile {
        CompetitionFile {
            name: self.name.clone(),
            netuid: NETUID,
            genesis_king: *king,
            genesis_location: Some(location.to_string()),
            start_block,
            architecture,
            data: DataSpec {
                bundle: bundle.to_string(),
                bundle_sha256,
                seq_len: self.seq_len,
                holdout: self.holdout.clone(),
            },
            duel: self.duel.clone(),
            intake: IntakeRules {
                reveal_delay_blocks: self.reveal_delay_blocks,
                size_cap_bytes: self.size_cap_bytes,
                max_infra_retries: self.max_infra_retries,
                history_len: self.history_len,
            },
            gates: self.gates.clone(),
            reward: self.reward.clone(),
            weights: WeightsSchedule {
                interval_blocks: self.weights_interval_blocks,
            },
        }
    }

    /// The text of `file` (one of this game's) with the header comment.
    pub fn to_toml(&self, file: &CompetitionFile) -> Result<String, CompetitionError> {
        let text = file.to_toml()?;
        Ok(match &self.header {
            Some(h) => format!("# {h}\n{text}"),
            None => text,
        })
    }
}

/// A built network: where everything is, and the keys.
#[derive(Debug, Clone)]
pub struct Network {
    /// The directory it was built in.
    pub root: PathBuf,
    pub chain_path: PathBuf,
    pub keystore: PathBuf,
    pub store_dir: PathBuf,
    /// The store's location as the network's files name it (`file:///…/store`).
    pub store_url: String,
    pub owner: Keypair,
    pub validator: Keypair,
    /// `(keystore name, key)` of each miner, registered in this order after the validator.
    pub miners: Vec<(String, Keypair)>,
    /// The bundle the duel scores on.
    pub bundle_path: PathBuf,
    pub competition_path: PathBuf,
    pub king_dir: PathBuf,
    pub king: Digest,
    /// The competition's start block.
    pub start_block: u64,
}

/// How to build a network: a [`Game`], a genesis model, and options; [`NetworkBuilder::build`]
/// creates chain, keys, store, genesis king, data and competition in one directory.
#[derive(Debug, Clone)]
pub struct NetworkBuilder {
    game: Game,
    genesis: ModelConfig,
    king_dir: String,
    king_seed: u64,
    keys: Keys,
    owner_in_keystore: bool,
    miners: usize,
    block_time_ms: u64,
    max_uids: u16,
    immunity_period: Option<u64>,
    data: Data,
    start_at_head: bool,
    named_at: Option<PathBuf>,
}

impl NetworkBuilder {
    /// A network playing `game` from a genesis king initialised from `genesis`. Defaults:
    /// seeded keys, the owner not in the keystore, no miners, 150 ms blocks, 256 uids and no
    /// pruning, the king (init seed 1) in `king/`, 200 000 synthetic tokens of the genesis
    /// vocabulary, start block 0, files naming the directory built in.
    pub fn new(game: Game, genesis: ModelConfig) -> Self {
        let vocab = u32::try_from(genesis.vocab_size).unwrap_or(u32::MAX);
        NetworkBuilder {
            game,
            genesis,
            king_dir: "king".into(),
            king_seed: 1,
            keys: Keys::Seeded,
            owner_in_keystore: false,
            miners: 0,
            block_time_ms: 150,
            max_uids: 256,
            immunity_period: None,
            data: Data::Synthetic {
                tokens: 200_000,
                vocab,
            },
            start_at_head: false,
            named_at: None,
        }
    }

    /// The genesis king goes into `dir` (relative to the network's directory), initialised
    /// with `seed`.
    pub fn king(mut self, dir: &str, seed: u64) -> Self {
        self.king_dir = dir.to_string();
        self.king_seed = seed;
        self
    }

    pub fn keys(mut self, keys: Keys) -> Self {
        self.keys = keys;
        self
    }

    /// Whether the subnet owner's key goes into the keystore (as [`OWNER_KEY`]).
    pub fn owner_in_keystore(mut self, yes: bool) -> Self {
        self.owner_in_keystore = yes;
        self
    }

    /// Miner hotkeys to create, put in the keystore ([`miner_name`]) and register.
    pub fn miners(mut self, n: usize) -> Self {
        self.miners = n;
        self
    }

    pub fn block_time_ms(mut self, ms: u64) -> Self {
        self.block_time_ms = ms;
        self
    }

    pub fn max_uids(mut self, n: u16) -> Self {
        self.max_uids = n;
        self
    }

    /// `Some(blocks)`: a chain that prunes the lowest earner once `max_uids` are registered,
    /// sparing neurons younger than this many blocks (and validator permits).
    pub fn immunity_period(mut self, blocks: Option<u64>) -> Self {
        self.immunity_period = blocks;
        self
    }

    pub fn data(mut self, data: Data) -> Self {
        self.data = data;
        self
    }

    /// Start the competition at the chain's head once everyone is registered (else block 0).
    pub fn start_at_head(mut self, yes: bool) -> Self {
        self.start_at_head = yes;
        self
    }

    /// The network is built in one directory and then moved to `root`: the files it writes
    /// (the competition's genesis location) name `root`.
    pub fn named_at(mut self, root: &Path) -> Self {
        self.named_at = Some(root.to_path_buf());
        self
    }

    /// The game this builder writes.
    pub fn game(&self) -> &Game {
        &self.game
    }

    /// Build the network in `dir` (which must exist; what it holds is left alone, but nothing
    /// the network writes may be there yet).
    pub fn build(&self, dir: &Path) -> Result<Network, DevkitError> {
        let root = dir.to_path_buf();
        // The duel's data.
        let (bundle, bundle_sha256) = match &self.data {
            Data::Synthetic { tokens, vocab } => (
                SYNTHETIC_BUNDLE.to_string(),
                synthetic_data(&root, *tokens, *vocab)?,
            ),
            Data::Copied(c) => {
                copy_dir(&c.from, &root.join(&c.into), c.skip)
                    .map_err(err(&format!("copying {}", c.from.display())))?;
                let sha = match c.duel_bundle_sha256 {
                    Some(sha) => sha,
                    None => Bundle::read(&root.join(&c.duel_bundle))
                        .map_err(err("the duel's bundle"))?
                        .sha256(),
                };
                (c.duel_bundle.clone(), sha)
            }
        };
        // Keys.
        let (owner, validator) = match self.keys {
            Keys::Seeded => (key(1), key(2)),
            Keys::Fresh => (Keypair::generate(), Keypair::generate()),
        };
        let miners: Vec<(String, Keypair)> = (0..self.miners)
            .map(|i| {
                let k = match self.keys {
                    Keys::Seeded => key(40 + i as u8),
                    Keys::Fresh => Keypair::generate(),
                };
                (miner_name(i), k)
            })
            .collect();
        let keystore = root.join(KEYS_DIR);
        let ks = Keystore::new(&keystore);
        if self.owner_in_keystore {
            ks.insert(OWNER_KEY, &owner).map_err(err("keystore"))?;
        }
        ks.insert(VALIDATOR_KEY, &validator)
            .map_err(err("keystore"))?;
        for (name, k) in &miners {
            ks.insert(name, k).map_err(err("keystore"))?;
        }
        // Chain: the validator with a permit, then the miners.
        let chain_path = root.join(CHAIN_FILE);
        let start_block = {
            let chain = EmbeddedChain::init_with_pruning(
                &chain_path,
                &InitParams {
                    netuid: NETUID,
                    block_time_ms: self.block_time_ms,
                    reveal_delay: self.game.reveal_delay_blocks,
                    emission_per_block_rao: 1_000_000_000,
                    max_uids: self.max_uids,
                    owner: owner.account(),
                },
                self.immunity_period,
                Box::new(koth_chain::SystemClock),
            )
            .map_err(err("chain init"))?;
            register(&chain, &validator)?;
            chain
                .grant_validator_permit(&owner, &validator.account())
                .map_err(err("validator permit"))?;
            for (name, k) in &miners {
                register(&chain, k).map_err(|e| DevkitError {
                    step: format!("registering {name}"),
                    detail: e.detail,
                })?;
            }
            if self.start_at_head {
                chain.block().map_err(err("chain head"))?.number
            } else {
                0
            }
        };
        // Store and genesis king.
        let store_dir = root.join(STORE_DIR);
        std::fs::create_dir_all(&store_dir).map_err(err("store dir"))?;
        let king_dir = root.join(&self.king_dir);
        let king_model = Model::init(&self.genesis, self.king_seed, DType::F32, &Device::Cpu)
            .map_err(err("init king"))?;
        save_model(&king_model, &king_dir)?;
        let king = put(&store_url(&root), &king_dir)?;
        // Lock every structural key the saved config has (a locked key the king lacks would
        // make the config gate undecidable).
        let saved: serde_json::Value = serde_json::from_slice(
            &std::fs::read(king_dir.join("config.json")).map_err(err("king config"))?,
        )
        .map_err(err("king config"))?;
        let family = self
            .genesis
            .raw
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let architecture =
            ArchitectureLock::hf(family, ArchitectureLock::structural_keys_of(&saved));
        // Competition: one the validator accepts.
        let store_url = store_url(self.named_at.as_deref().unwrap_or(&root));
        let file = self.game.file(
            &king,
            &store_url,
            start_block,
            architecture,
            &bundle,
            bundle_sha256,
        );
        let text = self.game.to_toml(&file).map_err(err("competition"))?;
        Competition::from_toml_str(&text).map_err(err("competition"))?;
        let competition_path = root.join(COMPETITION_FILE);
        std::fs::write(&competition_path, text).map_err(err("competition"))?;
        Ok(Network {
            bundle_path: root.join(&bundle),
            chain_path,
            keystore,
            store_dir,
            store_url,
            owner,
            validator,
            miners,
            competition_path,
            king_dir,
            king,
            start_block,
            root,
        })
    }
}

/// Write the synthetic data under `root/data`; the bundle's sha256.
fn synthetic_data(root: &Path, tokens: usize, vocab: u32) -> Result<Digest, DevkitError> {
    let data_dir = root.join("data/synthetic");
    std::fs::create_dir_all(&data_dir).map_err(err("data dir"))?;
    let tokens = synthetic_tokens(tokens, 7);
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
        vocab_size: vocab,
        eos_id: 0,
        eos_token: "<eos>".into(),
    };
    let manifest = koth_data::ingest::manifest_for_existing(&data_dir, "synthetic", &identity)
        .map_err(err("data manifest"))?;
    std::fs::write(data_dir.join("manifest.json"), manifest.to_bytes()).map_err(err("manifest"))?;
    let bundle_path = root.join(SYNTHETIC_BUNDLE);
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
    Ok(bundle.sha256())
}

/// Copy the files and directories of `from` into `to` (symbolic links and entries `skip`
/// names are left out).
fn copy_dir(from: &Path, to: &Path, skip: fn(&str) -> bool) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if skip(&name.to_string_lossy()) {
            continue;
        }
        let ty = entry.file_type()?;
        if ty.is_dir() {
            copy_dir(&entry.path(), &to.join(&name), skip)?;
        } else if ty.is_file() {
            std::fs::copy(entry.path(), to.join(&name))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use koth_core::competition::Delta;

    fn small() -> ModelConfig {
        let v = serde_json::json!({
            "model_type": "llama",
            "vocab_size": 64,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 8,
            "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0,
            "hidden_act": "silu",
            "max_position_embeddings": 64,
            "tie_word_embeddings": false,
        });
        ModelConfig::from_json(&v.to_string(), "small").unwrap()
    }

    fn game() -> Game {
        Game::new(
            "t",
            16,
            DuelRule::sequential(0.01, Delta::Absolute(0.0), 64, 16),
        )
    }

    #[test]
    fn a_built_network_is_one_the_roles_accept() {
        let tmp = tempfile::tempdir().unwrap();
        let net = NetworkBuilder::new(game(), small())
            .miners(2)
            .data(Data::Synthetic {
                tokens: 10_000,
                vocab: 64,
            })
            .build(tmp.path())
            .unwrap();
        let c =
            Competition::from_toml_str(&std::fs::read_to_string(&net.competition_path).unwrap())
                .unwrap();
        assert_eq!(c.genesis_king, net.king);
        assert_eq!(c.genesis_location.as_deref(), Some(net.store_url.as_str()));
        assert_eq!(c.start_block, 0);
        assert_eq!(c.architecture.family, "llama");
        assert!(c.architecture.locked_keys.iter().any(|k| k == "vocab_size"));
        assert_eq!(
            Bundle::read(&net.bundle_path).unwrap().sha256(),
            c.data.bundle_sha256
        );
        // Seeded keys: the same identities every time, all in the keystore and on chain.
        assert_eq!(net.validator.account(), key(2).account());
        assert_eq!(net.miners[1].0, "miner-2");
        assert_eq!(net.miners[1].1.account(), key(41).account());
        let ks = Keystore::new(&net.keystore);
        let mut names: Vec<String> = ks.list().unwrap().into_iter().map(|k| k.name).collect();
        names.sort();
        assert_eq!(names, ["miner-1", "miner-2", "validator"]);
        let chain = EmbeddedChain::open(&net.chain_path).unwrap();
        let meta = chain.metagraph().unwrap();
        let uid = |k: &Keypair| meta.by_hotkey(&k.account()).map(|n| n.uid);
        assert_eq!(uid(&net.validator), Some(0));
        assert_eq!(uid(&net.miners[0].1), Some(1));
        assert_eq!(uid(&net.miners[1].1), Some(2));
        // The king is in the store under its digest.
        assert_eq!(put(&net.store_url, &net.king_dir).unwrap(), net.king);
    }

    #[test]
    fn a_network_built_to_be_moved_names_its_final_place() {
        let tmp = tempfile::tempdir().unwrap();
        let stage = tmp.path().join("stage");
        std::fs::create_dir_all(&stage).unwrap();
        let fin = tmp.path().join("final");
        let net = NetworkBuilder::new(game(), small())
            .keys(Keys::Fresh)
            .owner_in_keystore(true)
            .named_at(&fin)
            .start_at_head(true)
            .data(Data::Synthetic {
                tokens: 10_000,
                vocab: 64,
            })
            .build(&stage)
            .unwrap();
        assert_eq!(net.store_url, store_url(&fin));
        assert_eq!(net.store_dir, stage.join(STORE_DIR));
        assert_ne!(net.validator.account(), key(2).account());
        let ks = Keystore::new(&net.keystore);
        assert_eq!(ks.load(OWNER_KEY).unwrap().account(), net.owner.account());
        let text = std::fs::read_to_string(&net.competition_path).unwrap();
        assert!(text.contains(&store_url(&fin)), "{text}");
    }
}
