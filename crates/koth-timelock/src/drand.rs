//! drand networks, their rounds, and the check that a round's signature is the beacon's.

use ark_bls12_381::{Bls12_381, G1Affine, G1Projective, G2Affine, G2Projective};
use ark_ec::{hashing::HashToCurve, pairing::Pairing, AffineRepr, CurveGroup, Group};
use ark_serialize::CanonicalDeserialize;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use timelock::{curves::drand::TinyBLS381, tlock::EngineBLS};

use crate::TimelockError;

/// drand quicknet's group public key: a compressed G2 point (hex of 96 bytes), as published by
/// the beacon's `/info` and as bittensor-drand and subtensor's pallets/drand pin it.
pub const QUICKNET_PUBLIC_KEY_HEX: &str = "83cf0f2896adee7eb8b5f01fcad3912212c437e0073e911fb90022d3e760183c8c4b450b6a0a6c3ac6a5776a2d1064510d1fec758c921cc22b0e17e63aaf4bcb5ed66304de9cf809bd274ca73bab4af5a6e9c76a4bc09e76eae8991ef5ece45a";
/// drand quicknet's chain hash (names the beacon in drand's HTTP API).
pub const QUICKNET_CHAIN_HASH_HEX: &str =
    "52db9ba70e0cc0f6eaf7803dd07447a1f5477735fd3f661792ba94600c84e971";
/// Unix time of quicknet's round 1.
pub const QUICKNET_GENESIS_TIME: u64 = 1_692_803_367;
/// Seconds between quicknet rounds.
pub const QUICKNET_PERIOD: u64 = 3;
/// quicknet's scheme: unchained BLS, signatures on G1, hashed to the curve by RFC 9380.
pub const QUICKNET_SCHEME_ID: &str = "bls-unchained-g1-rfc9380";
/// The RFC 9380 domain separation tag with which quicknet hashes a round's message to G1.
pub const QUICKNET_DST: &[u8] = timelock::curves::drand::QUICKNET_CTX;
/// Bytes of a compressed G1 point: one quicknet signature.
pub const SIGNATURE_LEN: usize = 48;
/// Bytes of a compressed G2 point: a quicknet public key.
pub const PUBLIC_KEY_LEN: usize = 96;

/// A drand beacon of the unchained G1 scheme: its public key and its clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrandNetwork {
    /// The group public key, a compressed G2 point (96 bytes).
    #[serde(with = "hex::serde")]
    pub public_key: Vec<u8>,
    /// Unix time of round 1.
    pub genesis_time: u64,
    /// Seconds between rounds.
    pub period: u64,
}

impl DrandNetwork {
    /// drand quicknet, the beacon Bittensor uses (public key, genesis 1692803367, period 3 s).
    pub fn quicknet() -> Self {
        Self {
            public_key: hex::decode(QUICKNET_PUBLIC_KEY_HEX).expect("the pinned key is hex"),
            genesis_time: QUICKNET_GENESIS_TIME,
            period: QUICKNET_PERIOD,
        }
    }

    /// A network with another key or clock (a test beacon); the key and period are checked.
    pub fn new(public_key: Vec<u8>, genesis_time: u64, period: u64) -> Result<Self, TimelockError> {
        let net = Self {
            public_key,
            genesis_time,
            period,
        };
        let _key = net.public_key_point()?;
        net.check_period()?;
        Ok(net)
    }

    /// The public key as a curve point: checked to be in G2's prime-order subgroup, not the
    /// identity.
    pub(crate) fn public_key_point(&self) -> Result<G2Projective, TimelockError> {
        if self.public_key.len() != PUBLIC_KEY_LEN {
            return Err(TimelockError::PublicKey(format!(
                "{} bytes, expected {PUBLIC_KEY_LEN}",
                self.public_key.len()
            )));
        }
        let point = G2Affine::deserialize_compressed(&self.public_key[..])
            .map_err(|e| TimelockError::PublicKey(format!("{e:?}")))?;
        if point.is_zero() {
            return Err(TimelockError::PublicKey("the point at infinity".into()));
        }
        Ok(point.into_group())
    }

    pub(crate) fn check_period(&self) -> Result<(), TimelockError> {
        if self.period == 0 {
            return Err(TimelockError::PeriodZero);
        }
        Ok(())
    }

    /// The round the beacon is at, as drand counts it, at `unix_secs`: round 1 at genesis, one
    /// more every `period` seconds. Before genesis there is none (`Ok(0)`).
    pub fn round_at(&self, unix_secs: u64) -> Result<u64, TimelockError> {
        self.check_period()?;
        if unix_secs < self.genesis_time {
            return Ok(0);
        }
        Ok((unix_secs - self.genesis_time) / self.period + 1)
    }

    /// Unix time at which `round` is emitted: `genesis + (round - 1) * period`.
    pub fn round_time(&self, round: u64) -> Result<u64, TimelockError> {
        if round == 0 {
            return Err(TimelockError::RoundZero);
        }
        Ok(self
            .genesis_time
            .saturating_add((round - 1).saturating_mul(self.period)))
    }
}

/// The message an unchained beacon signs for `round`, and the IBE identity a ciphertext for
/// that round is encrypted to: `sha256(round as u64 big-endian)`.
pub fn round_message(round: u64) -> [u8; 32] {
    Sha256::digest(round.to_be_bytes()).into()
}

/// `round_message(round)` hashed to G1 with RFC 9380 (`QUICKNET_DST`), as quicknet and
/// timelock's `TinyBLS381` do it.
pub(crate) fn round_point(round: u64) -> Result<G1Affine, TimelockError> {
    <TinyBLS381 as EngineBLS>::hash_to_curve_map()
        .hash(&round_message(round))
        .map_err(|e| TimelockError::SignatureEncoding(format!("hash to curve: {e:?}")))
}

/// Parses a raw 48-byte compressed G1 signature (checked to be in the prime-order subgroup and
/// not the identity).
pub(crate) fn parse_signature(signature: &[u8]) -> Result<G1Projective, TimelockError> {
    if signature.len() != SIGNATURE_LEN {
        return Err(TimelockError::SignatureLength {
            expected: SIGNATURE_LEN,
            got: signature.len(),
        });
    }
    let point = G1Affine::deserialize_compressed(signature)
        .map_err(|e| TimelockError::SignatureEncoding(format!("{e:?}")))?;
    if point.is_zero() {
        return Err(TimelockError::SignatureEncoding(
            "the point at infinity".into(),
        ));
    }
    Ok(point.into_group())
}

/// Checks that `signature` (raw 48 bytes) is the beacon's signature for `round`:
/// `e(signature, g2) == e(H(sha256(round)), public_key)`, the check subtensor's
/// `QuicknetVerifier` makes before it stores a pulse.
pub fn verify_round_signature(
    net: &DrandNetwork,
    round: u64,
    signature: &[u8],
) -> Result<(), TimelockError> {
    if round == 0 {
        return Err(TimelockError::RoundZero);
    }
    let public_key = net.public_key_point()?;
    let signature = parse_signature(signature)?;
    let message = round_point(round)?;
    let lhs = Bls12_381::pairing(signature.into_affine(), G2Projective::generator());
    let rhs = Bls12_381::pairing(message, public_key.into_affine());
    if lhs == rhs {
        Ok(())
    } else {
        Err(TimelockError::SignatureMismatch { round })
    }
}

/// The randomness of an unchained beacon's round: `sha256(signature)`.
pub fn randomness(signature: &[u8]) -> [u8; 32] {
    Sha256::digest(signature).into()
}
