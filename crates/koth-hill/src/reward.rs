//! The reward policy: a pure function from the history of reigns to normalised weights.

use std::collections::BTreeMap;

use serde::Serialize;

use koth_core::competition::RewardPolicy;

use crate::event::Weight;
use crate::state::{Reign, ValidatorState};

/// Weights per hotkey under `policy`, given every reign so far (genesis first, the king last).
///
/// - Winner-take-all: the king's hotkey gets 1.
/// - Split over the last `k` kings: reign `i` back from the king gets `shares[i]` (equal shares
///   when none are given); a hotkey that held several of those reigns gets the sum.
///
/// The genesis king belongs to nobody: its share is dropped and the rest renormalised. With no
/// paid reign at all the result is empty (nothing to set). The result is sorted by hotkey and
/// sums to 1 up to rounding; the order of additions is fixed, so it is reproducible bit for bit.
pub fn reward_weights(policy: &RewardPolicy, reigns: &[Reign]) -> Vec<Weight> {
    let mut per_hotkey: BTreeMap<&str, f64> = BTreeMap::new();
    let shares = reward_shares(policy, reigns);
    for s in &shares {
        if let Some(hotkey) = &s.hotkey {
            *per_hotkey.entry(hotkey.as_str()).or_insert(0.0) += s.share;
        }
    }
    let total: f64 = per_hotkey.values().sum();
    if !(total.is_finite() && total > 0.0) {
        return Vec::new();
    }
    per_hotkey
        .into_iter()
        .map(|(hotkey, w)| Weight {
            hotkey: hotkey.to_string(),
            weight: w / total,
        })
        .collect()
}

impl ValidatorState {
    /// The weights the reward policy gives now (empty before `started`).
    pub fn expected_weights(&self) -> Vec<Weight> {
        match &self.rules {
            Some(r) => reward_weights(&r.reward, &self.reigns),
            None => Vec::new(),
        }
    }
}

/// One reign's part in the current reward, before normalisation: why a hotkey is paid.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RewardShare {
    pub reign: u64,
    /// `None`: the genesis king, whose share is not paid.
    pub hotkey: Option<String>,
    /// 0 for the current king, 1 for the one before, …
    pub back: usize,
    /// The policy's raw share for this position.
    pub share: f64,
}

/// The reigns the policy pays, newest first, with their raw shares.
pub fn reward_shares(policy: &RewardPolicy, reigns: &[Reign]) -> Vec<RewardShare> {
    let (k, shares): (usize, Option<&[f64]>) = match policy {
        RewardPolicy::WinnerTakeAll => (1, None),
        RewardPolicy::SplitLastK { k, shares } => (*k as usize, shares.as_deref()),
    };
    reigns
        .iter()
        .rev()
        .take(k)
        .enumerate()
        .map(|(back, reign)| RewardShare {
            reign: reign.number,
            hotkey: reign.hotkey.clone(),
            back,
            share: shares.and_then(|s| s.get(back).copied()).unwrap_or(1.0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use koth_core::Digest;

    fn reign(n: u64, hotkey: Option<&str>) -> Reign {
        Reign {
            number: n,
            digest: Digest::of(&n.to_le_bytes()),
            hotkey: hotkey.map(str::to_string),
            uid: None,
            entry: None,
            location: None,
            block: n,
            block_hash: None,
        }
    }

    fn as_pairs(w: &[Weight]) -> Vec<(&str, f64)> {
        w.iter().map(|w| (w.hotkey.as_str(), w.weight)).collect()
    }

    #[test]
    fn winner_take_all_pays_the_king_only() {
        let reigns = [reign(0, None), reign(1, Some("a")), reign(2, Some("b"))];
        let w = reward_weights(&RewardPolicy::WinnerTakeAll, &reigns);
        assert_eq!(as_pairs(&w), vec![("b", 1.0)]);
    }

    #[test]
    fn genesis_alone_pays_nobody() {
        let reigns = [reign(0, None)];
        assert!(reward_weights(&RewardPolicy::WinnerTakeAll, &reigns).is_empty());
        let split = RewardPolicy::SplitLastK { k: 3, shares: None };
        assert!(reward_weights(&split, &reigns).is_empty());
    }

    #[test]
    fn split_uses_shares_newest_first_and_renormalises() {
        let policy = RewardPolicy::SplitLastK {
            k: 3,
            shares: Some(vec![0.5, 0.3, 0.2]),
        };
        let reigns = [
            reign(0, None),
            reign(1, Some("a")),
            reign(2, Some("b")),
            reign(3, Some("c")),
        ];
        let w = reward_weights(&policy, &reigns);
        assert_eq!(as_pairs(&w), vec![("a", 0.2), ("b", 0.3), ("c", 0.5)]);
        // Only two paid reigns inside the window: genesis' 0.2 is dropped, the rest renormalised.
        let w = reward_weights(&policy, &reigns[..3]);
        assert_eq!(as_pairs(&w), vec![("a", 0.3 / 0.8), ("b", 0.5 / 0.8)]);
    }

    #[test]
    fn a_hotkey_holding_several_reigns_gets_their_sum() {
        let policy = RewardPolicy::SplitLastK { k: 4, shares: None };
        let reigns = [
            reign(1, Some("a")),
            reign(2, Some("b")),
            reign(3, Some("a")),
            reign(4, Some("a")),
        ];
        let w = reward_weights(&policy, &reigns);
        assert_eq!(as_pairs(&w), vec![("a", 0.75), ("b", 0.25)]);
    }
}
