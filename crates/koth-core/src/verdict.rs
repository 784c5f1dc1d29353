//! Duel verdicts: the record a validator writes for every duel and that anyone can replay.
//!
//! A verdict holds everything the decision depends on (the competition, both checkpoints by
//! digest, the seed material, the sample digest and shard hashes, the rule and its parameters)
//! and everything it produced (the per-window losses of both models, the bounds after every
//! batch, per-source scores, the decision). `koth duel replay` recomputes it from this record
//! and the data and requires the same decision and the same numbers, bit for bit.

use serde::{Deserialize, Serialize};

use crate::Digest;

/// The `format` field of every verdict this version writes.
pub const VERDICT_FORMAT: &str = "koth-verdict/1";

/// What a duel decided after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Not decided yet: score another batch.
    Continue,
    /// The challenger is better than the king by more than the effect floor: crown it.
    Crown,
    /// The king stays.
    KeepKing(KeepReason),
}

impl Decision {
    pub fn is_final(self) -> bool {
        !matches!(self, Decision::Continue)
    }
    pub fn is_crown(self) -> bool {
        matches!(self, Decision::Crown)
    }
}

/// Why the king stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepReason {
    /// The evidence already says the challenger cannot clear the floor (the sequential rule's
    /// upper bound fell below δ, or the bootstrap rule's best-case mean did).
    Futility,
    /// All the windows the rule may use were scored without a crown.
    NMax,
}

/// The effect floor δ a challenger must clear.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EffectFloor {
    /// δ in nats/token: crown iff E[ℓ(king) − ℓ(challenger)] > δ.
    Absolute { nats: f64 },
    /// δ as a fraction r of the king's mean loss: crown iff E[ℓ(king) − ℓ(challenger)] >
    /// r·E[ℓ(king)]. Tested exactly as E[dᵢ − r·ℓᵢ(king)] > 0 on the same windows.
    Relative { fraction: f64 },
}

/// Parameters of the bootstrap rule's futility stop (Teutonic's early stop).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapFutility {
    /// No stop before this fraction of N has been scored (Teutonic: 0.2).
    pub min_fraction: f64,
    /// The observed per-window difference quantile assumed for every window still to come
    /// (Teutonic: 0.94).
    pub advantage_quantile: f64,
}

/// The test and its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum RuleSpec {
    /// Anytime-valid confidence sequence; crown when its lower bound clears the floor, keep the
    /// king when its upper bound falls below it, or at `n_max`.
    Sequential {
        /// Probability of crowning a challenger that is not better by the floor.
        alpha: f64,
        /// Level of the upper bound used for the futility stop (costs power only).
        futility_alpha: f64,
        /// Most windows scored.
        n_max: u64,
        /// No decision before this many windows (the normal approximation needs some data).
        min_n: u64,
        /// Sample size at which the boundary is tightest (tunes the normal mixture).
        target_n: u64,
    },
    /// Teutonic's paired percentile bootstrap on a fixed number of windows.
    Bootstrap {
        alpha: f64,
        /// Windows scored (fixed N).
        n: u64,
        /// Bootstrap resamples B.
        resamples: u32,
        /// Teutonic's early stop, if enabled.
        futility: Option<BootstrapFutility>,
    },
}

impl RuleSpec {
    pub fn alpha(&self) -> f64 {
        match *self {
            RuleSpec::Sequential { alpha, .. } | RuleSpec::Bootstrap { alpha, .. } => alpha,
        }
    }
    /// The most windows the rule will score.
    pub fn n_max(&self) -> u64 {
        match *self {
            RuleSpec::Sequential { n_max, .. } => n_max,
            RuleSpec::Bootstrap { n, .. } => n,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            RuleSpec::Sequential { .. } => "sequential",
            RuleSpec::Bootstrap { .. } => "bootstrap",
        }
    }
}

/// The rule's state after one batch: what the trace of a duel is made of.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoundsAfterBatch {
    /// Windows scored so far.
    pub n: u64,
    /// Mean of the tested quantity (dᵢ, or dᵢ − r·ℓᵢ(king) for a relative floor).
    pub mu_hat: f64,
    /// Lower confidence bound on the tested mean, where the rule computes one at this point.
    pub lower: Option<f64>,
    /// Upper bound used for futility, where the rule computes one at this point.
    pub upper: Option<f64>,
    pub decision: Decision,
}

/// A checkpoint in a duel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuelModel {
    pub digest: Digest,
    /// Where it was read from on the machine that scored it (informational; never trusted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// One shard a sample drew from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardHash {
    pub source: String,
    pub name: String,
    pub sha256: Digest,
    pub tokens: u64,
}

/// The windows a duel was scored on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// The seed material as given (hex or text); the sampler hashes it.
    pub seed_material: String,
    /// Digest of the ordered list of windows (source, shard, offset).
    pub sample_digest: Digest,
    /// Digest of the data bundle the windows came from.
    pub bundle_sha256: Digest,
    /// Where the bundle file was on the machine that scored (informational; replay checks the
    /// digest of whatever bundle it is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_path: Option<String>,
    pub seq_len: u32,
    /// Every shard of the bundle, with its hash.
    pub shards: Vec<ShardHash>,
}

/// How the windows were scored: both models use exactly this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoringSetup {
    pub dtype: String,
    pub device: String,
    /// Windows per forward pass.
    pub batch_size: u32,
    /// Which code path of the model scored (e.g. "scoring": fused inference ops).
    pub path: String,
}

/// Scores per data source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceScore {
    pub source: String,
    pub n: u64,
    pub king_mean_loss: f64,
    pub challenger_mean_loss: f64,
    /// Mean of dᵢ = ℓᵢ(king) − ℓᵢ(challenger) on this source.
    pub mean_diff: f64,
}

/// A reign pool: windows drawn once (from the crowning block's hash) and scored once by the
/// king, in whole batches. A pooled duel scores only the challenger, on whole pool batches chosen
/// by its own seed, and takes the king's losses from the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KingPoolRecord {
    /// Seed material of the pool's sample (the crowning block's hash, for a validator).
    pub seed_material: String,
    /// Digest of the pool's ordered windows (the sampler's digest).
    pub sample_digest: Digest,
    /// Windows in the pool (a whole number of batches).
    pub windows: u64,
    /// Windows per pool batch: every pool batch is scored, by both sides, as one batch.
    pub batch_size: u32,
    /// [`king_pool_digest`]: the pool's identity, its king and every king loss in it.
    pub digest: Digest,
    /// The pool batches this duel used, in order (drawn by the duel's own seed).
    pub batch_order: Vec<u32>,
}

/// The identity of a reign pool: its sample, batch size, king and every king loss in pool order.
pub fn king_pool_digest(
    sample_digest: &Digest,
    batch_size: u32,
    king: &Digest,
    king_losses: &[f32],
) -> Digest {
    let mut w = crate::Sha256Writer::new();
    w.update(b"koth-king-pool/1\n");
    w.update(sample_digest.to_string().as_bytes());
    w.update(b"\n");
    w.update(&batch_size.to_le_bytes());
    w.update(king.to_string().as_bytes());
    w.update(b"\n");
    for k in king_losses {
        w.update(&k.to_le_bytes());
    }
    w.finish()
}

/// The raw per-window losses (nats/token, f32 as scored), in scoring order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowLosses {
    pub king: Vec<f32>,
    pub challenger: Vec<f32>,
    /// Index into `SampleRecord`'s source names (`sources`) for each window.
    pub source: Vec<u32>,
    pub sources: Vec<String>,
    /// [`window_losses_digest`] of the three vectors above.
    pub digest: Digest,
}

/// The decision and its numbers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub decision: Decision,
    /// Windows scored.
    pub n_used: u64,
    /// Mean of dᵢ = ℓᵢ(king) − ℓᵢ(challenger) (nats/token; positive: challenger better).
    pub mu_hat: f64,
    /// Mean of the tested quantity (equals `mu_hat` for an absolute floor).
    pub tested_mean: f64,
    /// The threshold the tested mean's bounds were compared with (δ, or 0 for a relative
    /// floor, whose δ is folded into the tested quantity).
    pub threshold: f64,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    pub king_mean_loss: f64,
    pub challenger_mean_loss: f64,
}

/// A duel's complete record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Always [`VERDICT_FORMAT`].
    pub format: String,
    /// The competition file's sha256, when the duel was run under one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub competition_sha256: Option<Digest>,
    pub king: DuelModel,
    pub challenger: DuelModel,
    pub sample: SampleRecord,
    pub rule: RuleSpec,
    pub effect_floor: EffectFloor,
    /// Seed of the bootstrap resampler (sha256 of the seed material and a domain tag), when the
    /// rule is the bootstrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_seed: Option<Digest>,
    pub scoring: ScoringSetup,
    pub outcome: Outcome,
    /// The rule's state after every batch.
    pub bounds: Vec<BoundsAfterBatch>,
    pub per_source: Vec<SourceScore>,
    pub windows: WindowLosses,
    /// When the king's losses came from a reign pool (king-loss reuse) rather than from scoring
    /// the king in this duel: which pool, and which of its batches this duel used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub king_pool: Option<KingPoolRecord>,
    /// `koth-duel` version and build that produced the record.
    pub code_version: String,
    pub wall_time_s: f64,
}

/// The digest of a duel's per-window losses: sha256 over a domain tag and, per window, the
/// king's loss, the challenger's loss (f32 little-endian) and the source index (u32 LE).
/// Returns `None` when the three vectors differ in length.
pub fn window_losses_digest(king: &[f32], challenger: &[f32], source: &[u32]) -> Option<Digest> {
    if king.len() != challenger.len() || king.len() != source.len() {
        return None;
    }
    let mut w = crate::Sha256Writer::new();
    w.update(b"koth-window-losses/1\n");
    for ((k, c), s) in king.iter().zip(challenger).zip(source) {
        w.update(&k.to_le_bytes());
        w.update(&c.to_le_bytes());
        w.update(&s.to_le_bytes());
    }
    Some(w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_serializes_readably() {
        let j = serde_json::to_string(&Decision::KeepKing(KeepReason::Futility)).unwrap();
        assert_eq!(j, r#"{"keep_king":"futility"}"#);
        assert_eq!(
            serde_json::to_string(&Decision::Crown).unwrap(),
            r#""crown""#
        );
        let back: Decision = serde_json::from_str(&j).unwrap();
        assert_eq!(back, Decision::KeepKing(KeepReason::Futility));
    }

    #[test]
    fn rule_spec_round_trips() {
        let r = RuleSpec::Bootstrap {
            alpha: 0.001,
            n: 5000,
            resamples: 10_000,
            futility: Some(BootstrapFutility {
                min_fraction: 0.2,
                advantage_quantile: 0.94,
            }),
        };
        let j = serde_json::to_string(&r).unwrap();
        assert!(j.contains(r#""rule":"bootstrap""#), "{j}");
        assert_eq!(serde_json::from_str::<RuleSpec>(&j).unwrap(), r);
    }

    #[test]
    fn losses_digest_depends_on_every_field() {
        let a = window_losses_digest(&[1.0, 2.0], &[1.5, 2.5], &[0, 1]).unwrap();
        assert_ne!(
            a,
            window_losses_digest(&[1.0, 2.0], &[1.5, 2.5], &[0, 0]).unwrap()
        );
        assert_ne!(
            a,
            window_losses_digest(&[1.0, 2.0], &[1.5, 2.6], &[0, 1]).unwrap()
        );
        assert_ne!(
            a,
            window_losses_digest(&[2.0, 1.0], &[2.5, 1.5], &[1, 0]).unwrap()
        );
        assert!(window_losses_digest(&[1.0], &[], &[0]).is_none());
    }
}
