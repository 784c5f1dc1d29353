//! Timelock encryption to a drand round and decryption with that round's signature, in the
//! byte format that bittensor-drand writes and subtensor reads.

use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
use codec::{Decode, DecodeAll, Encode};
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, OsRng, RngCore, SeedableRng};
use timelock::{
    curves::drand::TinyBLS381,
    ibe::fullident::Identity,
    stream_ciphers::{AESGCMStreamCipherProvider, AESOutput, StreamCipherProvider},
    tlock::{tld, tle, Error as TleError, TLECiphertext},
};

use crate::drand::{parse_signature, round_message, DrandNetwork};
use crate::TimelockError;

/// The cipher-suite tag bittensor-drand's ciphertexts carry (AES-256-GCM).
pub const CIPHER_SUITE: &[u8] = AESGCMStreamCipherProvider::CIPHER_SUITE;

/// Bytes a ciphertext adds to its plaintext: the IBE header (U: 96, V: 8 + 32, W: 8 + 32), the
/// body's length, the AES ciphertext's length and its 16-byte tag, the nonce (8 + 12), and the
/// cipher suite (8 + 8). Every length prefix is a little-endian u64 (arkworks' encoding).
pub const CIPHERTEXT_OVERHEAD: usize = 96 + (8 + 32) + (8 + 32) + 8 + (8 + 16) + (8 + 12) + (8 + 8);

const AES_GCM_NONCE_LEN: usize = 12;

/// Timelock-encrypts `plaintext` to drand `round` of `net`: Boneh–Franklin IBE (FullIdent) to
/// the identity `sha256(round as u64 big-endian)` under the network's G2 public key wraps a
/// fresh 32-byte AES-256-GCM key, and the body is AES-GCM under that key.
///
/// The result is the ciphertext exactly as bittensor-drand's `encrypt_and_compress` writes it
/// (arkworks' compressed `TLECiphertext<TinyBLS381>`), which is what subtensor stores in
/// `Data::TimelockEncrypted::encrypted` and in a timelocked weights commit, and what it opens
/// once the round's pulse is on chain. `rng` draws the AES key, the IBE randomness and the
/// nonce; it must be a cryptographic RNG.
pub fn encrypt<R: RngCore + CryptoRng>(
    net: &DrandNetwork,
    plaintext: &[u8],
    round: u64,
    rng: &mut R,
) -> Result<Vec<u8>, TimelockError> {
    if round == 0 {
        return Err(TimelockError::RoundZero);
    }
    let public_key = net.public_key_point()?;
    let identity = Identity::new(b"", vec![round_message(round).to_vec()]);
    let mut key = [0u8; 32];
    rng.fill_bytes(&mut key);
    let ciphertext =
        tle::<TinyBLS381, AESGCMStreamCipherProvider, _>(public_key, key, plaintext, identity, rng)
            .map_err(|e| TimelockError::Encryption(format!("{e:?}")))?;
    let mut out = Vec::with_capacity(plaintext.len() + CIPHERTEXT_OVERHEAD);
    ciphertext
        .serialize_compressed(&mut out)
        .map_err(|e| TimelockError::Encryption(format!("serializing: {e:?}")))?;
    Ok(out)
}

/// [`encrypt`] with the operating system's randomness.
pub fn encrypt_with_os_rng(
    net: &DrandNetwork,
    plaintext: &[u8],
    round: u64,
) -> Result<Vec<u8>, TimelockError> {
    encrypt(net, plaintext, round, &mut OsRng)
}

/// [`encrypt`] with all randomness drawn from ChaCha20 seeded by `seed`: the same inputs give
/// the same bytes. For tests and fixtures only; a real commitment needs fresh randomness.
pub fn encrypt_with_seed(
    net: &DrandNetwork,
    plaintext: &[u8],
    round: u64,
    seed: [u8; 32],
) -> Result<Vec<u8>, TimelockError> {
    encrypt(net, plaintext, round, &mut ChaCha20Rng::from_seed(seed))
}

/// Parses a ciphertext and checks the shapes that timelock's decryption assumes (a 32-byte V
/// and W, a 12-byte nonce), so that garbage fails here with an error rather than deeper down.
///
/// Bytes after the ciphertext are ignored, as subtensor ignores them.
fn parse_ciphertext(bytes: &[u8]) -> Result<TLECiphertext<TinyBLS381>, TimelockError> {
    let ciphertext = TLECiphertext::<TinyBLS381>::deserialize_compressed(bytes)
        .map_err(|e| TimelockError::MalformedCiphertext(format!("{e:?}")))?;
    for (name, part) in [("V", &ciphertext.header.v), ("W", &ciphertext.header.w)] {
        if part.len() != 32 {
            return Err(TimelockError::MalformedCiphertext(format!(
                "IBE {name} is {} bytes, expected 32",
                part.len()
            )));
        }
    }
    let body = AESOutput::deserialize_compressed(&ciphertext.body[..])
        .map_err(|e| TimelockError::MalformedCiphertext(format!("AES body: {e:?}")))?;
    if body.nonce.len() != AES_GCM_NONCE_LEN {
        return Err(TimelockError::MalformedCiphertext(format!(
            "AES-GCM nonce is {} bytes, expected {AES_GCM_NONCE_LEN}",
            body.nonce.len()
        )));
    }
    Ok(ciphertext)
}

/// Opens a ciphertext with the drand signature of the round it was encrypted to (raw 48-byte
/// compressed G1 point, as drand's API gives it in hex and subtensor's `Pulses` store it). This
/// is subtensor's decrypt path (pallets/commitments and the weights reveal): deserialize the
/// ciphertext and the signature, IBE-decrypt the AES key, AES-GCM-decrypt the body.
///
/// A signature for another round, or a tampered ciphertext, gives
/// [`TimelockError::DecryptionFailed`]; bytes that are no ciphertext give
/// [`TimelockError::MalformedCiphertext`].
pub fn decrypt_with_signature(
    ciphertext: &[u8],
    signature: &[u8],
) -> Result<Vec<u8>, TimelockError> {
    let signature = parse_signature(signature)?;
    let ciphertext = parse_ciphertext(ciphertext)?;
    tld::<TinyBLS381, AESGCMStreamCipherProvider>(ciphertext, signature).map_err(|e| match e {
        TleError::InvalidSignature => TimelockError::DecryptionFailed(
            "the IBE header does not open with this signature".into(),
        ),
        TleError::DecryptionError => {
            TimelockError::DecryptionFailed("AES-GCM authentication failed".into())
        }
        other => TimelockError::DecryptionFailed(format!("{other:?}")),
    })
}

/// The envelope that the Python SDK's `bittensor_drand.encrypt`, `encrypt_at_round`, `decrypt`
/// and `decrypt_with_signature` use (bittensor-drand's `UserData`): the SCALE encoding of the
/// ciphertext as a `Vec<u8>` followed by the reveal round as a `u64`. The chain never sees it:
/// commitments and weight commits carry the bare ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SdkEnvelope {
    /// The bare ciphertext, as [`encrypt`] returns it.
    pub encrypted_data: Vec<u8>,
    /// The drand round it is encrypted to.
    pub reveal_round: u64,
}

impl SdkEnvelope {
    /// SCALE bytes, as the SDK's `encrypt_at_round` returns them.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode()
    }

    /// Parses the SDK's envelope; every byte must be used.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TimelockError> {
        Self::decode_all(&mut &bytes[..])
            .map_err(|e| TimelockError::MalformedPayload(format!("SDK envelope: {e}")))
    }
}
