//! sr25519 keys and SS58 addresses, byte-compatible with Substrate (and so with Bittensor).
//!
//! - A key is made from a 32-byte *mini secret seed* expanded with
//!   `MiniSecretKey::expand_to_keypair(ExpansionMode::Ed25519)`, exactly as Substrate's
//!   `sr25519::Pair::from_seed` does, so the same seed gives the same public key and address
//!   here and in `subkey`/`btcli`.
//! - Signatures use the signing context `b"substrate"`, as Substrate's sr25519 does.
//! - Addresses are SS58 with the generic Substrate prefix 42 (Bittensor's format):
//!   `base58([42] ‖ public ‖ blake2b-512("SS58PRE" ‖ [42] ‖ public)[0..2])`.

use std::fmt;
use std::str::FromStr;

use blake2::{Blake2b512, Digest as _};
use rand::RngCore;
use schnorrkel::{ExpansionMode, MiniSecretKey, PublicKey, Signature};
use serde::{Deserialize, Serialize};

/// The SS58 address prefix of generic Substrate chains and of Bittensor.
pub const SS58_PREFIX: u8 = 42;
/// The signing context Substrate uses for every sr25519 signature.
pub const SIGNING_CONTEXT: &[u8] = b"substrate";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("SS58 address {0:?} is not valid base58")]
    NotBase58(String),
    #[error("SS58 address {address:?} decodes to {len} bytes; expected 35 (prefix, 32-byte public key, 2-byte checksum)")]
    BadLength { address: String, len: usize },
    #[error("SS58 address {address:?} has network prefix {prefix}; expected {SS58_PREFIX} (generic Substrate / Bittensor)")]
    WrongPrefix { address: String, prefix: u8 },
    #[error("SS58 address {0:?} has a wrong checksum (mistyped or truncated?)")]
    BadChecksum(String),
    #[error("public key {0:?} must be 64 hex characters (32 bytes), optionally prefixed with 0x")]
    BadPublicHex(String),
    #[error("32 bytes {0} are not a valid sr25519 public key (not a Ristretto point)")]
    NotOnCurve(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("secret seed must be 64 hex characters (32 bytes), optionally prefixed with 0x")]
    BadSeedHex,
}

/// An account: a 32-byte sr25519 public key. Printed and parsed as its SS58 address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId([u8; 32]);

impl AccountId {
    /// Wrap raw public-key bytes without checking they are a valid curve point; signature
    /// verification against such an account simply fails.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse a public key given as 64 hex characters (optionally `0x`-prefixed).
    pub fn from_public_hex(s: &str) -> Result<Self, AddressError> {
        let digits = s.strip_prefix("0x").unwrap_or(s);
        let mut out = [0u8; 32];
        if digits.len() != 64 || hex::decode_to_slice(digits, &mut out).is_err() {
            return Err(AddressError::BadPublicHex(s.to_string()));
        }
        Ok(Self(out))
    }

    /// The SS58 address with prefix 42.
    pub fn to_ss58(&self) -> String {
        let mut data = Vec::with_capacity(35);
        data.push(SS58_PREFIX);
        data.extend_from_slice(&self.0);
        let checksum = ss58_checksum(&data);
        data.extend_from_slice(&checksum);
        bs58::encode(data).into_string()
    }

    /// Parse an SS58 address with prefix 42, checking its checksum.
    pub fn from_ss58(address: &str) -> Result<Self, AddressError> {
        let data = bs58::decode(address)
            .into_vec()
            .map_err(|_| AddressError::NotBase58(address.to_string()))?;
        if data.len() != 35 {
            return Err(AddressError::BadLength {
                address: address.to_string(),
                len: data.len(),
            });
        }
        let (body, checksum) = data.split_at(33);
        let prefix = body.first().copied().unwrap_or_default();
        if prefix != SS58_PREFIX {
            return Err(AddressError::WrongPrefix {
                address: address.to_string(),
                prefix,
            });
        }
        if ss58_checksum(body) != checksum {
            return Err(AddressError::BadChecksum(address.to_string()));
        }
        let mut public = [0u8; 32];
        public.copy_from_slice(&body[1..]);
        Ok(Self(public))
    }

    /// Parse either an SS58 address or a hex public key (what a person may paste).
    pub fn parse_any(s: &str) -> Result<Self, AddressError> {
        if s.starts_with("0x") || (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())) {
            Self::from_public_hex(s)
        } else {
            Self::from_ss58(s)
        }
    }

    /// Verify an sr25519 signature by this account over `message` (context `b"substrate"`).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let Ok(public) = PublicKey::from_bytes(&self.0) else {
            return false;
        };
        let Ok(signature) = Signature::from_bytes(signature) else {
            return false;
        };
        public
            .verify_simple(SIGNING_CONTEXT, message, &signature)
            .is_ok()
    }
}

fn ss58_checksum(body: &[u8]) -> [u8; 2] {
    let mut hasher = Blake2b512::new();
    hasher.update(b"SS58PRE");
    hasher.update(body);
    let hash = hasher.finalize();
    [hash[0], hash[1]]
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_ss58())
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({})", self.to_ss58())
    }
}

impl FromStr for AccountId {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_ss58(s)
    }
}

impl Serialize for AccountId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AccountId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_ss58(&s).map_err(serde::de::Error::custom)
    }
}

/// An sr25519 key pair together with the 32-byte seed it was expanded from (the seed is what
/// a keystore file stores, as Substrate's "secret seed").
pub struct Keypair {
    seed: [u8; 32],
    pair: schnorrkel::Keypair,
}

impl Keypair {
    /// Expand a 32-byte mini secret seed the way Substrate's `sr25519::Pair::from_seed` does.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        // `from_bytes` only fails on a length other than 32, which the array type rules out.
        let mini = match MiniSecretKey::from_bytes(&seed) {
            Ok(mini) => mini,
            Err(_) => unreachable!("a [u8; 32] is always a valid mini secret key"),
        };
        let pair = mini.expand_to_keypair(ExpansionMode::Ed25519);
        Self { seed, pair }
    }

    /// Parse a seed written as 64 hex characters (optionally `0x`-prefixed), as `subkey` prints it.
    pub fn from_seed_hex(s: &str) -> Result<Self, KeyError> {
        let digits = s.strip_prefix("0x").unwrap_or(s);
        let mut seed = [0u8; 32];
        if digits.len() != 64 || hex::decode_to_slice(digits, &mut seed).is_err() {
            return Err(KeyError::BadSeedHex);
        }
        Ok(Self::from_seed(seed))
    }

    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        Self::from_seed(seed)
    }

    pub fn account(&self) -> AccountId {
        AccountId(self.pair.public.to_bytes())
    }

    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// Whether `expanded` is this key's 64-byte expanded secret in Substrate's form (the
    /// scalar, then the nonce: what `bittensor_wallet` writes as a key file's `privateKey`).
    pub fn expanded_secret_eq(&self, expanded: &[u8; 64]) -> bool {
        let mine = zeroize::Zeroizing::new(self.pair.secret.to_bytes());
        // Every byte is compared (no early exit on the first difference).
        mine.iter()
            .zip(expanded)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// Sign `message` with context `b"substrate"` (randomized, as sr25519 signatures are).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.pair.sign_simple(SIGNING_CONTEXT, message).to_bytes()
    }
}

impl Clone for Keypair {
    fn clone(&self) -> Self {
        Self::from_seed(self.seed)
    }
}

impl fmt::Debug for Keypair {
    // Never print the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.account())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Substrate's well-known development account `//Alice`: `subkey inspect //Alice` prints the
    // secret seed below (the result of the hard derivation), public key d435…a27d and address
    // 5Grw…KutQY. Expanding that raw seed must give the same public key and address here.
    const ALICE_SEED: &str = "0xe5be9a5092b81bca64be81d212e7f2f9eba183bb7a90954f7b76361f6edb5c0a";
    const ALICE_PUBLIC: &str = "d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d";
    const ALICE_SS58: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";

    #[test]
    fn alice_seed_gives_substrates_public_key_and_address() {
        let alice = Keypair::from_seed_hex(ALICE_SEED).unwrap();
        assert_eq!(alice.account().public_hex(), ALICE_PUBLIC);
        assert_eq!(alice.account().to_ss58(), ALICE_SS58);
    }

    #[test]
    fn ss58_round_trips_the_published_address() {
        let account = AccountId::from_ss58(ALICE_SS58).unwrap();
        assert_eq!(account.public_hex(), ALICE_PUBLIC);
        assert_eq!(account.to_ss58(), ALICE_SS58);
        assert_eq!(AccountId::parse_any(ALICE_PUBLIC).unwrap(), account);
        assert_eq!(
            AccountId::parse_any(&format!("0x{ALICE_PUBLIC}")).unwrap(),
            account
        );
        let json = serde_json::to_string(&account).unwrap();
        assert_eq!(json, format!("\"{ALICE_SS58}\""));
        assert_eq!(serde_json::from_str::<AccountId>(&json).unwrap(), account);
    }

    #[test]
    fn damaged_addresses_are_refused_with_the_reason() {
        // Change one character: the checksum (or the base58 alphabet) catches it.
        let mut chars: Vec<char> = ALICE_SS58.chars().collect();
        chars[10] = if chars[10] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert!(matches!(
            AccountId::from_ss58(&typo),
            Err(AddressError::BadChecksum(_))
        ));
        assert!(matches!(
            AccountId::from_ss58("0OIl"),
            Err(AddressError::NotBase58(_))
        ));
        assert!(matches!(
            AccountId::from_ss58(&ALICE_SS58[..20]),
            Err(AddressError::BadLength { .. })
        ));
        // Polkadot's prefix 0 encoding of Alice.
        let mut data = vec![0u8];
        data.extend_from_slice(&hex::decode(ALICE_PUBLIC).unwrap());
        let checksum = ss58_checksum(&data);
        data.extend_from_slice(&checksum);
        let polkadot = bs58::encode(data).into_string();
        assert!(matches!(
            AccountId::from_ss58(&polkadot),
            Err(AddressError::WrongPrefix { prefix: 0, .. })
        ));
        assert!(AccountId::from_public_hex("abcd").is_err());
    }

    #[test]
    fn signatures_verify_and_forgeries_do_not() {
        let key = Keypair::generate();
        let other = Keypair::generate();
        let sig = key.sign(b"message");
        assert!(key.account().verify(b"message", &sig));
        assert!(!key.account().verify(b"messagf", &sig));
        assert!(!other.account().verify(b"message", &sig));
        for byte in 0..64 {
            let mut forged = sig;
            forged[byte] ^= 0x01;
            assert!(!key.account().verify(b"message", &forged), "byte {byte}");
        }
        // A seed gives the same key every time.
        assert_eq!(Keypair::from_seed(*key.seed()).account(), key.account());
    }
}
