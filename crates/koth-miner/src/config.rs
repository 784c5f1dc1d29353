//! `miner.toml`: strict (an unknown key is an error naming the key), every semantic check names
//! its key, and relative paths are relative to the file. See docs/MINING.md for the schema.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::schedule::Schedule;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("miner config {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("miner config {path}: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("miner config {path}: key `{key}`: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

/// The file as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinerFile<Train = TrainSection> {
    pub competition: String,
    pub work_dir: String,
    /// How often the king (feed or chain) and the verdict are polled, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    pub chain: ChainSection,
    pub key: KeySection,
    pub store: StoreSection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validator: Option<ValidatorSection>,
    pub data: DataSection,
    /// `[train]` (a tool that writes deliberately malformed files for the reader's tests may
    /// put a raw table here).
    pub train: Train,
}

fn default_poll_ms() -> u64 {
    2000
}

impl<Train> MinerFile<Train> {
    /// The file of miner `name` in a network on one machine laid out as koth's devkits and devnet
    /// lay it out: `competition.toml` and `chain.db` beside it, the key `name` in `keys/`, its
    /// work directory `name/`, publishing to `store`; `(feed, verdict_timeout_s)` is where it
    /// reads the validator's verdicts.
    pub fn local(
        name: &str,
        store: &str,
        (feed, verdict_timeout_s): (Option<String>, u64),
        data: DataSection,
        train: Train,
    ) -> Self {
        MinerFile {
            competition: "competition.toml".into(),
            work_dir: name.to_string(),
            poll_interval_ms: default_poll_ms(),
            chain: ChainSection::embedded("chain.db"),
            key: KeySection {
                keystore: "keys".into(),
                name: name.to_string(),
            },
            store: StoreSection {
                location: store.to_string(),
            },
            validator: Some(ValidatorSection {
                feed,
                verdict_timeout_s,
            }),
            data,
            train,
        }
    }

    /// The same file polling every `ms` milliseconds.
    pub fn polling_every(mut self, ms: u64) -> Self {
        self.poll_interval_ms = ms;
        self
    }
}

impl<Train: Serialize> MinerFile<Train> {
    /// `miner.toml` as text: the serialisation of this value (what [`MinerConfig::from_toml_str`]
    /// reads back).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }
}

/// `[chain]`: the embedded chain's file, or a subtensor node (koth-subtensor's section, shared
/// with the validator's config).
pub use koth_subtensor::{ChainSection, ChainTarget};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySection {
    pub keystore: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `file:///abs/path`, `s3://bucket/prefix`, or a plain directory path (relative to the
    /// file), which is published as `file://<absolute path>`.
    pub location: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorSection {
    /// Base URL of the validator's HTTP feeds, e.g. `http://127.0.0.1:8080`.
    pub feed: Option<String>,
    /// How long to wait for the validator's verdict on a submission.
    #[serde(default = "default_verdict_timeout")]
    pub verdict_timeout_s: u64,
}

fn default_verdict_timeout() -> u64 {
    1800
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub bundle: String,
    pub holdout_windows: u64,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    pub device: String,
    pub dtype: String,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub steps: u64,
    pub batch_size: usize,
    #[serde(default = "one")]
    pub grad_accum: usize,
    pub seq_len: usize,
    #[serde(default = "default_clip")]
    pub clip: f64,
    #[serde(default = "default_wd")]
    pub weight_decay: f64,
    #[serde(default)]
    pub checkpoint_every: u64,
    /// An external trainer's command line (instead of the built-in trainer): split into words
    /// like a POSIX shell does (quotes, backslashes) but never expanded or interpreted by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The external trainer's time limit in seconds (its process group is killed after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit_s: Option<u64>,
}

fn one() -> usize {
    1
}
fn default_clip() -> f64 {
    1.0
}
fn default_wd() -> f64 {
    0.1
}

/// Training hyper-parameters, validated.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrainSettings {
    pub device: String,
    pub dtype: String,
    pub schedule: Schedule,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub seq_len: usize,
    /// Global gradient-norm clip; 0 turns clipping off.
    pub clip: f64,
    pub weight_decay: f64,
    /// Save a checkpoint every this many optimizer steps (0: only when stopped).
    pub checkpoint_every: u64,
}

impl TrainSettings {
    /// Tokens consumed by one optimizer step.
    pub fn tokens_per_step(&self) -> u64 {
        (self.batch_size * self.grad_accum * self.seq_len) as u64
    }

    /// A fingerprint of everything that determines the trajectory (all settings but
    /// `checkpoint_every`): a checkpoint made under other settings is not resumed.
    pub fn fingerprint(&self) -> String {
        let trajectory = TrainSettings {
            checkpoint_every: 0,
            ..self.clone()
        };
        // Serialising a struct of plain fields cannot fail.
        serde_json::to_string(&trajectory).unwrap_or_default()
    }
}

/// The default time limit of an external trainer: a day.
pub const DEFAULT_TRAINER_TIME_LIMIT_S: u64 = 24 * 3600;

/// `[train] command`: an external trainer, run instead of the built-in one (see
/// [`crate::external`] and docs/MINING.md).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerCommand {
    /// The command line as written.
    pub line: String,
    /// Its words: the program, then its arguments.
    pub argv: Vec<String>,
    /// Where it runs: the directory of `miner.toml`.
    pub cwd: PathBuf,
    /// Killed (its whole process group) after this long.
    pub time_limit: std::time::Duration,
}

/// A validated config with every path resolved.
#[derive(Debug, Clone)]
pub struct MinerConfig {
    /// The config file itself.
    pub path: PathBuf,
    pub competition: PathBuf,
    pub work_dir: PathBuf,
    pub poll_interval_ms: u64,
    /// The chain: the embedded chain's file (checked to exist) or a subtensor node.
    pub chain: ChainTarget,
    pub keystore: PathBuf,
    pub key_name: String,
    /// Where challengers are published, as committed (`file:///…` or `s3://…`).
    pub store_location: String,
    pub feed: Option<String>,
    pub verdict_timeout_s: u64,
    pub bundle: PathBuf,
    pub holdout_windows: u64,
    pub seed: u64,
    pub train: TrainSettings,
    /// `[train] command`: an external trainer; `None` runs the built-in one.
    pub trainer: Option<TrainerCommand>,
}

impl MinerConfig {
    /// Read and validate `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_toml_str(&text, path)
    }

    /// Parse `text` as the file at `path` (relative paths resolve against its directory).
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file: MinerFile = toml::from_str(text).map_err(|e| ConfigError::Toml {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        let base = std::path::absolute(&base).unwrap_or(base);
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        let resolve = |key: &str, p: &str| -> Result<PathBuf, ConfigError> {
            if p.trim().is_empty() {
                return Err(invalid(key, "must not be empty".into()));
            }
            Ok(base.join(p))
        };
        let store_location = if file.store.location.contains("://") {
            file.store
                .location
                .parse::<koth_store::Location>()
                .map_err(|e| invalid("store.location", e.to_string()))?;
            file.store.location.clone()
        } else {
            let dir = resolve("store.location", &file.store.location)?;
            let loc = format!("file://{}", dir.display());
            loc.parse::<koth_store::Location>()
                .map_err(|e| invalid("store.location", e.to_string()))?;
            loc
        };
        let (feed, verdict_timeout_s) = match &file.validator {
            None => (None, default_verdict_timeout()),
            Some(v) => {
                let feed = match &v.feed {
                    None => None,
                    Some(url) => {
                        let url = url.trim_end_matches('/').to_string();
                        if !(url.starts_with("http://") || url.starts_with("https://")) {
                            return Err(invalid(
                                "validator.feed",
                                format!("{url:?} must be an http:// or https:// URL"),
                            ));
                        }
                        Some(url)
                    }
                };
                if v.verdict_timeout_s == 0 {
                    return Err(invalid(
                        "validator.verdict_timeout_s",
                        "must be at least 1".into(),
                    ));
                }
                (feed, v.verdict_timeout_s)
            }
        };
        if file.poll_interval_ms == 0 {
            return Err(invalid("poll_interval_ms", "must be at least 1".into()));
        }
        if file.key.name.trim().is_empty() {
            return Err(invalid("key.name", "must not be empty".into()));
        }
        if file.data.holdout_windows == 0 {
            return Err(invalid(
                "data.holdout_windows",
                "must be at least 1 (the local duel scores these windows)".into(),
            ));
        }
        let t = &file.train;
        koth_model::parse_device(&t.device)
            .map_err(|e| invalid("train.device", format!("{:?}: {e}", t.device)))?;
        koth_model::parse_dtype(&t.dtype)
            .map_err(|e| invalid("train.dtype", format!("{:?}: {e}", t.dtype)))?;
        let positive = |key: &str, x: f64| {
            if x.is_finite() && x > 0.0 {
                Ok(())
            } else {
                Err(invalid(
                    key,
                    format!("must be a finite number > 0, got {x}"),
                ))
            }
        };
        positive("train.lr", t.lr)?;
        if !(t.min_lr.is_finite() && t.min_lr >= 0.0 && t.min_lr <= t.lr) {
            return Err(invalid(
                "train.min_lr",
                format!(
                    "must be between 0 and train.lr ({}), got {}",
                    t.lr, t.min_lr
                ),
            ));
        }
        if t.steps == 0 {
            return Err(invalid("train.steps", "must be at least 1".into()));
        }
        if t.warmup_steps > t.steps {
            return Err(invalid(
                "train.warmup_steps",
                format!(
                    "must be at most train.steps ({}), got {}",
                    t.steps, t.warmup_steps
                ),
            ));
        }
        if t.batch_size == 0 {
            return Err(invalid("train.batch_size", "must be at least 1".into()));
        }
        if t.grad_accum == 0 {
            return Err(invalid("train.grad_accum", "must be at least 1".into()));
        }
        if t.seq_len < 2 {
            return Err(invalid(
                "train.seq_len",
                format!(
                    "must be at least 2 (a next-token loss needs a next token), got {}",
                    t.seq_len
                ),
            ));
        }
        if !(t.clip.is_finite() && t.clip >= 0.0) {
            return Err(invalid(
                "train.clip",
                format!(
                    "must be a finite number >= 0 (0 turns clipping off), got {}",
                    t.clip
                ),
            ));
        }
        if !(t.weight_decay.is_finite() && (0.0..1.0).contains(&t.weight_decay)) {
            return Err(invalid(
                "train.weight_decay",
                format!("must be in [0, 1), got {}", t.weight_decay),
            ));
        }
        let trainer = match (&t.command, t.time_limit_s) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(invalid(
                    "train.time_limit_s",
                    "is the limit of an external trainer; set train.command too".into(),
                ))
            }
            (Some(line), limit) => {
                let argv = shlex::split(line).ok_or_else(|| {
                    invalid(
                        "train.command",
                        format!("{line:?} has an unterminated quote or a trailing backslash"),
                    )
                })?;
                if argv.is_empty() {
                    return Err(invalid(
                        "train.command",
                        "must name a program to run".into(),
                    ));
                }
                let limit = limit.unwrap_or(DEFAULT_TRAINER_TIME_LIMIT_S);
                if limit == 0 {
                    return Err(invalid("train.time_limit_s", "must be at least 1".into()));
                }
                Some(TrainerCommand {
                    line: line.clone(),
                    argv,
                    cwd: base.clone(),
                    time_limit: std::time::Duration::from_secs(limit),
                })
            }
        };
        Ok(MinerConfig {
            trainer,
            path: path.to_path_buf(),
            competition: resolve("competition", &file.competition)?,
            work_dir: resolve("work_dir", &file.work_dir)?,
            poll_interval_ms: file.poll_interval_ms,
            chain: file
                .chain
                .resolve(&base)
                .map_err(|e| invalid(e.key, e.message))?,
            keystore: resolve("key.keystore", &file.key.keystore)?,
            key_name: file.key.name.clone(),
            store_location,
            feed,
            verdict_timeout_s,
            bundle: resolve("data.bundle", &file.data.bundle)?,
            holdout_windows: file.data.holdout_windows,
            seed: file.data.seed,
            train: TrainSettings {
                device: t.device.clone(),
                dtype: t.dtype.clone(),
                schedule: Schedule {
                    lr: t.lr,
                    min_lr: t.min_lr,
                    warmup_steps: t.warmup_steps,
                    steps: t.steps,
                },
                batch_size: t.batch_size,
                grad_accum: t.grad_accum,
                seq_len: t.seq_len,
                clip: t.clip,
                weight_decay: t.weight_decay,
                checkpoint_every: t.checkpoint_every,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"competition = "competition.toml"
work_dir = "m1"
[chain]
path = "chain.db"
[key]
keystore = "keys"
name = "m1"
[store]
location = "store"
[validator]
feed = "http://127.0.0.1:8080/"
[data]
bundle = "data/train.json"
holdout_windows = 8
seed = 3
[train]
device = "cpu"
dtype = "f32"
lr = 1e-3
min_lr = 1e-4
warmup_steps = 2
steps = 10
batch_size = 4
seq_len = 16
"#;

    #[test]
    fn paths_resolve_against_the_file_and_defaults_fill_in() {
        let c = MinerConfig::from_toml_str(OK, Path::new("/srv/net/miner.toml")).unwrap();
        assert_eq!(c.competition, Path::new("/srv/net/competition.toml"));
        assert_eq!(c.work_dir, Path::new("/srv/net/m1"));
        assert_eq!(c.bundle, Path::new("/srv/net/data/train.json"));
        assert_eq!(c.store_location, "file:///srv/net/store");
        assert_eq!(c.feed.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(
            (c.train.grad_accum, c.train.clip, c.train.checkpoint_every),
            (1, 1.0, 0)
        );
        assert_eq!(c.poll_interval_ms, 2000);
        assert_eq!(c.train.tokens_per_step(), 64);
    }

    #[test]
    fn an_external_trainer_is_split_into_words_and_never_shell_expanded() {
        let text = OK.replace(
            "seq_len = 16\n",
            "seq_len = 16\ncommand = \"torchrun --nproc-per-node 8 'my trainer.py' $HOME *.py\"\ntime_limit_s = 60\n",
        );
        let c = MinerConfig::from_toml_str(&text, Path::new("/srv/net/miner.toml")).unwrap();
        let t = c.trainer.unwrap();
        assert_eq!(
            t.argv,
            [
                "torchrun",
                "--nproc-per-node",
                "8",
                "my trainer.py",
                "$HOME",
                "*.py"
            ]
        );
        assert_eq!(t.cwd, Path::new("/srv/net"));
        assert_eq!(t.time_limit, std::time::Duration::from_secs(60));
        let c = MinerConfig::from_toml_str(OK, Path::new("m.toml")).unwrap();
        assert!(c.trainer.is_none());
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (OK.replace("seed = 3", "seed = 3\nsede = 4"), "sede"),
            (OK.replace("lr = 1e-3", "lr = 0.0"), "train.lr"),
            (
                OK.replace("warmup_steps = 2", "warmup_steps = 11"),
                "train.warmup_steps",
            ),
            (
                OK.replace("holdout_windows = 8", "holdout_windows = 0"),
                "data.holdout_windows",
            ),
            (OK.replace("seq_len = 16", "seq_len = 1"), "train.seq_len"),
            (
                OK.replace("dtype = \"f32\"", "dtype = \"f8\""),
                "train.dtype",
            ),
            (
                OK.replace("http://127.0.0.1:8080/", "127.0.0.1:8080"),
                "validator.feed",
            ),
            (
                OK.replace("location = \"store\"", "location = \"s3://A\""),
                "store.location",
            ),
            (OK.replace("batch_size = 4\n", ""), "batch_size"),
            (
                OK.replace("seq_len = 16\n", "seq_len = 16\ncommand = \"python3 'x\"\n"),
                "train.command",
            ),
            (
                OK.replace("seq_len = 16\n", "seq_len = 16\ncommand = \"  \"\n"),
                "train.command",
            ),
            (
                OK.replace("seq_len = 16\n", "seq_len = 16\ntime_limit_s = 5\n"),
                "train.time_limit_s",
            ),
        ];
        for (text, key) in cases {
            let e = MinerConfig::from_toml_str(&text, Path::new("m.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{key}: {e}");
            assert!(e.contains("m.toml"), "{e}");
        }
    }
}
