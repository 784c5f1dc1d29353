//! Stable rejection codes, one per gate failure (PROTOCOL §5).
//!
//! The code is what tooling matches on and never changes meaning; the sentence is what a miner
//! reads. Adding a code is fine; renaming one breaks every miner's scripts.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    PayloadMalformed,
    HotkeyUnregistered,
    DigestOwned,
    /// Revealed more blocks after its commit block than the competition's reveal delay allows:
    /// ownership is decided by commit block, so a validator waits that long and no longer.
    RevealTooLate,
    ManifestUnreachable,
    FileRefused,
    TooLarge,
    ConfigMismatch,
    TensorsMismatch,
    WeightsInvalid,
    NearCopy,
    /// Not a gate's verdict: our side failed on the entry too many times (see PROTOCOL §5).
    InfraExhausted,
}

impl RejectCode {
    pub const ALL: [RejectCode; 12] = [
        RejectCode::PayloadMalformed,
        RejectCode::HotkeyUnregistered,
        RejectCode::DigestOwned,
        RejectCode::RevealTooLate,
        RejectCode::ManifestUnreachable,
        RejectCode::FileRefused,
        RejectCode::TooLarge,
        RejectCode::ConfigMismatch,
        RejectCode::TensorsMismatch,
        RejectCode::WeightsInvalid,
        RejectCode::NearCopy,
        RejectCode::InfraExhausted,
    ];

    /// The stable machine-readable code, e.g. `config_mismatch`.
    pub fn code(self) -> &'static str {
        match self {
            RejectCode::PayloadMalformed => "payload_malformed",
            RejectCode::HotkeyUnregistered => "hotkey_unregistered",
            RejectCode::DigestOwned => "digest_owned",
            RejectCode::RevealTooLate => "reveal_too_late",
            RejectCode::ManifestUnreachable => "manifest_unreachable",
            RejectCode::FileRefused => "file_refused",
            RejectCode::TooLarge => "too_large",
            RejectCode::ConfigMismatch => "config_mismatch",
            RejectCode::TensorsMismatch => "tensors_mismatch",
            RejectCode::WeightsInvalid => "weights_invalid",
            RejectCode::NearCopy => "near_copy",
            RejectCode::InfraExhausted => "infra_exhausted",
        }
    }

    /// What the code means, in a sentence a miner can act on.
    pub fn explain(self) -> &'static str {
        match self {
            RejectCode::PayloadMalformed => {
                "The commitment is not of the form v4|location|sha256:<64 hex>|hotkey."
            }
            RejectCode::HotkeyUnregistered => {
                "The key that signed the commitment is not registered on this subnet."
            }
            RejectCode::DigestOwned => {
                "This exact checkpoint was already committed by someone earlier; copies are not dueled."
            }
            RejectCode::RevealTooLate => {
                "The commitment was revealed more blocks after the block that included it than the competition's reveal delay allows; a digest belongs to the earliest commit block, so the validator does not wait for later reveals."
            }
            RejectCode::ManifestUnreachable => {
                "The checkpoint could not be fetched from its location, or its files did not hash to the committed digest."
            }
            RejectCode::FileRefused => {
                "The checkpoint contains a file that is not allowed (only config, safetensors, index and tokenizer files are)."
            }
            RejectCode::TooLarge => "The checkpoint is larger than the competition's size cap.",
            RejectCode::ConfigMismatch => {
                "config.json differs from the king's on a locked architecture key."
            }
            RejectCode::TensorsMismatch => {
                "The tensors differ from the king's in name, shape or dtype, or a safetensors header is malformed."
            }
            RejectCode::WeightsInvalid => {
                "The weights contain NaN/Inf or norm scales far outside the king's."
            }
            RejectCode::NearCopy => {
                "The model behaves almost exactly like an earlier submission or king."
            }
            RejectCode::InfraExhausted => {
                "The validator's own side (its disk, worker or a trusted store) failed on this entry too many times; nothing was found wrong with the checkpoint, and it may be committed again."
            }
        }
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_serialize_as_themselves() {
        for c in RejectCode::ALL {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.code()));
            assert!(!c.explain().is_empty());
        }
    }
}
