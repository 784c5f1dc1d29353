//! The chain's rules as a pure function: (ledger state, signed extrinsic, block) → effect or
//! refusal. No I/O: the SQLite ledger loads the state, calls [`check`], and stores the effect;
//! tests drive the same function directly.

use std::collections::BTreeMap;

use koth_core::Digest;
use serde::Serialize;

use crate::extrinsic::{Call, SignedExtrinsic, MAX_PAYLOAD_BYTES};
use crate::keys::AccountId;
use crate::types::Neuron;
use crate::weights::max_upscale;

/// Why the chain refused an extrinsic. Nothing is written for a refused extrinsic and the
/// signer's nonce does not advance.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq, Serialize)]
pub enum ExtrinsicError {
    #[error("extrinsic was signed for another chain (genesis {got}, this chain is {expected})")]
    WrongChain { expected: Digest, got: Digest },
    #[error("bad signature: the extrinsic was not signed by {signer} (forged or altered)")]
    BadSignature { signer: AccountId },
    #[error("nonce {got} of {signer} is not the next one ({expected}): a replay, or a stale or skipped nonce")]
    BadNonce {
        signer: AccountId,
        expected: u64,
        got: u64,
    },
    #[error("hotkey {0} is not registered on this subnet (run `koth chain register` first)")]
    NotRegistered(AccountId),
    #[error("hotkey {hotkey} is already registered as uid {uid}")]
    AlreadyRegistered { hotkey: AccountId, uid: u16 },
    #[error("the subnet is full ({max} uids) and no uid can be pruned: every neuron is within its immunity period or holds a validator permit, or this chain does not prune")]
    SubnetFull { max: u16 },
    #[error("only the subnet owner {owner} may grant validator permits, not {signer}")]
    NotOwner { owner: AccountId, signer: AccountId },
    #[error("uid {uid} ({hotkey}) already holds a validator permit")]
    AlreadyValidator { uid: u16, hotkey: AccountId },
    #[error("uid {uid} ({hotkey}) has no validator permit, so it may not set weights")]
    NotValidator { uid: u16, hotkey: AccountId },
    #[error("weights name uid {0}, which is not registered")]
    UnknownUid(u16),
    #[error("weights name uid {0} more than once")]
    DuplicateUid(u16),
    #[error("weights are empty or all zero")]
    EmptyWeights,
    #[error("commitment payload is empty")]
    EmptyPayload,
    #[error("commitment payload is {len} bytes; at most {MAX_PAYLOAD_BYTES} are allowed")]
    PayloadTooLong { len: usize },
    #[error("commitment payload contains control characters")]
    PayloadControlChars,
}

/// What an accepted extrinsic changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A new hotkey took a fresh uid.
    Registered(Neuron),
    /// The subnet was full: `pruned` (the lowest pruning score outside its immunity period)
    /// lost its uid, and `neuron` now holds it (`neuron.uid == pruned.uid`). The uid's accrued
    /// emission is reset to zero, as for a fresh registration.
    Replaced {
        pruned: Neuron,
        neuron: Neuron,
    },
    PermitGranted {
        uid: u16,
    },
    Committed {
        uid: u16,
        hotkey: AccountId,
        payload: String,
        commit_block: u64,
        reveal_block: u64,
    },
    WeightsSet {
        validator_uid: u16,
        weights: Vec<(u16, u16)>,
    },
}

/// Everything the rules read.
#[derive(Debug, Clone)]
pub struct LedgerState {
    pub genesis: Digest,
    pub owner: AccountId,
    pub max_uids: u16,
    pub reveal_delay: u64,
    /// Blocks after its registration during which a neuron cannot be pruned; `None`: the chain
    /// never prunes, and a full subnet refuses registrations.
    pub immunity_period: Option<u64>,
    /// Registered neurons; `neurons[i].uid == i`.
    pub neurons: Vec<Neuron>,
    /// Rao accrued by each uid's current holder through the last sealed block (absent = 0): the
    /// pruning score.
    pub emission: BTreeMap<u16, u64>,
    /// Next nonce per account that has ever had an extrinsic accepted (absent = 0).
    pub nonces: BTreeMap<AccountId, u64>,
}

impl LedgerState {
    pub fn nonce(&self, account: &AccountId) -> u64 {
        self.nonces.get(account).copied().unwrap_or(0)
    }

    pub fn neuron_of(&self, hotkey: &AccountId) -> Option<&Neuron> {
        self.neurons.iter().find(|n| &n.hotkey == hotkey)
    }

    /// Check and, if accepted, absorb an extrinsic included in `block`.
    pub fn apply(&mut self, ext: &SignedExtrinsic, block: u64) -> Result<Effect, ExtrinsicError> {
        let effect = check(self, ext, block)?;
        self.absorb(&ext.signer, &effect);
        Ok(effect)
    }

    /// Update the state with an accepted effect: the signer's nonce advances, and registrations
    /// and permits change the neuron table (commitments and weights live outside the state the
    /// rules read).
    pub fn absorb(&mut self, signer: &AccountId, effect: &Effect) {
        *self.nonces.entry(*signer).or_insert(0) += 1;
        match effect {
            Effect::Registered(neuron) => self.neurons.push(neuron.clone()),
            Effect::Replaced { neuron, .. } => {
                if let Some(slot) = self.neurons.get_mut(usize::from(neuron.uid)) {
                    *slot = neuron.clone();
                }
                self.emission.remove(&neuron.uid);
            }
            Effect::PermitGranted { uid } => {
                if let Some(n) = self.neurons.get_mut(usize::from(*uid)) {
                    n.validator_permit = true;
                }
            }
            Effect::Committed { .. } | Effect::WeightsSet { .. } => {}
        }
    }
}

/// The neuron a registration into a full subnet replaces at `block`, as Bittensor chooses it:
/// the lowest pruning score (here the emission its hotkey accrued on this uid), ties to the
/// older registration, then the lower uid. Neurons within their immunity period
/// (`block - registered_block < immunity_period`) are skipped, and so are validator-permit
/// holders (Bittensor scores validators by their dividends, which the embedded chain does not
/// model; without this the validators, who earn no emission here, would always go first).
/// `None` when the chain does not prune or every neuron is protected.
pub fn prune_candidate(state: &LedgerState, block: u64) -> Option<&Neuron> {
    let immunity = state.immunity_period?;
    state
        .neurons
        .iter()
        .filter(|n| !n.validator_permit && block.saturating_sub(n.registered_block) >= immunity)
        .min_by_key(|n| {
            (
                state.emission.get(&n.uid).copied().unwrap_or(0),
                n.registered_block,
                n.uid,
            )
        })
}

/// The rules. Order: chain, signature, nonce, then the call's own conditions.
pub fn check(
    state: &LedgerState,
    ext: &SignedExtrinsic,
    block: u64,
) -> Result<Effect, ExtrinsicError> {
    if ext.genesis != state.genesis {
        return Err(ExtrinsicError::WrongChain {
            expected: state.genesis,
            got: ext.genesis,
        });
    }
    if !ext.signature_is_valid() {
        return Err(ExtrinsicError::BadSignature { signer: ext.signer });
    }
    let expected = state.nonce(&ext.signer);
    if ext.nonce != expected {
        return Err(ExtrinsicError::BadNonce {
            signer: ext.signer,
            expected,
            got: ext.nonce,
        });
    }
    match &ext.call {
        Call::Register { coldkey } => {
            if let Some(n) = state.neuron_of(&ext.signer) {
                return Err(ExtrinsicError::AlreadyRegistered {
                    hotkey: ext.signer,
                    uid: n.uid,
                });
            }
            let fresh = |uid: u16| Neuron {
                uid,
                hotkey: ext.signer,
                coldkey: *coldkey,
                validator_permit: false,
                registered_block: block,
            };
            if state.neurons.len() < usize::from(state.max_uids) {
                return Ok(Effect::Registered(fresh(state.neurons.len() as u16)));
            }
            match prune_candidate(state, block) {
                Some(pruned) => Ok(Effect::Replaced {
                    neuron: fresh(pruned.uid),
                    pruned: pruned.clone(),
                }),
                None => Err(ExtrinsicError::SubnetFull {
                    max: state.max_uids,
                }),
            }
        }
        Call::GrantValidatorPermit { hotkey } => {
            if ext.signer != state.owner {
                return Err(ExtrinsicError::NotOwner {
                    owner: state.owner,
                    signer: ext.signer,
                });
            }
            let neuron = state
                .neuron_of(hotkey)
                .ok_or(ExtrinsicError::NotRegistered(*hotkey))?;
            if neuron.validator_permit {
                return Err(ExtrinsicError::AlreadyValidator {
                    uid: neuron.uid,
                    hotkey: *hotkey,
                });
            }
            Ok(Effect::PermitGranted { uid: neuron.uid })
        }
        Call::Commit { payload } => {
            let neuron = state
                .neuron_of(&ext.signer)
                .ok_or(ExtrinsicError::NotRegistered(ext.signer))?;
            if payload.is_empty() {
                return Err(ExtrinsicError::EmptyPayload);
            }
            if payload.len() > MAX_PAYLOAD_BYTES {
                return Err(ExtrinsicError::PayloadTooLong { len: payload.len() });
            }
            if payload.chars().any(char::is_control) {
                return Err(ExtrinsicError::PayloadControlChars);
            }
            Ok(Effect::Committed {
                uid: neuron.uid,
                hotkey: ext.signer,
                payload: payload.clone(),
                commit_block: block,
                reveal_block: block.saturating_add(state.reveal_delay),
            })
        }
        Call::SetWeights { weights } => {
            let neuron = state
                .neuron_of(&ext.signer)
                .ok_or(ExtrinsicError::NotRegistered(ext.signer))?;
            if !neuron.validator_permit {
                return Err(ExtrinsicError::NotValidator {
                    uid: neuron.uid,
                    hotkey: ext.signer,
                });
            }
            let mut seen = std::collections::BTreeSet::new();
            for &(uid, _) in weights {
                if usize::from(uid) >= state.neurons.len() {
                    return Err(ExtrinsicError::UnknownUid(uid));
                }
                if !seen.insert(uid) {
                    return Err(ExtrinsicError::DuplicateUid(uid));
                }
            }
            if weights.iter().all(|&(_, w)| w == 0) {
                return Err(ExtrinsicError::EmptyWeights);
            }
            let mut stored = max_upscale(weights);
            stored.sort_by_key(|&(uid, _)| uid);
            Ok(Effect::WeightsSet {
                validator_uid: neuron.uid,
                weights: stored,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Keypair;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    fn state(owner: &Keypair) -> LedgerState {
        LedgerState {
            genesis: Digest::of(b"test genesis"),
            owner: owner.account(),
            max_uids: 4,
            reveal_delay: 3,
            immunity_period: None,
            neurons: Vec::new(),
            nonces: BTreeMap::new(),
            emission: BTreeMap::new(),
        }
    }

    fn signed(s: &LedgerState, key: &Keypair, call: Call) -> SignedExtrinsic {
        SignedExtrinsic::sign(key, s.genesis, s.nonce(&key.account()), call)
    }

    fn register(s: &mut LedgerState, key: &Keypair) -> Result<Effect, ExtrinsicError> {
        let ext = signed(
            s,
            key,
            Call::Register {
                coldkey: key.account(),
            },
        );
        s.apply(&ext, 1)
    }

    #[test]
    fn register_commit_grant_and_set_weights() {
        let owner = Keypair::from_seed([0; 32]);
        let miner = Keypair::from_seed([1; 32]);
        let validator = Keypair::from_seed([2; 32]);
        let mut s = state(&owner);
        assert!(matches!(
            register(&mut s, &miner),
            Ok(Effect::Registered(Neuron { uid: 0, .. }))
        ));
        assert!(matches!(
            register(&mut s, &validator),
            Ok(Effect::Registered(Neuron { uid: 1, .. }))
        ));
        assert_eq!(
            register(&mut s, &miner),
            Err(ExtrinsicError::AlreadyRegistered {
                hotkey: miner.account(),
                uid: 0
            })
        );
        let commit = signed(
            &s,
            &miner,
            Call::Commit {
                payload: "v4|x|y|z".into(),
            },
        );
        assert_eq!(
            s.apply(&commit, 10).unwrap(),
            Effect::Committed {
                uid: 0,
                hotkey: miner.account(),
                payload: "v4|x|y|z".into(),
                commit_block: 10,
                reveal_block: 13
            }
        );
        let weights = Call::SetWeights {
            weights: vec![(0, 1), (1, 2)],
        };
        let early = signed(&s, &validator, weights.clone());
        assert_eq!(
            s.apply(&early, 11),
            Err(ExtrinsicError::NotValidator {
                uid: 1,
                hotkey: validator.account()
            })
        );
        let by_miner = signed(
            &s,
            &miner,
            Call::GrantValidatorPermit {
                hotkey: validator.account(),
            },
        );
        assert!(matches!(
            s.apply(&by_miner, 11),
            Err(ExtrinsicError::NotOwner { .. })
        ));
        let grant = signed(
            &s,
            &owner,
            Call::GrantValidatorPermit {
                hotkey: validator.account(),
            },
        );
        assert_eq!(s.apply(&grant, 11), Ok(Effect::PermitGranted { uid: 1 }));
        let again = signed(
            &s,
            &owner,
            Call::GrantValidatorPermit {
                hotkey: validator.account(),
            },
        );
        assert!(matches!(
            s.apply(&again, 11),
            Err(ExtrinsicError::AlreadyValidator { .. })
        ));
        let set = signed(&s, &validator, weights);
        assert_eq!(
            s.apply(&set, 12),
            Ok(Effect::WeightsSet {
                validator_uid: 1,
                weights: vec![(0, 32768), (1, 65535)]
            })
        );
        for (bad, err) in [
            (vec![(9, 1)], ExtrinsicError::UnknownUid(9)),
            (vec![(0, 1), (0, 2)], ExtrinsicError::DuplicateUid(0)),
            (vec![(0, 0)], ExtrinsicError::EmptyWeights),
            (vec![], ExtrinsicError::EmptyWeights),
        ] {
            let ext = signed(&s, &validator, Call::SetWeights { weights: bad });
            assert_eq!(s.apply(&ext, 12), Err(err));
        }
    }

    #[test]
    fn subnet_fills_up_and_payload_limits_hold() {
        let owner = Keypair::from_seed([0; 32]);
        let mut s = state(&owner);
        for i in 1..=4u8 {
            register(&mut s, &Keypair::from_seed([i; 32])).unwrap();
        }
        assert_eq!(
            register(&mut s, &Keypair::from_seed([5; 32])),
            Err(ExtrinsicError::SubnetFull { max: 4 })
        );
        let miner = Keypair::from_seed([1; 32]);
        for (payload, err) in [
            (String::new(), ExtrinsicError::EmptyPayload),
            (
                "x".repeat(MAX_PAYLOAD_BYTES + 1),
                ExtrinsicError::PayloadTooLong {
                    len: MAX_PAYLOAD_BYTES + 1,
                },
            ),
            ("a\nb".to_string(), ExtrinsicError::PayloadControlChars),
        ] {
            let ext = signed(&s, &miner, Call::Commit { payload });
            assert_eq!(s.apply(&ext, 2), Err(err));
        }
        let ok = signed(
            &s,
            &miner,
            Call::Commit {
                payload: "x".repeat(MAX_PAYLOAD_BYTES),
            },
        );
        assert!(s.apply(&ok, 2).is_ok());
    }

    /// Randomized: forged signatures, other chains, unregistered signers, weights set by a
    /// registered hotkey without a validator permit, and replays are always refused and never
    /// change the state.
    #[test]
    fn forged_replayed_and_unregistered_extrinsics_are_always_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(0x6b6f7468);
        let owner = Keypair::from_seed([0; 32]);
        for round in 0..64 {
            let mut s = state(&owner);
            s.max_uids = 64;
            let registered: Vec<Keypair> =
                (0..3).map(|_| Keypair::from_seed(rng.random())).collect();
            for k in &registered {
                register(&mut s, k).unwrap();
            }
            // One of them holds a validator permit; the others are plain neurons.
            let validator_idx = rng.random_range(0..registered.len());
            let validator = &registered[validator_idx];
            let grant = signed(
                &s,
                &owner,
                Call::GrantValidatorPermit {
                    hotkey: validator.account(),
                },
            );
            s.apply(&grant, 2).unwrap();
            let non_validator = &registered
                [(validator_idx + rng.random_range(1..registered.len())) % registered.len()];
            // Well-formed weights: distinct registered uids, not all zero.
            let mut weights: Vec<(u16, u16)> = Vec::new();
            for uid in 0..registered.len() as u16 {
                if rng.random_bool(0.5) {
                    weights.push((uid, rng.random_range(1..=u16::MAX)));
                }
            }
            if weights.is_empty() {
                weights.push((rng.random_range(0..registered.len() as u16), 1));
            }
            let stranger = Keypair::from_seed(rng.random());
            let key = &registered[rng.random_range(0..registered.len())];
            let call = match rng.random_range(0..3) {
                0 => Call::Commit {
                    payload: format!("payload {round}"),
                },
                1 => Call::Register {
                    coldkey: stranger.account(),
                },
                _ => Call::SetWeights {
                    weights: vec![(0, 1)],
                },
            };
            let before = (s.neurons.clone(), s.nonces.clone());

            // A flipped byte anywhere in the signature.
            let mut forged = signed(&s, key, call.clone());
            let byte = rng.random_range(0..64);
            forged.signature[byte] ^= 1 << rng.random_range(0..8);
            assert_eq!(
                s.apply(&forged, 5),
                Err(ExtrinsicError::BadSignature {
                    signer: key.account()
                })
            );

            // A valid signature by another key presented as this signer's.
            let mut impersonated = signed(&s, &stranger, call.clone());
            impersonated.signer = key.account();
            assert!(matches!(
                s.apply(&impersonated, 5),
                Err(ExtrinsicError::BadSignature { .. })
            ));

            // Signed for another chain.
            let other = SignedExtrinsic::sign(
                key,
                Digest::of(b"other"),
                s.nonce(&key.account()),
                call.clone(),
            );
            assert!(matches!(
                s.apply(&other, 5),
                Err(ExtrinsicError::WrongChain { .. })
            ));

            // Unregistered signer committing.
            let unregistered = signed(
                &s,
                &stranger,
                Call::Commit {
                    payload: "p".into(),
                },
            );
            assert_eq!(
                s.apply(&unregistered, 5),
                Err(ExtrinsicError::NotRegistered(stranger.account()))
            );

            // A skipped nonce.
            let skipped = SignedExtrinsic::sign(key, s.genesis, s.nonce(&key.account()) + 1, call);
            assert!(matches!(
                s.apply(&skipped, 5),
                Err(ExtrinsicError::BadNonce { .. })
            ));

            // Weights, correctly signed with the right nonce, by a registered hotkey that has no
            // validator permit, and by an unregistered one.
            let set_weights = Call::SetWeights {
                weights: weights.clone(),
            };
            let by_neuron = signed(&s, non_validator, set_weights.clone());
            assert_eq!(
                s.apply(&by_neuron, 5),
                Err(ExtrinsicError::NotValidator {
                    uid: s.neuron_of(&non_validator.account()).unwrap().uid,
                    hotkey: non_validator.account()
                })
            );
            let by_stranger = signed(&s, &stranger, set_weights.clone());
            assert_eq!(
                s.apply(&by_stranger, 5),
                Err(ExtrinsicError::NotRegistered(stranger.account()))
            );
            assert_eq!(
                (s.neurons.clone(), s.nonces.clone()),
                before,
                "refusals change nothing"
            );
            // The same weights from the permit holder are accepted: the refusal was the permit.
            let by_validator = signed(&s, validator, set_weights);
            assert!(matches!(
                s.apply(&by_validator, 5),
                Ok(Effect::WeightsSet { validator_uid, .. }) if validator_uid == validator_idx as u16
            ));

            // An accepted extrinsic cannot be replayed.
            let commit = signed(
                &s,
                key,
                Call::Commit {
                    payload: "once".into(),
                },
            );
            s.apply(&commit, 5).unwrap();
            assert!(matches!(
                s.apply(&commit, 6),
                Err(ExtrinsicError::BadNonce { .. })
            ));
        }
    }

    fn register_at(
        s: &mut LedgerState,
        key: &Keypair,
        block: u64,
    ) -> Result<Effect, ExtrinsicError> {
        let ext = signed(
            s,
            key,
            Call::Register {
                coldkey: key.account(),
            },
        );
        s.apply(&ext, block)
    }

    /// A full subnet of 4 with immunity 10: uid 0 registered at block 1, uid 1 at 2, uid 2 at 3
    /// (a validator), uid 3 at 20.
    fn full_pruning_state(owner: &Keypair) -> LedgerState {
        let mut s = state(owner);
        s.immunity_period = Some(10);
        for (i, block) in [(1u8, 1u64), (2, 2), (3, 3), (4, 20)] {
            register_at(&mut s, &Keypair::from_seed([i; 32]), block).unwrap();
        }
        let grant = signed(
            &s,
            owner,
            Call::GrantValidatorPermit {
                hotkey: Keypair::from_seed([3; 32]).account(),
            },
        );
        s.apply(&grant, 21).unwrap();
        s
    }

    #[test]
    fn pruning_takes_the_lowest_emission_outside_immunity() {
        let owner = Keypair::from_seed([0; 32]);
        let mut s = full_pruning_state(&owner);
        // uid 0 earned more than uid 1: uid 1 is pruned (uid 2 is a validator, uid 3 immune).
        s.emission.insert(0, 500);
        s.emission.insert(1, 100);
        s.emission.insert(3, 0);
        let newcomer = Keypair::from_seed([9; 32]);
        let effect = register_at(&mut s, &newcomer, 25).unwrap();
        let Effect::Replaced { pruned, neuron } = effect else {
            panic!("expected a replacement, got {effect:?}");
        };
        assert_eq!(pruned.uid, 1);
        assert_eq!(pruned.hotkey, Keypair::from_seed([2; 32]).account());
        assert_eq!(neuron.uid, 1);
        assert_eq!(neuron.hotkey, newcomer.account());
        assert_eq!(neuron.registered_block, 25);
        assert!(!neuron.validator_permit);
        // The state now maps uid 1 to the newcomer, with its emission reset; the pruned hotkey
        // is no longer registered and may not commit.
        assert_eq!(s.neurons[1].hotkey, newcomer.account());
        assert_eq!(s.emission.get(&1), None);
        assert!(s.neuron_of(&pruned.hotkey).is_none());
        let gone = Keypair::from_seed([2; 32]);
        let commit = signed(
            &s,
            &gone,
            Call::Commit {
                payload: "v4|x|y|z".into(),
            },
        );
        assert_eq!(
            s.apply(&commit, 26),
            Err(ExtrinsicError::NotRegistered(gone.account()))
        );
        // The pruned hotkey may register again later (it gets the next prunable uid).
        s.emission.insert(1, 50);
        let again = register_at(&mut s, &gone, 40).unwrap();
        assert!(matches!(again, Effect::Replaced { ref pruned, .. } if pruned.uid == 3));
    }

    #[test]
    fn pruning_ties_go_to_the_older_registration_then_the_lower_uid() {
        let owner = Keypair::from_seed([0; 32]);
        let mut s = full_pruning_state(&owner);
        // All at zero emission: the oldest non-validator outside immunity is uid 0.
        let e = register_at(&mut s, &Keypair::from_seed([9; 32]), 31).unwrap();
        assert!(matches!(e, Effect::Replaced { ref pruned, .. } if pruned.uid == 0));
        // Same registration block: the lower uid goes first.
        let mut s = state(&owner);
        s.max_uids = 2;
        s.immunity_period = Some(0);
        register_at(&mut s, &Keypair::from_seed([1; 32]), 5).unwrap();
        register_at(&mut s, &Keypair::from_seed([2; 32]), 5).unwrap();
        let e = register_at(&mut s, &Keypair::from_seed([3; 32]), 5).unwrap();
        assert!(matches!(e, Effect::Replaced { ref pruned, .. } if pruned.uid == 0));
    }

    #[test]
    fn a_full_subnet_of_immune_neurons_or_without_pruning_refuses() {
        let owner = Keypair::from_seed([0; 32]);
        let mut s = full_pruning_state(&owner);
        // At block 10 uids 0 and 1 are still immune (registered at 1 and 2, immunity 10),
        // uid 2 is a validator, uid 3 is immune.
        let before = (s.neurons.clone(), s.nonces.clone());
        assert_eq!(
            register_at(&mut s, &Keypair::from_seed([9; 32]), 10),
            Err(ExtrinsicError::SubnetFull { max: 4 })
        );
        assert_eq!((s.neurons.clone(), s.nonces.clone()), before);
        // Block 11 is exactly uid 0's first block outside immunity (1 + 10); uid 1 is still
        // immune there.
        let e = register_at(&mut s, &Keypair::from_seed([9; 32]), 11).unwrap();
        assert!(matches!(e, Effect::Replaced { ref pruned, .. } if pruned.uid == 0));
        // No immunity period configured: the chain never prunes.
        let mut s = full_pruning_state(&owner);
        s.immunity_period = None;
        assert_eq!(
            register_at(&mut s, &Keypair::from_seed([9; 32]), 1_000),
            Err(ExtrinsicError::SubnetFull { max: 4 })
        );
    }
}
