//! `validator.toml`: what one validator process needs besides the competition file — where the
//! chain, the key, the store, the work directory and the eval worker are, and where to listen.
//!
//! Parsing is strict (unknown keys are errors) and [`ValidatorConfig::check`] resolves every
//! path and address at start-up, so a typo stops the validator with a message naming the key
//! instead of surfacing hours later.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use koth_core::competition::Competition;

/// Errors of the configuration. Each names the file or key and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("validator config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("validator config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("validator config {path}: key `{key}`: {message}")]
    Key {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

/// The file as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorConfig {
    /// Path of the competition file (relative paths are relative to the config file).
    pub competition: PathBuf,
    /// Directory for the event log (`validator.db`), the checkpoint cache and verdict records.
    pub work_dir: PathBuf,
    /// Address of the HTTP feeds (`/api/state`, `/api/events`, `/dashboard.json`, `/metrics`).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// How often the chain is polled, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    pub chain: ChainSection,
    pub key: KeySection,
    pub store: StoreSection,
    #[serde(default)]
    pub eval: EvalSection,
    #[serde(default)]
    pub data: DataSection,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// File holding the validator secret that windows of the bundle's private (holdout)
    /// sources mix in (PROTOCOL §6). Its exact bytes are the secret, as for
    /// `koth data commit-root --secret-file`. Required when the competition's bundle has a
    /// private source; checked against the competition's committed holdout root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout_secret_file: Option<PathBuf>,
}

/// The validator secret of a private holdout. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct HoldoutSecret {
    /// Where it was read from.
    pub path: PathBuf,
    bytes: Vec<u8>,
    /// The bundle's private sources (sorted as in the bundle).
    pub private_sources: Vec<String>,
    /// The holdout root of the bundle with this secret (equal to the competition's committed
    /// root when it commits one).
    pub root: koth_core::Digest,
}

impl HoldoutSecret {
    /// The secret's exact bytes (what the sampler mixes into private windows).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl std::fmt::Debug for HoldoutSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoldoutSecret")
            .field("path", &self.path)
            .field(
                "bytes",
                &format_args!("<{} bytes, redacted>", self.bytes.len()),
            )
            .field("private_sources", &self.private_sources)
            .field("root", &self.root)
            .finish()
    }
}

/// `[chain]`: the embedded chain's file, or a subtensor node (koth-subtensor's section, shared
/// with the miner's config).
pub use koth_subtensor::{ChainSection, ChainTarget};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySection {
    /// Keystore directory (`koth keys`).
    pub keystore: PathBuf,
    /// Name of the validator's hotkey in it.
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// Stores a submission's location must lie within to be fetched at all (for example
    /// `["s3://koth-models/"]`), compared parsed (scheme, bucket, whole path segments:
    /// `file:///ws/store` admits `file:///ws/store/x`, not `file:///ws/store-evil`). A location
    /// outside them is the miner's `manifest_unreachable`.
    pub allowed_locations: Vec<String>,
    /// Bytes of unpinned checkpoints the local cache may keep (the king is pinned).
    #[serde(default = "default_cache_budget")]
    pub cache_budget_bytes: u64,
    /// The store the validator copies every crowned king into before it logs the crown
    /// (`file:///srv/koth/kings` or `s3://bucket/kings`; S3 through the endpoint below). Remote
    /// eval workers and the feeds' king location (`/api/state`, `/dashboard.json`) name this
    /// copy, so a king whose owner deletes their own copy stays fetchable. Use a store only the
    /// validator can write to, readable by its workers and by miners. Unset:
    /// `file://<work_dir>/kings` (enough when workers and miners share this host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub king_location: Option<String>,
    /// S3-compatible endpoint, e.g. `http://127.0.0.1:8333`; credentials come from the usual
    /// `AWS_*` environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_region: Option<String>,
    #[serde(default)]
    pub s3_allow_http: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    /// `"in-process"` (default) or the URL of a `koth duel serve` worker.
    #[serde(default = "default_worker")]
    pub worker: String,
    /// Bearer token of the remote worker (required with a URL). Prefer `token_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Name of an environment variable holding the worker token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// A duel that takes longer than this is abandoned as our fault (infra fault), seconds.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// `cpu`, `cuda`, `cuda:N` (in-process only), or a comma-separated list of them
    /// (`"cuda:0,cuda:1"`): king and challenger are then split into pipeline stages across the
    /// list as the placement planner decides. One device scores as before.
    #[serde(default = "default_device")]
    pub device: String,
    /// `f32`, `bf16`, `f16` (in-process only).
    #[serde(default = "default_dtype")]
    pub dtype: String,
}

impl Default for EvalSection {
    fn default() -> Self {
        Self {
            worker: default_worker(),
            token: None,
            token_env: None,
            timeout_s: default_timeout_s(),
            device: default_device(),
            dtype: default_dtype(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8090".into()
}
fn default_poll_ms() -> u64 {
    1000
}
fn default_cache_budget() -> u64 {
    64 << 30
}
fn default_worker() -> String {
    "in-process".into()
}
fn default_timeout_s() -> u64 {
    3600
}
fn default_device() -> String {
    "cpu".into()
}
fn default_dtype() -> String {
    "f32".into()
}

/// Where duels run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerSpec {
    InProcess,
    Remote { url: String, token: String },
}

/// The configuration with every path resolved and every value checked.
#[derive(Debug, Clone)]
pub struct ResolvedConfig {
    pub config_path: PathBuf,
    pub competition_path: PathBuf,
    pub competition: Competition,
    /// The data bundle manifest named by the competition file, resolved against its directory.
    pub bundle_path: PathBuf,
    pub work_dir: PathBuf,
    pub listen: SocketAddr,
    pub poll_interval: Duration,
    /// The chain: the embedded chain's file (checked to exist) or a subtensor node.
    pub chain: ChainTarget,
    pub keystore: PathBuf,
    pub key_name: String,
    pub allowed_locations: Vec<String>,
    pub cache_budget_bytes: u64,
    /// `[store] king_location`, or `file://<work_dir>/kings` (absolute): where crowned kings are
    /// copied (parsed and checked at start-up).
    pub king_location: String,
    pub s3: koth_store::S3Options,
    pub worker: WorkerSpec,
    pub duel_timeout: Duration,
    pub device: String,
    pub dtype: String,
    /// The private holdout's secret (`[data] holdout_secret_file`), when the bundle has private
    /// sources.
    pub holdout_secret: Option<HoldoutSecret>,
}

impl ResolvedConfig {
    pub fn log_path(&self) -> PathBuf {
        self.work_dir.join("validator.db")
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.work_dir.join("cache")
    }
    pub fn verdict_dir(&self) -> PathBuf {
        self.work_dir.join("verdicts")
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl ValidatorConfig {
    /// The configuration of a validator that plays `competition` (path relative to the file)
    /// with its state under `work_dir`, the embedded chain at `chain`, the hotkey `key_name` of
    /// `keystore`, fetching only from `allowed_locations`; everything else at its default (in
    /// process duels on the CPU in f32).
    pub fn new(
        competition: PathBuf,
        work_dir: PathBuf,
        chain: PathBuf,
        (keystore, key_name): (PathBuf, String),
        allowed_locations: Vec<String>,
    ) -> Self {
        ValidatorConfig {
            competition,
            work_dir,
            listen: default_listen(),
            poll_interval_ms: default_poll_ms(),
            chain: ChainSection::embedded(chain),
            key: KeySection {
                keystore,
                name: key_name,
            },
            store: StoreSection {
                allowed_locations,
                cache_budget_bytes: default_cache_budget(),
                king_location: None,
                s3_endpoint: None,
                s3_region: None,
                s3_allow_http: false,
            },
            eval: EvalSection::default(),
            data: DataSection::default(),
        }
    }

    /// `validator.toml` as text: the serialisation of this value (what [`Self::from_toml_str`]
    /// reads back).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Read and check `path`: the file parses, the competition file and data bundle exist and
    /// validate, the chain file exists, the listen address parses, the worker is well formed.
    /// (The key and its registration are checked against the chain by the shell at start.)
    pub fn load(path: &Path) -> Result<ResolvedConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, path)?.check(path)
    }

    /// Resolve and check every value; `path` is the config file (relative paths start there).
    pub fn check(self, path: &Path) -> Result<ResolvedConfig, ConfigError> {
        let key_err = |key: &'static str, message: String| ConfigError::Key {
            path: path.to_path_buf(),
            key,
            message,
        };
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let competition_path = resolve(&base, &self.competition);
        let bytes = std::fs::read(&competition_path).map_err(|e| {
            key_err(
                "competition",
                format!("cannot read {}: {e}", competition_path.display()),
            )
        })?;
        let competition = Competition::from_toml_bytes(&bytes).map_err(|e| {
            key_err(
                "competition",
                format!(
                    "{} is not a valid competition file: {e}",
                    competition_path.display()
                ),
            )
        })?;
        let comp_dir = competition_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let bundle_path = resolve(&comp_dir, Path::new(&competition.data.bundle));
        if !bundle_path.is_file() {
            return Err(key_err(
                "competition",
                format!(
                    "the competition's data.bundle {} is not a file",
                    bundle_path.display()
                ),
            ));
        }
        let chain = self
            .chain
            .resolve_existing(&base)
            .map_err(|e| key_err(e.key, e.message))?;
        let keystore = resolve(&base, &self.key.keystore);
        if !keystore.is_dir() {
            return Err(key_err(
                "key.keystore",
                format!("{} is not a directory", keystore.display()),
            ));
        }
        koth_chain::keystore::validate_name(&self.key.name)
            .map_err(|e| key_err("key.name", e.to_string()))?;
        let listen: SocketAddr = self.listen.parse().map_err(|e| {
            key_err(
                "listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:8090: {e}",
                    self.listen
                ),
            )
        })?;
        if self.poll_interval_ms == 0 || self.poll_interval_ms > 600_000 {
            return Err(key_err(
                "poll_interval_ms",
                format!("must be 1 to 600000, got {}", self.poll_interval_ms),
            ));
        }
        if self.store.allowed_locations.is_empty() {
            return Err(key_err(
                "store.allowed_locations",
                "list at least one location prefix (e.g. \"s3://bucket/\" or \"file:///srv/koth/\")"
                    .into(),
            ));
        }
        for prefix in &self.store.allowed_locations {
            if !(prefix.starts_with("file:///") || prefix.starts_with("s3://")) {
                return Err(key_err(
                    "store.allowed_locations",
                    format!("{prefix:?} must start with file:/// or s3://"),
                ));
            }
        }
        let work_dir = resolve(&base, &self.work_dir);
        let king_location = match &self.store.king_location {
            Some(location) => location.clone(),
            None => {
                let dir = std::path::absolute(work_dir.join("kings")).map_err(|e| {
                    key_err(
                        "work_dir",
                        format!("{} has no absolute form: {e}", work_dir.display()),
                    )
                })?;
                format!("file://{}", dir.display())
            }
        };
        if let Err(e) = king_location.parse::<koth_store::Location>() {
            return Err(key_err(
                if self.store.king_location.is_some() {
                    "store.king_location"
                } else {
                    "work_dir"
                },
                format!(
                    "{king_location:?} is not a store location like \"file:///srv/koth/kings\" or \
                     \"s3://bucket/kings\": {e}"
                ),
            ));
        }
        let worker = match self.eval.worker.as_str() {
            "in-process" => WorkerSpec::InProcess,
            url if url.starts_with("http://") || url.starts_with("https://") => {
                let token = match (&self.eval.token, &self.eval.token_env) {
                    (Some(t), _) => t.clone(),
                    (None, Some(var)) => std::env::var(var).map_err(|_| {
                        key_err(
                            "eval.token_env",
                            format!("environment variable {var} is not set"),
                        )
                    })?,
                    (None, None) => {
                        return Err(key_err(
                            "eval.token",
                            "a remote worker needs `token` or `token_env`".into(),
                        ))
                    }
                };
                if token.is_empty() {
                    return Err(key_err("eval.token", "the token is empty".into()));
                }
                WorkerSpec::Remote {
                    url: url.trim_end_matches('/').to_string(),
                    token,
                }
            }
            other => {
                return Err(key_err(
                    "eval.worker",
                    format!("{other:?}: expected \"in-process\" or an http(s):// URL"),
                ))
            }
        };
        if self.eval.timeout_s == 0 {
            return Err(key_err("eval.timeout_s", "must be at least 1".into()));
        }
        koth_model::parse_devices(&self.eval.device)
            .map_err(|e| key_err("eval.device", e.to_string()))?;
        koth_model::parse_dtype(&self.eval.dtype)
            .map_err(|e| key_err("eval.dtype", e.to_string()))?;
        let holdout_secret = check_holdout(
            &competition,
            &bundle_path,
            self.data
                .holdout_secret_file
                .as_deref()
                .map(|p| resolve(&base, p)),
            &worker,
        )
        .map_err(|e| key_err("data.holdout_secret_file", e.to_string()))?;
        let s3 = koth_store::S3Options {
            endpoint: self.store.s3_endpoint.clone(),
            region: self.store.s3_region.clone(),
            allow_http: self.store.s3_allow_http,
            ..koth_store::S3Options::from_env()
        };
        Ok(ResolvedConfig {
            config_path: path.to_path_buf(),
            competition_path,
            competition,
            bundle_path,
            work_dir,
            listen,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            chain,
            keystore,
            key_name: self.key.name,
            allowed_locations: self.store.allowed_locations,
            cache_budget_bytes: self.store.cache_budget_bytes,
            king_location,
            s3,
            worker,
            duel_timeout: Duration::from_secs(self.eval.timeout_s),
            device: self.eval.device,
            dtype: self.eval.dtype,
            holdout_secret,
        })
    }
}

/// Why the holdout secret of `validator.toml` cannot be used (reported under the key
/// `data.holdout_secret_file`).
#[derive(Debug, thiserror::Error)]
pub enum HoldoutProblem {
    #[error("opening the data bundle {}: {source}", bundle.display())]
    Bundle {
        bundle: PathBuf,
        #[source]
        source: koth_data::DataError,
    },
    #[error(
        "the data bundle {} has private source(s) {private_sources:?}, whose windows need the \
         validator secret: set it in validator.toml as [data] holdout_secret_file = \"…\"",
        bundle.display()
    )]
    SecretNeeded {
        bundle: PathBuf,
        private_sources: Vec<String>,
    },
    #[error(
        "the holdout secret is used by the in-process worker only; a remote worker \
         (eval.worker) cannot score private sources yet"
    )]
    RemoteWorker,
    #[error(
        "{} is set, but the data bundle {} has no private source to use it on",
        secret.display(),
        bundle.display()
    )]
    NoPrivateSource { secret: PathBuf, bundle: PathBuf },
    #[error("cannot read {}: {source}", secret.display())]
    Unreadable {
        secret: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is empty; the secret must be non-empty (e.g. 32 random bytes as hex)",
        secret.display()
    )]
    Empty { secret: PathBuf },
    #[error("computing the holdout root: {0}")]
    Root(#[source] koth_data::DataError),
    #[error(
        "the secret in {} with the private shards of {} gives the holdout root {root}, but the \
         competition commits data.holdout.root = {committed} (wrong secret or wrong shards)",
        secret.display(),
        bundle.display()
    )]
    RootMismatch {
        secret: PathBuf,
        bundle: PathBuf,
        root: koth_core::Digest,
        committed: koth_core::Digest,
    },
}

/// The holdout secret, checked against the competition: a bundle with private sources needs
/// one (its windows cannot be drawn without it); the file must be readable and non-empty; when
/// the competition commits a holdout root, the secret and the private shards must hash to it.
/// A secret for a bundle without private sources is refused too (it would silently do nothing).
fn check_holdout(
    competition: &Competition,
    bundle_path: &Path,
    secret_file: Option<PathBuf>,
    worker: &WorkerSpec,
) -> Result<Option<HoldoutSecret>, HoldoutProblem> {
    use koth_core::competition::HoldoutPolicy;
    let bundle = bundle_path.to_path_buf();
    let dataset =
        koth_data::Dataset::open(bundle_path).map_err(|source| HoldoutProblem::Bundle {
            bundle: bundle.clone(),
            source,
        })?;
    let private_sources: Vec<String> = dataset
        .bundle()
        .sources
        .iter()
        .filter(|s| s.private)
        .map(|s| s.name.clone())
        .collect();
    let committed = match &competition.data.holdout {
        HoldoutPolicy::Private { root } => Some(*root),
        HoldoutPolicy::None => None,
    };
    let Some(path) = secret_file else {
        if !private_sources.is_empty() && *worker == WorkerSpec::InProcess {
            return Err(HoldoutProblem::SecretNeeded {
                bundle,
                private_sources,
            });
        }
        return Ok(None);
    };
    if *worker != WorkerSpec::InProcess {
        return Err(HoldoutProblem::RemoteWorker);
    }
    if private_sources.is_empty() {
        return Err(HoldoutProblem::NoPrivateSource {
            secret: path,
            bundle,
        });
    }
    let bytes = std::fs::read(&path).map_err(|source| HoldoutProblem::Unreadable {
        secret: path.clone(),
        source,
    })?;
    if bytes.is_empty() {
        return Err(HoldoutProblem::Empty { secret: path });
    }
    let root = koth_data::holdout::commit_root(&dataset, &bytes).map_err(HoldoutProblem::Root)?;
    if let Some(committed) = committed {
        if committed != root {
            return Err(HoldoutProblem::RootMismatch {
                secret: path,
                bundle,
                root,
                committed,
            });
        }
    }
    Ok(Some(HoldoutSecret {
        path,
        bytes,
        private_sources,
        root,
    }))
}
