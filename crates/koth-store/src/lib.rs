//! koth's content-addressed checkpoint store (PROTOCOL §3).
//!
//! A checkpoint is named by its digest: the sha256 of its canonical manifest
//! ([`koth_core::checkpoint`]). Nothing is fetched by a name that can change: `get` starts from a
//! digest, checks that the stored manifest hashes to it, applies the file policy and the size
//! cap, and checks every file's size and hash while streaming; the output appears only once all
//! of it is verified.
//!
//! Backends: a local directory (default) and any S3-compatible store, with one layout:
//! `blobs/sha256/<hex>` and `manifests/sha256/<hex>.json`. See docs/STORE.md.

pub mod backend;
pub mod cache;
pub mod error;
pub mod hash;
pub mod location;
pub mod store;

pub use backend::{BlobInfo, MAX_MANIFEST_BYTES};
pub use cache::{CacheEntry, CheckpointCache};
pub use error::StoreError;
pub use hash::{hash_file, list_checkpoint_files, manifest_of_dir};
pub use location::{Location, S3Options};
pub use store::{
    fetch_deadline, BlockingStore, GcOptions, GcReport, GetOptions, GetReport, ListEntry,
    PutReport, Store, TransferOptions, VerifyReport, DEFAULT_MAX_TOTAL_BYTES,
};
