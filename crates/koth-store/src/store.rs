//! put, get, verify, ls and gc over either backend.
//!
//! `get` trusts nothing but the digest it is asked for: the manifest must hash to it, the
//! manifest must pass the file policy and the size cap, every blob must have the manifest's size
//! (checked before and while streaming) and hash, and the output directory appears only once
//! every file has been verified.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use koth_core::checkpoint::{CheckpointManifest, FileEntry};
use koth_core::{Digest, Sha256Writer};
use serde::Serialize;

use crate::backend::{sync_dir, Backend, Upload};
use crate::error::{Result, StoreError};
use crate::hash::{hash_file, hash_files_parallel, hash_reader, list_checkpoint_files};
use crate::location::{Location, S3Options};

/// Tuning for transfers.
#[derive(Debug, Clone)]
pub struct TransferOptions {
    /// Files transferred at once.
    pub parallel_files: usize,
    /// Threads hashing source files on put.
    pub hash_threads: usize,
}

impl Default for TransferOptions {
    fn default() -> Self {
        Self {
            parallel_files: 4,
            hash_threads: crate::hash::default_parallelism(),
        }
    }
}

/// What a `get` accepts.
#[derive(Debug, Clone)]
pub struct GetOptions {
    /// Largest total checkpoint size accepted, checked from the manifest and, per file, again
    /// while streaming.
    pub max_total_bytes: u64,
    /// Optional bandwidth limit for the whole download, in bytes per second.
    pub max_bytes_per_sec: Option<u64>,
}

impl Default for GetOptions {
    fn default() -> Self {
        Self {
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            max_bytes_per_sec: None,
        }
    }
}

/// Default size cap: 512 GiB, above any checkpoint this network expects.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 512 << 30;

/// The wall-clock limit for fetching a checkpoint of up to `size_cap` bytes from a stranger's
/// location ([`BlockingStore::with_deadline`]): two minutes, plus the time to move the whole cap
/// at 8 MiB/s. A store slower than that (one that trickles bytes to hold its caller, or a slow
/// network of ours) times out as an infrastructure fault; the `.part` files stay for the retry.
pub fn fetch_deadline(size_cap: u64) -> Duration {
    Duration::from_secs(120 + size_cap / (8 << 20))
}

#[derive(Debug, Clone, Serialize)]
pub struct PutReport {
    pub digest: Digest,
    pub files: usize,
    pub total_bytes: u64,
    /// Blobs whose bytes were sent.
    pub blobs_uploaded: usize,
    /// Blobs that were already stored and were not sent again.
    pub blobs_already_stored: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct GetReport {
    pub digest: Digest,
    pub out: PathBuf,
    pub files: usize,
    pub total_bytes: u64,
    /// Bytes taken from `.part` files of an earlier interrupted get instead of downloaded.
    pub resumed_bytes: u64,
    /// Bytes received from the store in this run.
    pub downloaded_bytes: u64,
    /// The output already held exactly this checkpoint; nothing was fetched.
    pub already_present: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub digest: Digest,
    pub files: usize,
    pub total_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListEntry {
    pub digest: Digest,
    /// `None` when the manifest could not be read or did not verify; then `problem` says why.
    pub files: Option<usize>,
    pub total_bytes: Option<u64>,
    pub problem: Option<String>,
}

#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Blobs (and local temporaries) younger than this are kept even if unreferenced: a put in
    /// progress has uploaded its blobs but not yet its manifest.
    pub min_age: Duration,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    pub manifests: usize,
    pub blobs_kept: usize,
    pub blobs_deleted: Vec<Digest>,
    pub bytes_freed: u64,
    pub temporaries_removed: usize,
    pub dry_run: bool,
}

/// A checkpoint store at one location (async API; see [`BlockingStore`] for a blocking one).
pub struct Store {
    backend: Arc<Backend>,
    transfer: TransferOptions,
}

impl Store {
    pub fn open(location: &Location, s3: &S3Options) -> Result<Self> {
        Ok(Self {
            backend: Arc::new(Backend::open(location, s3)?),
            transfer: TransferOptions::default(),
        })
    }

    pub fn with_transfer_options(mut self, transfer: TransferOptions) -> Self {
        self.transfer = transfer;
        self
    }

    /// The location, as `file://…` or `s3://…`.
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// Store the checkpoint in `dir`. Every file is checked against the policy first; blobs
    /// already stored are not sent again; the manifest is written last, so a stored manifest
    /// always has all its blobs.
    pub async fn put(&self, dir: &Path) -> Result<PutReport> {
        let dir_owned = dir.to_path_buf();
        let threads = self.transfer.hash_threads;
        let (files, manifest) = tokio::task::spawn_blocking(move || {
            let files = list_checkpoint_files(&dir_owned)?;
            let entries = hash_files_parallel(&files, threads)?;
            let manifest = CheckpointManifest::new(entries).map_err(|e| StoreError::BadSource {
                path: dir_owned.clone(),
                reason: e.to_string(),
            })?;
            Ok::<_, StoreError>((files, manifest))
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;

        let digest = manifest.digest();
        let uploads: Vec<(PathBuf, FileEntry)> = manifest
            .files()
            .iter()
            .filter_map(|entry| {
                files
                    .iter()
                    .find(|(name, _)| *name == entry.path)
                    .map(|(_, path)| (path.clone(), entry.clone()))
            })
            .collect();
        let results: Vec<Result<Upload>> = futures::stream::iter(uploads)
            .map(|(path, entry)| {
                let backend = self.backend.clone();
                async move {
                    let r = backend.upload_blob(&path, &entry).await;
                    tracing::debug!(file = %entry.path, result = ?r.as_ref().ok(), "blob");
                    r
                }
            })
            .buffer_unordered(self.transfer.parallel_files.max(1))
            .collect()
            .await;
        let mut uploaded = 0;
        let mut already = 0;
        for r in results {
            match r? {
                Upload::Sent => uploaded += 1,
                Upload::AlreadyStored => already += 1,
            }
        }
        let canonical = manifest.canonical_bytes();
        let existing = self.backend.read_manifest(&digest).await?;
        if existing.as_deref() != Some(canonical.as_slice()) {
            self.backend.write_manifest(&digest, canonical).await?;
        }
        let total_bytes = manifest
            .total_size()
            .map_err(|e| StoreError::ManifestInvalid { digest, error: e })?;
        Ok(PutReport {
            digest,
            files: manifest.files().len(),
            total_bytes,
            blobs_uploaded: uploaded,
            blobs_already_stored: already,
        })
    }

    /// Fetch the manifest of `digest`, verify it hashes to `digest`, is canonical, passes the
    /// file policy and fits under `max_total_bytes`.
    pub async fn fetch_manifest(
        &self,
        digest: &Digest,
        max_total_bytes: u64,
    ) -> Result<CheckpointManifest> {
        let bytes = self.backend.read_manifest(digest).await?.ok_or_else(|| {
            StoreError::ManifestNotFound {
                digest: *digest,
                location: self.backend.describe(),
            }
        })?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(StoreError::ManifestMismatch {
                digest: *digest,
                actual,
            });
        }
        let manifest = CheckpointManifest::from_canonical_bytes(&bytes).map_err(|error| {
            StoreError::ManifestInvalid {
                digest: *digest,
                error,
            }
        })?;
        manifest
            .check_policy()
            .map_err(|(path, reason)| StoreError::FileRefused { path, reason })?;
        let total = manifest
            .total_size()
            .map_err(|error| StoreError::ManifestInvalid {
                digest: *digest,
                error,
            })?;
        if total > max_total_bytes {
            return Err(StoreError::TooLarge {
                total,
                cap: max_total_bytes,
            });
        }
        Ok(manifest)
    }

    /// Download checkpoint `digest` into directory `out`.
    ///
    /// Files are fetched in parallel into a staging directory beside `out`
    /// (`.<name>.koth-partial-<hex16>`), each into `<path>.part` and renamed once its size and
    /// hash check out; the staging directory is renamed to `out` only when all files are in.
    /// An interrupted get leaves the staging directory behind, and the next get of the same
    /// digest to the same `out` resumes every `.part` from its length. An existing `out` is
    /// never overwritten: if it already holds exactly this checkpoint the get succeeds without
    /// fetching, otherwise it fails.
    pub async fn get(&self, digest: &Digest, out: &Path, opts: &GetOptions) -> Result<GetReport> {
        let manifest = self.fetch_manifest(digest, opts.max_total_bytes).await?;
        let total_bytes = manifest.total_size().unwrap_or(0);
        let report = GetReport {
            digest: *digest,
            out: out.to_path_buf(),
            files: manifest.files().len(),
            total_bytes,
            resumed_bytes: 0,
            downloaded_bytes: 0,
            already_present: false,
        };
        {
            let (out, manifest, digest) = (out.to_path_buf(), manifest.clone(), *digest);
            let present =
                tokio::task::spawn_blocking(move || existing_output(&out, digest, &manifest))
                    .await
                    .map_err(|e| StoreError::Task(e.to_string()))??;
            if present {
                return Ok(GetReport {
                    already_present: true,
                    ..report
                });
            }
        }
        let staging = staging_dir(out, digest)?;
        std::fs::create_dir_all(&staging)
            .map_err(|e| StoreError::io(format!("creating {}", staging.display()), e))?;
        let lock = lock_dir(&staging)?;
        let result = self
            .download_into(&manifest, digest, out, &staging, opts, report)
            .await;
        if let Err(e) = &result {
            // The submission's own fault (a blob missing, of the wrong size or hash, refused):
            // a rerun would fail the same way, so nothing is kept. Ours (a dropped stream, our
            // disk): the .part files stay for the rerun to resume, and the cache counts them.
            if e.reject_code().is_some() {
                drop(lock);
                if let Err(rm) = std::fs::remove_dir_all(&staging) {
                    tracing::warn!(dir = %staging.display(), "removing a failed download: {rm}");
                }
            }
        }
        result
    }

    /// Download every file of `manifest` into `staging`, then publish it as `out`.
    async fn download_into(
        &self,
        manifest: &CheckpointManifest,
        digest: &Digest,
        out: &Path,
        staging: &Path,
        opts: &GetOptions,
        mut report: GetReport,
    ) -> Result<GetReport> {
        let staging = staging.to_path_buf();

        let limiter = opts.max_bytes_per_sec.map(RateLimiter::new).map(Arc::new);
        let results: Vec<Result<(u64, u64)>> = futures::stream::iter(manifest.files().to_vec())
            .map(|entry| {
                let backend = self.backend.clone();
                let staging = staging.clone();
                let limiter = limiter.clone();
                async move { download_file(&backend, &entry, &staging, limiter.as_deref()).await }
            })
            .buffer_unordered(self.transfer.parallel_files.max(1))
            .collect()
            .await;
        for r in results {
            let (resumed, downloaded) = r?;
            report.resumed_bytes += resumed;
            report.downloaded_bytes += downloaded;
        }

        let (out_owned, staging_owned) = (out.to_path_buf(), staging.clone());
        let (manifest_owned, digest_owned) = (manifest.clone(), *digest);
        tokio::task::spawn_blocking(move || {
            publish_staging(&staging_owned, &out_owned, &manifest_owned, digest_owned)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        Ok(report)
    }

    /// Re-read every blob of `digest` from the store and check its size and hash.
    pub async fn verify(&self, digest: &Digest, max_total_bytes: u64) -> Result<VerifyReport> {
        let manifest = self.fetch_manifest(digest, max_total_bytes).await?;
        let results: Vec<Result<()>> = futures::stream::iter(manifest.files().to_vec())
            .map(|entry| {
                let backend = self.backend.clone();
                async move { verify_blob(&backend, &entry).await }
            })
            .buffer_unordered(self.transfer.parallel_files.max(1))
            .collect()
            .await;
        for r in results {
            r?;
        }
        Ok(VerifyReport {
            digest: *digest,
            files: manifest.files().len(),
            total_bytes: manifest.total_size().unwrap_or(0),
        })
    }

    /// Every stored checkpoint with its size; a manifest that does not verify is listed with
    /// the reason instead of being hidden.
    pub async fn list(&self) -> Result<Vec<ListEntry>> {
        let digests = self.backend.list_manifests().await?;
        let mut out = Vec::with_capacity(digests.len());
        for digest in digests {
            match self.fetch_manifest(&digest, u64::MAX).await {
                Ok(m) => out.push(ListEntry {
                    digest,
                    files: Some(m.files().len()),
                    total_bytes: m.total_size().ok(),
                    problem: None,
                }),
                Err(e) => out.push(ListEntry {
                    digest,
                    files: None,
                    total_bytes: None,
                    problem: Some(e.to_string()),
                }),
            }
        }
        Ok(out)
    }

    /// Delete blobs that no manifest references and that are older than `min_age`. Refuses to
    /// delete anything if any manifest cannot be read and verified.
    pub async fn gc(&self, opts: &GcOptions) -> Result<GcReport> {
        let cutoff = SystemTime::now()
            .checked_sub(opts.min_age)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let digests = self.backend.list_manifests().await?;
        let mut referenced = BTreeSet::new();
        for digest in &digests {
            // Policy and size are irrelevant here: gc must know every reference, even of a
            // checkpoint that `get` would refuse.
            let bytes =
                self.backend
                    .read_manifest(digest)
                    .await?
                    .ok_or_else(|| StoreError::GcUnsafe {
                        digest: *digest,
                        reason: "listed but not readable".into(),
                    })?;
            let manifest = (Digest::of(&bytes) == *digest)
                .then(|| CheckpointManifest::from_canonical_bytes(&bytes).ok())
                .flatten()
                .ok_or_else(|| StoreError::GcUnsafe {
                    digest: *digest,
                    reason: "does not hash to its name or is not a canonical manifest".into(),
                })?;
            referenced.extend(manifest.files().iter().map(|f| f.sha256));
        }
        let blobs = self.backend.list_blobs().await?;
        let mut report = GcReport {
            manifests: digests.len(),
            blobs_kept: 0,
            blobs_deleted: Vec::new(),
            bytes_freed: 0,
            temporaries_removed: 0,
            dry_run: opts.dry_run,
        };
        for blob in blobs {
            if referenced.contains(&blob.sha256) || blob.modified > cutoff {
                report.blobs_kept += 1;
                continue;
            }
            if !opts.dry_run {
                self.backend.delete_blob(&blob.sha256).await?;
            }
            report.blobs_deleted.push(blob.sha256);
            report.bytes_freed += blob.size;
        }
        report.temporaries_removed = self
            .backend
            .remove_stale_temporaries(cutoff, opts.dry_run)?
            .len();
        Ok(report)
    }
}

/// `.<out name>.koth-partial-<first 16 hex of digest>` beside `out`: deterministic, so a rerun
/// finds the `.part` files of an interrupted one; hidden, so nothing mistakes it for `out`.
fn staging_dir(out: &Path, digest: &Digest) -> Result<PathBuf> {
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| StoreError::BadSource {
            path: out.to_path_buf(),
            reason: "the output path must end in a UTF-8 directory name".into(),
        })?;
    let hex = digest.hex();
    Ok(out.with_file_name(format!(".{name}.koth-partial-{}", &hex[..16])))
}

/// Whether `out` already holds exactly `manifest`'s files (then nothing needs fetching).
/// Absent or an empty directory: `false`. Anything else: `OutputExists`.
fn existing_output(out: &Path, digest: Digest, manifest: &CheckpointManifest) -> Result<bool> {
    let refuse = |reason: String| StoreError::OutputExists {
        path: out.to_path_buf(),
        digest,
        reason,
    };
    let meta = match std::fs::symlink_metadata(out) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StoreError::io(format!("reading {}", out.display()), e)),
    };
    if !meta.is_dir() {
        return Err(refuse("it is not a directory".into()));
    }
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(out)
        .map_err(|e| StoreError::io(format!("listing {}", out.display()), e))?
    {
        let entry = entry.map_err(|e| StoreError::io(format!("listing {}", out.display()), e))?;
        names.insert(entry.file_name().to_string_lossy().into_owned());
    }
    if names.is_empty() {
        return Ok(false);
    }
    let expected: BTreeSet<String> = manifest.files().iter().map(|f| f.path.clone()).collect();
    if names != expected {
        let extra: Vec<_> = names.difference(&expected).cloned().collect();
        let missing: Vec<_> = expected.difference(&names).cloned().collect();
        return Err(refuse(format!(
            "its files differ (extra: {extra:?}, missing: {missing:?})"
        )));
    }
    for f in manifest.files() {
        let path = out.join(&f.path);
        let (size, sha) = hash_file(&path)?;
        if size != f.size || sha != f.sha256 {
            return Err(refuse(format!(
                "{} hashes to {sha} ({size} bytes), the checkpoint has {} ({} bytes)",
                f.path, f.sha256, f.size
            )));
        }
    }
    Ok(true)
}

/// An exclusive advisory lock on `dir/.lock`, held while the returned file lives. Released by
/// the kernel if the process dies, so a killed get never blocks its own resume.
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(StoreError::Busy {
            path: dir.to_path_buf(),
        }),
        Err(e) => Err(StoreError::io(
            format!("locking {}", path.display()),
            std::io::Error::from(e),
        )),
    }
}

/// Download one file into `staging/<path>`, resuming from `staging/<path>.part`. Returns
/// (bytes resumed, bytes downloaded).
async fn download_file(
    backend: &Backend,
    entry: &FileEntry,
    staging: &Path,
    limiter: Option<&RateLimiter>,
) -> Result<(u64, u64)> {
    let final_path = staging.join(&entry.path);
    let part_path = staging.join(format!("{}.part", entry.path));

    // A finished file from an earlier run was verified before its rename; check it again
    // anyway (cheap next to a download) and drop it if it is not right.
    {
        let (final_path, entry) = (final_path.clone(), entry.clone());
        let done = tokio::task::spawn_blocking(move || match hash_file(&final_path) {
            Ok((size, sha)) if size == entry.size && sha == entry.sha256 => Ok(true),
            Ok(_) => std::fs::remove_file(&final_path)
                .map(|_| false)
                .map_err(|e| StoreError::io(format!("removing {}", final_path.display()), e)),
            Err(_) => Ok(false),
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        if done {
            return Ok((entry.size, 0));
        }
    }

    // Resume: hash what an earlier run left in the .part file, then ask only for the rest.
    let (mut part, mut hasher) = {
        let (part_path, size) = (part_path.clone(), entry.size);
        tokio::task::spawn_blocking(move || open_part(&part_path, size))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??
    };
    let resumed = hasher.len();
    let mut downloaded = 0u64;
    if hasher.len() < entry.size {
        // No separate size check first: the manifest's size is enforced on the bytes as they
        // arrive, which also catches a store that reports one size and sends another.
        let mut stream = open_blob(backend, entry, hasher.len()).await?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if hasher.len() + chunk.len() as u64 > entry.size {
                drop(part);
                let _ = std::fs::remove_file(&part_path);
                return Err(StoreError::BlobTooLong {
                    path: entry.path.clone(),
                    expected: entry.size,
                });
            }
            // Inline, not block_in_place: a chunk is at most a few MiB (milliseconds of work),
            // and block_in_place would panic under a current-thread runtime.
            hasher.update(&chunk);
            part.write_all(&chunk)
                .map_err(|e| StoreError::io(format!("writing {}", part_path.display()), e))?;
            downloaded += chunk.len() as u64;
            if let Some(limiter) = limiter {
                limiter.consume(chunk.len() as u64).await;
            }
        }
    }
    if hasher.len() != entry.size {
        // Keep the .part: a rerun resumes from here.
        return Err(short_blob(backend, entry, hasher.len()));
    }
    let actual = hasher.finish();
    if actual != entry.sha256 {
        drop(part);
        let _ = std::fs::remove_file(&part_path);
        return Err(StoreError::BlobMismatch {
            path: entry.path.clone(),
            expected: entry.sha256,
            actual,
        });
    }
    part.sync_all()
        .map_err(|e| StoreError::io(format!("syncing {}", part_path.display()), e))?;
    std::fs::rename(&part_path, &final_path).map_err(|e| {
        StoreError::io(
            format!(
                "renaming {} to {}",
                part_path.display(),
                final_path.display()
            ),
            e,
        )
    })?;
    Ok((resumed, downloaded))
}

/// Open (or create) a `.part` file for appending, with a hasher over what it already holds.
/// A `.part` longer than the file should be is discarded.
fn open_part(part_path: &Path, size: u64) -> Result<(File, Sha256Writer)> {
    if let Some(parent) = part_path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| StoreError::io(format!("creating {}", parent.display()), e))?;
    }
    let mut hasher = Sha256Writer::new();
    match std::fs::metadata(part_path) {
        Ok(m) if m.len() <= size => {
            let f = File::open(part_path)
                .map_err(|e| StoreError::io(format!("opening {}", part_path.display()), e))?;
            hasher = hash_reader(f, hasher, part_path)?;
        }
        Ok(_) => std::fs::remove_file(part_path)
            .map_err(|e| StoreError::io(format!("removing {}", part_path.display()), e))?,
        Err(_) => {}
    }
    let part = OpenOptions::new()
        .create(true)
        .append(true)
        .open(part_path)
        .map_err(|e| StoreError::io(format!("opening {}", part_path.display()), e))?;
    // The file may have grown between hashing and opening only if another process writes it,
    // which the staging lock prevents; check anyway so a mismatch can never go unnoticed.
    let len = part
        .metadata()
        .map_err(|e| StoreError::io(format!("reading {}", part_path.display()), e))?
        .len();
    if len != hasher.len() {
        return Err(StoreError::Busy {
            path: part_path.to_path_buf(),
        });
    }
    Ok((part, hasher))
}

/// Make the staging directory hold exactly the manifest's files, then rename it to `out`.
fn publish_staging(
    staging: &Path,
    out: &Path,
    manifest: &CheckpointManifest,
    digest: Digest,
) -> Result<()> {
    let expected: BTreeSet<&str> = manifest.files().iter().map(|f| f.path.as_str()).collect();
    for entry in std::fs::read_dir(staging)
        .map_err(|e| StoreError::io(format!("listing {}", staging.display()), e))?
    {
        let entry =
            entry.map_err(|e| StoreError::io(format!("listing {}", staging.display()), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !expected.contains(name.as_str()) {
            let path = entry.path();
            // Only the lock and leftovers of this get can be here; the lock file goes last,
            // its open descriptor keeps the lock until the caller drops it.
            std::fs::remove_file(&path)
                .map_err(|e| StoreError::io(format!("removing {}", path.display()), e))?;
        }
    }
    sync_dir(staging)?;
    if let Err(e) = std::fs::rename(staging, out) {
        // rename(2) replaces only an empty directory; anything else in the way is refused.
        return Err(StoreError::OutputExists {
            path: out.to_path_buf(),
            digest,
            reason: format!("moving the verified download into place failed: {e}"),
        });
    }
    if let Some(parent) = out.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        sync_dir(parent)?;
    }
    Ok(())
}

/// The blob's bytes from `offset`, once its stored size (the file's metadata, or the object's
/// size on a bucket) is the manifest's: a blob stored shorter or longer is the upload's fault
/// ([`StoreError::BlobWrongSize`]), refused before a byte is read.
async fn open_blob(
    backend: &Backend,
    entry: &FileEntry,
    offset: u64,
) -> Result<crate::backend::ByteStream> {
    let (size, stream) = backend
        .read_blob_from(&entry.sha256, offset)
        .await?
        .ok_or_else(|| StoreError::BlobMissing {
            path: entry.path.clone(),
            sha256: entry.sha256,
            location: backend.describe(),
        })?;
    if size != entry.size {
        return Err(StoreError::BlobWrongSize {
            path: entry.path.clone(),
            expected: entry.size,
            actual: size,
            location: backend.describe(),
        });
    }
    Ok(stream)
}

/// A blob that ended before the manifest's size: from a file store that is the upload's fault
/// (the file shrank under us); from a bucket it may be a dropped connection, retried.
fn short_blob(backend: &Backend, entry: &FileEntry, received: u64) -> StoreError {
    if backend.is_local() {
        StoreError::BlobWrongSize {
            path: entry.path.clone(),
            expected: entry.size,
            actual: received,
            location: backend.describe(),
        }
    } else {
        StoreError::BlobTruncated {
            path: entry.path.clone(),
            expected: entry.size,
            received,
        }
    }
}

async fn verify_blob(backend: &Backend, entry: &FileEntry) -> Result<()> {
    let mut hasher = Sha256Writer::new();
    let mut stream = open_blob(backend, entry, 0).await?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if hasher.len() + chunk.len() as u64 > entry.size {
            return Err(StoreError::BlobTooLong {
                path: entry.path.clone(),
                expected: entry.size,
            });
        }
        hasher.update(&chunk);
    }
    if hasher.len() != entry.size {
        return Err(short_blob(backend, entry, hasher.len()));
    }
    let actual = hasher.finish();
    if actual != entry.sha256 {
        return Err(StoreError::BlobMismatch {
            path: entry.path.clone(),
            expected: entry.sha256,
            actual,
        });
    }
    Ok(())
}

/// A shared bandwidth cap: each consumer sleeps until the total received is back on schedule.
struct RateLimiter {
    bytes_per_sec: u64,
    start: Instant,
    consumed: std::sync::atomic::AtomicU64,
}

impl RateLimiter {
    fn new(bytes_per_sec: u64) -> Self {
        Self {
            bytes_per_sec: bytes_per_sec.max(1),
            start: Instant::now(),
            consumed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    async fn consume(&self, n: u64) {
        let total = self
            .consumed
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed)
            + n;
        let due = Duration::from_secs_f64(total as f64 / self.bytes_per_sec as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// A [`Store`] with its own tokio runtime, for callers that are not async (the CLI, tests).
pub struct BlockingStore {
    runtime: tokio::runtime::Runtime,
    store: Store,
    /// Wall-clock limit of each operation; `None`: none.
    deadline: Option<Duration>,
}

impl BlockingStore {
    pub fn open(location: &Location, s3: &S3Options) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .map_err(|e| StoreError::io("starting the store's async runtime", e))?;
        // The S3 client is built inside the runtime (it may look for a reactor).
        let store = {
            let _guard = runtime.enter();
            Store::open(location, s3)?
        };
        Ok(Self {
            runtime,
            store,
            deadline: None,
        })
    }

    pub fn with_transfer_options(mut self, transfer: TransferOptions) -> Self {
        self.store = self.store.with_transfer_options(transfer);
        self
    }

    /// Give every operation (`put`, `get`, `fetch_manifest`, `verify`) a wall-clock limit: past
    /// it the operation is abandoned with [`StoreError::TimedOut`], so a store that moves bytes
    /// slowly cannot hold its caller for ever. A `get` cut off this way keeps its `.part` files
    /// (a rerun resumes; the cache's budget counts them); a `put` cut off has written no
    /// manifest yet (it is written last), and a rerun skips the blobs already stored.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Run `op` (reading `what` from the store) on the runtime, within the deadline if there is
    /// one.
    fn within_deadline<T>(
        &self,
        what: &str,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        self.run_limited(|| format!("{what} from {}", self.store.describe()), op)
    }

    /// Run `op` on the runtime, within the deadline if there is one; `operation` names it in
    /// the timeout's error.
    fn run_limited<T>(
        &self,
        operation: impl FnOnce() -> String,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match self.deadline {
            None => self.runtime.block_on(op),
            Some(limit) => self
                .runtime
                .block_on(async { tokio::time::timeout(limit, op).await })
                .unwrap_or_else(|_| {
                    Err(StoreError::TimedOut {
                        operation: operation(),
                        limit,
                    })
                }),
        }
    }

    pub fn describe(&self) -> String {
        self.store.describe()
    }

    pub fn put(&self, dir: &Path) -> Result<PutReport> {
        self.run_limited(
            || format!("putting {} into {}", dir.display(), self.store.describe()),
            self.store.put(dir),
        )
    }

    pub fn get(&self, digest: &Digest, out: &Path, opts: &GetOptions) -> Result<GetReport> {
        self.within_deadline(
            &format!("getting {digest}"),
            self.store.get(digest, out, opts),
        )
    }

    pub fn fetch_manifest(
        &self,
        digest: &Digest,
        max_total_bytes: u64,
    ) -> Result<CheckpointManifest> {
        self.within_deadline(
            &format!("reading the manifest of {digest}"),
            self.store.fetch_manifest(digest, max_total_bytes),
        )
    }

    pub fn verify(&self, digest: &Digest, max_total_bytes: u64) -> Result<VerifyReport> {
        self.within_deadline(
            &format!("verifying {digest}"),
            self.store.verify(digest, max_total_bytes),
        )
    }

    pub fn list(&self) -> Result<Vec<ListEntry>> {
        self.runtime.block_on(self.store.list())
    }

    pub fn gc(&self, opts: &GcOptions) -> Result<GcReport> {
        self.runtime.block_on(self.store.gc(opts))
    }
}
