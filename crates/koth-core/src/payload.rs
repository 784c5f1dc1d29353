//! The commitment payload a miner posts to the chain: `v4|<location>|<digest>|<hotkey>`.
//!
//! The format is Teutonic's, so existing miner tooling works unchanged. The hotkey inside the
//! payload is informational only: the chain's signer is the submitter.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Digest;

/// Longest payload accepted; anything longer is refused before it is split.
pub const MAX_PAYLOAD_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitmentPayload {
    /// Where the checkpoint can be fetched: `file:///…`, `s3://bucket/prefix`, or `hf:<repo>`.
    pub location: String,
    /// The checkpoint's content digest; whatever is fetched must hash to it.
    pub digest: Digest,
    /// The hotkey the miner wrote; never trusted over the chain's signer.
    pub hotkey: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("payload is {0} bytes; at most {MAX_PAYLOAD_BYTES} are accepted")]
    TooLong(usize),
    #[error("payload must have 4 fields separated by '|' (v4|location|digest|hotkey), found {0}")]
    FieldCount(usize),
    #[error("payload version is {0:?}; only \"v4\" is understood")]
    Version(String),
    #[error("payload location is empty or contains whitespace or control characters")]
    Location,
    #[error("payload digest: {0}")]
    Digest(#[from] crate::DigestError),
    #[error("payload hotkey is empty or not printable ASCII")]
    Hotkey,
}

impl FromStr for CommitmentPayload {
    type Err = PayloadError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_PAYLOAD_BYTES {
            return Err(PayloadError::TooLong(s.len()));
        }
        let fields: Vec<&str> = s.split('|').collect();
        if fields.len() != 4 {
            return Err(PayloadError::FieldCount(fields.len()));
        }
        if fields[0] != "v4" {
            return Err(PayloadError::Version(fields[0].to_string()));
        }
        let location = fields[1];
        if location.is_empty()
            || location
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(PayloadError::Location);
        }
        let digest: Digest = fields[2].parse()?;
        let hotkey = fields[3];
        if hotkey.is_empty() || !hotkey.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(PayloadError::Hotkey);
        }
        Ok(Self {
            location: location.to_string(),
            digest,
            hotkey: hotkey.to_string(),
        })
    }
}

impl fmt::Display for CommitmentPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v4|{}|{}|{}", self.location, self.digest, self.hotkey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Digest {
        Digest::of(b"model")
    }

    #[test]
    fn round_trip() {
        let p = CommitmentPayload {
            location: "s3://bucket/kings".into(),
            digest: digest(),
            hotkey: "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY".into(),
        };
        let s = p.to_string();
        assert_eq!(s.parse::<CommitmentPayload>().unwrap(), p);
    }

    #[test]
    fn malformed_payloads_name_the_problem() {
        let d = digest();
        assert_eq!(
            "v4|a|b".parse::<CommitmentPayload>(),
            Err(PayloadError::FieldCount(3))
        );
        assert_eq!(
            format!("v3|loc|{d}|hk").parse::<CommitmentPayload>(),
            Err(PayloadError::Version("v3".into()))
        );
        assert_eq!(
            format!("v4||{d}|hk").parse::<CommitmentPayload>(),
            Err(PayloadError::Location)
        );
        assert_eq!(
            format!("v4|a b|{d}|hk").parse::<CommitmentPayload>(),
            Err(PayloadError::Location)
        );
        assert!(matches!(
            "v4|loc|sha256:00|hk".parse::<CommitmentPayload>(),
            Err(PayloadError::Digest(_))
        ));
        assert_eq!(
            format!("v4|loc|{d}|").parse::<CommitmentPayload>(),
            Err(PayloadError::Hotkey)
        );
        let long = format!("v4|{}|{d}|hk", "x".repeat(2000));
        assert!(matches!(
            long.parse::<CommitmentPayload>(),
            Err(PayloadError::TooLong(_))
        ));
    }
}
