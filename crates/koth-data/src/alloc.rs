//! Largest-remainder (Hamilton) allocation of `n` windows to sources by integer weight.
//!
//! Weights are integers so the allocation is exact on every machine: no floating point enters a
//! result that a verdict depends on. Source i's quota is `n·wᵢ / W` (W = Σw); each source first
//! gets the floor of its quota, and the windows left over go one each to the sources with the
//! largest remainders `n·wᵢ mod W`. Ties go to the source listed first (bundles list sources
//! sorted by name, so the tie-break is by name).

/// Why an allocation cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("no sources to allocate windows to")]
    NoSources,
    #[error("the weights sum to zero")]
    ZeroTotal,
}

/// Allocate `n` items over `weights` by largest remainder. The result sums to exactly `n`;
/// a zero-weight source gets zero. Each share is the floor or the ceiling of its exact quota.
pub fn largest_remainder(weights: &[u64], n: u64) -> Result<Vec<u64>, AllocError> {
    if weights.is_empty() {
        return Err(AllocError::NoSources);
    }
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    if total == 0 {
        return Err(AllocError::ZeroTotal);
    }
    let n128 = u128::from(n);
    let mut shares = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for (i, &w) in weights.iter().enumerate() {
        let scaled = n128 * u128::from(w);
        // scaled / total ≤ n, so it fits in u64.
        shares.push((scaled / total) as u64);
        remainders.push((scaled % total, i));
    }
    let given: u64 = shares.iter().sum();
    let left = n - given;
    // Largest remainder first; equal remainders in listing order.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in remainders.iter().take(left as usize) {
        shares[i] += 1;
    }
    Ok(shares)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_quotas_are_kept() {
        assert_eq!(largest_remainder(&[1, 1, 2], 8).unwrap(), vec![2, 2, 4]);
    }

    #[test]
    fn remainders_go_to_the_largest() {
        // quotas 10·5/10=5, 10·3/10=3, 10·2/10=2 exact; with n=7: 3.5, 2.1, 1.4 → 3,2,1 + 1 to first.
        assert_eq!(largest_remainder(&[5, 3, 2], 7).unwrap(), vec![4, 2, 1]);
        // Equal remainders: listing order breaks the tie.
        assert_eq!(largest_remainder(&[1, 1, 1], 4).unwrap(), vec![2, 1, 1]);
        assert_eq!(largest_remainder(&[1, 1, 1], 5).unwrap(), vec![2, 2, 1]);
    }

    #[test]
    fn zero_weights_and_errors() {
        assert_eq!(largest_remainder(&[0, 3], 5).unwrap(), vec![0, 5]);
        assert_eq!(largest_remainder(&[], 5), Err(AllocError::NoSources));
        assert_eq!(largest_remainder(&[0, 0], 5), Err(AllocError::ZeroTotal));
        assert_eq!(
            largest_remainder(&[u64::MAX, u64::MAX], u64::MAX)
                .unwrap()
                .iter()
                .sum::<u64>(),
            u64::MAX
        );
    }

    #[test]
    fn shares_are_floor_or_ceiling_and_sum_to_n() {
        let weights = [7u64, 13, 1, 29, 3];
        let total: u64 = weights.iter().sum();
        for n in 0..500u64 {
            let s = largest_remainder(&weights, n).unwrap();
            assert_eq!(s.iter().sum::<u64>(), n);
            for (w, got) in weights.iter().zip(&s) {
                let floor = n * w / total;
                assert!(*got == floor || *got == floor + 1, "n={n} w={w} got={got}");
            }
        }
    }
}
