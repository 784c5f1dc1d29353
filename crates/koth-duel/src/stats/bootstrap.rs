//! The bootstrap rule, as Teutonic runs it (eval_server_quasar_pair.py, `bootstrap_verdict` and
//! the early stop in `run_eval`):
//!
//! - score a fixed N windows; crown iff the α-quantile (linear interpolation, NumPy's default)
//!   of B bootstrap means of the differences exceeds δ;
//! - futility: after each batch, once at least ⌊N·0.2⌋ and fewer than N windows are scored, let
//!   q be the 0.94-quantile of the differences seen so far and
//!   μ_upper = (Σ dᵢ + (N − n)·q) / N; if μ_upper < δ the king stays.
//!
//! Differences from Teutonic, none of which changes a decision except at exact ties: the
//! resampler is ChaCha20 seeded from the duel's seed material (Teutonic: NumPy PCG64 from a
//! fixed integer), indices are drawn with Lemire's unbiased multiply-shift, and sums are taken
//! in window order (NumPy sums pairwise).

use std::cmp::Ordering;

use koth_core::verdict::{BootstrapFutility, BoundsAfterBatch, Decision, KeepReason, RuleSpec};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::{check_finite, check_probability, StatsError};

/// Teutonic's futility parameters.
pub const TEUTONIC_FUTILITY: BootstrapFutility = BootstrapFutility {
    min_fraction: 0.2,
    advantage_quantile: 0.94,
};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootstrapParams {
    pub alpha: f64,
    pub threshold: f64,
    /// The fixed number of windows N.
    pub n: u64,
    /// Bootstrap resamples B (Teutonic: 10,000).
    pub resamples: u32,
    pub futility: Option<BootstrapFutility>,
    /// Seed of the ChaCha20 resampler.
    pub seed: [u8; 32],
    /// Compute the lower bound's value even where the decision is already certain without it.
    /// Verdicts want the number; the simulator only needs the decision (and is then much
    /// faster at μ ≈ δ).
    pub exact_lower: bool,
}

impl BootstrapParams {
    pub fn from_spec(spec: &RuleSpec, threshold: f64, seed: [u8; 32]) -> Option<Self> {
        match *spec {
            RuleSpec::Bootstrap {
                alpha,
                n,
                resamples,
                futility,
            } => Some(Self {
                alpha,
                threshold,
                n,
                resamples,
                futility,
                seed,
                exact_lower: true,
            }),
            RuleSpec::Sequential { .. } => None,
        }
    }

    pub fn spec(&self) -> RuleSpec {
        RuleSpec::Bootstrap {
            alpha: self.alpha,
            n: self.n,
            resamples: self.resamples,
            futility: self.futility,
        }
    }

    fn validate(&self) -> Result<(), StatsError> {
        check_probability("alpha", self.alpha)?;
        if !self.threshold.is_finite() {
            return Err(StatsError::Param(format!(
                "threshold must be finite, got {}",
                self.threshold
            )));
        }
        if self.n < 1 {
            return Err(StatsError::Param("N must be at least 1".into()));
        }
        if self.resamples < 2 {
            return Err(StatsError::Param(format!(
                "resamples must be at least 2, got {}",
                self.resamples
            )));
        }
        if let Some(f) = self.futility {
            if !(f.min_fraction.is_finite() && (0.0..=1.0).contains(&f.min_fraction)) {
                return Err(StatsError::Param(format!(
                    "futility min_fraction must lie in [0, 1], got {}",
                    f.min_fraction
                )));
            }
            if !(f.advantage_quantile.is_finite() && (0.0..=1.0).contains(&f.advantage_quantile)) {
                return Err(StatsError::Param(format!(
                    "futility advantage_quantile must lie in [0, 1], got {}",
                    f.advantage_quantile
                )));
            }
        }
        Ok(())
    }
}

/// The bootstrap rule as an incremental state machine (it keeps the N values it is fed).
#[derive(Debug, Clone)]
pub struct BootstrapTest {
    params: BootstrapParams,
    values: Vec<f64>,
    sum: f64,
    decision: Decision,
}

impl BootstrapTest {
    pub fn new(params: BootstrapParams) -> Result<Self, StatsError> {
        params.validate()?;
        Ok(Self {
            params,
            values: Vec::new(),
            sum: 0.0,
            decision: Decision::Continue,
        })
    }

    pub fn params(&self) -> &BootstrapParams {
        &self.params
    }

    pub fn n(&self) -> u64 {
        self.values.len() as u64
    }

    pub fn decision(&self) -> Decision {
        self.decision
    }

    pub fn remaining(&self) -> u64 {
        if self.decision.is_final() {
            0
        } else {
            self.params.n - self.n()
        }
    }

    pub fn update(&mut self, batch: &[f64]) -> Result<BoundsAfterBatch, StatsError> {
        if self.decision.is_final() {
            return Err(StatsError::AlreadyDecided(self.decision));
        }
        if batch.is_empty() {
            return Err(StatsError::EmptyBatch);
        }
        let would_be = self.n() + batch.len() as u64;
        if would_be > self.params.n {
            return Err(StatsError::PastLimit {
                batch: batch.len(),
                would_be,
                limit: self.params.n,
            });
        }
        check_finite(batch, self.n())?;
        for &x in batch {
            self.values.push(x);
            self.sum += x;
        }
        let done = self.n();
        let total = self.params.n;
        let mu_hat = self.sum / done as f64;
        let mut lower = None;
        let mut upper = None;

        if done == total {
            let result = bootstrap_lower_quantile(
                &self.values,
                self.params.threshold,
                self.params.alpha,
                self.params.resamples,
                self.params.seed,
                self.params.exact_lower,
            );
            lower = result.lower;
            self.decision = if result.accepted {
                Decision::Crown
            } else {
                Decision::KeepKing(KeepReason::NMax)
            };
        } else if let Some(f) = self.params.futility {
            let min_done = (total as f64 * f.min_fraction) as u64;
            if done >= min_done {
                let q = quantile_linear(&self.values, f.advantage_quantile);
                let mu_upper = (self.sum + (total - done) as f64 * q) / total as f64;
                upper = Some(mu_upper);
                if mu_upper < self.params.threshold {
                    self.decision = Decision::KeepKing(KeepReason::Futility);
                    // Teutonic reports the bootstrap bound on the partial data too.
                    if self.params.exact_lower {
                        lower = bootstrap_lower_quantile(
                            &self.values,
                            self.params.threshold,
                            self.params.alpha,
                            self.params.resamples,
                            self.params.seed,
                            true,
                        )
                        .lower;
                    }
                }
            }
        }
        Ok(BoundsAfterBatch {
            n: done,
            mu_hat,
            lower,
            upper,
            decision: self.decision,
        })
    }
}

/// NumPy's `_lerp`: a + (b − a)·t, computed from the nearer end for t ≥ 0.5.
fn lerp(a: f64, b: f64, t: f64) -> f64 {
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

/// The q-quantile with linear interpolation (NumPy's default `method="linear"`).
/// `values` must be non-empty and finite.
pub fn quantile_linear(values: &[f64], q: f64) -> f64 {
    let n = values.len();
    debug_assert!(n > 0);
    if n == 1 {
        return values[0];
    }
    let h = q * (n - 1) as f64;
    let lo = (h.floor() as usize).min(n - 1);
    let t = h - lo as f64;
    let mut scratch = values.to_vec();
    let (_, a, rest) = scratch.select_nth_unstable_by(lo, f64::total_cmp);
    let a = *a;
    let b = rest.iter().copied().min_by(f64::total_cmp).unwrap_or(a);
    lerp(a, b, t)
}

/// Result of the bootstrap bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootstrapBound {
    /// α-quantile of the bootstrap means exceeds the threshold.
    pub accepted: bool,
    /// The α-quantile itself, when computed (always with `exact`).
    pub lower: Option<f64>,
}

/// A uniform index in [0, n) from 64 random bits (Lemire 2019, unbiased).
fn uniform_index(rng: &mut impl RngCore, n: u64) -> usize {
    let mut m = rng.next_u64() as u128 * n as u128;
    let mut low = m as u64;
    if low < n {
        let floor = n.wrapping_neg() % n;
        while low < floor {
            m = rng.next_u64() as u128 * n as u128;
            low = m as u64;
        }
    }
    (m >> 64) as usize
}

/// The α-quantile of `resamples` bootstrap means of `values` (each the mean of n indices drawn
/// with replacement), compared with `threshold`.
///
/// With `exact == false` the resampling stops as soon as the decision is certain: once two more
/// means than the quantile's lower order statistic needs fall at or below the threshold, the
/// interpolated quantile cannot exceed it. The decision is then identical to the exact
/// computation's (the interpolation stays between its two order statistics), only the value
/// is not reported.
pub fn bootstrap_lower_quantile(
    values: &[f64],
    threshold: f64,
    alpha: f64,
    resamples: u32,
    seed: [u8; 32],
    exact: bool,
) -> BootstrapBound {
    let n = values.len();
    let b = resamples as usize;
    let mut rng = ChaCha20Rng::from_seed(seed);
    let h = alpha * (b - 1) as f64;
    let lo = h.floor() as usize;
    let t = h - lo as f64;
    let resample_mean = |rng: &mut ChaCha20Rng| {
        let mut s = 0.0;
        for _ in 0..n {
            s += values[uniform_index(rng, n as u64)];
        }
        s / n as f64
    };
    if exact {
        let mut means: Vec<f64> = (0..b).map(|_| resample_mean(&mut rng)).collect();
        means.sort_unstable_by(f64::total_cmp);
        let lower = lerp(means[lo], means[(lo + 1).min(b - 1)], t);
        return BootstrapBound {
            accepted: lower > threshold,
            lower: Some(lower),
        };
    }
    // Count of means ≤ threshold, the largest of those, the smallest of the rest.
    let mut at_or_below = 0usize;
    let mut max_at_or_below = f64::NEG_INFINITY;
    let mut min_above = f64::INFINITY;
    for _ in 0..b {
        let m = resample_mean(&mut rng);
        if m.partial_cmp(&threshold) != Some(Ordering::Greater) {
            at_or_below += 1;
            max_at_or_below = max_at_or_below.max(m);
            if at_or_below >= lo + 2 {
                return BootstrapBound {
                    accepted: false,
                    lower: None,
                };
            }
        } else {
            min_above = min_above.min(m);
        }
    }
    if at_or_below <= lo {
        return BootstrapBound {
            accepted: true,
            lower: None,
        };
    }
    // Exactly lo + 1 at or below: the lo-th order statistic is the largest of them and the
    // next one the smallest above.
    let lower = lerp(max_at_or_below, min_above, t);
    BootstrapBound {
        accepted: lower > threshold,
        lower: Some(lower),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_matches_numpy() {
        // np.quantile([3, 1, 4, 1, 5, 9, 2, 6], [0.94, 0.5, 0.0, 1.0])
        let v = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0];
        assert!((quantile_linear(&v, 0.94) - 7.74).abs() < 1e-12);
        assert_eq!(quantile_linear(&v, 0.5), 3.5);
        assert_eq!(quantile_linear(&v, 0.0), 1.0);
        assert_eq!(quantile_linear(&v, 1.0), 9.0);
        assert_eq!(quantile_linear(&[2.5], 0.3), 2.5);
    }

    #[test]
    fn uniform_index_is_in_range_and_covers() {
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            seen[uniform_index(&mut rng, 7)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800 && c < 1200), "{seen:?}");
    }

    #[test]
    fn early_exit_agrees_with_exact_decision() {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        for case in 0..40 {
            let n = 50 + case;
            let shift = (case as f64 - 20.0) * 0.01;
            let values: Vec<f64> = (0..n)
                .map(|_| shift + (rng.next_u32() as f64 / u32::MAX as f64 - 0.5))
                .collect();
            for &threshold in &[-0.05, 0.0, 0.05] {
                let seed = [case as u8; 32];
                let exact = bootstrap_lower_quantile(&values, threshold, 0.05, 400, seed, true);
                let fast = bootstrap_lower_quantile(&values, threshold, 0.05, 400, seed, false);
                assert_eq!(exact.accepted, fast.accepted, "case {case} thr {threshold}");
                if let Some(l) = fast.lower {
                    assert_eq!(Some(l), exact.lower);
                }
            }
        }
    }

    #[test]
    fn same_seed_same_bound_other_seed_other_bound() {
        let values: Vec<f64> = (0..200).map(|i| ((i * 37) % 101) as f64 / 100.0).collect();
        let a = bootstrap_lower_quantile(&values, 0.0, 0.01, 1000, [3; 32], true);
        let b = bootstrap_lower_quantile(&values, 0.0, 0.01, 1000, [3; 32], true);
        let c = bootstrap_lower_quantile(&values, 0.0, 0.01, 1000, [4; 32], true);
        assert_eq!(a.lower.unwrap().to_bits(), b.lower.unwrap().to_bits());
        assert_ne!(a.lower, c.lower);
    }

    fn params(threshold: f64) -> BootstrapParams {
        BootstrapParams {
            alpha: 0.01,
            threshold,
            n: 100,
            resamples: 500,
            futility: Some(TEUTONIC_FUTILITY),
            seed: [9; 32],
            exact_lower: true,
        }
    }

    #[test]
    fn futility_fires_on_a_clearly_worse_challenger_after_20_percent() {
        let mut t = BootstrapTest::new(params(0.001)).unwrap();
        let look = t.update(&[-0.05; 19]).unwrap();
        assert_eq!(look.decision, Decision::Continue);
        assert_eq!(look.upper, None, "no futility look before 20% of N");
        let look = t.update(&[-0.05]).unwrap();
        assert_eq!(look.decision, Decision::KeepKing(KeepReason::Futility));
        assert!(look.upper.unwrap() < 0.001);
        assert!(look.lower.is_some());
    }

    #[test]
    fn identical_models_are_never_crowned() {
        let mut t = BootstrapTest::new(params(0.0)).unwrap();
        let mut last = None;
        while t.remaining() > 0 {
            last = Some(t.update(&[0.0; 10]).unwrap());
        }
        let last = last.unwrap();
        assert_eq!(last.decision, Decision::KeepKing(KeepReason::NMax));
        assert_eq!(last.lower, Some(0.0));
    }

    #[test]
    fn clear_winner_is_crowned_at_n() {
        let mut t = BootstrapTest::new(params(0.001)).unwrap();
        let batch: Vec<f64> = (0..50)
            .map(|i| 0.05 + 0.01 * ((i % 5) as f64 - 2.0))
            .collect();
        assert_eq!(t.update(&batch).unwrap().decision, Decision::Continue);
        let look = t.update(&batch).unwrap();
        assert_eq!(look.decision, Decision::Crown);
        assert!(look.lower.unwrap() > 0.04);
    }
}
