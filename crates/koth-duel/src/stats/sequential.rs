//! The sequential rule: an anytime-valid (asymptotic) confidence sequence for the mean of the
//! tested quantity, looked at after every batch.
//!
//! Crown as soon as the lower bound exceeds the threshold; keep the king as soon as the upper
//! bound falls below it (futility), or once `n_max` windows are scored. The lower bound spends
//! `alpha` (the false-crown rate); the upper bound is a separate one-sided sequence at
//! `futility_alpha`, whose errors only cost power.

use koth_core::verdict::{BoundsAfterBatch, Decision, KeepReason, RuleSpec};

use super::mixture::{one_sided_radius, precision_for_target};
use super::running::RunningMoments;
use super::{check_finite, check_probability, StatsError};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SequentialParams {
    pub alpha: f64,
    pub futility_alpha: f64,
    /// Crown iff the tested mean exceeds this (δ, or 0 for a relative floor).
    pub threshold: f64,
    pub n_max: u64,
    pub min_n: u64,
    pub target_n: u64,
}

impl SequentialParams {
    /// koth's defaults around a given `n_max` and `alpha`: futility at 0.01, first decision
    /// after 256 windows, boundary tuned for n_max / 4. (Chosen by simulation; see
    /// docs/STATISTICS.md.)
    pub fn with_defaults(alpha: f64, threshold: f64, n_max: u64) -> Self {
        Self {
            alpha,
            futility_alpha: 0.01,
            threshold,
            n_max,
            min_n: 256.min(n_max),
            target_n: (n_max / 4).max(1),
        }
    }

    pub fn from_spec(spec: &RuleSpec, threshold: f64) -> Option<Self> {
        match *spec {
            RuleSpec::Sequential {
                alpha,
                futility_alpha,
                n_max,
                min_n,
                target_n,
            } => Some(Self {
                alpha,
                futility_alpha,
                threshold,
                n_max,
                min_n,
                target_n,
            }),
            RuleSpec::Bootstrap { .. } => None,
        }
    }

    pub fn spec(&self) -> RuleSpec {
        RuleSpec::Sequential {
            alpha: self.alpha,
            futility_alpha: self.futility_alpha,
            n_max: self.n_max,
            min_n: self.min_n,
            target_n: self.target_n,
        }
    }

    fn validate(&self) -> Result<(), StatsError> {
        check_probability("alpha", self.alpha)?;
        check_probability("futility_alpha", self.futility_alpha)?;
        if !self.threshold.is_finite() {
            return Err(StatsError::Param(format!(
                "threshold must be finite, got {}",
                self.threshold
            )));
        }
        if self.n_max < 2 {
            return Err(StatsError::Param(format!(
                "n_max must be at least 2, got {}",
                self.n_max
            )));
        }
        if self.min_n < 2 || self.min_n > self.n_max {
            return Err(StatsError::Param(format!(
                "min_n must lie in [2, n_max = {}], got {}",
                self.n_max, self.min_n
            )));
        }
        if self.target_n == 0 {
            return Err(StatsError::Param("target_n must be at least 1".into()));
        }
        Ok(())
    }
}

/// The sequential rule as an incremental state machine.
#[derive(Debug, Clone)]
pub struct SequentialTest {
    params: SequentialParams,
    crown_precision: f64,
    futility_precision: f64,
    moments: RunningMoments,
    decision: Decision,
}

impl SequentialTest {
    pub fn new(params: SequentialParams) -> Result<Self, StatsError> {
        params.validate()?;
        Ok(Self {
            crown_precision: precision_for_target(params.target_n, params.alpha)?,
            futility_precision: precision_for_target(params.target_n, params.futility_alpha)?,
            params,
            moments: RunningMoments::default(),
            decision: Decision::Continue,
        })
    }

    pub fn params(&self) -> &SequentialParams {
        &self.params
    }

    pub fn n(&self) -> u64 {
        self.moments.n()
    }

    pub fn decision(&self) -> Decision {
        self.decision
    }

    /// Windows the rule may still take.
    pub fn remaining(&self) -> u64 {
        if self.decision.is_final() {
            0
        } else {
            self.params.n_max - self.moments.n()
        }
    }

    /// The (lower, upper) bounds at the current state; `None` below two windows.
    pub fn bounds(&self) -> Option<(f64, f64)> {
        let var = self.moments.variance()?;
        let n = self.moments.n() as f64;
        let sd = libm::sqrt(var);
        let mu = self.moments.mean();
        let lower = mu - sd * one_sided_radius(n, self.crown_precision, self.params.alpha) / n;
        let upper =
            mu + sd * one_sided_radius(n, self.futility_precision, self.params.futility_alpha) / n;
        Some((lower, upper))
    }

    /// Feed one batch of tested values (in window order) and decide.
    pub fn update(&mut self, batch: &[f64]) -> Result<BoundsAfterBatch, StatsError> {
        if self.decision.is_final() {
            return Err(StatsError::AlreadyDecided(self.decision));
        }
        if batch.is_empty() {
            return Err(StatsError::EmptyBatch);
        }
        let would_be = self.moments.n() + batch.len() as u64;
        if would_be > self.params.n_max {
            return Err(StatsError::PastLimit {
                batch: batch.len(),
                would_be,
                limit: self.params.n_max,
            });
        }
        check_finite(batch, self.moments.n())?;
        batch.iter().for_each(|&x| self.moments.push(x));

        let n = self.moments.n();
        let bounds = self.bounds();
        if n >= self.params.min_n {
            if let Some((lower, upper)) = bounds {
                if lower > self.params.threshold {
                    self.decision = Decision::Crown;
                } else if upper < self.params.threshold {
                    self.decision = Decision::KeepKing(KeepReason::Futility);
                }
            }
        }
        if !self.decision.is_final() && n >= self.params.n_max {
            self.decision = Decision::KeepKing(KeepReason::NMax);
        }
        Ok(BoundsAfterBatch {
            n,
            mu_hat: self.moments.mean(),
            lower: bounds.map(|b| b.0),
            upper: bounds.map(|b| b.1),
            decision: self.decision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(threshold: f64) -> SequentialParams {
        SequentialParams {
            alpha: 0.01,
            futility_alpha: 0.05,
            threshold,
            n_max: 1000,
            min_n: 10,
            target_n: 200,
        }
    }

    #[test]
    fn identical_models_are_kept_at_once() {
        let mut t = SequentialTest::new(params(0.001)).unwrap();
        let look = t.update(&[0.0; 10]).unwrap();
        assert_eq!(look.decision, Decision::KeepKing(KeepReason::Futility));
        assert_eq!(look.lower, Some(0.0));
        // Even with a zero floor a zero difference never crowns: it runs to n_max.
        let mut t = SequentialTest::new(params(0.0)).unwrap();
        let mut last = Decision::Continue;
        while t.remaining() > 0 {
            last = t.update(&[0.0; 100]).unwrap().decision;
        }
        assert_eq!(last, Decision::KeepKing(KeepReason::NMax));
    }

    #[test]
    fn clear_winner_is_crowned_early_and_state_is_then_frozen() {
        let mut t = SequentialTest::new(params(0.001)).unwrap();
        // Alternating 0.05 ± 0.01: mean 0.05, sd ≈ 0.01, far above 0.001.
        let batch: Vec<f64> = (0..20)
            .map(|i| if i % 2 == 0 { 0.04 } else { 0.06 })
            .collect();
        let look = t.update(&batch).unwrap();
        assert_eq!(look.decision, Decision::Crown);
        assert!(look.lower.unwrap() > 0.001);
        assert!(matches!(
            t.update(&batch),
            Err(StatsError::AlreadyDecided(_))
        ));
    }

    #[test]
    fn no_decision_before_min_n() {
        let mut t = SequentialTest::new(params(0.001)).unwrap();
        let look = t.update(&[0.04, 0.06, 0.05]).unwrap();
        assert_eq!(look.decision, Decision::Continue);
        assert!(look.lower.is_some());
    }

    #[test]
    fn rejects_bad_input() {
        let mut t = SequentialTest::new(params(0.0)).unwrap();
        assert!(matches!(
            t.update(&[0.0, f64::NAN]),
            Err(StatsError::NonFinite { index: 1, .. })
        ));
        assert_eq!(t.n(), 0, "a rejected batch leaves the state alone");
        assert!(matches!(t.update(&[]), Err(StatsError::EmptyBatch)));
        assert!(matches!(
            t.update(&vec![0.1; 1001]),
            Err(StatsError::PastLimit { .. })
        ));
        let mut bad = params(0.0);
        bad.alpha = 0.0;
        assert!(SequentialTest::new(bad).is_err());
        let mut bad = params(0.0);
        bad.min_n = 1;
        assert!(SequentialTest::new(bad).is_err());
    }
}
