//! The one error type of the store. Every variant names the thing that was wrong (the file, the
//! digest, the location) and, for integrity failures, what was expected and what was found.

use std::path::PathBuf;

use koth_core::checkpoint::{FileRefusal, ManifestError};
use koth_core::{Digest, RejectCode};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("location {location:?} is invalid: {reason} (expected file:///absolute/path or s3://bucket/prefix)")]
    BadLocation { location: String, reason: String },
    // The cause is part of the message and deliberately not exposed as `source()`: object_store
    // errors already embed their own causes, and a chain printer would repeat them.
    #[error("{context}: {error}")]
    Io {
        context: String,
        error: std::io::Error,
    },
    #[error("{context}: {error}")]
    Backend {
        context: String,
        error: object_store::Error,
    },
    #[error("checkpoint {digest} was not found in {location} (no manifest under that digest)")]
    ManifestNotFound { digest: Digest, location: String },
    #[error("the manifest stored under {digest} hashes to {actual}: it is not that checkpoint's manifest; refused")]
    ManifestMismatch { digest: Digest, actual: Digest },
    #[error("manifest {digest} is refused: {error}")]
    ManifestInvalid {
        digest: Digest,
        error: ManifestError,
    },
    #[error("manifest {digest} is larger than {max} bytes; refused")]
    ManifestTooLarge { digest: Digest, max: u64 },
    #[error("file {path:?} is refused: {reason}")]
    FileRefused { path: String, reason: FileRefusal },
    #[error("checkpoint is {total} bytes, over the size cap of {cap} bytes")]
    TooLarge { total: u64, cap: u64 },
    #[error("file {path:?}: its blob {sha256} is missing from {location}")]
    BlobMissing {
        path: String,
        sha256: Digest,
        location: String,
    },
    /// An object of the store that is there but is not a regular file: a symlink, a directory,
    /// a FIFO or a device (refused from its type, never opened for reading or waited on), or a
    /// name that resolves outside the store's root.
    #[error("{key} in {location} is not a regular file inside the store (a symlink, directory, FIFO or device); refused")]
    NotRegularFile { key: String, location: String },
    /// An object the store holds but refuses to give us (permissions on a file store, 403 or
    /// 401 on a bucket): the submitter chose a location we cannot read.
    #[error("{key} in {location} cannot be read: {reason}")]
    Unreadable {
        key: String,
        location: String,
        reason: String,
    },
    /// The stored blob's own size (from the file's metadata, or the object's size on a bucket)
    /// is not the manifest's: the upload is wrong, whatever the network does.
    #[error(
        "file {path:?}: its blob in {location} is {actual} bytes, the manifest says {expected}"
    )]
    BlobWrongSize {
        path: String,
        expected: u64,
        actual: u64,
        location: String,
    },
    #[error("file {path:?}: the store sent more than the {expected} bytes the manifest says; download aborted")]
    BlobTooLong { path: String, expected: u64 },
    #[error("file {path:?}: the store's stream ended after {received} of {expected} bytes")]
    BlobTruncated {
        path: String,
        expected: u64,
        received: u64,
    },
    #[error("file {path:?}: content hashes to {actual} but the manifest says {expected}; refused")]
    BlobMismatch {
        path: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("source file {path} changed while it was being stored (hashed {expected}, then read {actual}); nothing was stored under the changed content")]
    SourceChanged {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
    },
    #[error("source directory {path}: {reason}")]
    BadSource { path: PathBuf, reason: String },
    #[error("output {path} already exists and is not checkpoint {digest}: {reason}; it was left untouched")]
    OutputExists {
        path: PathBuf,
        digest: Digest,
        reason: String,
    },
    /// An operation ran past its deadline ([`crate::BlockingStore::with_deadline`]): a slow
    /// store or network. Ours (retried), never the submission's verdict.
    #[error("{operation}: gave up after {limit:?}")]
    TimedOut {
        operation: String,
        limit: std::time::Duration,
    },
    #[error("another process is already downloading into {path}")]
    Busy { path: PathBuf },
    #[error("gc refused: manifest {digest} could not be read ({reason}); deleting blobs without knowing all references could lose data")]
    GcUnsafe { digest: Digest, reason: String },
    #[error("cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
    #[error("internal task failed: {0}")]
    Task(String),
    /// A durable local write (manifest, blob, cache state) failed; names the file and the step.
    #[error(transparent)]
    Write(#[from] koth_core::fsutil::WriteError),
}

impl StoreError {
    /// The gate code (PROTOCOL §5) when the error is the submission's own fault, or `None` when it
    /// is an infrastructure fault (network, disk, a dropped stream, a lock) that must be retried
    /// and never cost the miner the submission.
    pub fn reject_code(&self) -> Option<RejectCode> {
        match self {
            StoreError::FileRefused { .. } => Some(RejectCode::FileRefused),
            StoreError::TooLarge { .. } => Some(RejectCode::TooLarge),
            StoreError::ManifestNotFound { .. }
            | StoreError::ManifestMismatch { .. }
            | StoreError::ManifestInvalid { .. }
            | StoreError::ManifestTooLarge { .. }
            | StoreError::BlobMissing { .. }
            | StoreError::BlobTooLong { .. }
            | StoreError::BlobWrongSize { .. }
            | StoreError::NotRegularFile { .. }
            | StoreError::Unreadable { .. }
            | StoreError::BlobMismatch { .. } => Some(RejectCode::ManifestUnreachable),
            // A short stream from a blob whose stored size is right may be a dropped connection:
            // the next get resumes it. (A local blob that reads short is `BlobWrongSize`.)
            StoreError::BlobTruncated { .. }
            | StoreError::BadLocation { .. }
            | StoreError::Io { .. }
            | StoreError::Backend { .. }
            | StoreError::SourceChanged { .. }
            | StoreError::BadSource { .. }
            | StoreError::OutputExists { .. }
            | StoreError::Busy { .. }
            | StoreError::TimedOut { .. }
            | StoreError::GcUnsafe { .. }
            | StoreError::Cache { .. }
            | StoreError::Task(_)
            | StoreError::Write(_) => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            error: source,
        }
    }
    pub(crate) fn backend(context: impl Into<String>, source: object_store::Error) -> Self {
        StoreError::Backend {
            context: context.into(),
            error: source,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submission_faults_have_codes_and_infrastructure_faults_do_not() {
        let d = Digest::of(b"x");
        let refused = StoreError::FileRefused {
            path: "a.py".into(),
            reason: FileRefusal::Executable,
        };
        assert_eq!(refused.reject_code(), Some(RejectCode::FileRefused));
        let big = StoreError::TooLarge { total: 2, cap: 1 };
        assert_eq!(big.reject_code(), Some(RejectCode::TooLarge));
        let swapped = StoreError::ManifestMismatch {
            digest: d,
            actual: d,
        };
        assert_eq!(swapped.reject_code(), Some(RejectCode::ManifestUnreachable));
        let io = StoreError::io("reading x", std::io::Error::other("disk"));
        assert_eq!(io.reject_code(), None);
        let short = StoreError::BlobTruncated {
            path: "m.safetensors".into(),
            expected: 2,
            received: 1,
        };
        assert_eq!(short.reject_code(), None);
    }
}
