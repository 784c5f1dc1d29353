//! The calls koth sends to subtensor, encoded against the chain's metadata with subxt's dynamic
//! API: pallet and call indices, argument order and types all come from the metadata, so the same
//! code follows a runtime upgrade that moves them (and fails, naming what is missing, when a
//! runtime lacks a call).
//!
//! The encodings equal those of Bittensor's Python SDK byte for byte (tests/reference_calls.rs).

use subxt_core::ext::scale_value::{Composite, Value};
use subxt_core::tx::payload::Payload;

use crate::metadata::Metadata;

/// The most bytes a `Data::Raw` commitment field holds (subtensor's `Raw0`..`Raw128`).
pub const MAX_RAW_COMMITMENT: usize = 128;
/// The most bytes a `Data::BigRaw` field holds (subtensor's `MAX_BIGRAW_COMMITMENT_SIZE_BYTES`).
pub const MAX_BIGRAW_COMMITMENT: usize = 512;
/// The most bytes of a `Data::TimelockEncrypted` ciphertext (subtensor's
/// `MAX_TIMELOCK_COMMITMENT_SIZE_BYTES`).
pub const MAX_TIMELOCK_COMMITMENT: usize = 1024;

/// One field of a commitment (`pallet_commitments::types::Data`): the variants koth writes.
///
/// Subtensor encodes `Data` by hand: `Raw` of `n` bytes is tag `n + 1` followed by the bytes (no
/// length prefix), `TimelockEncrypted` is tag 134. The metadata describes exactly that (variants
/// `Raw0`..`Raw128`, each an `[u8; n]`, and `TimelockEncrypted`), and koth encodes by variant
/// name, so the tags come from the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitmentData {
    /// Plain bytes, revealed at once; at most [`MAX_RAW_COMMITMENT`].
    Raw(Vec<u8>),
    /// Plain bytes, revealed at once; at most [`MAX_BIGRAW_COMMITMENT`] (tag 136, a
    /// length-prefixed vector).
    BigRaw(Vec<u8>),
    /// A drand timelock ciphertext the chain decrypts once `reveal_round`'s pulse arrives.
    TimelockEncrypted {
        encrypted: Vec<u8>,
        reveal_round: u64,
    },
}

/// A call koth makes on subtensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubtensorCall {
    /// `Commitments.set_commitment(netuid, info)` with `info.fields = [data]`.
    SetCommitment { netuid: u16, data: CommitmentData },
    /// `SubtensorModule.set_weights(netuid, dests, weights, version_key)`.
    SetWeights {
        netuid: u16,
        dests: Vec<u16>,
        weights: Vec<u16>,
        version_key: u64,
    },
    /// `SubtensorModule.commit_timelocked_mechanism_weights(netuid, mecid, commit, reveal_round,
    /// commit_reveal_version)`.
    CommitTimelockedMechanismWeights {
        netuid: u16,
        mecid: u8,
        commit: Vec<u8>,
        reveal_round: u64,
        commit_reveal_version: u16,
    },
}

impl SubtensorCall {
    /// The pallet and call names, as in the metadata.
    pub fn names(&self) -> (&'static str, &'static str) {
        match self {
            SubtensorCall::SetCommitment { .. } => ("Commitments", "set_commitment"),
            SubtensorCall::SetWeights { .. } => ("SubtensorModule", "set_weights"),
            SubtensorCall::CommitTimelockedMechanismWeights { .. } => {
                ("SubtensorModule", "commit_timelocked_mechanism_weights")
            }
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CallError {
    #[error("runtime metadata has no pallet {pallet} (needed for {pallet}.{call})")]
    MissingPallet {
        pallet: &'static str,
        call: &'static str,
    },
    #[error("runtime metadata has no call {pallet}.{call}")]
    MissingCall {
        pallet: &'static str,
        call: &'static str,
    },
    #[error(
        "Raw commitment data is {len} bytes; at most {MAX_RAW_COMMITMENT} fit (Data::Raw0..Raw128)"
    )]
    RawTooLong { len: usize },
    #[error("BigRaw commitment data is {len} bytes; at most {MAX_BIGRAW_COMMITMENT} fit")]
    BigRawTooLong { len: usize },
    #[error(
        "the timelocked commitment is {len} bytes; subtensor takes at most {MAX_TIMELOCK_COMMITMENT} \
         (the ciphertext adds 244 bytes to the payload)"
    )]
    TimelockTooLong { len: usize },
    #[error("set_weights has {dests} dests but {weights} weights; expected as many of each")]
    WeightsLengthMismatch { dests: usize, weights: usize },
    #[error("{pallet}.{call}: the arguments do not encode as the metadata's types: {reason}")]
    Encode {
        pallet: &'static str,
        call: &'static str,
        reason: String,
    },
}

fn bytes(b: &[u8]) -> Value {
    Value::from_bytes(b)
}

fn u16s(xs: &[u16]) -> Value {
    Value::unnamed_composite(xs.iter().map(|&x| Value::u128(u128::from(x))))
}

fn data_value(data: &CommitmentData) -> Result<Value, CallError> {
    Ok(match data {
        CommitmentData::Raw(raw) => {
            if raw.len() > MAX_RAW_COMMITMENT {
                return Err(CallError::RawTooLong { len: raw.len() });
            }
            Value::unnamed_variant(format!("Raw{}", raw.len()), [bytes(raw)])
        }
        CommitmentData::BigRaw(raw) => {
            if raw.len() > MAX_BIGRAW_COMMITMENT {
                return Err(CallError::BigRawTooLong { len: raw.len() });
            }
            Value::unnamed_variant("BigRaw", [bytes(raw)])
        }
        CommitmentData::TimelockEncrypted {
            encrypted,
            reveal_round,
        } if encrypted.len() > MAX_TIMELOCK_COMMITMENT => {
            let _ = reveal_round;
            return Err(CallError::TimelockTooLong {
                len: encrypted.len(),
            });
        }
        CommitmentData::TimelockEncrypted {
            encrypted,
            reveal_round,
        } => Value::named_variant(
            "TimelockEncrypted",
            [
                ("encrypted", bytes(encrypted)),
                ("reveal_round", Value::u128(u128::from(*reveal_round))),
            ],
        ),
    })
}

/// The call's arguments as dynamic values, in the order the runtime declares them.
fn arguments(call: &SubtensorCall) -> Result<Composite<()>, CallError> {
    Ok(match call {
        SubtensorCall::SetCommitment { netuid, data } => Composite::named([
            ("netuid", Value::u128(u128::from(*netuid))),
            (
                "info",
                Value::named_composite([("fields", Value::unnamed_composite([data_value(data)?]))]),
            ),
        ]),
        SubtensorCall::SetWeights {
            netuid,
            dests,
            weights,
            version_key,
        } => {
            if dests.len() != weights.len() {
                return Err(CallError::WeightsLengthMismatch {
                    dests: dests.len(),
                    weights: weights.len(),
                });
            }
            Composite::named([
                ("netuid", Value::u128(u128::from(*netuid))),
                ("dests", u16s(dests)),
                ("weights", u16s(weights)),
                ("version_key", Value::u128(u128::from(*version_key))),
            ])
        }
        SubtensorCall::CommitTimelockedMechanismWeights {
            netuid,
            mecid,
            commit,
            reveal_round,
            commit_reveal_version,
        } => Composite::named([
            ("netuid", Value::u128(u128::from(*netuid))),
            ("mecid", Value::u128(u128::from(*mecid))),
            ("commit", bytes(commit)),
            ("reveal_round", Value::u128(u128::from(*reveal_round))),
            (
                "commit_reveal_version",
                Value::u128(u128::from(*commit_reveal_version)),
            ),
        ]),
    })
}

/// Encode `call` (pallet index, call index, arguments) against `metadata`.
pub fn encode_call(metadata: &Metadata, call: &SubtensorCall) -> Result<Vec<u8>, CallError> {
    let (pallet, name) = call.names();
    let Some(p) = metadata.pallet_by_name(pallet) else {
        return Err(CallError::MissingPallet { pallet, call: name });
    };
    if p.call_variant_by_name(name).is_none() {
        return Err(CallError::MissingCall { pallet, call: name });
    }
    let payload = subxt_core::tx::payload::dynamic(pallet, name, arguments(call)?);
    payload
        .encode_call_data(metadata)
        .map_err(|e| CallError::Encode {
            pallet,
            call: name,
            reason: e.to_string(),
        })
}
