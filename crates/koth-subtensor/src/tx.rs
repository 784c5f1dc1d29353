//! Signing payloads and signed (v4) extrinsics for subtensor, built from the chain's metadata
//! with subxt-core's transaction-extension machinery, byte-equal to Bittensor's Python SDK
//! (tests/reference_calls.rs).
//!
//! Subtensor's runtime lists these transaction extensions: CheckNonZeroSender, CheckSpecVersion,
//! CheckTxVersion, CheckGenesis, CheckMortality, CheckNonce, CheckWeight,
//! ChargeTransactionPayment, SubtensorTransactionExtension, DrandPriority, CheckMetadataHash.
//! The ones that put bytes in an extrinsic or its signing payload are encoded by subxt-core, in
//! the metadata's order: era, compact nonce, compact tip and the metadata-hash mode (always
//! disabled) in the extrinsic; spec version, transaction version, genesis hash, the era's block
//! hash and `None` (no metadata hash) in the payload only. The others (subtensor's own included)
//! must encode to nothing, in the extrinsic and in the payload; [`check_extensions`] refuses a
//! runtime where one of them does not, rather than sign something the chain would read
//! differently.

use koth_chain::Keypair;
use subxt_core::config::substrate::BlakeTwo256;
use subxt_core::config::{DefaultExtrinsicParamsBuilder, Hasher, SubstrateConfig};
use subxt_core::ext::scale_value;
use subxt_core::tx::payload::Payload;
use subxt_core::tx::{ClientState, RuntimeVersion};
use subxt_core::utils::{AccountId32, MultiSignature, H256};

use crate::metadata::Metadata;

/// The transaction extensions subxt-core knows how to fill in (and that have data on subtensor).
pub const KNOWN_EXTENSIONS: [&str; 8] = [
    "CheckSpecVersion",
    "CheckTxVersion",
    "CheckNonce",
    "CheckGenesis",
    "CheckMortality",
    "ChargeAssetTxPayment",
    "ChargeTransactionPayment",
    "CheckMetadataHash",
];

/// How long a transaction stays valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// Valid forever (signs the genesis hash as the era's block hash).
    Immortal,
    /// Valid for `period` blocks (rounded up to a power of two in 4..=65536) from the era's
    /// birth block. `current` is the block the era is computed from (Bittensor's SDK takes the
    /// finalized head); `block_hash` must be the hash of block [`Era::birth`], which is
    /// `current` itself whenever the period is at most 4096.
    Mortal {
        period: u64,
        current: u64,
        block_hash: [u8; 32],
    },
}

impl Era {
    /// The block whose hash a mortal era signs (Substrate's `Era::birth`); `None` if immortal.
    pub fn birth(&self) -> Option<u64> {
        match *self {
            Era::Immortal => None,
            Era::Mortal {
                period, current, ..
            } => match subxt_core::utils::Era::mortal(period, current) {
                subxt_core::utils::Era::Mortal { period, phase } => {
                    Some((current.max(phase) - phase) / period * period + phase)
                }
                subxt_core::utils::Era::Immortal => None,
            },
        }
    }
}

/// What a transaction is signed for, besides its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxParams {
    /// The chain's genesis block hash.
    pub genesis_hash: [u8; 32],
    /// The runtime's spec version and transaction version (`state_getRuntimeVersion`).
    pub spec_version: u32,
    pub transaction_version: u32,
    /// The signer's account nonce.
    pub nonce: u64,
    pub era: Era,
    /// Tip to the block author, in rao.
    pub tip: u128,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TxError {
    #[error("runtime metadata supports extrinsic versions {supported:?}; koth signs version 4")]
    NoV4 { supported: Vec<u8> },
    #[error(
        "runtime transaction extension {identifier} carries data (extrinsic part {extra_empty}, payload part {implicit_empty}); koth only knows how to fill in {KNOWN_EXTENSIONS:?} and expects every other extension to be empty"
    )]
    UnsupportedExtension {
        identifier: String,
        extra_empty: &'static str,
        implicit_empty: &'static str,
    },
    #[error("runtime transaction extension {identifier}: type {type_id} is not in the metadata's type registry")]
    UnknownExtensionType { identifier: String, type_id: u32 },
    #[error("building the transaction's extensions from the metadata: {0}")]
    Extensions(String),
}

/// `type_id` encodes to no bytes at all (a unit, an empty composite or tuple, ...): it decodes
/// from an empty input.
fn is_empty_type(metadata: &Metadata, type_id: u32) -> bool {
    let mut input: &[u8] = &[];
    scale_value::scale::decode_as_type(&mut input, type_id, metadata.types()).is_ok()
}

fn describe(empty: bool) -> &'static str {
    if empty {
        "empty"
    } else {
        "not empty"
    }
}

/// The runtime signs v4 extrinsics, and every transaction extension subxt-core does not fill
/// in encodes to nothing, both in the extrinsic and in the signing payload.
pub fn check_extensions(metadata: &Metadata) -> Result<(), TxError> {
    let extrinsic = metadata.extrinsic();
    if !extrinsic.supported_versions().contains(&4) {
        return Err(TxError::NoV4 {
            supported: extrinsic.supported_versions().to_vec(),
        });
    }
    for ext in extrinsic.transaction_extensions_to_use_for_encoding() {
        if KNOWN_EXTENSIONS.contains(&ext.identifier()) {
            continue;
        }
        for type_id in [ext.extra_ty(), ext.additional_ty()] {
            if metadata.types().resolve(type_id).is_none() {
                return Err(TxError::UnknownExtensionType {
                    identifier: ext.identifier().to_string(),
                    type_id,
                });
            }
        }
        let extra = is_empty_type(metadata, ext.extra_ty());
        let implicit = is_empty_type(metadata, ext.additional_ty());
        if !(extra && implicit) {
            return Err(TxError::UnsupportedExtension {
                identifier: ext.identifier().to_string(),
                extra_empty: describe(extra),
                implicit_empty: describe(implicit),
            });
        }
    }
    Ok(())
}

/// Call bytes already encoded (by [`crate::calls::encode_call`]), handed to subxt-core as is.
struct EncodedCall<'a>(&'a [u8]);

impl Payload for EncodedCall<'_> {
    fn encode_call_data_to(
        &self,
        _metadata: &subxt_core::Metadata,
        out: &mut Vec<u8>,
    ) -> Result<(), subxt_core::Error> {
        out.extend_from_slice(self.0);
        Ok(())
    }
}

fn partial(
    metadata: &Metadata,
    call: &[u8],
    params: &TxParams,
) -> Result<subxt_core::tx::PartialTransactionV4<SubstrateConfig>, TxError> {
    check_extensions(metadata)?;
    let state = ClientState::<SubstrateConfig> {
        genesis_hash: H256(params.genesis_hash),
        runtime_version: RuntimeVersion {
            spec_version: params.spec_version,
            transaction_version: params.transaction_version,
        },
        metadata: metadata.clone(),
    };
    let builder = DefaultExtrinsicParamsBuilder::<SubstrateConfig>::new()
        .nonce(params.nonce)
        .tip(params.tip);
    let builder = match params.era {
        Era::Immortal => builder.immortal(),
        Era::Mortal {
            period,
            current,
            block_hash,
        } => builder.mortal_from_unchecked(period, current, H256(block_hash)),
    };
    subxt_core::tx::create_v4_signed(&EncodedCall(call), &state, builder.build())
        .map_err(|e| TxError::Extensions(e.to_string()))
}

/// The bytes a v4 extrinsic's signer signs: call ‖ extensions' extrinsic data ‖ extensions'
/// payload-only data, replaced by its blake2-256 when longer than 256 bytes.
pub fn signing_payload(
    metadata: &Metadata,
    call: &[u8],
    params: &TxParams,
) -> Result<Vec<u8>, TxError> {
    Ok(partial(metadata, call, params)?.signer_payload())
}

/// A signed v4 extrinsic, ready for `author_submitExtrinsic`: compact length, 0x84, the signer
/// as `MultiAddress::Id`, `MultiSignature::Sr25519`, the extensions' data, the call.
pub fn signed_extrinsic(
    metadata: &Metadata,
    call: &[u8],
    params: &TxParams,
    signer: &Keypair,
) -> Result<Vec<u8>, TxError> {
    let partial = partial(metadata, call, params)?;
    let signature = signer.sign(&partial.signer_payload());
    let account = AccountId32(*signer.account().as_bytes());
    Ok(partial
        .sign_with_account_and_signature(account, &MultiSignature::Sr25519(signature))
        .into_encoded())
}

/// An extrinsic's hash, as nodes report it: blake2-256 of its bytes.
pub fn extrinsic_hash(extrinsic: &[u8]) -> [u8; 32] {
    BlakeTwo256.hash(extrinsic).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn birth_matches_substrate() {
        let hash = [0; 32];
        let era = |period, current| Era::Mortal {
            period,
            current,
            block_hash: hash,
        };
        assert_eq!(Era::Immortal.birth(), None);
        // Periods up to 4096: the birth is the current block.
        assert_eq!(era(128, 5_123_499).birth(), Some(5_123_499));
        assert_eq!(era(100, 1_000).birth(), Some(1_000));
        // 8192 quantizes the phase by 2: an odd block is born one block earlier.
        assert_eq!(era(8192, 1_000_001).birth(), Some(1_000_000));
    }

    #[test]
    fn extrinsic_hash_is_blake2_256() {
        // blake2-256 of the empty string.
        assert_eq!(
            hex::encode(extrinsic_hash(b"")),
            "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"
        );
    }
}
