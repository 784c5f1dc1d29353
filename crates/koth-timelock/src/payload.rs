//! The plaintexts that get timelocked: a commitment string and a weights payload, SCALE-encoded
//! as bittensor-drand encodes them and as subtensor decodes them.

use codec::{Compact, Decode, DecodeAll, Encode};

use crate::TimelockError;

/// The plaintext of a timelocked commitment: `data` SCALE-encoded as a string (compact length
/// prefix, then the UTF-8 bytes). This is what the SDK's
/// `get_encrypted_commitment(data, blocks_until_reveal, block_time)` encrypts, so what
/// subtensor appends to `Commitments.RevealedCommitments` once it decrypts it.
pub fn commitment_plaintext(data: &str) -> Vec<u8> {
    data.encode()
}

/// Reads a revealed commitment back: a compact length that matches the bytes that follow,
/// which must be UTF-8. Stricter than the SDK's `decode_revealed_commitment` (which skips the
/// prefix without reading it and drops invalid UTF-8): a koth payload is always well formed.
pub fn decode_commitment_plaintext(bytes: &[u8]) -> Result<String, TimelockError> {
    let mut input = bytes;
    let Compact(len) = Compact::<u64>::decode(&mut input)
        .map_err(|e| TimelockError::MalformedPayload(format!("commitment length: {e}")))?;
    if len != input.len() as u64 {
        return Err(TimelockError::MalformedPayload(format!(
            "commitment length prefix says {len} bytes, {} follow",
            input.len()
        )));
    }
    String::from_utf8(input.to_vec())
        .map_err(|e| TimelockError::MalformedPayload(format!("commitment is not UTF-8: {e}")))
}

/// What a timelocked weights commit decrypts to: subtensor's `WeightsTlockPayload`
/// (pallets/subtensor/src/coinbase/reveal_commits.rs), field for field and in that order, and
/// bittensor-drand's struct of the same name. `hotkey` is the committer's 32-byte public key
/// as a `Vec<u8>` (the chain decodes it as an `AccountId` and checks it is the committer);
/// `uids` and `values` are the normalized u16 weights.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct WeightsTlockPayload {
    pub hotkey: Vec<u8>,
    pub uids: Vec<u16>,
    pub values: Vec<u16>,
    pub version_key: u64,
}

impl WeightsTlockPayload {
    /// A payload for a committer whose public key is `hotkey`.
    pub fn new(hotkey: [u8; 32], uids: Vec<u16>, values: Vec<u16>, version_key: u64) -> Self {
        Self {
            hotkey: hotkey.to_vec(),
            uids,
            values,
            version_key,
        }
    }

    /// SCALE bytes: the plaintext that gets timelocked.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode()
    }

    /// Parses a decrypted payload; every byte must be used.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TimelockError> {
        Self::decode_all(&mut &bytes[..])
            .map_err(|e| TimelockError::MalformedPayload(format!("weights payload: {e}")))
    }
}
