//! A duel rule, whichever it is: one state machine over batches of tested values, and the
//! mapping from per-window losses to the tested quantity and its threshold.

use koth_core::competition::{Competition, Delta, DuelTest};
use koth_core::verdict::{BootstrapFutility, BoundsAfterBatch, Decision, EffectFloor, RuleSpec};
use koth_core::Digest;
use serde::Serialize;

use crate::stats::{BootstrapParams, BootstrapTest, SequentialParams, SequentialTest, StatsError};

/// The seed of the bootstrap resampler for a duel: sha256 of a domain tag and the seed material.
pub fn bootstrap_seed(seed_material: &str) -> Digest {
    let mut w = koth_core::Sha256Writer::new();
    w.update(b"koth/duel/bootstrap-resampler/1\n");
    w.update(seed_material.as_bytes());
    w.finish()
}

/// The rule a competition file's `[duel]` sets, with at most `n_max` windows (the
/// competition's own `n_max` for a validator; a miner judging locally uses the windows it
/// holds out), and its effect floor. The validator and the miner both build their rule here,
/// so a local verdict is the validator's rule by construction.
pub fn competition_rule(competition: &Competition, n_max: u64) -> (RuleSpec, EffectFloor) {
    let duel = &competition.duel;
    let spec = match duel.test {
        DuelTest::Sequential => SequentialParams::with_defaults(duel.alpha, 0.0, n_max).spec(),
        // Teutonic's production rule: futility after 20% of N at the 0.94 quantile.
        DuelTest::Bootstrap => RuleSpec::Bootstrap {
            alpha: duel.alpha,
            n: n_max,
            resamples: duel.bootstrap_resamples.unwrap_or(10_000),
            futility: Some(BootstrapFutility {
                min_fraction: 0.2,
                advantage_quantile: 0.94,
            }),
        },
    };
    let floor = match duel.delta {
        Delta::Absolute(nats) => EffectFloor::Absolute { nats },
        Delta::Relative(fraction) => EffectFloor::Relative { fraction },
    };
    (spec, floor)
}

/// Either rule, fed batch by batch.
#[derive(Debug, Clone)]
pub enum RuleTest {
    Sequential(SequentialTest),
    Bootstrap(BootstrapTest),
}

impl RuleTest {
    /// The rule `spec` testing its values against `threshold`; `bootstrap_seed` seeds the
    /// bootstrap's resampler (unused by the sequential rule).
    pub fn new(
        spec: &RuleSpec,
        threshold: f64,
        bootstrap_seed: Digest,
    ) -> Result<Self, StatsError> {
        match spec {
            RuleSpec::Sequential { .. } => {
                let p = SequentialParams::from_spec(spec, threshold)
                    .ok_or_else(|| StatsError::Param("not a sequential rule".into()))?;
                Ok(RuleTest::Sequential(SequentialTest::new(p)?))
            }
            RuleSpec::Bootstrap { .. } => {
                let p = BootstrapParams::from_spec(spec, threshold, *bootstrap_seed.as_bytes())
                    .ok_or_else(|| StatsError::Param("not a bootstrap rule".into()))?;
                Ok(RuleTest::Bootstrap(BootstrapTest::new(p)?))
            }
        }
    }

    pub fn update(&mut self, batch: &[f64]) -> Result<BoundsAfterBatch, StatsError> {
        match self {
            RuleTest::Sequential(t) => t.update(batch),
            RuleTest::Bootstrap(t) => t.update(batch),
        }
    }

    pub fn decision(&self) -> Decision {
        match self {
            RuleTest::Sequential(t) => t.decision(),
            RuleTest::Bootstrap(t) => t.decision(),
        }
    }

    pub fn n(&self) -> u64 {
        match self {
            RuleTest::Sequential(t) => t.n(),
            RuleTest::Bootstrap(t) => t.n(),
        }
    }

    /// Windows the rule may still take (0 once decided).
    pub fn remaining(&self) -> u64 {
        match self {
            RuleTest::Sequential(t) => t.remaining(),
            RuleTest::Bootstrap(t) => t.remaining(),
        }
    }
}

/// Errors in turning losses into tested values.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FloorError {
    #[error("a relative effect floor needs the king's per-window losses")]
    MissingKingLosses,
    #[error("{diffs} differences but {king} king losses; they must pair up window by window")]
    LengthMismatch { diffs: usize, king: usize },
    #[error("effect floor must be finite and non-negative, got {0}")]
    BadFloor(f64),
}

/// The threshold the tested values are compared with: δ for an absolute floor, 0 for a relative
/// one (whose δ is folded into the values).
pub fn threshold(floor: EffectFloor) -> Result<f64, FloorError> {
    match floor {
        EffectFloor::Absolute { nats } if nats.is_finite() && nats >= 0.0 => Ok(nats),
        EffectFloor::Relative { fraction } if fraction.is_finite() && fraction >= 0.0 => Ok(0.0),
        EffectFloor::Absolute { nats: x } | EffectFloor::Relative { fraction: x } => {
            Err(FloorError::BadFloor(x))
        }
    }
}

/// The tested value of one window: dᵢ, or dᵢ − r·ℓᵢ(king) for a relative floor r. The relative
/// test is then exact: E[dᵢ − r·ℓᵢ(king)] > 0 ⟺ E[d] > r·E[ℓ(king)], with no plug-in of a
/// running king mean into δ.
pub fn tested_value(floor: EffectFloor, diff: f64, king_loss: f64) -> f64 {
    match floor {
        EffectFloor::Absolute { .. } => diff,
        EffectFloor::Relative { fraction } => diff - fraction * king_loss,
    }
}

/// What `koth duel decide` prints.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DecideReport {
    pub rule: RuleSpec,
    pub effect_floor: EffectFloor,
    pub accepted: bool,
    pub decision: Decision,
    pub n_used: u64,
    /// Mean of the differences over the windows used.
    pub mu_hat: f64,
    /// Mean of the tested quantity (equals `mu_hat` for an absolute floor).
    pub tested_mean: f64,
    pub threshold: f64,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    pub bounds: Vec<BoundsAfterBatch>,
}

/// Errors of [`decide`].
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecideError {
    #[error(transparent)]
    Stats(#[from] StatsError),
    #[error(transparent)]
    Floor(#[from] FloorError),
    #[error("batch size must be at least 1")]
    ZeroBatch,
    #[error("no differences were given")]
    Empty,
}

/// Run `spec` over given per-window differences (in order), `batch` windows per look.
/// If the data run out before the rule decides, the report's decision is `Continue`.
pub fn decide(
    spec: &RuleSpec,
    floor: EffectFloor,
    diffs: &[f64],
    king_losses: Option<&[f64]>,
    batch: usize,
    seed: Digest,
) -> Result<DecideReport, DecideError> {
    if batch == 0 {
        return Err(DecideError::ZeroBatch);
    }
    if diffs.is_empty() {
        return Err(DecideError::Empty);
    }
    let thr = threshold(floor)?;
    let values: Vec<f64> = match floor {
        EffectFloor::Absolute { .. } => diffs.to_vec(),
        EffectFloor::Relative { .. } => {
            let king = king_losses.ok_or(FloorError::MissingKingLosses)?;
            if king.len() != diffs.len() {
                return Err(FloorError::LengthMismatch {
                    diffs: diffs.len(),
                    king: king.len(),
                }
                .into());
            }
            diffs
                .iter()
                .zip(king)
                .map(|(&d, &k)| tested_value(floor, d, k))
                .collect()
        }
    };
    let mut test = RuleTest::new(spec, thr, seed)?;
    let mut bounds = Vec::new();
    let mut used = 0usize;
    while test.remaining() > 0 && used < values.len() {
        let take = batch
            .min(values.len() - used)
            .min(usize::try_from(test.remaining()).unwrap_or(usize::MAX));
        bounds.push(test.update(&values[used..used + take])?);
        used += take;
    }
    let last = bounds.last().copied();
    let n = used.max(1) as f64;
    Ok(DecideReport {
        rule: *spec,
        effect_floor: floor,
        accepted: test.decision().is_crown(),
        decision: test.decision(),
        n_used: used as u64,
        mu_hat: diffs[..used].iter().sum::<f64>() / n,
        tested_mean: values[..used].iter().sum::<f64>() / n,
        threshold: thr,
        lower: last.and_then(|b| b.lower),
        upper: last.and_then(|b| b.upper),
        bounds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use koth_core::verdict::KeepReason;

    fn seq(n_max: u64) -> RuleSpec {
        SequentialParams::with_defaults(0.01, 0.0, n_max).spec()
    }

    #[test]
    fn relative_floor_tests_the_exact_transformed_mean() {
        // d = 0.02 on every window, king loss 3.0: r = 0.5% → need d > 0.015 (crown); r = 1% →
        // need d > 0.03 (keep).
        let diffs: Vec<f64> = (0..600)
            .map(|i| 0.02 + 0.001 * ((i % 3) as f64 - 1.0))
            .collect();
        let king = vec![3.0; 600];
        let r = decide(
            &seq(600),
            EffectFloor::Relative { fraction: 0.005 },
            &diffs,
            Some(&king),
            64,
            bootstrap_seed("t"),
        )
        .unwrap();
        assert!(r.accepted, "{r:?}");
        assert!((r.tested_mean - 0.005).abs() < 1e-4, "{}", r.tested_mean);
        let r = decide(
            &seq(600),
            EffectFloor::Relative { fraction: 0.01 },
            &diffs,
            Some(&king),
            64,
            bootstrap_seed("t"),
        )
        .unwrap();
        assert_eq!(r.decision, Decision::KeepKing(KeepReason::Futility));
        assert_eq!(
            decide(
                &seq(600),
                EffectFloor::Relative { fraction: 0.01 },
                &diffs,
                None,
                64,
                bootstrap_seed("t")
            ),
            Err(DecideError::Floor(FloorError::MissingKingLosses))
        );
    }

    #[test]
    fn running_out_of_data_leaves_the_duel_undecided() {
        let diffs = vec![0.001, -0.001, 0.002, -0.002];
        let r = decide(
            &seq(1000),
            EffectFloor::Absolute { nats: 0.0 },
            &diffs,
            None,
            3,
            bootstrap_seed("t"),
        )
        .unwrap();
        assert_eq!(r.decision, Decision::Continue);
        assert_eq!(r.n_used, 4);
        assert_eq!(r.bounds.len(), 2);
    }

    #[test]
    fn negative_floor_is_refused() {
        assert!(threshold(EffectFloor::Absolute { nats: -0.1 }).is_err());
        assert!(threshold(EffectFloor::Relative { fraction: f64::NAN }).is_err());
    }
}
