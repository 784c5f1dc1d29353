//! Helpers shared by koth-model's bench targets (`mod common;` in each).

use std::time::Instant;

/// Median seconds of `reps` runs after one warm-up.
pub fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}
