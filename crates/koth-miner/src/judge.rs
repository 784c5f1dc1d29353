//! Judging a challenger locally with the validator's rule: the competition file's `[duel]`
//! section turned into a rule spec and effect floor by `koth_duel::rule::competition_rule`,
//! the function the validator builds its own rule with, run by koth-duel's driver
//! on the windows the miner held out of its own data.
//!
//! The rule is the competition's, with one change: `n_max` is the number of held-out windows
//! (the miner's own budget). The seed material is the held-out sample's, so the driver scores
//! exactly the held-out windows. A local crown is evidence, not a promise: the validator scores
//! other (its own) windows.

use std::path::Path;

use koth_core::competition::Competition;
use koth_core::verdict::{Decision, DuelModel, EffectFloor, RuleSpec, Verdict};
use koth_core::Digest;
use koth_duel::duel::{run_duel, DuelSetup, Progress, ProgressFn, Scoring};
use koth_duel::score::ModelScorer;
use koth_model::Model;
use serde::Serialize;

use crate::data::{holdout_seed_material, MinerData};
use crate::error::{MinerError, Result};

/// The validator's rule and effect floor for `competition`, with `n_max` windows at most.
pub fn rule_for(competition: &Competition, n_max: u64) -> (RuleSpec, EffectFloor) {
    koth_duel::rule::competition_rule(competition, n_max)
}

/// The local verdict, as `attempts.jsonl` records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocalVerdict {
    /// `crown`, `keep_futility` or `keep_n_max`.
    pub verdict: String,
    pub crown: bool,
    pub mu_hat: f64,
    pub windows: u64,
    pub king_nll: f64,
    pub challenger_nll: f64,
    /// The king it was judged against.
    pub king: Digest,
}

fn decision_name(d: Decision) -> String {
    match d {
        Decision::Crown => "crown".into(),
        Decision::Continue => "undecided".into(),
        Decision::KeepKing(r) => format!(
            "keep_{}",
            serde_json::to_value(r)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "king".into())
        ),
    }
}

/// What the local duel needs.
pub struct JudgeSetup<'a> {
    pub competition: &'a Competition,
    pub data: &'a MinerData,
    pub seed: u64,
    pub device: &'a str,
    pub dtype: &'a str,
}

/// Duel `challenger_dir` against `king_dir` on the held-out windows. `progress` sees the
/// running means after every batch.
pub fn judge(
    setup: &JudgeSetup<'_>,
    king: (&Digest, &Path),
    challenger: (&Digest, &Path),
    progress: &mut dyn FnMut(u64, f64, f64),
) -> Result<(LocalVerdict, Verdict)> {
    let device = koth_model::parse_device(setup.device)?;
    let dtype = koth_model::parse_dtype(setup.dtype)?;
    let load = |which: &str, dir: &Path| {
        Model::load(dir, dtype, &device).map_err(|e| {
            MinerError::Duel(format!("loading the {which} from {}: {e}", dir.display()))
        })
    };
    let mut king_scorer = ModelScorer::new(load("king", king.1)?);
    let mut chal_scorer = ModelScorer::new(load("challenger", challenger.1)?);
    let n_max = setup.data.holdout().len() as u64;
    let duel_setup = DuelSetup::from_competition(
        setup.competition,
        n_max,
        DuelModel {
            digest: *king.0,
            path: Some(king.1.display().to_string()),
        },
        DuelModel {
            digest: *challenger.0,
            path: Some(challenger.1.display().to_string()),
        },
        holdout_seed_material(setup.seed),
        Scoring {
            device: setup.device,
            dtype: setup.dtype,
        },
        None,
    );
    let verdict = run_duel(
        setup.data.dataset(),
        &duel_setup,
        &mut king_scorer,
        &mut chal_scorer,
        None,
        &mut ProgressFn(|p: &Progress| {
            progress(p.bounds.n, p.king_mean_loss, p.challenger_mean_loss);
            true
        }),
    )
    .map_err(|e| MinerError::Duel(e.to_string()))?;
    let o = &verdict.outcome;
    let local = LocalVerdict {
        verdict: decision_name(o.decision),
        crown: o.decision.is_crown(),
        mu_hat: o.mu_hat,
        windows: o.n_used,
        king_nll: o.king_mean_loss,
        challenger_nll: o.challenger_mean_loss,
        king: *king.0,
    };
    Ok((local, verdict))
}
