//! Rebuilding the ledger from its extrinsics alone: the pure half of `EmbeddedChain::verify`.
//! Replaying every stored extrinsic through the rules, block by block, must give exactly the
//! state the chain stored as it went; any difference means the file was altered.

use std::collections::BTreeMap;

use crate::extrinsic::SignedExtrinsic;
use crate::keys::AccountId;
use crate::rules::{Effect, ExtrinsicError, LedgerState};
use crate::types::ChainParams;
use crate::weights::split_block_emission;

/// A commitment as stored, revealed or not (never handed out of the crate as such).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredCommitment {
    pub uid: u16,
    pub hotkey: AccountId,
    pub payload: String,
    pub commit_block: u64,
    pub reveal_block: u64,
}

/// Each validator's latest weights with the block that included them.
pub(crate) type WeightsByValidator = BTreeMap<u16, (u64, Vec<(u16, u16)>)>;

/// The state a replay rebuilds.
#[derive(Debug)]
pub(crate) struct Replayed {
    pub state: LedgerState,
    pub commitments: Vec<StoredCommitment>,
    pub weights: WeightsByValidator,
    /// uid → rao accrued through block `head`, without zero entries.
    pub emission: BTreeMap<u16, u64>,
}

fn pay(
    per_block: u64,
    weights: &WeightsByValidator,
    emission: &mut BTreeMap<u16, u64>,
    blocks: u64,
) {
    if blocks == 0 {
        return;
    }
    let voting: BTreeMap<u16, Vec<(u16, u16)>> =
        weights.iter().map(|(&v, (_, w))| (v, w.clone())).collect();
    for (uid, amount) in split_block_emission(per_block, &voting) {
        let e = emission.entry(uid).or_default();
        // The file stores i64; the live chain saturates there too.
        *e = e
            .saturating_add(amount.saturating_mul(blocks))
            .min(i64::MAX as u64);
    }
}

/// Why the stored extrinsics do not replay: the file was altered or written by other rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReplayError {
    #[error("extrinsics in block {block}, outside 1..={open}")]
    BlockOutOfRange { block: u64, open: u64 },
    #[error("extrinsic {block}/{index} breaks the rules on replay: {error}")]
    BreaksRules {
        block: u64,
        index: usize,
        error: ExtrinsicError,
    },
}

/// Replay `blocks` (block number → its extrinsics in order; numbers ≥ 1, at most `head + 1`,
/// where block `head + 1` is the open one and pays no emission yet).
pub(crate) fn replay(
    params: &ChainParams,
    blocks: &BTreeMap<u64, Vec<SignedExtrinsic>>,
    head: u64,
) -> Result<Replayed, ReplayError> {
    let mut state = LedgerState {
        genesis: params.genesis_hash,
        owner: params.owner,
        max_uids: params.max_uids,
        reveal_delay: params.reveal_delay,
        immunity_period: params.immunity_period,
        neurons: Vec::new(),
        nonces: BTreeMap::new(),
        emission: BTreeMap::new(),
    };
    let mut commitments = Vec::new();
    let mut weights = WeightsByValidator::new();
    // Emission has been paid for blocks 1..=paid_through.
    let mut paid_through = 0u64;
    for (&block, extrinsics) in blocks {
        if block == 0 || block > head + 1 {
            return Err(ReplayError::BlockOutOfRange {
                block,
                open: head + 1,
            });
        }
        let sealed = block <= head;
        // Empty blocks since the last one with extrinsics pay by the weights then in force —
        // before this block's extrinsics, which see the emission through block - 1 (the live
        // chain pays the sealed head before including into the open block; pruning reads it).
        pay(
            params.emission_per_block_rao,
            &weights,
            &mut state.emission,
            block - 1 - paid_through,
        );
        paid_through = block - 1;
        for (idx, ext) in extrinsics.iter().enumerate() {
            let effect = state
                .apply(ext, block)
                .map_err(|error| ReplayError::BreaksRules {
                    block,
                    index: idx,
                    error,
                })?;
            match effect {
                Effect::Committed {
                    uid,
                    hotkey,
                    payload,
                    commit_block,
                    reveal_block,
                } => commitments.push(StoredCommitment {
                    uid,
                    hotkey,
                    payload,
                    commit_block,
                    reveal_block,
                }),
                Effect::WeightsSet {
                    validator_uid,
                    weights: w,
                } => {
                    weights.insert(validator_uid, (block, w));
                }
                Effect::Replaced { neuron, .. } => {
                    // `apply` reset the uid's emission; the pruned hotkey's weights go too.
                    weights.remove(&neuron.uid);
                }
                Effect::Registered(_) | Effect::PermitGranted { .. } => {}
            }
        }
        if sealed {
            // A block pays by the weights in force at its end.
            pay(
                params.emission_per_block_rao,
                &weights,
                &mut state.emission,
                1,
            );
            paid_through = block;
        }
    }
    pay(
        params.emission_per_block_rao,
        &weights,
        &mut state.emission,
        head - paid_through,
    );
    state.emission.retain(|_, r| *r > 0);
    let emission = state.emission.clone();
    Ok(Replayed {
        state,
        commitments,
        weights,
        emission,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extrinsic::Call;
    use crate::keys::Keypair;
    use koth_core::Digest;

    #[test]
    fn replay_pays_emission_from_the_block_that_sets_weights() {
        let owner = Keypair::from_seed([0; 32]);
        let v = Keypair::from_seed([1; 32]);
        let params = ChainParams {
            netuid: 1,
            genesis_hash: Digest::of(b"g"),
            genesis_time_ms: 0,
            block_time_ms: 1,
            reveal_delay: 2,
            emission_per_block_rao: 10,
            max_uids: 8,
            immunity_period: None,
            owner: owner.account(),
        };
        let g = params.genesis_hash;
        let mut blocks = BTreeMap::new();
        blocks.insert(
            3,
            vec![
                SignedExtrinsic::sign(
                    &v,
                    g,
                    0,
                    Call::Register {
                        coldkey: v.account(),
                    },
                ),
                SignedExtrinsic::sign(
                    &owner,
                    g,
                    0,
                    Call::GrantValidatorPermit {
                        hotkey: v.account(),
                    },
                ),
            ],
        );
        blocks.insert(
            5,
            vec![SignedExtrinsic::sign(
                &v,
                g,
                1,
                Call::SetWeights {
                    weights: vec![(0, 1)],
                },
            )],
        );
        blocks.insert(
            8,
            vec![SignedExtrinsic::sign(
                &v,
                g,
                2,
                Call::Commit {
                    payload: "p".into(),
                },
            )],
        );
        // Head 7: block 8 is open. Blocks 5, 6, 7 pay 10 each to uid 0.
        let r = replay(&params, &blocks, 7).unwrap();
        assert_eq!(r.emission.get(&0), Some(&30));
        assert_eq!(r.weights.get(&0), Some(&(5, vec![(0, 65535)])));
        assert_eq!(r.commitments.len(), 1);
        assert_eq!(r.commitments[0].reveal_block, 10);
        assert_eq!(r.state.nonce(&v.account()), 3);
        // An extrinsic beyond the open block is refused.
        blocks.insert(9, vec![]);
        assert!(replay(&params, &blocks, 7).is_err());
    }

    #[test]
    fn replay_prunes_and_restarts_the_uid_emission() {
        let owner = Keypair::from_seed([0; 32]);
        let v = Keypair::from_seed([1; 32]);
        let first = Keypair::from_seed([2; 32]);
        let second = Keypair::from_seed([3; 32]);
        let params = ChainParams {
            netuid: 1,
            genesis_hash: Digest::of(b"g"),
            genesis_time_ms: 0,
            block_time_ms: 1,
            reveal_delay: 2,
            emission_per_block_rao: 10,
            max_uids: 2,
            immunity_period: Some(3),
            owner: owner.account(),
        };
        let g = params.genesis_hash;
        let register = |k: &Keypair, nonce| {
            SignedExtrinsic::sign(
                k,
                g,
                nonce,
                Call::Register {
                    coldkey: k.account(),
                },
            )
        };
        let mut blocks = BTreeMap::new();
        blocks.insert(
            1,
            vec![
                register(&v, 0),
                SignedExtrinsic::sign(
                    &owner,
                    g,
                    0,
                    Call::GrantValidatorPermit {
                        hotkey: v.account(),
                    },
                ),
                register(&first, 0),
            ],
        );
        blocks.insert(
            2,
            vec![SignedExtrinsic::sign(
                &v,
                g,
                1,
                Call::SetWeights {
                    weights: vec![(1, 1)],
                },
            )],
        );
        // Block 5: the subnet is full; `first` (uid 1, registered at 1, immunity 3) has earned
        // 30 rao (blocks 2, 3, 4) and is pruned for `second`.
        blocks.insert(5, vec![register(&second, 0)]);
        let r = replay(&params, &blocks, 6).unwrap();
        assert_eq!(r.state.neurons.len(), 2);
        assert_eq!(r.state.neurons[1].hotkey, second.account());
        assert_eq!(r.state.neurons[1].registered_block, 5);
        assert!(r.state.neuron_of(&first.account()).is_none());
        // uid 1 restarted from zero at block 5: blocks 5 and 6 pay it 10 each.
        assert_eq!(r.emission.get(&1), Some(&20));
        // The same registration one block earlier hits `first`'s immunity and breaks the rules.
        let mut early = blocks.clone();
        let moved = early.remove(&5).unwrap();
        early.insert(3, moved);
        let err = replay(&params, &early, 6).unwrap_err();
        assert!(
            matches!(err, ReplayError::BreaksRules { block: 3, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("subnet is full"), "{err}");
        // Without an immunity period the chain never prunes.
        let no_pruning = ChainParams {
            immunity_period: None,
            ..params
        };
        assert!(replay(&no_pruning, &blocks, 6).is_err());
    }
}
