//! The learning-rate schedule: linear warmup, then cosine decay to a floor. A pure function of
//! the step, so a resumed run continues exactly where it stopped.

use serde::Serialize;

/// Warmup for `warmup_steps` steps, then cosine from `lr` down to `min_lr` at step `steps`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Schedule {
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub steps: u64,
}

impl Schedule {
    /// The learning rate of optimizer step `step` (0-based).
    ///
    /// - Warmup (`step < warmup_steps`): `lr · (step + 1) / warmup_steps`, so the first step
    ///   already moves and the last warmup step uses the full `lr`.
    /// - Then cosine over the remaining `steps − warmup_steps` steps:
    ///   `min_lr + (lr − min_lr) · (1 + cos(π · p)) / 2` with
    ///   `p = (step − warmup_steps) / (steps − warmup_steps)`; `p = 0` gives `lr`.
    /// - At and after `steps`: `min_lr`.
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        if step >= self.steps {
            return self.min_lr;
        }
        let span = (self.steps - self.warmup_steps).max(1) as f64;
        let p = (step - self.warmup_steps) as f64 / span;
        self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> Schedule {
        Schedule {
            lr: 1e-3,
            min_lr: 1e-4,
            warmup_steps: 10,
            steps: 110,
        }
    }

    #[test]
    fn warmup_is_linear_and_reaches_the_peak() {
        let s = s();
        assert!((s.lr_at(0) - 1e-4).abs() < 1e-15);
        assert!((s.lr_at(4) - 5e-4).abs() < 1e-15);
        assert!((s.lr_at(9) - 1e-3).abs() < 1e-15);
        for i in 0..9 {
            assert!(s.lr_at(i) < s.lr_at(i + 1));
        }
    }

    #[test]
    fn cosine_starts_at_the_peak_passes_the_midpoint_and_ends_at_the_floor() {
        let s = s();
        assert!((s.lr_at(10) - 1e-3).abs() < 1e-15);
        // Halfway through the decay the cosine term is zero: the mean of peak and floor.
        assert!((s.lr_at(60) - 5.5e-4).abs() < 1e-12, "{}", s.lr_at(60));
        for i in 10..109 {
            assert!(s.lr_at(i) >= s.lr_at(i + 1), "not decreasing at {i}");
        }
        assert!(s.lr_at(109) > 1e-4 && s.lr_at(109) < 1.01e-4);
        assert_eq!(s.lr_at(110), 1e-4);
        assert_eq!(s.lr_at(10_000), 1e-4);
    }

    #[test]
    fn no_warmup_and_all_warmup_are_well_defined() {
        let flat = Schedule {
            lr: 2e-3,
            min_lr: 2e-3,
            warmup_steps: 0,
            steps: 5,
        };
        for i in 0..5 {
            assert!((flat.lr_at(i) - 2e-3).abs() < 1e-18);
        }
        let all_warm = Schedule {
            lr: 1.0,
            min_lr: 0.0,
            warmup_steps: 4,
            steps: 4,
        };
        assert_eq!(all_warm.lr_at(3), 1.0);
        assert_eq!(all_warm.lr_at(4), 0.0);
        assert!(all_warm.lr_at(0).is_finite());
    }
}
