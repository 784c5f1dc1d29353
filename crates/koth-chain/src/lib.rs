//! koth's chain: who is registered, who committed what and when, each block's public
//! randomness, and the weights — with Bittensor's semantics.
//!
//! - [`Chain`]: the trait every process uses (validator, miners, dashboard).
//! - [`EmbeddedChain`]: the default, a ledger in one SQLite file shared by the processes of one
//!   host, with blocks at a fixed interval derived from the wall clock (no producer process).
//! - [`keys`]: sr25519 keys and SS58 addresses as Substrate makes them; [`keystore`]: named
//!   keys on disk; [`import`]: keys from Bittensor wallet files and mnemonics.
//! - [`rules`]: the pure state transition (state, signed extrinsic) → effect or refusal.
//! - [`weights`]: Bittensor's u16 weight normalization and the emission split.
//!
//! See docs/CHAIN.md for the semantics and how they compare with Bittensor's.

pub mod chain;
pub mod duration;
pub mod embedded;
pub mod error;
pub mod extrinsic;
pub mod import;
pub mod keys;
pub mod keystore;
mod replay;
pub mod rules;
pub mod types;
pub mod weights;

pub use chain::Chain;
pub use duration::parse_duration;
pub use embedded::{Clock, EmbeddedChain, InitParams, ManualClock, SystemClock, VerifyReport};
pub use error::ChainError;
pub use extrinsic::{Call, SignedExtrinsic, MAX_PAYLOAD_BYTES};
pub use keys::{AccountId, AddressError, Keypair};
pub use keystore::{KeyInfo, Keystore, KeystoreError};
pub use rules::ExtrinsicError;
pub use types::{
    BlockRef, ChainParams, EmissionEntry, Metagraph, Neuron, Receipt, Reveal, ValidatorWeights,
    RAO_PER_TOKEN,
};
pub use weights::{normalize_weights, WeightsError};
