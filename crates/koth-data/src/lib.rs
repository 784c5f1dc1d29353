//! koth's data: what a duel is scored on, and how a miner makes training data.
//!
//! - [`tokenizer`]: Hugging Face `tokenizer.json` files, the built-in GPT-2 (tiktoken's r50k)
//!   and byte-level BPE training; every tokenizer has an [`TokenizerIdentity`] (name, sha256,
//!   vocabulary size, EOS id) recorded in every manifest.
//! - [`ingest`]: text files, folders and JSONL → 1-D little-endian `uint32` `.npy` shards plus a
//!   [`SourceManifest`] that lists each shard's path, token count and sha256.
//! - [`bundle`]: weighted sources, each pinned by its manifest's sha256; the bundle's own sha256
//!   is what a competition file pins.
//! - [`alloc`] and [`sampler`]: pure functions from (shard lengths, weights, seed material) to a
//!   list of windows and its [`SampleDigest`]: identical on every machine.
//! - [`shard`] and [`dataset`]: reading shards, verified against their manifest hash before
//!   first use; gathering a window's tokens.
//! - [`holdout`]: the root hash a validator publishes before scoring on private sources.

pub mod alloc;
pub mod bundle;
pub mod dataset;
pub mod error;
pub mod holdout;
pub mod ingest;
pub mod manifest;
pub mod sampler;
pub mod shard;
pub mod tokenizer;

pub use bundle::{Bundle, BundleSource};
pub use dataset::Dataset;
pub use error::DataError;
pub use manifest::{ShardEntry, SourceManifest};
pub use sampler::{Sample, SampleDigest, SampleRequest, SamplerShard, SamplerSource, Window};
pub use tokenizer::{Tokenizer, TokenizerIdentity};
