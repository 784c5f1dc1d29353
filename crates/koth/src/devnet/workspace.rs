//! The devnet's workspace: everything one network on one machine needs, in one directory.
//!
//! ```text
//! devnet.json          the workspace record (what it was made of; written last)
//! chain.db             the embedded chain: validator (with permit) and miners registered
//! keys/                keystore: owner, validator, miner-1 … miner-N
//! store/               the checkpoint store (file://): the genesis king and every challenger
//! genesis/             the genesis king's files (a fresh random model)
//! corpus/              the corpus: training bundle (miners), private holdout (validator)
//! competition.toml     the game: duel data = the private holdout
//! validator.toml       the validator (dashboard on --port, the holdout secret)
//! validator/           the validator's event log, cache and verdict records
//! miner-N.toml, miner-N/   each miner's config and work directory (attempts.jsonl)
//! logs/                one log per process
//! kings/, reigns.txt, reigns.json   the end-of-run scoring of every king
//! ```
//!
//! The network itself (chain, keys, store, genesis king, corpus copy, competition) is built by
//! `koth_devkit::NetworkBuilder`, the one builder the validator's and the miner's devkits use
//! too; the workspace adds the record, the per-run configs and the reuse rules.
//!
//! The texts of the config files are pure functions of the [`NetworkSpec`] and the values
//! fixed at creation, so they are unit-tested without building anything. A workspace is
//! reused when its record matches what is asked; otherwise it is refused with the differences
//! and the advice to pass `--fresh` (which only ever deletes a directory holding a devnet
//! record).

use std::path::{Path, PathBuf};

use koth_core::competition::{Delta, DuelRule, GateSwitches, HoldoutPolicy};
use koth_core::Digest;
use koth_devkit::{CopiedData, Data, Game, Keys, NetworkBuilder};
use koth_model::ModelConfig;
use serde::{Deserialize, Serialize};

use super::corpus::Corpus;
use super::schedule::TrainPlan;

pub const RECORD_FILE: &str = "devnet.json";
pub const RECORD_FORMAT: &str = "koth-devnet-workspace/1";
/// The marker of a workspace being built (a directory holding it may be deleted).
const STAGING_MARKER: &str = ".koth-devnet-staging";

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("workspace {root} was made for a different network:\n{}\npass --fresh to delete it and start over, or --workspace DIR to use another directory", differences.iter().map(|d| format!("  - {d}")).collect::<Vec<_>>().join("\n"))]
    Incompatible {
        root: PathBuf,
        differences: Vec<String>,
    },
    #[error("{root} exists and is not a devnet workspace (no {RECORD_FILE}); refusing to touch it: choose another --workspace")]
    NotAWorkspace { root: PathBuf },
    #[error("workspace {root}: {message}")]
    Setup { root: PathBuf, message: String },
}

/// The model's structure (the vocabulary comes from the corpus).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelShape {
    /// The config's `model_type`: `llama`, `qwen3`, or `qwen3_5_text` (the Qwen3.5 hybrid).
    pub family: String,
    pub hidden_size: u32,
    pub intermediate_size: u32,
    pub layers: u32,
    pub heads: u32,
    pub kv_heads: u32,
}

/// The duel rule of the devnet's competition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DuelSpec {
    pub alpha: f64,
    /// Effect floor as a fraction of the king's mean loss.
    pub delta_relative: f64,
    pub n_max: u32,
    pub batch_size: u32,
}

/// What a workspace is made of: a reused workspace must match it exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub miners: u32,
    pub model: ModelShape,
    pub vocab: u32,
    pub seq_len: u32,
    pub block_time_ms: u64,
    pub reveal_delay_blocks: u64,
    pub duel: DuelSpec,
    pub train_bundle_sha256: Digest,
    pub holdout_bundle_sha256: Digest,
    pub holdout_root: Digest,
}

/// `devnet.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceRecord {
    pub format: String,
    /// Where the workspace was made (its files name absolute store locations).
    pub root: PathBuf,
    pub spec: NetworkSpec,
    pub genesis_king: Digest,
    pub start_block: u64,
    pub created_unix_s: u64,
}

/// What differs between the workspace's spec and the one asked for, one sentence each.
pub fn spec_differences(old: &NetworkSpec, new: &NetworkSpec) -> Vec<String> {
    let mut out = Vec::new();
    let mut diff = |what: &str, a: String, b: String| {
        if a != b {
            out.push(format!(
                "{what}: the workspace has {a}, this run asks for {b}"
            ));
        }
    };
    diff("miners", old.miners.to_string(), new.miners.to_string());
    diff(
        "model",
        format!("{:?}", old.model),
        format!("{:?}", new.model),
    );
    diff("vocabulary", old.vocab.to_string(), new.vocab.to_string());
    diff("seq_len", old.seq_len.to_string(), new.seq_len.to_string());
    diff(
        "block time (ms)",
        old.block_time_ms.to_string(),
        new.block_time_ms.to_string(),
    );
    diff(
        "reveal delay (blocks)",
        old.reveal_delay_blocks.to_string(),
        new.reveal_delay_blocks.to_string(),
    );
    diff(
        "duel rule",
        format!("{:?}", old.duel),
        format!("{:?}", new.duel),
    );
    diff(
        "training bundle",
        old.train_bundle_sha256.to_string(),
        new.train_bundle_sha256.to_string(),
    );
    diff(
        "holdout bundle",
        old.holdout_bundle_sha256.to_string(),
        new.holdout_bundle_sha256.to_string(),
    );
    diff(
        "holdout root",
        old.holdout_root.to_string(),
        new.holdout_root.to_string(),
    );
    out
}

/// The genesis king's `config.json` values.
pub fn model_config_json(shape: &ModelShape, vocab: u32, seq_len: u32) -> serde_json::Value {
    let head_dim = shape.hidden_size / shape.heads.max(1);
    let mut v = serde_json::json!({
        "model_type": shape.family,
        "vocab_size": vocab,
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "head_dim": head_dim,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "max_position_embeddings": seq_len.max(64) * 2,
        "tie_word_embeddings": false,
    });
    if shape.family == "qwen3" {
        v["attention_bias"] = serde_json::json!(false);
    }
    if shape.family == "qwen3_5_text" {
        // Qwen3.5's layout at devnet size: a gated attention layer every 4th layer and always
        // last (so even a 2-layer king has both mixers), gated DeltaNet elsewhere with value
        // heads of 32 dims, twice as many as its key heads; attention rotates a quarter of each
        // head, as Qwen3.5 does (64 of 256).
        let layers = shape.layers as usize;
        let layer_types: Vec<&str> = (0..layers)
            .map(|i| {
                if (i + 1) % 4 == 0 || i + 1 == layers {
                    "full_attention"
                } else {
                    "linear_attention"
                }
            })
            .collect();
        let value_heads = shape.heads.max(1);
        let key_heads = if value_heads.is_multiple_of(2) {
            value_heads / 2
        } else {
            value_heads
        };
        let o = v.as_object_mut().expect("a JSON object");
        o.remove("rope_theta");
        o.insert("attention_bias".into(), serde_json::json!(false));
        o.insert("layer_types".into(), serde_json::json!(layer_types));
        o.insert(
            "linear_num_value_heads".into(),
            serde_json::json!(value_heads),
        );
        o.insert("linear_num_key_heads".into(), serde_json::json!(key_heads));
        o.insert("linear_key_head_dim".into(), serde_json::json!(32));
        o.insert("linear_value_head_dim".into(), serde_json::json!(32));
        o.insert("linear_conv_kernel_dim".into(), serde_json::json!(4));
        o.insert("partial_rotary_factor".into(), serde_json::json!(0.25));
        o.insert(
            "rope_parameters".into(),
            serde_json::json!({
                "rope_type": "default",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.25
            }),
        );
    }
    v
}

/// `file:///abs/store`.
pub fn store_url(root: &Path) -> String {
    koth_devkit::store_url(root)
}

/// The duel's bundle (the private holdout), relative to the workspace.
const DUEL_BUNDLE: &str = "corpus/holdout-bundle.json";

/// The devnet's game, `competition.toml`: the duel data is the private holdout (committed by
/// its root), so every crown is a win on tokens no miner trains on. The rule is the
/// anytime-valid sequential test with a small relative floor: a clearly better challenger is
/// crowned after a batch or two. Every gate runs, the optional ones included (the trainability
/// probe and the behavioural fingerprint cost well under a second on the devnet's models): it
/// is the real pipeline.
fn game(spec: &NetworkSpec) -> Game {
    Game {
        header: Some(
            "The devnet's game (generated by `koth devnet`). Duels are scored on the private holdout."
                .into(),
        ),
        holdout: HoldoutPolicy::Private {
            root: spec.holdout_root,
        },
        reveal_delay_blocks: spec.reveal_delay_blocks,
        size_cap_bytes: 256 << 20,
        max_infra_retries: 5,
        gates: GateSwitches {
            near_copy: true,
            trainability_probe: true,
            ..GateSwitches::default()
        },
        ..Game::new(
            "koth-devnet",
            spec.seq_len,
            DuelRule::sequential(
                spec.duel.alpha,
                Delta::Relative(spec.duel.delta_relative),
                spec.duel.n_max,
                spec.duel.batch_size,
            ),
        )
    }
}

/// `validator.toml`: feeds and dashboard on 127.0.0.1:`port`, duels in process on the CPU,
/// the holdout secret from the corpus.
pub fn validator_toml(port: u16, store_url: &str) -> Result<String, toml::ser::Error> {
    let mut config = koth_validator::devkit::validator_config(
        "validator",
        &format!("127.0.0.1:{port}"),
        store_url,
        500,
    );
    config.eval.timeout_s = 900;
    config.data.holdout_secret_file = Some("corpus/holdout-secret".into());
    Ok(format!(
        "# The devnet's validator (generated by `koth devnet`; rewritten on every run).\n{}",
        config.to_toml()?
    ))
}

/// `miner-N.toml` per the miner contract: trains on the public bundle only.
pub fn miner_toml(
    name: &str,
    plan: &TrainPlan,
    store_url: &str,
    port: u16,
) -> Result<String, toml::ser::Error> {
    use koth_miner::config as m;
    let file = m::MinerFile::local(
        name,
        store_url,
        (Some(format!("http://127.0.0.1:{port}")), 1800),
        m::DataSection {
            bundle: "corpus/train-bundle.json".into(),
            holdout_windows: u64::from(plan.holdout_windows),
            seed: plan.seed,
        },
        m::TrainSection {
            device: "cpu".into(),
            dtype: "f32".into(),
            lr: plan.lr,
            min_lr: plan.min_lr,
            warmup_steps: u64::from(plan.warmup_steps),
            steps: u64::from(plan.steps),
            batch_size: plan.batch_size as usize,
            grad_accum: 1,
            seq_len: plan.seq_len as usize,
            clip: 1.0,
            weight_decay: 0.1,
            checkpoint_every: u64::from(plan.checkpoint_every),
            command: None,
            time_limit_s: None,
        },
    )
    .polling_every(1000);
    Ok(format!(
        "# {name} of the devnet (generated by `koth devnet`; rewritten on every run).\n{}",
        file.to_toml()?
    ))
}

/// Name of miner `index` (0-based).
pub fn miner_name(index: u32) -> String {
    koth_devkit::miner_name(index as usize)
}

/// A ready workspace.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
    pub record: WorkspaceRecord,
    /// Whether it was made by this run (false: reused).
    pub created: bool,
}

impl Workspace {
    pub fn validator_config(&self) -> PathBuf {
        self.root.join("validator.toml")
    }
    pub fn miner_config(&self, index: u32) -> PathBuf {
        self.root.join(format!("{}.toml", miner_name(index)))
    }
    pub fn miner_dir(&self, index: u32) -> PathBuf {
        self.root.join(miner_name(index))
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn event_log(&self) -> PathBuf {
        self.root.join("validator").join("validator.db")
    }
    pub fn store_url(&self) -> String {
        store_url(&self.root)
    }
    pub fn holdout_bundle(&self) -> PathBuf {
        self.root.join("corpus").join(super::corpus::HOLDOUT_BUNDLE)
    }
    pub fn holdout_secret(&self) -> PathBuf {
        self.root.join("corpus").join(super::corpus::HOLDOUT_SECRET)
    }
    pub fn keystore(&self) -> PathBuf {
        self.root.join("keys")
    }

    /// Write the per-run files (validator.toml, miner-N.toml): the port and the training
    /// plans may change from run to run without touching the network.
    pub fn write_run_configs(&self, port: u16, plans: &[TrainPlan]) -> Result<(), WorkspaceError> {
        let url = self.store_url();
        let validator =
            validator_toml(port, &url).map_err(|e| setup(&self.root, "validator.toml", e))?;
        write(&self.root, &self.validator_config(), &validator)?;
        for (i, plan) in plans.iter().enumerate() {
            let i = i as u32;
            let miner = miner_toml(&miner_name(i), plan, &url, port)
                .map_err(|e| setup(&self.root, "miner.toml", e))?;
            write(&self.root, &self.miner_config(i), &miner)?;
        }
        std::fs::create_dir_all(self.logs()).map_err(|e| setup(&self.root, "logs", e))?;
        Ok(())
    }
}

fn setup(root: &Path, what: &str, e: impl std::fmt::Display) -> WorkspaceError {
    WorkspaceError::Setup {
        root: root.to_path_buf(),
        message: format!("{what}: {e}"),
    }
}

fn write(root: &Path, path: &Path, text: &str) -> Result<(), WorkspaceError> {
    std::fs::write(path, text).map_err(|e| setup(root, &path.display().to_string(), e))
}

/// Absolute form of `p` (the workspace's files name absolute store locations).
pub fn absolute(p: &Path) -> std::io::Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}

/// Reuse the workspace at `root` if its record matches `spec`, or make it (deleting a previous
/// devnet workspace first when `fresh`).
pub fn prepare(
    root: &Path,
    spec: &NetworkSpec,
    corpus: &Corpus,
    fresh: bool,
) -> Result<Workspace, WorkspaceError> {
    let root = absolute(root).map_err(|e| setup(root, "current directory", e))?;
    let record_path = root.join(RECORD_FILE);
    if root.exists() {
        let is_empty = std::fs::read_dir(&root)
            .map_err(|e| setup(&root, "reading it", e))?
            .next()
            .is_none();
        if record_path.is_file() {
            if fresh {
                tracing::info!(root = %root.display(), "--fresh: deleting the previous workspace");
                std::fs::remove_dir_all(&root).map_err(|e| setup(&root, "deleting it", e))?;
            } else {
                let record = read_record(&root)?;
                check_reusable(&root, &record, spec)?;
                return Ok(Workspace {
                    root,
                    record,
                    created: false,
                });
            }
        } else if !is_empty {
            return Err(WorkspaceError::NotAWorkspace { root });
        } else {
            std::fs::remove_dir(&root).map_err(|e| setup(&root, "removing the empty dir", e))?;
        }
    }
    create(&root, spec, corpus)
}

fn read_record(root: &Path) -> Result<WorkspaceRecord, WorkspaceError> {
    let path = root.join(RECORD_FILE);
    let bytes = std::fs::read(&path).map_err(|e| setup(root, RECORD_FILE, e))?;
    serde_json::from_slice(&bytes).map_err(|e| WorkspaceError::Incompatible {
        root: root.to_path_buf(),
        differences: vec![format!(
            "{} is not a record this version understands ({RECORD_FORMAT}): {e}",
            path.display()
        )],
    })
}

/// Whether a workspace with `record` at `root` can serve `spec`.
pub fn check_reusable(
    root: &Path,
    record: &WorkspaceRecord,
    spec: &NetworkSpec,
) -> Result<(), WorkspaceError> {
    let mut differences = Vec::new();
    if record.format != RECORD_FORMAT {
        differences.push(format!(
            "format: the workspace is {:?}, this version makes {RECORD_FORMAT:?}",
            record.format
        ));
    }
    if record.root != root {
        differences.push(format!(
            "location: it was made at {} (its files name that path), it is now at {}",
            record.root.display(),
            root.display()
        ));
    }
    differences.extend(spec_differences(&record.spec, spec));
    if differences.is_empty() {
        Ok(())
    } else {
        Err(WorkspaceError::Incompatible {
            root: root.to_path_buf(),
            differences,
        })
    }
}

fn staging_of(root: &Path) -> PathBuf {
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "devnet".into());
    root.with_file_name(format!(".{name}.partial"))
}

/// The corpus's entries a workspace leaves out: the raw texts, the download, hidden and
/// partial files.
fn not_in_workspace(name: &str) -> bool {
    name == "text" || name == "download" || name.starts_with('.') || name.ends_with(".partial")
}

fn create(root: &Path, spec: &NetworkSpec, corpus: &Corpus) -> Result<Workspace, WorkspaceError> {
    let stage = staging_of(root);
    if stage.exists() {
        if !stage.join(STAGING_MARKER).is_file() {
            return Err(setup(
                root,
                "staging",
                format!(
                    "{} exists and is not a devnet staging directory; remove it",
                    stage.display()
                ),
            ));
        }
        std::fs::remove_dir_all(&stage).map_err(|e| setup(root, "an interrupted setup", e))?;
    }
    std::fs::create_dir_all(&stage).map_err(|e| setup(root, "creating it", e))?;
    std::fs::write(stage.join(STAGING_MARKER), b"").map_err(|e| setup(root, "marker", e))?;
    let result = populate(root, &stage, spec, corpus);
    match result {
        Ok(record) => {
            let _ = std::fs::remove_file(stage.join(STAGING_MARKER));
            if let Some(parent) = root.parent() {
                std::fs::create_dir_all(parent).map_err(|e| setup(root, "parent", e))?;
            }
            std::fs::rename(&stage, root).map_err(|e| setup(root, "moving it into place", e))?;
            Ok(Workspace {
                root: root.to_path_buf(),
                record,
                created: true,
            })
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&stage);
            Err(e)
        }
    }
}

/// Fill `stage` with a network whose files name `root` (where it will be moved).
fn populate(
    root: &Path,
    stage: &Path,
    spec: &NetworkSpec,
    corpus: &Corpus,
) -> Result<WorkspaceRecord, WorkspaceError> {
    // Genesis king: a fresh random model.
    let config_json = model_config_json(&spec.model, spec.vocab, spec.seq_len);
    let config = ModelConfig::from_json(&config_json.to_string(), "devnet genesis config")
        .map_err(|e| setup(root, "genesis config", e))?;
    let net = NetworkBuilder::new(game(spec), config)
        .keys(Keys::Fresh)
        .owner_in_keystore(true)
        .miners(spec.miners as usize)
        .block_time_ms(spec.block_time_ms)
        .max_uids(256)
        .king("genesis", rand::random())
        .data(Data::Copied(CopiedData {
            from: corpus.dir.clone(),
            into: "corpus".into(),
            skip: not_in_workspace,
            duel_bundle: DUEL_BUNDLE.into(),
            duel_bundle_sha256: Some(spec.holdout_bundle_sha256),
        }))
        .start_at_head(true)
        .named_at(root)
        .build(stage)
        .map_err(|e| setup(root, &e.step, e.detail))?;
    for i in 0..spec.miners {
        std::fs::create_dir_all(stage.join(miner_name(i)))
            .map_err(|e| setup(root, "miner dir", e))?;
    }
    std::fs::create_dir_all(stage.join("logs")).map_err(|e| setup(root, "logs", e))?;
    let record = WorkspaceRecord {
        format: RECORD_FORMAT.into(),
        root: root.to_path_buf(),
        spec: spec.clone(),
        genesis_king: net.king,
        start_block: net.start_block,
        created_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let mut bytes = serde_json::to_vec_pretty(&record).map_err(|e| setup(root, "record", e))?;
    bytes.push(b'\n');
    std::fs::write(stage.join(RECORD_FILE), bytes).map_err(|e| setup(root, RECORD_FILE, e))?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devnet::schedule::{plan, TrainBase};
    use koth_core::competition::{ArchitectureLock, CompetitionError};

    /// The text the workspace's builder writes as `competition.toml` for these values.
    fn competition_toml(
        spec: &NetworkSpec,
        genesis: &Digest,
        store_url: &str,
        start_block: u64,
        family: &str,
        locked: &[String],
    ) -> Result<String, CompetitionError> {
        let game = game(spec);
        game.to_toml(&game.file(
            genesis,
            store_url,
            start_block,
            ArchitectureLock::hf(family, locked.to_vec()),
            DUEL_BUNDLE,
            spec.holdout_bundle_sha256,
        ))
    }

    pub(crate) fn spec() -> NetworkSpec {
        NetworkSpec {
            miners: 3,
            model: ModelShape {
                family: "llama".into(),
                hidden_size: 128,
                intermediate_size: 384,
                layers: 2,
                heads: 4,
                kv_heads: 2,
            },
            vocab: 1024,
            seq_len: 128,
            block_time_ms: 1000,
            reveal_delay_blocks: 2,
            duel: DuelSpec {
                alpha: 0.01,
                delta_relative: 0.001,
                n_max: 512,
                batch_size: 32,
            },
            train_bundle_sha256: Digest::of(b"train"),
            holdout_bundle_sha256: Digest::of(b"holdout"),
            holdout_root: Digest::of(b"root"),
        }
    }

    #[test]
    fn the_competition_scores_on_the_committed_private_holdout() {
        let s = spec();
        let config = model_config_json(&s.model, s.vocab, s.seq_len);
        let text = competition_toml(
            &s,
            &Digest::of(b"king"),
            "file:///ws/store",
            5,
            "llama",
            &ArchitectureLock::structural_keys_of(&config),
        )
        .unwrap();
        let c = koth_core::competition::Competition::from_toml_str(&text).unwrap();
        assert_eq!(c.data.bundle, "corpus/holdout-bundle.json");
        assert_eq!(c.data.bundle_sha256, s.holdout_bundle_sha256);
        assert_eq!(
            c.data.holdout,
            koth_core::competition::HoldoutPolicy::Private {
                root: s.holdout_root
            }
        );
        assert_eq!(c.start_block, 5);
        assert_eq!(c.intake.reveal_delay_blocks, 2);
        assert!(c
            .architecture
            .locked_keys
            .contains(&"vocab_size".to_string()));
        assert!(c
            .architecture
            .locked_keys
            .contains(&"hidden_size".to_string()));
        assert_eq!(c.duel.n_max, 512);
        // The real pipeline: the optional gates run too.
        assert!(c.gates.near_copy && c.gates.trainability_probe);
        // The genesis config is one koth-model accepts.
        koth_model::ModelConfig::from_json(&config.to_string(), "t").unwrap();
        let q = ModelShape {
            family: "qwen3".into(),
            ..s.model.clone()
        };
        koth_model::ModelConfig::from_json(&model_config_json(&q, 1024, 128).to_string(), "q")
            .unwrap();
    }

    #[test]
    fn the_qwen35_genesis_config_is_a_hybrid_with_both_mixers_and_locks_its_structure() {
        let s = spec();
        for layers in [1u32, 2, 4, 6] {
            let shape = ModelShape {
                family: "qwen3_5_text".into(),
                layers,
                ..s.model.clone()
            };
            let json = model_config_json(&shape, 1024, 128);
            let c = koth_model::ModelConfig::from_json(&json.to_string(), "q35").unwrap();
            assert_eq!(c.family, koth_model::Family::Qwen35);
            let h = c.hybrid.as_ref().unwrap();
            assert_eq!(
                h.layer_types.last(),
                Some(&koth_model::MixerKind::FullAttention),
                "{layers} layers: the last layer is gated attention"
            );
            if layers > 1 {
                assert!(h
                    .layer_types
                    .contains(&koth_model::MixerKind::LinearAttention));
            }
            assert_eq!(h.rotary_dim, 8);
            let locked = ArchitectureLock::structural_keys_of(&json);
            for k in [
                "layer_types",
                "linear_num_value_heads",
                "partial_rotary_factor",
            ] {
                assert!(locked.iter().any(|x| x == k), "{k} is locked");
            }
            let text = competition_toml(
                &s,
                &Digest::of(b"king"),
                "file:///ws/store",
                5,
                &shape.family,
                &locked,
            )
            .unwrap();
            let comp = koth_core::competition::Competition::from_toml_str(&text).unwrap();
            assert_eq!(comp.architecture.family, "qwen3_5_text");
        }
    }

    #[test]
    fn validator_and_miner_configs_parse_and_point_at_the_right_data() {
        let v = validator_toml(8080, "file:///ws/store").unwrap();
        let parsed: koth_validator::ValidatorConfig =
            koth_validator::ValidatorConfig::from_toml_str(&v, Path::new("v.toml")).unwrap();
        assert_eq!(parsed.listen, "127.0.0.1:8080");
        assert_eq!(
            parsed.data.holdout_secret_file.as_deref(),
            Some(Path::new("corpus/holdout-secret"))
        );
        assert_eq!(parsed.store.allowed_locations, vec!["file:///ws/store"]);
        let base = TrainBase {
            lr: 3e-3,
            steps: 60,
            batch_size: 8,
            seq_len: 128,
            holdout_windows: 64,
        };
        let p = plan(&base, 1);
        let text = miner_toml("miner-2", &p, "file:///ws/store", 8080).unwrap();
        // The miner's own strict parser accepts it (unknown keys would be errors).
        toml::from_str::<koth_miner::config::MinerFile>(&text).unwrap();
        let m: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(
            m["data"]["bundle"].as_str(),
            Some("corpus/train-bundle.json")
        );
        assert_eq!(m["key"]["name"].as_str(), Some("miner-2"));
        assert_eq!(m["store"]["location"].as_str(), Some("file:///ws/store"));
        assert_eq!(
            m["validator"]["feed"].as_str(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(m["train"]["steps"].as_integer(), Some(i64::from(p.steps)));
        assert_eq!(
            m["train"]["batch_size"].as_integer(),
            Some(i64::from(p.batch_size))
        );
        assert_eq!(m["data"]["seed"].as_integer(), Some(2));
        let lr = m["train"]["lr"].as_float().unwrap();
        assert!((lr - p.lr).abs() < 1e-12, "{lr} vs {}", p.lr);
    }

    #[test]
    fn an_incompatible_workspace_is_refused_with_every_difference_and_the_advice() {
        let root = Path::new("/tmp/ws");
        let record = WorkspaceRecord {
            format: RECORD_FORMAT.into(),
            root: root.to_path_buf(),
            spec: spec(),
            genesis_king: Digest::of(b"king"),
            start_block: 0,
            created_unix_s: 0,
        };
        check_reusable(root, &record, &spec()).unwrap();
        let mut other = spec();
        other.miners = 5;
        other.vocab = 4096;
        let e = check_reusable(root, &record, &other).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("miners") && text.contains("vocabulary"),
            "{text}"
        );
        assert!(text.contains("--fresh"), "{text}");
        let WorkspaceError::Incompatible { differences, .. } = e else {
            panic!("wrong error")
        };
        assert_eq!(differences.len(), 2);
        // Moved elsewhere: its files name the old path.
        let e = check_reusable(Path::new("/elsewhere"), &record, &spec()).unwrap_err();
        assert!(e.to_string().contains("location"), "{e}");
        // An old or foreign format.
        let old = WorkspaceRecord {
            format: "koth-devnet-workspace/0".into(),
            ..record
        };
        assert!(check_reusable(root, &old, &spec())
            .unwrap_err()
            .to_string()
            .contains("format"));
    }

    #[test]
    fn a_directory_that_is_not_a_workspace_is_never_touched() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("thesis.tex"), b"years of work").unwrap();
        let corpus = Corpus {
            dir: tmp.path().join("no-corpus"),
            tokenizer: koth_data::TokenizerIdentity {
                name: "t".into(),
                sha256: Digest::of(b"t"),
                vocab_size: 1024,
                eos_id: 0,
                eos_token: "<eos>".into(),
            },
            train_sha256: Digest::of(b"a"),
            holdout_sha256: Digest::of(b"b"),
            holdout_root: Digest::of(b"c"),
            holdout_tokens: 0,
            train_tokens: 0,
        };
        for fresh in [false, true] {
            let e = prepare(tmp.path(), &spec(), &corpus, fresh).unwrap_err();
            assert!(matches!(e, WorkspaceError::NotAWorkspace { .. }), "{e}");
        }
        assert!(tmp.path().join("thesis.tex").is_file());
    }

    #[test]
    fn a_record_from_another_version_is_refused_with_advice() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join(RECORD_FILE),
            br#"{"format": "koth-devnet-workspace/0", "miners": 2}"#,
        )
        .unwrap();
        let e = read_record(tmp.path()).unwrap_err();
        assert!(e.to_string().contains("--fresh"), "{e}");
    }
}
