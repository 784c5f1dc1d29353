//! Robbins' normal-mixture boundary, one-sided, as used by the asymptotic confidence sequence.
//!
//! For a standardized sum Sₜ (unit variance per window) and intrinsic time v = t, the process
//! Mₜ = ∫₀^∞ exp(λSₜ − λ²v/2) 2·N(λ; 0, 1/p) dλ
//!    = 2·√(p/(v+p)) · exp(Sₜ²/(2(v+p))) · Φ(Sₜ/√(v+p))
//! is a nonnegative supermartingale under sub-Gaussian increments (Howard, Ramdas, McAuliffe &
//! Sekhon 2021, §3), so P(∃t: Mₜ ≥ 1/α) ≤ α (Ville). The radius r(v) solves M = 1/α; the
//! asymptotic confidence sequence (Waudby-Smith, Arnold, Wu, Wang & Ramdas 2024) applies it to
//! the running mean with the running standard deviation: μ̂ₜ − σ̂ₜ·r(t)/t.
//!
//! Every transcendental function comes from the pure-Rust `libm`, so the radius is the same to
//! the last bit on every platform.

use super::{check_probability, StatsError};

const LN_2: f64 = std::f64::consts::LN_2;
const SQRT_2: f64 = std::f64::consts::SQRT_2;

/// ln Φ(x) for x ≥ 0 (the only range the boundary needs).
fn ln_std_normal_cdf_nonneg(x: f64) -> f64 {
    libm::log(0.5 * libm::erfc(-x / SQRT_2))
}

/// ln of the one-sided mixture at sum `s` ≥ 0, intrinsic time `v`, mixture precision `p`.
fn ln_mixture(s: f64, v: f64, p: f64) -> f64 {
    let vp = v + p;
    LN_2 + 0.5 * libm::log(p / vp)
        + s * s / (2.0 * vp)
        + ln_std_normal_cdf_nonneg(s / libm::sqrt(vp))
}

/// The mixture precision p that makes the boundary tightest near `target_n` windows (the
/// two-sided optimum of Waudby-Smith et al. 2024, eq. for ρ, at level 2α, which the one-sided
/// boundary at α approximately equals).
pub fn precision_for_target(target_n: u64, alpha: f64) -> Result<f64, StatsError> {
    check_probability("alpha", alpha)?;
    if target_n == 0 {
        return Err(StatsError::Param("target_n must be at least 1".into()));
    }
    let l = 2.0 * libm::log(1.0 / (2.0 * alpha).min(0.999_999));
    Ok(target_n as f64 / (l + libm::log(l + 1.0)))
}

/// The one-sided normal-mixture radius: the sum `s` at which Mₜ = 1/α, for intrinsic time
/// `v` > 0 and precision `p` > 0. Found by bisection to a relative width of 1e-13 from a
/// fixed bracket, so it is deterministic.
pub fn one_sided_radius(v: f64, p: f64, alpha: f64) -> f64 {
    let target = -libm::log(alpha);
    let vp = v + p;
    // At the two-sided boundary G = 1/α, and M = 2·G·Φ(·) ≥ G because Φ ≥ 1/2 for s ≥ 0.
    let mut hi = libm::sqrt(vp * libm::log(vp / (p * alpha * alpha)));
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if ln_mixture(mid, v, p) >= target {
            hi = mid;
        } else {
            lo = mid;
        }
        if hi - lo <= 1e-13 * hi {
            break;
        }
    }
    hi
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radius_solves_the_mixture_equation() {
        for &(v, p, a) in &[(100.0, 50.0, 0.05), (5000.0, 300.0, 0.001), (1.0, 1.0, 0.2)] {
            let r = one_sided_radius(v, p, a);
            assert!(
                (ln_mixture(r, v, p) + libm::log(a)).abs() < 1e-9,
                "v={v} p={p} a={a}"
            );
        }
    }

    #[test]
    fn one_sided_radius_sits_between_two_sided_at_alpha_and_2alpha() {
        let (v, p) = (2000.0, 200.0);
        let two_sided = |a: f64| ((v + p) * ((v + p) / (p * a * a)).ln()).sqrt();
        let r = one_sided_radius(v, p, 0.01);
        assert!(r < two_sided(0.01) && r > two_sided(0.02), "{r}");
    }

    #[test]
    fn tighter_alpha_means_wider_radius() {
        let p = precision_for_target(1000, 0.001).unwrap();
        assert!(one_sided_radius(1000.0, p, 0.001) > one_sided_radius(1000.0, p, 0.05));
        assert!(precision_for_target(0, 0.1).is_err());
        assert!(precision_for_target(10, 1.5).is_err());
    }
}
