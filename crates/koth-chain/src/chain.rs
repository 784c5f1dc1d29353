//! The `Chain` trait: what every part of a koth network needs from a chain. The embedded
//! SQLite ledger implements it today; a subtensor client will implement it for production.

use koth_core::Digest;

use crate::error::ChainError;
use crate::extrinsic::{Call, SignedExtrinsic};
use crate::keys::{AccountId, Keypair};
use crate::types::{
    BlockRef, ChainParams, EmissionEntry, Metagraph, Receipt, Reveal, ValidatorWeights,
};
use crate::weights::normalize_weights;

/// A chain with Bittensor's semantics, for one subnet.
///
/// Reads see the chain as of its latest *sealed* block ([`Chain::block`]); writes are signed
/// extrinsics that the chain verifies and includes in the next block. The trait is object safe
/// (`Box<dyn Chain>`), and every method is synchronous.
pub trait Chain: Send + Sync {
    /// The chain's fixed parameters.
    fn params(&self) -> &ChainParams;

    /// The latest sealed block: its number and hash. Its hash is final and can seed randomness;
    /// new extrinsics go into the block after it.
    fn block(&self) -> Result<BlockRef, ChainError>;

    /// The hash of sealed block `number`, or `None` if that block is not sealed yet.
    fn block_hash(&self, number: u64) -> Result<Option<Digest>, ChainError>;

    /// The nonce the next extrinsic signed by `account` must carry.
    fn nonce(&self, account: &AccountId) -> Result<u64, ChainError>;

    /// Verify and include an already signed extrinsic (a forged, replayed or otherwise refused
    /// one is an error and changes nothing).
    fn submit(&self, extrinsic: &SignedExtrinsic) -> Result<Receipt, ChainError>;

    /// Sign `call` with `signer` at its current nonce, then verify and include it atomically
    /// (no other writer can take the nonce in between).
    fn sign_and_submit(&self, signer: &Keypair, call: Call) -> Result<Receipt, ChainError>;

    /// Revealed commitments, the newest per hotkey (by commit block), sorted by uid. Payloads
    /// whose reveal block is not yet sealed are never returned by any method.
    fn revealed_commitments(&self) -> Result<Vec<Reveal>, ChainError>;

    /// Every revealed commitment with reveal block > `after_block`, in chain order
    /// (reveal block, then commit block, then position): what a validator polls to learn, for
    /// example, which commitment of a digest came first.
    fn revealed_since(&self, after_block: u64) -> Result<Vec<Reveal>, ChainError>;

    /// The latest weights of every validator that has set any, sorted by validator uid.
    fn weights(&self) -> Result<Vec<ValidatorWeights>, ChainError>;

    /// Registered hotkeys, coldkeys and validator permits as of the latest sealed block's read.
    fn metagraph(&self) -> Result<Metagraph, ChainError>;

    /// Emission accrued per registered hotkey up to the latest sealed block, sorted by uid.
    fn emission(&self) -> Result<Vec<EmissionEntry>, ChainError>;

    /// Register `hotkey` (it signs) as owned by `coldkey`.
    fn register(&self, hotkey: &Keypair, coldkey: &AccountId) -> Result<Receipt, ChainError> {
        self.sign_and_submit(hotkey, Call::Register { coldkey: *coldkey })
    }

    /// The subnet owner grants a validator permit to a registered hotkey.
    fn grant_validator_permit(
        &self,
        owner: &Keypair,
        hotkey: &AccountId,
    ) -> Result<Receipt, ChainError> {
        self.sign_and_submit(owner, Call::GrantValidatorPermit { hotkey: *hotkey })
    }

    /// Commit `payload` from a registered hotkey; it is revealed `reveal_delay` blocks later.
    fn commit(&self, hotkey: &Keypair, payload: &str) -> Result<Receipt, ChainError> {
        self.sign_and_submit(
            hotkey,
            Call::Commit {
                payload: payload.to_string(),
            },
        )
    }

    /// Set weights from float values, converted to u16 as the Bittensor SDK does
    /// ([`normalize_weights`]); the signer must hold a validator permit.
    fn set_weights(
        &self,
        validator: &Keypair,
        weights: &[(u16, f64)],
    ) -> Result<Receipt, ChainError> {
        let weights = normalize_weights(weights)?;
        self.sign_and_submit(validator, Call::SetWeights { weights })
    }
}
