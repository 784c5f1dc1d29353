//! koth on Bittensor: [`SubtensorChain`] implements koth-chain's `Chain` against a subtensor
//! node over JSON-RPC.
//!
//! - [`metadata`]: the chain's runtime metadata (live, or the pinned file the tests use).
//! - [`calls`]: the calls koth makes (set_commitment, set_weights,
//!   commit_timelocked_mechanism_weights), encoded against the metadata with subxt's dynamic API.
//! - [`tx`]: signing payloads and signed extrinsics, byte-equal to Bittensor's Python SDK.
//! - [`rpc`]: a blocking JSON-RPC client for a node's HTTP(S) endpoint.
//! - [`SubtensorChain`]: reads (reveals, metagraph, weights, finalized blocks) and writes.
//! - [`spec`]: the `[chain]` config section shared by the validator and the miner.
//! - [`loopback`]: starts the loopback node (a subtensor test double) for tests and trials.
//!
//! Timelock encryption and drand rounds live in koth-timelock.

pub mod calls;
pub mod chain;
pub mod loopback;
pub mod metadata;
pub mod rpc;
pub mod spec;
pub mod storage;
pub mod tx;

pub use chain::{CommitmentMode, DrandConfig, SubtensorChain, SubtensorConfig};
pub use spec::{ChainKind, ChainSection, ChainTarget, SpecError};
