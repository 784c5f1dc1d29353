//! The one error type of the crate: every variant names the file, shard or source it is about
//! and what was expected, so a stranger's bad data produces a sentence, not a panic.

use std::path::PathBuf;

use koth_core::{Digest, NpyError};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid JSON for {what}: {source}")]
    Json {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("shard {path}: {source}")]
    Npy {
        path: PathBuf,
        #[source]
        source: NpyError,
    },
    #[error(
        "shard {path}: sha256 mismatch: the manifest expects {expected} but the file hashes to \
         {actual}; refusing to use it"
    )]
    ShardHash {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
    },
    #[error("shard {path}: {reason}")]
    ShardFormat { path: PathBuf, reason: String },
    #[error(
        "shard {path}: token id {id} at position {position} is outside the tokenizer's vocabulary \
         (vocab size {vocab_size})"
    )]
    TokenOutOfVocab {
        path: PathBuf,
        id: u32,
        position: u64,
        vocab_size: u32,
    },
    #[error(
        "manifest {path}: sha256 mismatch: the bundle expects {expected} but the file hashes to \
         {actual}"
    )]
    ManifestHash {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("tokenizer {name}: {reason}")]
    Tokenizer { name: String, reason: String },
    #[error("input {path}: {reason}")]
    Input { path: PathBuf, reason: String },
    #[error("output {path} already exists; refusing to overwrite it")]
    OutputExists { path: PathBuf },
    #[error("sampling: {0}")]
    Sample(String),
    #[error("bundle: {0}")]
    Bundle(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn invalid(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        DataError::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;
