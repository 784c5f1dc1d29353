//! Each miner's hyperparameters. Miners differ on purpose — learning rate, steps per attempt,
//! batch size, seed — so the devnet shows a market of strategies rather than three copies of
//! one run. Pure: the same inputs give the same plans.

use serde::{Deserialize, Serialize};

/// The base every miner's plan is derived from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainBase {
    /// Peak learning rate of the first profile.
    pub lr: f64,
    /// Optimizer steps per attempt of the first profile.
    pub steps: u32,
    /// Sequences per micro-batch of the first profile.
    pub batch_size: u32,
    /// Tokens per training sequence (the competition's `seq_len`).
    pub seq_len: u32,
    /// Windows each miner holds out of its own training data to judge a challenger locally.
    pub holdout_windows: u32,
}

/// One miner's `[train]` and `[data]` values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainPlan {
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u32,
    pub steps: u32,
    pub batch_size: u32,
    pub seq_len: u32,
    pub seed: u64,
    pub holdout_windows: u32,
    pub checkpoint_every: u32,
}

/// (learning-rate factor, steps factor, batch factor) of each profile, cycled over miners:
/// the base; a careful one (lower rate, more steps); a bold one (higher rate, fewer steps,
/// smaller batches); a wide one (bigger batches, fewer steps).
const PROFILES: [(f64, f64, f64); 4] = [
    (1.0, 1.0, 1.0),
    (0.5, 1.5, 1.0),
    (2.0, 0.75, 0.5),
    (1.0, 0.5, 2.0),
];

/// The plan of miner `index` (0-based) of `count`.
pub fn plan(base: &TrainBase, index: u32) -> TrainPlan {
    let (lr_f, steps_f, batch_f) = PROFILES[index as usize % PROFILES.len()];
    // Later cycles of the profiles nudge the rate so no two miners are identical.
    let cycle = f64::from(index / PROFILES.len() as u32);
    let lr = base.lr * lr_f * (1.0 + 0.1 * cycle);
    let steps = ((f64::from(base.steps) * steps_f).round() as u32).max(4);
    let batch_size = ((f64::from(base.batch_size) * batch_f).round() as u32).max(1);
    TrainPlan {
        lr,
        min_lr: lr / 10.0,
        warmup_steps: (steps / 10).max(1),
        steps,
        batch_size,
        seq_len: base.seq_len,
        seed: 1 + u64::from(index),
        holdout_windows: base.holdout_windows,
        checkpoint_every: steps.div_ceil(2).max(1),
    }
}

/// Plans of `count` miners.
pub fn plans(base: &TrainBase, count: u32) -> Vec<TrainPlan> {
    (0..count).map(|i| plan(base, i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> TrainBase {
        TrainBase {
            lr: 3e-3,
            steps: 60,
            batch_size: 8,
            seq_len: 128,
            holdout_windows: 64,
        }
    }

    #[test]
    fn miners_get_distinct_plans_with_sane_values() {
        let plans = plans(&base(), 7);
        assert_eq!(plans.len(), 7);
        for (i, a) in plans.iter().enumerate() {
            assert!(a.lr > 0.0 && a.min_lr < a.lr, "{a:?}");
            assert!(a.warmup_steps >= 1 && a.warmup_steps < a.steps, "{a:?}");
            assert!(a.batch_size >= 1 && a.checkpoint_every >= 1);
            assert_eq!(a.seed, 1 + i as u64);
            for b in &plans[i + 1..] {
                assert!(
                    (a.lr, a.steps, a.batch_size) != (b.lr, b.steps, b.batch_size),
                    "two miners share hyperparameters: {a:?} {b:?}"
                );
            }
        }
        assert_eq!(plans[0].lr, 3e-3);
        assert_eq!(plans[0].steps, 60);
        assert_eq!(plans[1].steps, 90);
        assert_eq!(plans[2].batch_size, 4);
        assert_eq!(plans[3].batch_size, 16);
    }

    #[test]
    fn the_schedule_is_deterministic_and_tiny_bases_stay_valid() {
        assert_eq!(plans(&base(), 3), plans(&base(), 3));
        let tiny = TrainBase {
            steps: 1,
            batch_size: 1,
            ..base()
        };
        for p in plans(&tiny, 4) {
            assert!(
                p.steps >= 4 && p.batch_size >= 1 && p.warmup_steps < p.steps,
                "{p:?}"
            );
        }
    }
}
