//! The validator's side of a duel: both checkpoints loaded with fault attribution, the setup
//! taken from the competition file, and what is recorded of the verdict. The duel itself runs
//! through koth-duel's one driver ([`koth_duel::duel::run_duel`]), the same code the miner and
//! `koth duel run`/`replay` use; the shell (in process) and the remote eval worker
//! (`koth duel serve`) call [`run_duel`] here with their own [`DuelSink`].
//!
//! Failures are classified: the challenger's own failure — its checkpoint does not load
//! (a config, safetensors or tensor-set error of its files, while the king loaded), or it gives
//! a non-finite loss on a window where the king's loss is finite — is
//! [`DuelRunError::challengers_fault`], which the shell answers with `weights_invalid`.
//! Everything else — the king failing to load or giving a non-finite loss, our I/O, a device
//! error, a data shard that fails its hash, a deadline, a cancellation — is ours, and the shell
//! turns it into an infrastructure fault.

use std::convert::Infallible;
use std::path::Path;

use koth_core::competition::Competition;
use koth_core::verdict::{DuelModel, EffectFloor, RuleSpec, Verdict};
use koth_core::Digest;
use koth_data::Dataset;
use koth_duel::duel::{DuelError, DuelSink, Scoring, Side};
use koth_duel::score::ModelScorer;

use crate::event::SeedMaterial;

#[derive(Debug, thiserror::Error)]
pub enum DuelRunError<E = Infallible> {
    #[error("duel setup: {what} {value:?}: {reason}")]
    Setting {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("duel setup: data bundle {path} hashes to {found}, the competition pins {pinned}")]
    BundleMismatch {
        path: String,
        found: Digest,
        pinned: Digest,
    },
    #[error("loading the {side} model from {path}: {source}")]
    Load {
        side: Side,
        path: String,
        #[source]
        source: koth_model::ModelError,
    },
    #[error(transparent)]
    Duel(#[from] DuelError<E>),
    /// Scoring the king on its reign pool failed (ours: the king is the validator's).
    #[error("the king's reign pool: {0}")]
    Pool(#[from] koth_duel::pool::PoolError),
}

impl<E: std::fmt::Display> DuelRunError<E> {
    /// The sentence the miner reads when the duel failed because of the challenger itself;
    /// `None` when the failure is ours.
    pub fn challengers_fault(&self) -> Option<String> {
        match self {
            DuelRunError::Load {
                side: Side::Challenger,
                path,
                source,
            } if is_checkpoint_fault(source) => {
                Some(load_failure_sentence(Path::new(path), source))
            }
            DuelRunError::Duel(e) if e.blames() == Some(Side::Challenger) => Some(e.to_string()),
            _ => None,
        }
    }
}

/// How a duel that gave no verdict failed, for the shell: the challenger's fault (refused with
/// `weights_invalid`) or ours (an infrastructure fault, the entry goes back to the queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DuelFailure {
    /// The sentence the miner reads.
    Challenger(String),
    /// Why our side failed.
    Infra(String),
}

impl std::fmt::Display for DuelFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DuelFailure::Challenger(m) => write!(f, "the challenger's fault: {m}"),
            DuelFailure::Infra(m) => write!(f, "{m}"),
        }
    }
}

impl<E: std::fmt::Display> From<DuelRunError<E>> for DuelFailure {
    fn from(e: DuelRunError<E>) -> Self {
        match e.challengers_fault() {
            Some(sentence) => DuelFailure::Challenger(sentence),
            None => DuelFailure::Infra(e.to_string()),
        }
    }
}

/// Whether a model-loading error is the checkpoint's own: its config, its safetensors files or
/// its tensor set. I/O errors, device and kernel errors (our out-of-memory, say) and requests
/// the loader cannot serve are ours.
pub fn is_checkpoint_fault(e: &koth_model::ModelError) -> bool {
    use koth_model::ModelError as E;
    matches!(
        e,
        E::Config { .. } | E::Safetensors { .. } | E::TensorSet { .. }
    )
}

/// The sentence a miner reads when their checkpoint does not load: the loader's message with
/// our cache directory taken out (the file names inside the checkpoint stay).
pub fn load_failure_sentence(dir: &Path, e: &koth_model::ModelError) -> String {
    let text = e.to_string();
    let prefix = format!("{}/", dir.display());
    let text = text
        .replace(&prefix, "")
        .replace(&dir.display().to_string(), "");
    format!("the challenger failed to load: {text}")
}

/// The seed bytes handed to the sampler: a domain tag and the three parts of the seed material
/// (docs/PROTOCOL.md), separated so that no two different triples give the same bytes.
pub fn seed_string(seed: &SeedMaterial) -> String {
    format!(
        "koth/duel-sample/1|{}|{}|{}",
        seed.competition_sha256, seed.reveal_block_hash, seed.hotkey
    )
}

/// The rule the competition file sets, as koth-duel's spec, and its effect floor.
pub fn rule_of(competition: &Competition) -> (RuleSpec, EffectFloor) {
    koth_duel::rule::competition_rule(competition, u64::from(competition.duel.n_max))
}

/// What a duel needs besides the two checkpoints.
pub struct DuelSetup<'a> {
    pub competition: &'a Competition,
    pub dataset: &'a Dataset,
    pub bundle_path: &'a Path,
    /// A device or a comma-separated list (`"cuda:0,cuda:1"`): with several, king and
    /// challenger are split into stages across them as the planner decides
    /// ([`koth_model::placement::duel_placement`]).
    pub device: &'a str,
    pub dtype: &'a str,
    /// The validator secret that windows of private (holdout) sources mix in; `None` when the
    /// bundle has no private source (sampling one without it is a setup error).
    pub holdout_secret: Option<&'a [u8]>,
    /// King-loss reuse: the reign pool the rules named, and where this process keeps the
    /// king's scored pool between duels. `None`: the king is scored live.
    pub king_pool: Option<(&'a crate::event::PoolSpec, &'a PoolCache)>,
}

/// The current reign's scored pool, kept between the duels of one process (the shell's, or a
/// remote worker's). Scoring the king once per reign is what halves a duel's cost; a pool of
/// another king, seed or layout is replaced.
#[derive(Default)]
pub struct PoolCache(std::sync::Mutex<Option<std::sync::Arc<koth_duel::pool::KingPool>>>);

impl PoolCache {
    /// The cached pool if it is the one `spec` names for `king` in this layout.
    fn get(
        &self,
        spec: &crate::event::PoolSpec,
        king: &Digest,
        batch_size: u32,
        seq_len: u32,
    ) -> Option<std::sync::Arc<koth_duel::pool::KingPool>> {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref()
            .filter(|p| {
                &p.king == king
                    && p.seed_material == spec.seed_material
                    && p.batches() == spec.batches
                    && p.batch_size == batch_size
                    && p.seq_len == seq_len
            })
            .cloned()
    }

    fn put(&self, pool: koth_duel::pool::KingPool) -> std::sync::Arc<koth_duel::pool::KingPool> {
        let pool = std::sync::Arc::new(pool);
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(pool.clone());
        pool
    }

    /// Whether no pool has been scored yet.
    pub fn is_empty(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_none()
    }
}

/// Load both checkpoints (the king first: a king that does not load is ours, and once it has
/// loaded, a challenger whose files the loader refuses is the challenger's fault) and run the
/// competition's duel through koth-duel's driver, reporting to `sink`. On one device both
/// models load whole onto it; on a list of devices each is placed by
/// [`koth_model::placement::load_for_duel`] (the same placement for a replay of the verdict,
/// which records the list).
pub fn run_duel<S: DuelSink>(
    setup: &DuelSetup<'_>,
    king: (&Digest, &Path),
    challenger: (&Digest, &Path),
    seed: &SeedMaterial,
    sink: &mut S,
) -> Result<Verdict, DuelRunError<S::Error>> {
    let competition = setup.competition;
    let devices = koth_model::parse_devices(setup.device).map_err(|e| DuelRunError::Setting {
        what: "device",
        value: setup.device.to_string(),
        reason: e.to_string(),
    })?;
    let dtype = koth_model::parse_dtype(setup.dtype).map_err(|e| DuelRunError::Setting {
        what: "dtype",
        value: setup.dtype.to_string(),
        reason: e.to_string(),
    })?;
    if setup.dataset.bundle_sha256() != competition.data.bundle_sha256 {
        return Err(DuelRunError::BundleMismatch {
            path: setup.bundle_path.display().to_string(),
            found: setup.dataset.bundle_sha256(),
            pinned: competition.data.bundle_sha256,
        });
    }
    let seq_len = competition.data.seq_len as usize;
    let load = |side: Side, dir: &Path| {
        let index = match side {
            Side::King => koth_model::placement::KING,
            Side::Challenger => koth_model::placement::CHALLENGER,
        };
        koth_model::placement::load_for_duel(dir, dtype, &devices, index, seq_len).map_err(
            |source| DuelRunError::Load {
                side,
                path: dir.display().to_string(),
                source,
            },
        )
    };
    let duel_setup = koth_duel::duel::DuelSetup::from_competition(
        competition,
        u64::from(competition.duel.n_max),
        DuelModel {
            digest: *king.0,
            path: Some(king.1.display().to_string()),
        },
        DuelModel {
            digest: *challenger.0,
            path: Some(challenger.1.display().to_string()),
        },
        seed_string(seed),
        Scoring {
            device: setup.device,
            dtype: setup.dtype,
        },
        Some(setup.bundle_path.display().to_string()),
    );
    if let Some((spec, cache)) = setup.king_pool {
        let (batch_size, seq_len) = (competition.duel.batch_size, competition.data.seq_len);
        let pool = match cache.get(spec, king.0, batch_size, seq_len) {
            Some(pool) => pool,
            None => {
                // The reign's first duel here: score the king once on the pool.
                let king_model = load(Side::King, king.1)?;
                cache.put(koth_duel::pool::KingPool::score(
                    setup.dataset,
                    &spec.seed_material,
                    setup.holdout_secret,
                    *king.0,
                    &mut ModelScorer::new(king_model),
                    spec.batches,
                    batch_size,
                    seq_len,
                )?)
            }
        };
        let chal_model = load(Side::Challenger, challenger.1)?;
        return Ok(koth_duel::duel::run_duel_pooled(
            setup.dataset,
            &duel_setup,
            &pool,
            &mut ModelScorer::new(chal_model),
            sink,
        )?);
    }
    let king_model = load(Side::King, king.1)?;
    let chal_model = load(Side::Challenger, challenger.1)?;
    Ok(koth_duel::duel::run_duel(
        setup.dataset,
        &duel_setup,
        &mut ModelScorer::new(king_model),
        &mut ModelScorer::new(chal_model),
        setup.holdout_secret,
        sink,
    )?)
}

/// The numbers the event log keeps of a verdict (its `outcome`), given where its record was
/// written and the record's digest. A bound the rule did not compute stays `None`; one it
/// computed is kept, clamped to a finite number as the progress events' are (the log refuses
/// non-finite statistics: JSON has no infinity).
pub fn summary_of(
    o: &koth_core::verdict::Outcome,
    verdict_digest: Digest,
    verdict_path: String,
) -> crate::event::VerdictSummary {
    crate::event::VerdictSummary {
        accepted: o.decision.is_crown(),
        n: o.n_used,
        mu_hat: if o.mu_hat.is_finite() { o.mu_hat } else { 0.0 },
        lower: o.lower.map(finite),
        upper: o.upper.map(finite),
        verdict_digest,
        verdict_path,
    }
}

/// `x`, or the largest finite number of its sign where it is infinite (NaN counts as
/// negative): what the log records of a statistic the rule computed.
pub(crate) fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else if x > 0.0 {
        f64::MAX
    } else {
        f64::MIN
    }
}

/// The bytes of a verdict record as the validator writes them: the [`Verdict`] and, when the
/// duel drew windows from private (holdout) sources, a `private_holdout` object naming those
/// sources, how many of the duel's windows came from them and the holdout root (which commits
/// to the secret's hash) — never the secret itself. Readers of the `Verdict` type ignore the
/// extra key; `koth duel replay` needs the secret, published when the pool retires.
pub fn verdict_bytes(
    verdict: &Verdict,
    holdout: Option<&crate::config::HoldoutSecret>,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut value = serde_json::to_value(verdict)?;
    if let (Some(h), serde_json::Value::Object(map)) = (holdout, &mut value) {
        let private: Vec<usize> = verdict
            .windows
            .sources
            .iter()
            .enumerate()
            .filter(|(_, name)| h.private_sources.contains(name))
            .map(|(i, _)| i)
            .collect();
        let windows = verdict
            .windows
            .source
            .iter()
            .filter(|s| private.contains(&(**s as usize)))
            .count();
        map.insert(
            "private_holdout".into(),
            serde_json::json!({
                "sources": h.private_sources,
                "windows": windows,
                "root": h.root,
            }),
        );
    }
    serde_json::to_vec_pretty(&value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_challengers_own_failures_are_its_fault() {
        let nan = |side| {
            DuelRunError::<Infallible>::Duel(DuelError::NonFiniteLoss {
                side,
                window: 65,
                value: f32::NAN,
                king_loss: 2.0,
            })
        };
        match DuelFailure::from(nan(Side::Challenger)) {
            DuelFailure::Challenger(m) => {
                assert!(m.contains("window 65") && m.contains("NaN"), "{m}");
                assert!(m.contains("2.0000"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            DuelFailure::from(nan(Side::King)),
            DuelFailure::Infra(_)
        ));
        let stopped = DuelRunError::<Infallible>::Duel(DuelError::Stopped {
            stop: koth_duel::duel::Stop::DeadlinePassed,
            windows: 64,
        });
        assert!(matches!(DuelFailure::from(stopped), DuelFailure::Infra(_)));
        let king_load = DuelRunError::<Infallible>::Load {
            side: Side::King,
            path: "/cache/k".into(),
            source: koth_model::ModelError::TensorSet {
                path: "/cache/k".into(),
                problems: vec!["missing x".into()],
            },
        };
        assert!(matches!(
            DuelFailure::from(king_load),
            DuelFailure::Infra(_)
        ));
    }

    #[test]
    fn the_summary_keeps_the_rules_bounds_and_invents_none() {
        use koth_core::verdict::{Decision, KeepReason, Outcome};
        let outcome = |decision, lower, upper| Outcome {
            decision,
            n_used: 640,
            mu_hat: 0.004,
            tested_mean: 0.003,
            threshold: 0.0025,
            lower,
            upper,
            king_mean_loss: 4.0,
            challenger_mean_loss: 3.996,
        };
        let summary = |o: &Outcome| summary_of(o, Digest::of(b"record"), "/v/1.json".into());
        // The bootstrap rule's crown: a lower bound and no upper bound; none stands in for it.
        let s = summary(&outcome(Decision::Crown, Some(0.0031), None));
        assert!(s.accepted);
        assert_eq!((s.n, s.mu_hat), (640, 0.004));
        assert_eq!((s.lower, s.upper), (Some(0.0031), None));
        // Decided without computing either bound.
        let s = summary(&outcome(Decision::KeepKing(KeepReason::NMax), None, None));
        assert!(!s.accepted);
        assert_eq!((s.lower, s.upper), (None, None));
        // A computed bound that overflowed is kept, as the largest finite number of its sign.
        let s = summary(&outcome(
            Decision::KeepKing(KeepReason::Futility),
            Some(f64::NEG_INFINITY),
            Some(f64::INFINITY),
        ));
        assert_eq!((s.lower, s.upper), (Some(f64::MIN), Some(f64::MAX)));
    }

    #[test]
    fn only_the_checkpoints_own_load_errors_are_its_fault() {
        use koth_model::ModelError as E;
        let dir = Path::new("/var/cache/koth/ab12");
        let bad = E::Safetensors {
            path: dir.join("model.safetensors.index.json"),
            tensor: Some("lm_head.weight".into()),
            reason: "is not mapped to this shard".into(),
        };
        assert!(is_checkpoint_fault(&bad));
        let m = load_failure_sentence(dir, &bad);
        assert!(m.starts_with("the challenger failed to load: "), "{m}");
        assert!(
            m.contains("model.safetensors.index.json") && !m.contains("/var/cache"),
            "{m}"
        );
        let e = DuelRunError::<Infallible>::Load {
            side: Side::Challenger,
            path: dir.display().to_string(),
            source: bad,
        };
        assert_eq!(e.challengers_fault(), Some(m));
        assert!(is_checkpoint_fault(&E::Config {
            source_name: "config.json".into(),
            field: "hidden_act".into(),
            reason: "unknown".into(),
        }));
        assert!(is_checkpoint_fault(&E::TensorSet {
            path: dir.to_path_buf(),
            problems: vec!["missing x".into()],
        }));
        assert!(!is_checkpoint_fault(&E::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::other("disk"),
        }));
        assert!(!is_checkpoint_fault(&E::Invalid("dtype".into())));
    }
}
