//! The competition file (PROTOCOL §2): one TOML file that pins everything a verdict depends on.
//!
//! Its sha256 — over the exact bytes of the file, not over a re-serialisation — is written into
//! every verdict and into the validator's event log, so two parties can tell at a glance whether
//! they play the same game. Unknown keys are refused (a typo in a key would otherwise silently
//! fall back to a default), and every semantic check names the key it is about.

use serde::{Deserialize, Serialize};

use crate::Digest;

/// A parsed and validated competition file. Only [`Competition::from_toml_str`] and
/// [`Competition::from_toml_bytes`] make one, so [`Competition::sha256`] is always the hash of
/// the bytes it was read from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Competition {
    /// Human name of the game, e.g. `"koth-tiny"`.
    pub name: String,
    /// Subnet the game runs on (the embedded chain uses it too).
    pub netuid: u16,
    /// The digest of the first king.
    pub genesis_king: Digest,
    /// Where the first king can be fetched (shown as `king.model_repo` until the first crown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub genesis_location: Option<String>,
    /// Commitments made at or before this block are not part of the game.
    pub start_block: u64,
    pub architecture: ArchitectureLock,
    pub data: DataSpec,
    pub duel: DuelRule,
    pub intake: IntakeRules,
    pub gates: GateSwitches,
    pub reward: RewardPolicy,
    pub weights: WeightsSchedule,
    /// sha256 of the exact file bytes.
    sha256: Digest,
}

/// The file as written; becomes a [`Competition`] once validated and hashed. Tools that write a
/// competition file fill one in and write [`CompetitionFile::to_toml`]: the file is the
/// serialisation of this type, never a text template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompetitionFile {
    pub name: String,
    pub netuid: u16,
    pub genesis_king: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genesis_location: Option<String>,
    pub start_block: u64,
    pub architecture: ArchitectureLock,
    pub data: DataSpec,
    pub duel: DuelRule,
    pub intake: IntakeRules,
    #[serde(default)]
    pub gates: GateSwitches,
    pub reward: RewardPolicy,
    pub weights: WeightsSchedule,
}

impl CompetitionFile {
    /// The file's text. Parse it with [`Competition::from_toml_str`] to validate it; its sha256
    /// is the hash of exactly these bytes.
    pub fn to_toml(&self) -> Result<String, CompetitionError> {
        toml::to_string(self).map_err(CompetitionError::Encode)
    }
}

/// What a challenger's `config.json` must share with the king's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchitectureLock {
    /// The model family; the challenger's `model_type` must equal it (e.g. `"llama"`, `"qwen3"`).
    pub family: String,
    /// Keys the king's config must have and the challenger's must equal. Every other key not on
    /// `free_keys` must also be equal (absent-vs-present included); listing the structural keys
    /// here additionally makes a king config that lacks one an error instead of a silent pass.
    pub locked_keys: Vec<String>,
    /// Keys that may differ (bookkeeping such as `transformers_version`, `torch_dtype`).
    #[serde(default)]
    pub free_keys: Vec<String>,
    /// safetensors dtypes a challenger tensor may have. Empty: exactly the king's dtype.
    #[serde(default)]
    pub allowed_dtypes: Vec<String>,
}

impl ArchitectureLock {
    /// The structural keys koth's own networks lock: of these, the ones the king's `config.json`
    /// (`config`) has. A locked key the king lacks would make the config gate undecidable, so
    /// only present keys are returned.
    pub fn structural_keys_of(config: &serde_json::Value) -> Vec<String> {
        [
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "vocab_size",
            "rope_theta",
            "rms_norm_eps",
            "max_position_embeddings",
            "tie_word_embeddings",
            "head_dim",
            "attention_bias",
            // The Qwen3.5 hybrid's structure.
            "layer_types",
            "full_attention_interval",
            "linear_num_value_heads",
            "linear_num_key_heads",
            "linear_key_head_dim",
            "linear_value_head_dim",
            "linear_conv_kernel_dim",
            "partial_rotary_factor",
            "rope_parameters",
            "attn_output_gate",
            "num_experts",
            "num_experts_per_tok",
            "moe_intermediate_size",
            "shared_expert_intermediate_size",
        ]
        .iter()
        .filter(|k| config.get(**k).is_some())
        .map(|k| (*k).to_string())
        .collect()
    }

    /// A lock on `locked_keys` of a Hugging Face `config.json` of `family`, with the bookkeeping
    /// keys transformers writes (`transformers_version`, `torch_dtype`, `_name_or_path`,
    /// `use_cache`) free and F32 or BF16 tensors allowed: the lock koth's own networks use.
    pub fn hf(family: &str, locked_keys: Vec<String>) -> Self {
        ArchitectureLock {
            family: family.to_string(),
            locked_keys,
            free_keys: [
                "transformers_version",
                "torch_dtype",
                "_name_or_path",
                "use_cache",
            ]
            .map(String::from)
            .to_vec(),
            allowed_dtypes: vec!["F32".into(), "BF16".into()],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// Path of the data bundle manifest, relative to the competition file.
    pub bundle: String,
    /// sha256 of the bundle manifest; a bundle that hashes differently is refused.
    pub bundle_sha256: Digest,
    /// Tokens per scored window.
    pub seq_len: u32,
    #[serde(default)]
    pub holdout: HoldoutPolicy,
}

/// Whether the validator mixes in a private pool of shards (PROTOCOL §6).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
pub enum HoldoutPolicy {
    /// Only the public bundle is scored.
    #[default]
    None,
    /// A private pool whose manifest root hash is published before use.
    Private { root: Digest },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DuelTest {
    /// Anytime-valid confidence sequence, stops early (default).
    Sequential,
    /// Teutonic's fixed-N bootstrap (compatibility).
    Bootstrap,
}

/// The effect floor δ a challenger's mean advantage must exceed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Delta {
    /// Nats per token.
    Absolute(f64),
    /// A fraction of the king's mean loss (e.g. 0.001 = 0.1 %).
    Relative(f64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuelRule {
    pub test: DuelTest,
    /// False-crown rate bound.
    pub alpha: f64,
    /// `delta = { absolute = 0.01 }` or `delta = { relative = 0.001 }`.
    pub delta: Delta,
    /// Most windows scored in one duel.
    pub n_max: u32,
    /// Windows per batch (the sequential test looks after each batch).
    pub batch_size: u32,
    /// Bootstrap resamples; only with `test = "bootstrap"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_resamples: Option<u32>,
    /// King-loss reuse: 0 (off), or the batches of `batch_size` windows in a reign pool. The
    /// king is scored once per reign on a pool drawn from its crowning block's hash; each duel
    /// of the reign draws whole pool batches by its own seed and scores only the challenger
    /// (docs/DUEL.md). The pool must hold a whole duel: `king_pool_batches × batch_size ≥ n_max`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub king_pool_batches: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl DuelRule {
    /// The anytime-valid sequential test at level `alpha` with effect floor `delta`, at most
    /// `n_max` windows, looking after every `batch_size`.
    pub fn sequential(alpha: f64, delta: Delta, n_max: u32, batch_size: u32) -> Self {
        DuelRule {
            test: DuelTest::Sequential,
            alpha,
            delta,
            n_max,
            batch_size,
            bootstrap_resamples: None,
            king_pool_batches: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeRules {
    /// Blocks a commitment stays timelocked before it is revealed (R).
    pub reveal_delay_blocks: u64,
    /// Largest checkpoint accepted, in bytes, from the manifest's sizes and again while fetching.
    pub size_cap_bytes: u64,
    /// Infrastructure faults (ours) after which an entry goes to the back of the queue instead of
    /// the head, so one entry that keeps breaking our machinery cannot block everyone else. It is
    /// never consumed by them.
    #[serde(default = "default_max_infra_retries")]
    pub max_infra_retries: u32,
    /// Finished entries kept in the validator's memory and feeds (older ones stay in the log).
    #[serde(default = "default_history_len")]
    pub history_len: u32,
}

fn default_max_infra_retries() -> u32 {
    5
}
fn default_history_len() -> u32 {
    256
}

/// Optional gates. A gate that is off is recorded as "not enabled" on every entry; it never
/// looks like a pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateSwitches {
    /// Behavioural fingerprint against recent submissions and kings (`near_copy`).
    #[serde(default)]
    pub near_copy: bool,
    /// A challenger whose fingerprint lies closer than this to an earlier one (Jensen–Shannon
    /// distance, base 2: 0 = identical next-token distributions, 1 = disjoint) is a near copy.
    #[serde(default = "default_near_copy_max_distance")]
    pub near_copy_max_distance: f64,
    /// How many of the most recent submissions that reached the fingerprint gate are compared
    /// against (the current king always is).
    #[serde(default = "default_near_copy_history")]
    pub near_copy_history: u32,
    /// One backward step on probe tokens; finite, bounded gradients (`weights_invalid`).
    #[serde(default)]
    pub trainability_probe: bool,
    /// The probe refuses a challenger whose gradient norm on the probe tokens exceeds this
    /// multiple of the king's (the reparameterisations that make a model untrainable scale its
    /// gradients by the factor they hide in the weights).
    #[serde(default = "default_probe_max_grad_ratio")]
    pub probe_max_grad_ratio: f64,
}

fn default_near_copy_max_distance() -> f64 {
    0.01
}
fn default_near_copy_history() -> u32 {
    16
}
fn default_probe_max_grad_ratio() -> f64 {
    10.0
}

impl Default for GateSwitches {
    fn default() -> Self {
        Self {
            near_copy: false,
            near_copy_max_distance: default_near_copy_max_distance(),
            near_copy_history: default_near_copy_history(),
            trainability_probe: false,
            probe_max_grad_ratio: default_probe_max_grad_ratio(),
        }
    }
}

/// Who is paid, from the history of reigns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
pub enum RewardPolicy {
    /// The king's hotkey gets all the weight.
    WinnerTakeAll,
    /// The last `k` kings share the weight; `shares[0]` is the current king's. Without `shares`
    /// the split is equal. Shares are normalised over the kings that exist.
    SplitLastK {
        k: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shares: Option<Vec<f64>>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsSchedule {
    /// Weights are set on every crown and at least every this many blocks (W).
    pub interval_blocks: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CompetitionError {
    #[error("competition file is not UTF-8 text: {0}")]
    NotUtf8(#[from] std::str::Utf8Error),
    #[error("competition file: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("competition file: key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    #[error("writing a competition file: {0}")]
    Encode(#[source] toml::ser::Error),
}

fn invalid(key: &str, reason: impl Into<String>) -> CompetitionError {
    CompetitionError::Invalid {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// Largest `n_max` accepted; a duel never needs more windows than this.
pub const MAX_N_MAX: u32 = 10_000_000;

/// Fewest windows the sequential test can use: it makes no decision before two windows (a
/// variance needs two), so `n_max` below this could never decide and every duel would fail.
pub const MIN_SEQUENTIAL_N_MAX: u32 = 2;

/// Most bootstrap resamples accepted (the resampler keeps one mean per resample in memory).
pub const MAX_BOOTSTRAP_RESAMPLES: u32 = 1_000_000;

impl Competition {
    /// Parse and validate a competition file from its exact bytes.
    pub fn from_toml_bytes(bytes: &[u8]) -> Result<Self, CompetitionError> {
        Self::from_toml_str(std::str::from_utf8(bytes)?)
    }

    /// Parse and validate a competition file; `sha256()` is then the hash of exactly `text`.
    pub fn from_toml_str(text: &str) -> Result<Self, CompetitionError> {
        let f: CompetitionFile = toml::from_str(text)?;
        let c = Competition {
            name: f.name,
            netuid: f.netuid,
            genesis_king: f.genesis_king,
            genesis_location: f.genesis_location,
            start_block: f.start_block,
            architecture: f.architecture,
            data: f.data,
            duel: f.duel,
            intake: f.intake,
            gates: f.gates,
            reward: f.reward,
            weights: f.weights,
            sha256: Digest::of(text.as_bytes()),
        };
        c.validate()?;
        Ok(c)
    }

    /// sha256 of the exact file bytes this was parsed from.
    pub fn sha256(&self) -> Digest {
        self.sha256
    }

    /// The file's contents, to write a competition like this one (with changes).
    pub fn to_file(&self) -> CompetitionFile {
        CompetitionFile {
            name: self.name.clone(),
            netuid: self.netuid,
            genesis_king: self.genesis_king,
            genesis_location: self.genesis_location.clone(),
            start_block: self.start_block,
            architecture: self.architecture.clone(),
            data: self.data.clone(),
            duel: self.duel.clone(),
            intake: self.intake.clone(),
            gates: self.gates.clone(),
            reward: self.reward.clone(),
            weights: self.weights.clone(),
        }
    }

    fn validate(&self) -> Result<(), CompetitionError> {
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        if let Some(loc) = &self.genesis_location {
            if loc.is_empty() || loc.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    "genesis_location",
                    "must be a non-empty location without whitespace",
                ));
            }
        }
        let a = &self.architecture;
        if a.family.trim().is_empty() {
            return Err(invalid("architecture.family", "must not be empty"));
        }
        if a.locked_keys.is_empty() {
            return Err(invalid(
                "architecture.locked_keys",
                "must list at least one structural config key (e.g. \"hidden_size\")",
            ));
        }
        for (list, keys) in [
            ("architecture.locked_keys", &a.locked_keys),
            ("architecture.free_keys", &a.free_keys),
        ] {
            let mut seen = std::collections::BTreeSet::new();
            for k in keys {
                if k.is_empty() {
                    return Err(invalid(list, "contains an empty key"));
                }
                if !seen.insert(k) {
                    return Err(invalid(list, format!("lists {k:?} twice")));
                }
            }
        }
        if let Some(k) = a.locked_keys.iter().find(|k| a.free_keys.contains(k)) {
            return Err(invalid(
                "architecture.free_keys",
                format!(
                    "{k:?} is also in architecture.locked_keys; a key is locked or free, not both"
                ),
            ));
        }
        if a.free_keys
            .iter()
            .any(|k| k == "model_type" || k == "auto_map")
        {
            return Err(invalid(
                "architecture.free_keys",
                "model_type and auto_map can never be free",
            ));
        }
        for d in &a.allowed_dtypes {
            if !SAFETENSORS_DTYPES.contains(&d.as_str()) {
                return Err(invalid(
                    "architecture.allowed_dtypes",
                    format!("{d:?} is not a safetensors dtype (one of {SAFETENSORS_DTYPES:?})"),
                ));
            }
        }
        if self.data.bundle.trim().is_empty() {
            return Err(invalid("data.bundle", "must not be empty"));
        }
        if self.data.seq_len < 2 {
            return Err(invalid(
                "data.seq_len",
                "must be at least 2 (one next-token prediction)",
            ));
        }
        let d = &self.duel;
        if !(d.alpha.is_finite() && d.alpha > 0.0 && d.alpha < 1.0) {
            return Err(invalid(
                "duel.alpha",
                format!("must be in (0, 1), got {}", d.alpha),
            ));
        }
        match d.delta {
            Delta::Absolute(x) if !(x.is_finite() && x >= 0.0) => {
                return Err(invalid(
                    "duel.delta.absolute",
                    format!("must be a finite number >= 0 nats/token, got {x}"),
                ))
            }
            Delta::Relative(x) if !(x.is_finite() && (0.0..1.0).contains(&x)) => {
                return Err(invalid(
                    "duel.delta.relative",
                    format!("must be a fraction in [0, 1), got {x}"),
                ))
            }
            _ => {}
        }
        if d.n_max == 0 || d.n_max > MAX_N_MAX {
            return Err(invalid(
                "duel.n_max",
                format!("must be in 1..={MAX_N_MAX}, got {}", d.n_max),
            ));
        }
        if d.batch_size == 0 || d.batch_size > d.n_max {
            return Err(invalid(
                "duel.batch_size",
                format!(
                    "must be in 1..=duel.n_max ({}), got {}",
                    d.n_max, d.batch_size
                ),
            ));
        }
        if d.king_pool_batches > 0 {
            let windows = u64::from(d.king_pool_batches) * u64::from(d.batch_size);
            if windows < u64::from(d.n_max) || windows > u64::from(MAX_N_MAX) {
                return Err(invalid(
                    "duel.king_pool_batches",
                    format!(
                        "0 (off), or enough batches of duel.batch_size ({}) to hold a whole duel \
                         (n_max = {}) and at most {MAX_N_MAX} windows; got {} ({windows} windows)",
                        d.batch_size, d.n_max, d.king_pool_batches
                    ),
                ));
            }
        }
        if d.test == DuelTest::Sequential && d.n_max < MIN_SEQUENTIAL_N_MAX {
            return Err(invalid(
                "duel.n_max",
                format!(
                    "the sequential test needs at least {MIN_SEQUENTIAL_N_MAX} windows to decide, \
                     got {}",
                    d.n_max
                ),
            ));
        }
        match (d.test, d.bootstrap_resamples) {
            (DuelTest::Sequential, Some(_)) => {
                return Err(invalid(
                    "duel.bootstrap_resamples",
                    "only applies to test = \"bootstrap\"",
                ))
            }
            (DuelTest::Bootstrap, Some(b)) if !(2..=MAX_BOOTSTRAP_RESAMPLES).contains(&b) => {
                return Err(invalid(
                    "duel.bootstrap_resamples",
                    format!("must be in 2..={MAX_BOOTSTRAP_RESAMPLES}, got {b}"),
                ))
            }
            _ => {}
        }
        let g = &self.gates;
        if !(g.near_copy_max_distance.is_finite()
            && g.near_copy_max_distance > 0.0
            && g.near_copy_max_distance < 1.0)
        {
            return Err(invalid(
                "gates.near_copy_max_distance",
                format!(
                    "must be a Jensen–Shannon distance in (0, 1), got {}",
                    g.near_copy_max_distance
                ),
            ));
        }
        if g.near_copy_history > 4096 {
            return Err(invalid(
                "gates.near_copy_history",
                format!("must be in 0..=4096, got {}", g.near_copy_history),
            ));
        }
        if !(g.probe_max_grad_ratio.is_finite() && g.probe_max_grad_ratio > 1.0) {
            return Err(invalid(
                "gates.probe_max_grad_ratio",
                format!(
                    "must be a finite number > 1, got {}",
                    g.probe_max_grad_ratio
                ),
            ));
        }
        if self.intake.size_cap_bytes == 0 {
            return Err(invalid("intake.size_cap_bytes", "must be greater than 0"));
        }
        if self.intake.history_len == 0 {
            return Err(invalid("intake.history_len", "must be at least 1"));
        }
        if self.weights.interval_blocks == 0 {
            return Err(invalid("weights.interval_blocks", "must be at least 1"));
        }
        if let RewardPolicy::SplitLastK { k, shares } = &self.reward {
            if *k == 0 || *k > 256 {
                return Err(invalid("reward.k", format!("must be in 1..=256, got {k}")));
            }
            if let Some(shares) = shares {
                if shares.len() != *k as usize {
                    return Err(invalid(
                        "reward.shares",
                        format!("must have k = {k} entries, has {}", shares.len()),
                    ));
                }
                if let Some(s) = shares.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                    return Err(invalid(
                        "reward.shares",
                        format!("every share must be a finite number > 0, found {s}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Every dtype name a safetensors header may use.
pub const SAFETENSORS_DTYPES: [&str; 14] = crate::safetensors::DTYPE_NAMES;

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = r#"
name = "koth-tiny"
netuid = 3
genesis_king = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
start_block = 100

[architecture]
family = "llama"
locked_keys = ["hidden_size", "num_hidden_layers", "vocab_size"]
free_keys = ["transformers_version", "torch_dtype"]

[data]
bundle = "bundle.json"
bundle_sha256 = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
seq_len = 1024

[duel]
test = "sequential"
alpha = 0.001
delta = { relative = 0.001 }
n_max = 4096
batch_size = 32

[intake]
reveal_delay_blocks = 3
size_cap_bytes = 2_000_000_000

[reward]
policy = "split_last_k"
k = 3
shares = [0.6, 0.3, 0.1]

[weights]
interval_blocks = 100
"#;

    #[test]
    fn a_written_competition_file_parses_back_to_the_same_game() {
        let c = Competition::from_toml_str(EXAMPLE).unwrap();
        let text = c.to_file().to_toml().unwrap();
        let again = Competition::from_toml_str(&text).unwrap();
        assert_eq!(again.to_file(), c.to_file(), "{text}");
        assert_eq!(again.sha256(), Digest::of(text.as_bytes()));
    }

    #[test]
    fn example_parses_and_hashes_exact_bytes() {
        let c = Competition::from_toml_str(EXAMPLE).unwrap();
        assert_eq!(c.netuid, 3);
        assert_eq!(c.duel.delta, Delta::Relative(0.001));
        assert_eq!(c.intake.max_infra_retries, 5);
        assert_eq!(c.data.holdout, HoldoutPolicy::None);
        assert!(!c.gates.near_copy);
        assert_eq!(c.sha256(), Digest::of(EXAMPLE.as_bytes()));
        // A change that parses to the same values (a comment) still changes the hash: the
        // verdict pins the file, not our reading of it.
        let with_comment = format!("{EXAMPLE}# note\n");
        let c2 = Competition::from_toml_str(&with_comment).unwrap();
        assert_ne!(c2.sha256(), c.sha256());
    }

    fn expect_invalid(text: &str, key: &str) {
        match Competition::from_toml_str(text) {
            Err(CompetitionError::Invalid { key: k, reason }) => {
                assert_eq!(k, key, "reason: {reason}")
            }
            other => panic!("expected invalid {key}, got {other:?}"),
        }
    }

    #[test]
    fn semantic_errors_name_the_key() {
        expect_invalid(
            &EXAMPLE.replace("alpha = 0.001", "alpha = 1.5"),
            "duel.alpha",
        );
        expect_invalid(
            &EXAMPLE.replace("batch_size = 32", "batch_size = 5000"),
            "duel.batch_size",
        );
        expect_invalid(
            &EXAMPLE.replace("shares = [0.6, 0.3, 0.1]", "shares = [0.6, 0.4]"),
            "reward.shares",
        );
        expect_invalid(
            &EXAMPLE.replace("\"torch_dtype\"]", "\"torch_dtype\", \"hidden_size\"]"),
            "architecture.free_keys",
        );
        expect_invalid(
            &EXAMPLE.replace("interval_blocks = 100", "interval_blocks = 0"),
            "weights.interval_blocks",
        );
        expect_invalid(
            &EXAMPLE.replace("{ relative = 0.001 }", "{ relative = 2.0 }"),
            "duel.delta.relative",
        );
        expect_invalid(
            &EXAMPLE.replace("seq_len = 1024", "seq_len = 1"),
            "data.seq_len",
        );
    }

    #[test]
    fn a_duel_rule_that_could_never_decide_is_refused_up_front() {
        // n_max = 1 with the sequential test: no decision is possible before two windows, so
        // every duel would fail; the file is refused instead.
        let one = EXAMPLE
            .replace("n_max = 4096", "n_max = 1")
            .replace("batch_size = 32", "batch_size = 1");
        match Competition::from_toml_str(&one) {
            Err(CompetitionError::Invalid { key, reason }) => {
                assert_eq!(key, "duel.n_max");
                assert!(
                    reason.contains("sequential") && reason.contains("got 1"),
                    "{reason}"
                );
            }
            other => panic!("n_max = 1 accepted: {other:?}"),
        }
        let two = EXAMPLE
            .replace("n_max = 4096", "n_max = 2")
            .replace("batch_size = 32", "batch_size = 1");
        assert_eq!(Competition::from_toml_str(&two).unwrap().duel.n_max, 2);
        // The bootstrap takes any n >= 1 but needs at least two resamples, and a bounded
        // number of them.
        let boot = |n: u32, b: u32| {
            EXAMPLE
                .replace("test = \"sequential\"", "test = \"bootstrap\"")
                .replace(
                    "n_max = 4096",
                    &format!("n_max = {n}\nbootstrap_resamples = {b}"),
                )
                .replace("batch_size = 32", "batch_size = 1")
        };
        assert!(Competition::from_toml_str(&boot(1, 1000)).is_ok());
        expect_invalid(&boot(100, 1), "duel.bootstrap_resamples");
        expect_invalid(&boot(100, 0), "duel.bootstrap_resamples");
        expect_invalid(
            &boot(100, MAX_BOOTSTRAP_RESAMPLES + 1),
            "duel.bootstrap_resamples",
        );
    }

    #[test]
    fn unknown_or_missing_keys_are_refused_with_their_name() {
        let typo = EXAMPLE.replace("n_max = 4096", "nmax = 4096");
        let err = Competition::from_toml_str(&typo).unwrap_err().to_string();
        assert!(err.contains("nmax"), "{err}");
        let missing = EXAMPLE.replace("netuid = 3\n", "");
        let err = Competition::from_toml_str(&missing)
            .unwrap_err()
            .to_string();
        assert!(err.contains("netuid"), "{err}");
        let bad_digest =
            EXAMPLE.replace("genesis_king = \"sha256:ba", "genesis_king = \"sha256:zz");
        assert!(Competition::from_toml_str(&bad_digest).is_err());
        let both_deltas = EXAMPLE.replace(
            "{ relative = 0.001 }",
            "{ relative = 0.001, absolute = 0.01 }",
        );
        assert!(Competition::from_toml_str(&both_deltas).is_err());
    }

    #[test]
    fn gate_keys_have_defaults_are_validated_and_change_the_hash() {
        let c = Competition::from_toml_str(EXAMPLE).unwrap();
        assert_eq!(c.gates, GateSwitches::default());
        assert_eq!(c.gates.near_copy_max_distance, 0.01);
        assert_eq!(c.gates.near_copy_history, 16);
        assert_eq!(c.gates.probe_max_grad_ratio, 10.0);
        let text = format!(
            "{EXAMPLE}\n[gates]\nnear_copy = true\nnear_copy_max_distance = 0.02\n\
             near_copy_history = 4\ntrainability_probe = true\nprobe_max_grad_ratio = 3.0\n"
        );
        let g = Competition::from_toml_str(&text).unwrap();
        assert!(g.gates.near_copy && g.gates.trainability_probe);
        assert_eq!(g.gates.near_copy_max_distance, 0.02);
        assert_eq!(g.gates.near_copy_history, 4);
        assert_eq!(g.gates.probe_max_grad_ratio, 3.0);
        assert_ne!(g.sha256(), c.sha256());
        assert_eq!(g.sha256(), Digest::of(text.as_bytes()));
        for (bad, key) in [
            (
                "near_copy_max_distance = 0.0",
                "gates.near_copy_max_distance",
            ),
            (
                "near_copy_max_distance = 1.5",
                "gates.near_copy_max_distance",
            ),
            (
                "near_copy_max_distance = nan",
                "gates.near_copy_max_distance",
            ),
            ("near_copy_history = 100000", "gates.near_copy_history"),
            ("probe_max_grad_ratio = 0.5", "gates.probe_max_grad_ratio"),
            ("probe_max_grad_ratio = inf", "gates.probe_max_grad_ratio"),
        ] {
            expect_invalid(&format!("{EXAMPLE}\n[gates]\n{bad}\n"), key);
        }
        let typo = format!("{EXAMPLE}\n[gates]\nnear_copy_distance = 0.1\n");
        let err = Competition::from_toml_str(&typo).unwrap_err().to_string();
        assert!(err.contains("near_copy_distance"), "{err}");
    }

    #[test]
    fn private_holdout_needs_a_root() {
        let private = EXAMPLE.replace(
            "seq_len = 1024\n",
            "seq_len = 1024\nholdout = { policy = \"private\", root = \"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\" }\n",
        );
        let c = Competition::from_toml_str(&private).unwrap();
        assert!(matches!(c.data.holdout, HoldoutPolicy::Private { .. }));
        let no_root = EXAMPLE.replace(
            "seq_len = 1024\n",
            "seq_len = 1024\nholdout = { policy = \"private\" }\n",
        );
        assert!(Competition::from_toml_str(&no_root).is_err());
    }
}
