//! `sha256:<64 hex>` digests: the only way anything is named in koth.

use std::fmt;
use std::io;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A SHA-256 digest, written `sha256:<64 lowercase hex>`.
///
/// Checkpoints, shards, bundles, competition files and samples are all named by one of these;
/// nothing is ever fetched or compared by a name that can change.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest {0:?} must start with \"sha256:\"")]
    MissingPrefix(String),
    #[error("digest {0:?} must have exactly 64 hex characters after \"sha256:\"")]
    BadHex(String),
}

impl Digest {
    pub const PREFIX: &'static str = "sha256:";

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// The 64 lowercase hex characters without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse 64 hex characters with no prefix (as `sha256sum` prints them).
    pub fn from_hex(s: &str) -> Result<Self, DigestError> {
        let mut out = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut out).is_err() {
            return Err(DigestError::BadHex(s.to_string()));
        }
        Ok(Self(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex_part = s
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| DigestError::MissingPrefix(s.to_string()))?;
        if hex_part.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(DigestError::BadHex(s.to_string()));
        }
        Self::from_hex(hex_part).map_err(|_| DigestError::BadHex(s.to_string()))
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An `io::Write` that hashes what passes through it, for streaming files of any size.
#[derive(Default, Clone)]
pub struct Sha256Writer {
    hasher: Sha256,
    len: u64,
}

impl Sha256Writer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.len += data.len() as u64;
    }
    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn finish(self) -> Digest {
        Digest(self.hasher.finalize().into())
    }
}

impl io::Write for Sha256Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_round_trips() {
        let d = Digest::of(b"abc");
        let s = d.to_string();
        assert_eq!(
            s,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(s.parse::<Digest>().unwrap(), d);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
    }

    #[test]
    fn streaming_matches_one_shot() {
        let mut w = Sha256Writer::new();
        w.update(b"a");
        w.update(b"bc");
        assert_eq!(w.len(), 3);
        assert_eq!(w.finish(), Digest::of(b"abc"));
    }

    #[test]
    fn malformed_digests_are_refused() {
        assert!(matches!(
            "ba7816bf".parse::<Digest>(),
            Err(DigestError::MissingPrefix(_))
        ));
        assert!(matches!(
            "sha256:zz".parse::<Digest>(),
            Err(DigestError::BadHex(_))
        ));
        let upper = format!("sha256:{}", "A".repeat(64));
        assert!(upper.parse::<Digest>().is_err());
        let long = format!("sha256:{}", "a".repeat(65));
        assert!(long.parse::<Digest>().is_err());
    }
}
