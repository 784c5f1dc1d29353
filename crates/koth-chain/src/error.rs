//! Errors of the chain.

use std::path::PathBuf;

use crate::rules::ExtrinsicError;
use crate::weights::WeightsError;

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("no chain file at {path}: create one with `koth chain init --path {path}`", path = .path.display())]
    Missing { path: PathBuf },
    #[error("{path} already exists; refusing to initialize over it (a chain file is never re-initialized; pick another path)", path = .path.display())]
    AlreadyExists { path: PathBuf },
    #[error("{path} is not a koth chain file: {reason}", path = .path.display())]
    NotAChain { path: PathBuf, reason: String },
    #[error("chain file {path} is corrupt: {reason}", path = .path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("chain file {path} has schema version {found}; this build of koth reads version {expected}", path = .path.display())]
    SchemaVersion {
        path: PathBuf,
        found: i64,
        expected: i64,
    },
    #[error("chain file {path}: {what}: {source}", path = .path.display())]
    Sqlite {
        path: PathBuf,
        what: &'static str,
        // Boxed, like the refusal below, to keep `ChainError` small for callers that embed it.
        #[source]
        source: Box<rusqlite::Error>,
    },
    #[error("chain file {path}: {what}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid chain parameter: {0}")]
    BadParams(String),
    // No `#[source]`: the message already carries the cause, and a source would make
    // anyhow's `{:#}` print it twice.
    #[error("extrinsic refused: {0}")]
    Rejected(Box<ExtrinsicError>),
    #[error("invalid weights: {0}")]
    Weights(WeightsError),
    /// A remote chain (a subtensor node) could not be reached or answered unexpectedly; the
    /// call may succeed when retried later.
    #[error("chain node {endpoint}: {message}")]
    Node { endpoint: String, message: String },
    /// A remote chain refused an extrinsic (invalid transaction, or its dispatch failed).
    #[error("chain node {endpoint} refused {call}: {reason}")]
    Refused {
        endpoint: String,
        call: String,
        reason: String,
    },
    /// The operation has no counterpart on this kind of chain.
    #[error("{what} is not supported on {chain}: {hint}")]
    Unsupported {
        what: String,
        chain: &'static str,
        hint: String,
    },
}

impl From<ExtrinsicError> for ChainError {
    fn from(e: ExtrinsicError) -> Self {
        ChainError::Rejected(Box::new(e))
    }
}

impl From<WeightsError> for ChainError {
    fn from(e: WeightsError) -> Self {
        ChainError::Weights(e)
    }
}

impl ChainError {
    /// The refusal, if the chain refused an extrinsic by its rules.
    pub fn rejection(&self) -> Option<&ExtrinsicError> {
        match self {
            ChainError::Rejected(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}
