//! Signed extrinsics: every write to the chain, in one canonical byte encoding.
//!
//! The signed message is
//! `"koth-extrinsic-v1\0" ‖ genesis hash (32) ‖ signer public key (32) ‖ nonce (u64 BE) ‖ call`,
//! where `call` is a one-byte tag and the call's fields:
//!
//! | tag | call | fields |
//! | --- | --- | --- |
//! | 1 | `Register` | coldkey public key (32) |
//! | 2 | `GrantValidatorPermit` | hotkey public key (32) |
//! | 3 | `Commit` | payload length (u32 BE) ‖ UTF-8 payload |
//! | 4 | `SetWeights` | count (u32 BE) ‖ count × (uid u16 BE ‖ weight u16 BE) |
//!
//! The genesis hash binds a signature to one chain (no replay onto another chain) and the
//! per-account nonce binds it to one position in the signer's history (no replay on the same
//! chain). The stored form of an extrinsic is the signed message followed by the 64-byte
//! sr25519 signature; block contents are hashed over exactly those bytes.

use koth_core::Digest;
use serde::Serialize;

use crate::keys::{AccountId, Keypair};

const DOMAIN: &[u8] = b"koth-extrinsic-v1\0";
/// The longest commitment payload the chain accepts, in bytes (Bittensor's timelocked
/// commitments cap the encrypted field at the same order of size).
pub const MAX_PAYLOAD_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Call {
    /// Register the signer as a hotkey of the subnet, owned by `coldkey`.
    Register { coldkey: AccountId },
    /// The subnet owner grants a registered hotkey a validator permit.
    GrantValidatorPermit { hotkey: AccountId },
    /// Commit a payload; it is revealed `reveal_delay` blocks after the block that includes it.
    Commit { payload: String },
    /// Set the signer's weights as (uid, u16 weight).
    SetWeights { weights: Vec<(u16, u16)> },
}

impl Call {
    pub fn kind(&self) -> &'static str {
        match self {
            Call::Register { .. } => "register",
            Call::GrantValidatorPermit { .. } => "grant_validator_permit",
            Call::Commit { .. } => "commit",
            Call::SetWeights { .. } => "set_weights",
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Call::Register { coldkey } => {
                out.push(1);
                out.extend_from_slice(coldkey.as_bytes());
            }
            Call::GrantValidatorPermit { hotkey } => {
                out.push(2);
                out.extend_from_slice(hotkey.as_bytes());
            }
            Call::Commit { payload } => {
                out.push(3);
                out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                out.extend_from_slice(payload.as_bytes());
            }
            Call::SetWeights { weights } => {
                out.push(4);
                out.extend_from_slice(&(weights.len() as u32).to_be_bytes());
                for (uid, w) in weights {
                    out.extend_from_slice(&uid.to_be_bytes());
                    out.extend_from_slice(&w.to_be_bytes());
                }
            }
        }
    }
}

/// An extrinsic with its signature. Build one with [`SignedExtrinsic::sign`]; the chain checks
/// the signature with [`SignedExtrinsic::signature_is_valid`] before applying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedExtrinsic {
    pub genesis: Digest,
    pub signer: AccountId,
    pub nonce: u64,
    pub call: Call,
    pub signature: [u8; 64],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("extrinsic bytes end early (needed {needed} more bytes at offset {at})")]
    Truncated { at: usize, needed: usize },
    #[error("extrinsic does not start with the koth-extrinsic-v1 domain tag")]
    BadDomain,
    #[error("unknown call tag {0}")]
    UnknownCall(u8),
    #[error("commit payload is not UTF-8")]
    PayloadNotUtf8,
    #[error("{0} trailing bytes after the extrinsic")]
    Trailing(usize),
}

/// The bytes a signer signs.
pub fn signing_message(genesis: &Digest, signer: &AccountId, nonce: u64, call: &Call) -> Vec<u8> {
    let mut out = Vec::with_capacity(DOMAIN.len() + 32 + 32 + 8 + 64);
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(genesis.as_bytes());
    out.extend_from_slice(signer.as_bytes());
    out.extend_from_slice(&nonce.to_be_bytes());
    call.encode_into(&mut out);
    out
}

impl SignedExtrinsic {
    pub fn sign(key: &Keypair, genesis: Digest, nonce: u64, call: Call) -> Self {
        let signer = key.account();
        let signature = key.sign(&signing_message(&genesis, &signer, nonce, &call));
        Self {
            genesis,
            signer,
            nonce,
            call,
            signature,
        }
    }

    pub fn message(&self) -> Vec<u8> {
        signing_message(&self.genesis, &self.signer, self.nonce, &self.call)
    }

    pub fn signature_is_valid(&self) -> bool {
        self.signer.verify(&self.message(), &self.signature)
    }

    /// The stored form: signed message ‖ signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.message();
        out.extend_from_slice(&self.signature);
        out
    }

    /// sha256 of the stored form: the extrinsic's identity.
    pub fn hash(&self) -> Digest {
        Digest::of(&self.encode())
    }

    /// Parse the stored form, with bounds checks on every field.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(DOMAIN.len())? != DOMAIN {
            return Err(DecodeError::BadDomain);
        }
        let genesis = Digest::from_bytes(r.array()?);
        let signer = AccountId::from_bytes(r.array()?);
        let nonce = u64::from_be_bytes(r.array()?);
        let tag = r.array::<1>()?[0];
        let call = match tag {
            1 => Call::Register {
                coldkey: AccountId::from_bytes(r.array()?),
            },
            2 => Call::GrantValidatorPermit {
                hotkey: AccountId::from_bytes(r.array()?),
            },
            3 => {
                let len = u32::from_be_bytes(r.array()?) as usize;
                let payload = std::str::from_utf8(r.take(len)?)
                    .map_err(|_| DecodeError::PayloadNotUtf8)?
                    .to_string();
                Call::Commit { payload }
            }
            4 => {
                let count = u32::from_be_bytes(r.array()?) as usize;
                // Check the length before allocating: a stranger's count must not size a Vec.
                r.ensure(count.saturating_mul(4))?;
                let mut weights = Vec::with_capacity(count);
                for _ in 0..count {
                    let uid = u16::from_be_bytes(r.array()?);
                    let w = u16::from_be_bytes(r.array()?);
                    weights.push((uid, w));
                }
                Call::SetWeights { weights }
            }
            other => return Err(DecodeError::UnknownCall(other)),
        };
        let signature = r.array::<64>()?;
        if r.at != bytes.len() {
            return Err(DecodeError::Trailing(bytes.len() - r.at));
        }
        Ok(Self {
            genesis,
            signer,
            nonce,
            call,
            signature,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn ensure(&self, n: usize) -> Result<(), DecodeError> {
        let left = self.bytes.len() - self.at;
        if n > left {
            return Err(DecodeError::Truncated {
                at: self.at,
                needed: n - left,
            });
        }
        Ok(())
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        self.ensure(n)?;
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls() -> Vec<Call> {
        let other = Keypair::from_seed([9; 32]).account();
        vec![
            Call::Register { coldkey: other },
            Call::GrantValidatorPermit { hotkey: other },
            Call::Commit {
                payload: "v4|hf:org/model|sha256:ab|5Grw".into(),
            },
            Call::Commit {
                payload: String::new(),
            },
            Call::SetWeights {
                weights: vec![(0, 65535), (3, 12)],
            },
            Call::SetWeights { weights: vec![] },
        ]
    }

    #[test]
    fn encode_decode_round_trips_and_signatures_verify() {
        let key = Keypair::from_seed([1; 32]);
        let genesis = Digest::of(b"genesis");
        for (i, call) in calls().into_iter().enumerate() {
            let ext = SignedExtrinsic::sign(&key, genesis, i as u64, call);
            assert!(ext.signature_is_valid());
            let bytes = ext.encode();
            assert_eq!(SignedExtrinsic::decode(&bytes).unwrap(), ext);
            // Every strict prefix is refused as truncated, never a panic.
            for cut in 0..bytes.len() {
                assert!(SignedExtrinsic::decode(&bytes[..cut]).is_err());
            }
            let mut long = bytes.clone();
            long.push(0);
            assert_eq!(
                SignedExtrinsic::decode(&long),
                Err(DecodeError::Trailing(1))
            );
        }
    }

    #[test]
    fn any_changed_field_breaks_the_signature() {
        let key = Keypair::from_seed([1; 32]);
        let genesis = Digest::of(b"genesis");
        let ext = SignedExtrinsic::sign(
            &key,
            genesis,
            5,
            Call::Commit {
                payload: "hello".into(),
            },
        );
        let mut other_chain = ext.clone();
        other_chain.genesis = Digest::of(b"another chain");
        assert!(!other_chain.signature_is_valid());
        let mut other_nonce = ext.clone();
        other_nonce.nonce = 6;
        assert!(!other_nonce.signature_is_valid());
        let mut other_payload = ext.clone();
        other_payload.call = Call::Commit {
            payload: "hellp".into(),
        };
        assert!(!other_payload.signature_is_valid());
        let mut other_signer = ext;
        other_signer.signer = Keypair::from_seed([2; 32]).account();
        assert!(!other_signer.signature_is_valid());
    }

    #[test]
    fn huge_weight_count_is_refused_without_allocating() {
        let key = Keypair::from_seed([1; 32]);
        let ext = SignedExtrinsic::sign(
            &key,
            Digest::of(b"g"),
            0,
            Call::SetWeights { weights: vec![] },
        );
        let mut bytes = ext.message();
        let count_at = bytes.len() - 4;
        bytes[count_at..].copy_from_slice(&u32::MAX.to_be_bytes());
        bytes.extend_from_slice(&ext.signature);
        assert!(matches!(
            SignedExtrinsic::decode(&bytes),
            Err(DecodeError::Truncated { .. })
        ));
    }
}
