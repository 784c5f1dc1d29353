//! Scoring one duel: king and challenger on the same windows, batch by batch, through one code
//! path, with the competition's rule deciding after each batch. Used in-process by the shell and
//! by the remote eval worker (`koth duel serve`), so both produce the same verdict record.
//!
//! Failures are classified: the challenger's own failure — its checkpoint does not load
//! (a config, safetensors or tensor-set error of its files, while the king loaded), or it gives
//! a non-finite loss on a window where the king's loss is finite — is
//! [`DuelRunError::Challenger`], which the shell answers with `weights_invalid`. Everything
//! else — the king failing to load or giving a non-finite loss, our I/O, a device error, a
//! data shard that fails its hash, a timeout, a cancellation — is ours, and the shell turns it
//! into an infrastructure fault.

use std::path::Path;
use std::time::{Duration, Instant};

use koth_core::competition::Competition;
use koth_core::verdict::{
    BoundsAfterBatch, DuelModel, EffectFloor, Outcome, RuleSpec, SampleRecord, ScoringSetup,
    ShardHash, SourceScore, Verdict, WindowLosses, VERDICT_FORMAT,
};
use koth_core::Digest;
use koth_data::Dataset;
use koth_duel::rule::{bootstrap_seed, tested_value, threshold, RuleTest};
use koth_model::{Model, TokenIds};

use crate::event::SeedMaterial;

#[derive(Debug, thiserror::Error)]
pub enum DuelRunError {
    #[error("duel setup: {0}")]
    Setup(String),
    #[error("loading the {which} model from {path}: {message}")]
    Load {
        which: &'static str,
        path: String,
        message: String,
    },
    #[error("scoring: {0}")]
    Scoring(String),
    #[error("duel cancelled")]
    Cancelled,
    #[error("duel timed out after {0:?}")]
    TimedOut(Duration),
    /// The challenger's own failure; the sentence is the one the miner reads.
    #[error("{0}")]
    Challenger(String),
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

impl From<DuelRunError> for DuelFailure {
    fn from(e: DuelRunError) -> Self {
        match e {
            DuelRunError::Challenger(m) => DuelFailure::Challenger(m),
            other => DuelFailure::Infra(other.to_string()),
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

/// Check one batch's per-window losses (`first` is the index of the batch's first window in the
/// duel). A non-finite loss of the king is ours ([`DuelRunError::Scoring`]: the king is known to
/// be good, so the machinery or the data failed); a non-finite loss of the challenger on a window
/// where the king's is finite is the challenger's ([`DuelRunError::Challenger`]).
pub fn check_window_losses(
    first: usize,
    king: &[f32],
    challenger: &[f32],
) -> Result<(), DuelRunError> {
    if king.len() != challenger.len() {
        return Err(DuelRunError::Scoring(format!(
            "{} king losses but {} challenger losses in one batch",
            king.len(),
            challenger.len()
        )));
    }
    if let Some((i, kl)) = king.iter().enumerate().find(|(_, l)| !l.is_finite()) {
        return Err(DuelRunError::Scoring(format!(
            "the king's loss on window {} is {kl}",
            first + i
        )));
    }
    if let Some((i, cl)) = challenger.iter().enumerate().find(|(_, l)| !l.is_finite()) {
        return Err(DuelRunError::Challenger(format!(
            "the challenger produced a non-finite loss ({cl}) on window {} of the duel, where \
             the king's loss is {:.4}",
            first + i,
            king[i]
        )));
    }
    Ok(())
}

/// The seed bytes handed to the sampler: a domain tag and the three parts of the seed material
/// (PROTOCOL §6), separated so that no two different triples give the same bytes.
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
    pub device: &'a str,
    pub dtype: &'a str,
    pub deadline: Option<Instant>,
    /// The validator secret that windows of private (holdout) sources mix in; `None` when the
    /// bundle has no private source (sampling one without it is a setup error).
    pub holdout_secret: Option<&'a [u8]>,
}

/// Score `challenger` against `king`. `progress` sees the rule's state after every batch and
/// returns `false` to cancel.
pub fn run_duel(
    setup: &DuelSetup<'_>,
    king: (&Digest, &Path),
    challenger: (&Digest, &Path),
    seed: &SeedMaterial,
    progress: &mut dyn FnMut(&BoundsAfterBatch) -> bool,
) -> Result<Verdict, DuelRunError> {
    let started = Instant::now();
    let competition = setup.competition;
    let device = koth_model::parse_device(setup.device)
        .map_err(|e| DuelRunError::Setup(format!("device {:?}: {e}", setup.device)))?;
    let dtype = koth_model::parse_dtype(setup.dtype)
        .map_err(|e| DuelRunError::Setup(format!("dtype {:?}: {e}", setup.dtype)))?;
    if setup.dataset.bundle_sha256() != competition.data.bundle_sha256 {
        return Err(DuelRunError::Setup(format!(
            "data bundle {} hashes to {}, the competition pins {}",
            setup.bundle_path.display(),
            setup.dataset.bundle_sha256(),
            competition.data.bundle_sha256
        )));
    }
    let load_error =
        |which: &'static str, dir: &Path, e: koth_model::ModelError| DuelRunError::Load {
            which,
            path: dir.display().to_string(),
            message: e.to_string(),
        };
    // The king first: a king that does not load is ours, and once it has loaded, a challenger
    // whose files the loader refuses is the challenger's fault.
    let king_model =
        Model::load(king.1, dtype, &device).map_err(|e| load_error("king", king.1, e))?;
    let chal_model = Model::load(challenger.1, dtype, &device).map_err(|e| {
        if is_checkpoint_fault(&e) {
            DuelRunError::Challenger(load_failure_sentence(challenger.1, &e))
        } else {
            load_error("challenger", challenger.1, e)
        }
    })?;

    let (spec, floor) = rule_of(competition);
    let thr = threshold(floor).map_err(|e| DuelRunError::Setup(e.to_string()))?;
    let seed_text = seed_string(seed);
    let boot_seed = bootstrap_seed(&seed_text);
    let mut rule = RuleTest::new(&spec, thr, boot_seed)
        .map_err(|e| DuelRunError::Setup(format!("rule: {e}")))?;
    let seq_len = competition.data.seq_len;
    let sample = setup
        .dataset
        .sample(
            seed_text.as_bytes(),
            setup.holdout_secret,
            spec.n_max(),
            seq_len,
        )
        .map_err(|e| DuelRunError::Setup(format!("sampling windows: {e}")))?;

    let batch_size = competition.duel.batch_size.max(1) as usize;
    let mut king_losses: Vec<f32> = Vec::new();
    let mut chal_losses: Vec<f32> = Vec::new();
    let mut sources: Vec<u32> = Vec::new();
    let mut bounds: Vec<BoundsAfterBatch> = Vec::new();
    let mut tested_sum = 0.0f64;
    for chunk in sample.windows.chunks(batch_size) {
        if let Some(deadline) = setup.deadline {
            if Instant::now() > deadline {
                return Err(DuelRunError::TimedOut(started.elapsed()));
            }
        }
        let tokens = setup
            .dataset
            .read_windows(chunk)
            .map_err(|e| DuelRunError::Scoring(format!("reading windows: {e}")))?;
        let ids = TokenIds::new(tokens, chunk.len(), seq_len as usize)
            .map_err(|e| DuelRunError::Scoring(e.to_string()))?;
        let k = king_model
            .sequence_losses(&ids)
            .map_err(|e| DuelRunError::Scoring(format!("king: {e}")))?;
        let c = chal_model
            .sequence_losses(&ids)
            .map_err(|e| DuelRunError::Scoring(format!("challenger: {e}")))?;
        if k.len() != chunk.len() || c.len() != chunk.len() {
            return Err(DuelRunError::Scoring(format!(
                "{} windows in the batch but {} king and {} challenger losses",
                chunk.len(),
                k.len(),
                c.len()
            )));
        }
        check_window_losses(king_losses.len(), &k, &c)?;
        let mut batch = Vec::with_capacity(chunk.len());
        for ((kl, cl), w) in k.iter().zip(&c).zip(chunk) {
            let (kl, cl) = (f64::from(*kl), f64::from(*cl));
            let t = tested_value(floor, kl - cl, kl);
            tested_sum += t;
            batch.push(t);
            sources.push(w.source);
        }
        king_losses.extend_from_slice(&k);
        chal_losses.extend_from_slice(&c);
        let b = rule
            .update(&batch)
            .map_err(|e| DuelRunError::Scoring(format!("rule update: {e}")))?;
        let go_on = progress(&b);
        let done = b.decision.is_final();
        bounds.push(b);
        if !go_on {
            return Err(DuelRunError::Cancelled);
        }
        if done {
            break;
        }
    }
    let decision = rule.decision();
    let n = king_losses.len();
    let mean = |v: &[f32]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().map(|x| f64::from(*x)).sum::<f64>() / v.len() as f64
        }
    };
    let king_mean = mean(&king_losses);
    let chal_mean = mean(&chal_losses);
    let last = bounds.last();
    let source_names: Vec<String> = setup
        .dataset
        .bundle()
        .sources
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let per_source = source_names
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let idx: Vec<usize> = (0..n).filter(|&j| sources[j] as usize == i).collect();
            if idx.is_empty() {
                return None;
            }
            let m = idx.len() as f64;
            let k: f64 = idx.iter().map(|&j| f64::from(king_losses[j])).sum::<f64>() / m;
            let c: f64 = idx.iter().map(|&j| f64::from(chal_losses[j])).sum::<f64>() / m;
            Some(SourceScore {
                source: name.clone(),
                n: idx.len() as u64,
                king_mean_loss: k,
                challenger_mean_loss: c,
                mean_diff: k - c,
            })
        })
        .collect();
    let shards = setup
        .dataset
        .manifests()
        .flat_map(|m| {
            m.shards.iter().map(move |s| ShardHash {
                source: m.source.clone(),
                name: s.path.clone(),
                sha256: s.sha256,
                tokens: s.tokens,
            })
        })
        .collect();
    let digest = koth_core::verdict::window_losses_digest(&king_losses, &chal_losses, &sources)
        .ok_or_else(|| DuelRunError::Scoring("window vectors differ in length".into()))?;
    Ok(Verdict {
        format: VERDICT_FORMAT.to_string(),
        competition_sha256: Some(competition.sha256()),
        king: DuelModel {
            digest: *king.0,
            path: Some(king.1.display().to_string()),
        },
        challenger: DuelModel {
            digest: *challenger.0,
            path: Some(challenger.1.display().to_string()),
        },
        sample: SampleRecord {
            seed_material: seed_text,
            sample_digest: sample.digest.0,
            bundle_sha256: setup.dataset.bundle_sha256(),
            bundle_path: Some(setup.bundle_path.display().to_string()),
            seq_len,
            shards,
        },
        rule: spec,
        effect_floor: floor,
        bootstrap_seed: matches!(spec, RuleSpec::Bootstrap { .. }).then_some(boot_seed),
        scoring: ScoringSetup {
            dtype: setup.dtype.to_string(),
            device: setup.device.to_string(),
            batch_size: batch_size as u32,
            path: "scoring".into(),
        },
        outcome: Outcome {
            decision,
            n_used: n as u64,
            mu_hat: king_mean - chal_mean,
            tested_mean: if n == 0 { 0.0 } else { tested_sum / n as f64 },
            threshold: thr,
            lower: last.and_then(|b| b.lower),
            upper: last.and_then(|b| b.upper),
            king_mean_loss: king_mean,
            challenger_mean_loss: chal_mean,
        },
        bounds,
        per_source,
        windows: WindowLosses {
            king: king_losses,
            challenger: chal_losses,
            source: sources,
            sources: source_names,
            digest,
        },
        code_version: koth_duel::CODE_VERSION.to_string(),
        wall_time_s: started.elapsed().as_secs_f64(),
    })
}

/// The numbers the event log keeps of a verdict, given where its record was written and the
/// record's digest. Bounds the rule did not compute are shown as the mean (they are finite by
/// construction: the log refuses non-finite statistics).
pub fn summary_of(
    verdict: &Verdict,
    verdict_digest: Digest,
    verdict_path: String,
) -> crate::event::VerdictSummary {
    let o = &verdict.outcome;
    let finite_or = |x: Option<f64>| x.filter(|v| v.is_finite()).unwrap_or(o.tested_mean);
    crate::event::VerdictSummary {
        accepted: o.decision.is_crown(),
        n: o.n_used,
        mu_hat: if o.mu_hat.is_finite() { o.mu_hat } else { 0.0 },
        lower: finite_or(o.lower),
        upper: finite_or(o.upper),
        verdict_digest,
        verdict_path,
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
    fn a_non_finite_challenger_loss_is_the_challengers_fault_a_kings_is_ours() {
        assert!(check_window_losses(0, &[1.0, 2.0], &[1.5, 2.5]).is_ok());
        match check_window_losses(64, &[1.0, 2.0, 3.0], &[1.0, f32::NAN, 3.0]) {
            Err(DuelRunError::Challenger(m)) => {
                assert!(m.contains("window 65") && m.contains("NaN"), "{m}");
                assert!(m.contains("2.0000"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        match check_window_losses(0, &[1.0, f32::INFINITY], &[1.0, 2.0]) {
            Err(DuelRunError::Scoring(m)) => assert!(m.contains("king") && m.contains("window 1")),
            other => panic!("{other:?}"),
        }
        // Both non-finite: the king's failure wins (we cannot blame the challenger).
        assert!(matches!(
            check_window_losses(0, &[f32::NAN], &[f32::NAN]),
            Err(DuelRunError::Scoring(_))
        ));
        assert!(matches!(
            check_window_losses(0, &[1.0], &[]),
            Err(DuelRunError::Scoring(_))
        ));
        assert_eq!(
            DuelFailure::from(DuelRunError::Challenger("x".into())),
            DuelFailure::Challenger("x".into())
        );
        assert!(matches!(
            DuelFailure::from(DuelRunError::TimedOut(Duration::from_secs(1))),
            DuelFailure::Infra(_)
        ));
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
