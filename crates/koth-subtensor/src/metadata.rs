//! The chain's runtime metadata: what pallets, calls, storage items and transaction extensions a
//! subtensor runtime has, and how their types encode. Calls and extrinsics are encoded against it
//! ([`crate::calls`], [`crate::tx`]), so indices and argument types come from the chain itself.
//!
//! - [`decode_metadata`] (or [`decode`]): `RuntimeMetadataPrefixed` bytes (magic `b"meta"`, then
//!   the version byte; V14, V15 and V16 are understood) into [`subxt_core::Metadata`].
//! - [`decode_metadata_at_version_answer`]: the same from what a node answers to `state_call
//!   Metadata_metadata_at_version` (a SCALE `Option<OpaqueMetadata>`).
//! - [`check_koth_items`]: the calls and storage items koth uses are all there.

use codec::{Compact, Decode};
pub use subxt_core::Metadata;

/// The four bytes every `RuntimeMetadataPrefixed` starts with.
pub const METADATA_MAGIC: [u8; 4] = *b"meta";

/// Metadata versions subxt-core decodes.
pub const SUPPORTED_VERSIONS: [u8; 3] = [14, 15, 16];

/// The calls koth sends, as (pallet, call).
pub const KOTH_CALLS: [(&str, &str); 3] = [
    ("Commitments", "set_commitment"),
    ("SubtensorModule", "set_weights"),
    ("SubtensorModule", "commit_timelocked_mechanism_weights"),
];

/// The storage items koth reads, as (pallet, item).
pub const KOTH_STORAGE: [(&str, &str); 23] = [
    ("Commitments", "RevealedCommitments"),
    ("Commitments", "CommitmentOf"),
    ("SubtensorModule", "Uids"),
    ("SubtensorModule", "Keys"),
    ("SubtensorModule", "Owner"),
    ("SubtensorModule", "ValidatorPermit"),
    ("SubtensorModule", "SubnetworkN"),
    ("SubtensorModule", "Weights"),
    ("SubtensorModule", "LastUpdate"),
    ("SubtensorModule", "CommitRevealWeightsEnabled"),
    ("SubtensorModule", "WeightsSetRateLimit"),
    ("SubtensorModule", "WeightsVersionKey"),
    ("SubtensorModule", "Tempo"),
    ("SubtensorModule", "BlockAtRegistration"),
    ("Drand", "LastStoredRound"),
    ("SubtensorModule", "SubnetOwner"),
    ("SubtensorModule", "MaxAllowedUids"),
    ("SubtensorModule", "ImmunityPeriod"),
    ("SubtensorModule", "Emission"),
    ("SubtensorModule", "RevealPeriodEpochs"),
    ("SubtensorModule", "CommitRevealWeightsVersion"),
    ("System", "Account"),
    ("System", "Events"),
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetadataError {
    #[error(
        "runtime metadata is {len} bytes; expected at least 5 (magic b\"meta\" and a version byte)"
    )]
    TooShort { len: usize },
    #[error("runtime metadata starts with 0x{found}; expected the magic 0x6d657461 (b\"meta\")")]
    BadMagic { found: String },
    #[error("runtime metadata is version {version}; expected one of 14, 15, 16")]
    UnsupportedVersion { version: u8 },
    #[error("runtime metadata (version {version}) does not decode: {reason}")]
    Decode { version: u8, reason: String },
    #[error("runtime metadata (version {version}) decodes with {trailing} bytes left over; expected none")]
    TrailingBytes { version: u8, trailing: usize },
    #[error("Metadata_metadata_at_version answer {0}")]
    BadAtVersionAnswer(String),
    #[error("runtime metadata lacks what koth needs: {}", missing.join(", "))]
    MissingItems { missing: Vec<String> },
}

/// Decode `RuntimeMetadataPrefixed` bytes (as `state_getMetadata` returns them, or the inner
/// bytes of `Metadata_metadata_at_version`) into subxt-core's [`Metadata`].
pub fn decode_metadata(bytes: &[u8]) -> Result<Metadata, MetadataError> {
    if bytes.len() < 5 {
        return Err(MetadataError::TooShort { len: bytes.len() });
    }
    if bytes[..4] != METADATA_MAGIC {
        return Err(MetadataError::BadMagic {
            found: hex::encode(&bytes[..4]),
        });
    }
    let version = bytes[4];
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(MetadataError::UnsupportedVersion { version });
    }
    let mut input = bytes;
    let metadata = Metadata::decode(&mut input).map_err(|e| MetadataError::Decode {
        version,
        reason: e.to_string(),
    })?;
    if !input.is_empty() {
        return Err(MetadataError::TrailingBytes {
            version,
            trailing: input.len(),
        });
    }
    Ok(metadata)
}

/// [`decode_metadata`], by its short name.
pub fn decode(bytes: &[u8]) -> Result<Metadata, MetadataError> {
    decode_metadata(bytes)
}

/// Decode a node's answer to `state_call("Metadata_metadata_at_version", version)`: a SCALE
/// `Option<Vec<u8>>` holding `RuntimeMetadataPrefixed` bytes. `Ok(None)` when the node has no
/// metadata of that version.
pub fn decode_metadata_at_version_answer(answer: &[u8]) -> Result<Option<Metadata>, MetadataError> {
    let Some((&tag, rest)) = answer.split_first() else {
        return Err(MetadataError::BadAtVersionAnswer(
            "is empty; expected a SCALE Option<OpaqueMetadata>".into(),
        ));
    };
    match tag {
        0 if rest.is_empty() => Ok(None),
        0 => Err(MetadataError::BadAtVersionAnswer(format!(
            "is None followed by {} bytes; expected nothing after None",
            rest.len()
        ))),
        1 => {
            let mut input = rest;
            let len = Compact::<u32>::decode(&mut input).map_err(|e| {
                MetadataError::BadAtVersionAnswer(format!(
                    "has no valid compact length after Some: {e}"
                ))
            })?;
            let len = len.0 as usize;
            if input.len() != len {
                return Err(MetadataError::BadAtVersionAnswer(format!(
                    "says {len} metadata bytes but holds {}",
                    input.len()
                )));
            }
            decode_metadata(input).map(Some)
        }
        other => Err(MetadataError::BadAtVersionAnswer(format!(
            "starts with 0x{other:02x}; expected 0x00 (None) or 0x01 (Some)"
        ))),
    }
}

/// Every call ([`KOTH_CALLS`]) and storage item ([`KOTH_STORAGE`]) koth uses is in `metadata`;
/// otherwise an error listing each one that is missing, as `Pallet.item`.
pub fn check_koth_items(metadata: &Metadata) -> Result<(), MetadataError> {
    let mut missing = Vec::new();
    for (pallet, call) in KOTH_CALLS {
        let found = metadata
            .pallet_by_name(pallet)
            .and_then(|p| p.call_variant_by_name(call))
            .is_some();
        if !found {
            missing.push(format!("call {pallet}.{call}"));
        }
    }
    for (pallet, item) in KOTH_STORAGE {
        let found = metadata
            .pallet_by_name(pallet)
            .and_then(|p| p.storage())
            .and_then(|s| s.entry_by_name(item))
            .is_some();
        if !found {
            missing.push(format!("storage {pallet}.{item}"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MetadataError::MissingItems { missing })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_wrong_magic_and_unknown_versions_are_named() {
        assert_eq!(
            decode_metadata(b"met").unwrap_err(),
            MetadataError::TooShort { len: 3 }
        );
        assert_eq!(
            decode_metadata(b"atem\x0f").unwrap_err(),
            MetadataError::BadMagic {
                found: "6174656d".into()
            }
        );
        assert_eq!(
            decode_metadata(b"meta\x0d").unwrap_err(),
            MetadataError::UnsupportedVersion { version: 13 }
        );
        assert!(matches!(
            decode_metadata(b"meta\x0f\x01").unwrap_err(),
            MetadataError::Decode { version: 15, .. }
        ));
    }

    #[test]
    fn at_version_answer_framing_is_checked() {
        assert_eq!(
            decode_metadata_at_version_answer(&[0]).unwrap().map(|_| ()),
            None
        );
        assert!(matches!(
            decode_metadata_at_version_answer(&[]),
            Err(MetadataError::BadAtVersionAnswer(_))
        ));
        assert!(matches!(
            decode_metadata_at_version_answer(&[2, 0]),
            Err(MetadataError::BadAtVersionAnswer(_))
        ));
        // Some, length 8, but only 5 bytes.
        assert!(matches!(
            decode_metadata_at_version_answer(&[1, 8 << 2, b'm', b'e', b't', b'a', 15]),
            Err(MetadataError::BadAtVersionAnswer(_))
        ));
    }
}
