//! Hashing checkpoint files from disk: streaming with a large buffer, files in parallel.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use koth_core::checkpoint::{file_policy, validate_path, CheckpointManifest, FileEntry};
use koth_core::{Digest, Sha256Writer};

use crate::error::{Result, StoreError};

/// Read buffer for hashing and copying: large enough that syscalls are noise next to SHA-256.
pub(crate) const IO_CHUNK: usize = 4 << 20;

/// Hash everything `reader` yields; returns the hasher so callers can continue or finish it.
pub(crate) fn hash_reader(
    mut reader: impl Read,
    mut hasher: Sha256Writer,
    what: &Path,
) -> Result<Sha256Writer> {
    let mut buf = vec![0u8; IO_CHUNK];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| StoreError::io(format!("reading {}", what.display()), e))?;
        if n == 0 {
            return Ok(hasher);
        }
        hasher.update(&buf[..n]);
    }
}

/// Size and sha256 of one file.
pub fn hash_file(path: &Path) -> Result<(u64, Digest)> {
    let file =
        File::open(path).map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
    let hasher = hash_reader(file, Sha256Writer::new(), path)?;
    Ok((hasher.len(), hasher.finish()))
}

/// The checkpoint files of `dir` (top level only), each checked against the path rules and the
/// file policy: a subdirectory, a non-regular file, a non-UTF-8 name, a `.py`, a pickle or any
/// unknown file is refused before anything is hashed or stored.
pub fn list_checkpoint_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(StoreError::BadSource {
                path: dir.to_path_buf(),
                reason: format!("file name {name:?} is not UTF-8"),
            });
        };
        let path = entry.path();
        // Follows symlinks: a Hugging Face cache snapshot is a directory of links to blobs.
        let meta = std::fs::metadata(&path)
            .map_err(|e| StoreError::io(format!("reading metadata of {}", path.display()), e))?;
        if meta.is_dir() {
            return Err(StoreError::FileRefused {
                path: name.to_string(),
                reason: koth_core::checkpoint::FileRefusal::Nested,
            });
        }
        if !meta.is_file() {
            return Err(StoreError::BadSource {
                path: path.clone(),
                reason: "not a regular file".into(),
            });
        }
        validate_path(name).map_err(|e| StoreError::BadSource {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        file_policy(name).map_err(|reason| StoreError::FileRefused {
            path: name.to_string(),
            reason,
        })?;
        files.push((name.to_string(), path));
    }
    if files.is_empty() {
        return Err(StoreError::BadSource {
            path: dir.to_path_buf(),
            reason: "holds no checkpoint files".into(),
        });
    }
    files.sort();
    Ok(files)
}

/// The manifest of the checkpoint in `dir`, hashing files on up to `threads` threads.
pub fn manifest_of_dir(dir: &Path, threads: usize) -> Result<CheckpointManifest> {
    let files = list_checkpoint_files(dir)?;
    let entries = hash_files_parallel(&files, threads)?;
    CheckpointManifest::new(entries).map_err(|e| StoreError::BadSource {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Hash `(name, path)` pairs, spread over `threads` scoped threads pulling from one queue.
pub(crate) fn hash_files_parallel(
    files: &[(String, PathBuf)],
    threads: usize,
) -> Result<Vec<FileEntry>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = threads.clamp(1, files.len().max(1));
    let results: Vec<Result<Vec<FileEntry>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((name, path)) = files.get(i) else {
                            return Ok(out);
                        };
                        let (size, sha256) = hash_file(path)?;
                        out.push(FileEntry {
                            path: name.clone(),
                            size,
                            sha256,
                        });
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(StoreError::Task("hashing thread panicked".into())))
            })
            .collect()
    });
    let mut entries = Vec::with_capacity(files.len());
    for r in results {
        entries.extend(r?);
    }
    Ok(entries)
}

/// Worker threads worth using for disk and hashing work on this machine.
pub(crate) fn default_parallelism() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8)
}
