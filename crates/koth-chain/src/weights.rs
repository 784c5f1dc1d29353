//! Weights as Bittensor handles them, and the emission split they drive.
//!
//! - **Client side** ([`normalize_weights`]): the float weights a validator computes become
//!   u16 exactly as the Bittensor SDK's `convert_weights_and_uids_for_emit` does: divide every
//!   weight by the largest (so the largest becomes 1), multiply by 65535, round half to even
//!   (Python's `round`), and drop the entries that round to 0.
//! - **Chain side** ([`max_upscale`]): subtensor's `vec_u16_max_upscale_to_u16` stores
//!   `round(w × 65535 / max)`, so the largest stored weight is always 65535. We compute it in
//!   exact integer arithmetic with halves rounded away from zero (subtensor does the same in
//!   I32F32 fixed point, which can differ by one unit in rare ties; an already-normalized vector
//!   is unchanged by either).
//! - **Emission** ([`split_block_emission`]): see the function.

use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WeightsError {
    #[error("weight for uid {uid} is {weight}; weights must be finite and ≥ 0")]
    Invalid { uid: u16, weight: f64 },
    #[error("uid {0} appears more than once in the weights")]
    DuplicateUid(u16),
    #[error("no weights given, or all weights are zero")]
    AllZero,
}

/// Bittensor SDK's float → u16 conversion (see the module docs). The result keeps the input
/// order, without entries that round to zero.
pub fn normalize_weights(weights: &[(u16, f64)]) -> Result<Vec<(u16, u16)>, WeightsError> {
    let mut seen = std::collections::BTreeSet::new();
    for &(uid, weight) in weights {
        if !weight.is_finite() || weight < 0.0 {
            return Err(WeightsError::Invalid { uid, weight });
        }
        if !seen.insert(uid) {
            return Err(WeightsError::DuplicateUid(uid));
        }
    }
    let max = weights.iter().map(|&(_, w)| w).fold(0.0f64, f64::max);
    if max <= 0.0 {
        return Err(WeightsError::AllZero);
    }
    let out: Vec<(u16, u16)> = weights
        .iter()
        .filter_map(|&(uid, w)| {
            let scaled = ((w / max) * f64::from(u16::MAX)).round_ties_even();
            // w ≤ max, so scaled ≤ 65535; the clamp only guards float edge cases.
            let v = scaled.clamp(0.0, f64::from(u16::MAX)) as u16;
            (v != 0).then_some((uid, v))
        })
        .collect();
    if out.is_empty() {
        return Err(WeightsError::AllZero);
    }
    Ok(out)
}

/// subtensor's max-upscale of a u16 weight vector (see the module docs). All-zero stays zero.
pub fn max_upscale(weights: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let max = weights
        .iter()
        .map(|&(_, w)| u64::from(w))
        .max()
        .unwrap_or(0);
    if max == 0 {
        return weights.to_vec();
    }
    weights
        .iter()
        .map(|&(uid, w)| {
            // round(w·65535/max), halves away from zero, in exact integers.
            let num = u64::from(w) * u64::from(u16::MAX) * 2 + max;
            let v = num / (2 * max);
            (uid, v.min(u64::from(u16::MAX)) as u16)
        })
        .collect()
}

/// Split one block's emission (`per_block`, in rao) over uids, from the weights in force.
///
/// `weights` maps each validator uid that currently holds a permit and has set weights to its
/// stored (uid, u16) vector. Every such validator counts equally (the embedded chain has no
/// stake; on Bittensor the split is stake-weighted through Yuma consensus): the block's emission
/// is first divided equally among them, then each validator's share is divided in proportion to
/// its weights. Both divisions are exact in integers by the largest-remainder method (ties go
/// to the lower uid), so the amounts always add up to `per_block` and every process computes the
/// same split. With no validator weights the block's emission is not paid to anyone.
///
/// Returns (uid, rao) sorted by uid, without zero amounts.
pub fn split_block_emission(
    per_block: u64,
    weights: &BTreeMap<u16, Vec<(u16, u16)>>,
) -> Vec<(u16, u64)> {
    let voters: Vec<&Vec<(u16, u16)>> = weights
        .values()
        .filter(|w| w.iter().any(|&(_, v)| v > 0))
        .collect();
    let mut out: BTreeMap<u16, u64> = BTreeMap::new();
    if voters.is_empty() {
        return Vec::new();
    }
    let shares = largest_remainder(per_block, &vec![1u64; voters.len()]);
    for (vector, share) in voters.into_iter().zip(shares) {
        let mut sorted = vector.clone();
        sorted.sort_by_key(|&(uid, _)| uid);
        let parts: Vec<u64> = sorted.iter().map(|&(_, w)| u64::from(w)).collect();
        for (&(uid, _), amount) in sorted.iter().zip(largest_remainder(share, &parts)) {
            if amount > 0 {
                *out.entry(uid).or_default() += amount;
            }
        }
    }
    out.into_iter().collect()
}

/// Divide `total` in proportion to `parts` (not all zero), exactly: floors first, then one more
/// unit to the largest fractional remainders, ties to the earlier index.
fn largest_remainder(total: u64, parts: &[u64]) -> Vec<u64> {
    let sum: u128 = parts.iter().map(|&p| u128::from(p)).sum();
    if sum == 0 {
        return vec![0; parts.len()];
    }
    let mut amounts = Vec::with_capacity(parts.len());
    let mut remainders = Vec::with_capacity(parts.len());
    for (i, &p) in parts.iter().enumerate() {
        let num = u128::from(total) * u128::from(p);
        amounts.push((num / sum) as u64);
        remainders.push((num % sum, i));
    }
    let given: u64 = amounts.iter().sum();
    let mut left = total - given;
    // Largest remainder first; among equal remainders, the lower index first.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in &remainders {
        if left == 0 {
            break;
        }
        amounts[i] += 1;
        left -= 1;
    }
    amounts
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn normalization_matches_the_bittensor_sdk() {
        // By hand from convert_weights_and_uids_for_emit: max → 65535, others scaled, zeros dropped.
        assert_eq!(
            normalize_weights(&[(0, 0.5), (1, 0.25), (2, 0.0), (7, 1.0)]).unwrap(),
            vec![(0, 32768), (1, 16384), (7, 65535)]
        );
        // 0.5 × 65535 = 32767.5 rounds half to even → 32768; 0.1 × 65535 = 6553.5 → 6554
        // (to even), 0.3 × 65535 = 19660.5 → 19660 (to even).
        assert_eq!(
            normalize_weights(&[(1, 0.1), (2, 0.3), (3, 1.0)]).unwrap(),
            vec![(1, 6554), (2, 19660), (3, 65535)]
        );
        // Tiny weights vanish rather than being stored as zero.
        assert_eq!(
            normalize_weights(&[(0, 1e-9), (1, 1.0)]).unwrap(),
            vec![(1, 65535)]
        );
        assert_eq!(normalize_weights(&[]), Err(WeightsError::AllZero));
        assert_eq!(normalize_weights(&[(0, 0.0)]), Err(WeightsError::AllZero));
        assert!(matches!(
            normalize_weights(&[(0, -1.0)]),
            Err(WeightsError::Invalid { .. })
        ));
        assert!(matches!(
            normalize_weights(&[(0, f64::NAN)]),
            Err(WeightsError::Invalid { .. })
        ));
        assert_eq!(
            normalize_weights(&[(4, 1.0), (4, 2.0)]),
            Err(WeightsError::DuplicateUid(4))
        );
    }

    #[test]
    fn max_upscale_is_identity_on_normalized_vectors_and_scales_others() {
        let normalized = vec![(0, 65535), (1, 100), (2, 1)];
        assert_eq!(max_upscale(&normalized), normalized);
        assert_eq!(max_upscale(&[(0, 2), (1, 1)]), vec![(0, 65535), (1, 32768)]);
        assert_eq!(max_upscale(&[(0, 0)]), vec![(0, 0)]);
        assert_eq!(max_upscale(&[(0, 3), (1, 1)]), vec![(0, 65535), (1, 21845)]);
    }

    #[test]
    fn emission_split_is_exact_and_proportional() {
        let mut weights = BTreeMap::new();
        assert!(split_block_emission(1_000, &weights).is_empty());
        weights.insert(0, vec![(1, 65535), (2, 65535)]);
        assert_eq!(
            split_block_emission(1_001, &weights),
            vec![(1, 501), (2, 500)]
        );
        weights.insert(5, vec![(2, 65535)]);
        // Half each validator: v0 gives 250/250 (of 500... 501 first), v5 gives all to uid 2.
        assert_eq!(
            split_block_emission(1_000, &weights),
            vec![(1, 250), (2, 750)]
        );
    }

    #[test]
    fn random_splits_always_add_up() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        for _ in 0..500 {
            let mut weights = BTreeMap::new();
            for v in 0..rng.random_range(1..5u16) {
                let n = rng.random_range(1..20u16);
                let vector: Vec<(u16, u16)> = (0..n)
                    .map(|uid| (uid, rng.random_range(1..=u16::MAX)))
                    .collect();
                weights.insert(v, vector);
            }
            let total = rng.random_range(0..10_000_000_000u64);
            let split = split_block_emission(total, &weights);
            assert_eq!(split.iter().map(|&(_, a)| a).sum::<u64>(), total);
        }
    }
}
