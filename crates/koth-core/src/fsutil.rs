//! The one durable file write of the workspace.
//!
//! A file that must survive a crash (a verdict record, a fingerprint, the store cache's state, a
//! blob) is written under a temporary name in the same directory, fsynced, renamed over its
//! final name and then the directory is fsynced. A reader sees the old file or the new one, never
//! a prefix, and once `write_atomic` returns the new file outlives a power cut: the rename is
//! only durable after the directory entry itself has reached the disk.
//!
//! This is the only I/O in koth-core; it lives here so that every crate uses the same sequence
//! instead of near-copies that drift (one of them once skipped the directory fsync).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Temporary files start with this, so directory listings and sweeps can skip or collect them.
pub const TEMP_PREFIX: &str = ".tmp.";

/// A durable write that failed: which file, at which step, and the operating system's error.
#[derive(Debug, thiserror::Error)]
#[error("writing {}: {step}: {source}", path.display())]
pub struct WriteError {
    /// The file that was to be written (not the temporary).
    pub path: PathBuf,
    /// What was being done when it failed, e.g. "renaming the temporary into place".
    pub step: &'static str,
    #[source]
    pub source: std::io::Error,
}

impl WriteError {
    fn new(path: &Path, step: &'static str, source: std::io::Error) -> Self {
        WriteError {
            path: path.to_path_buf(),
            step,
            source,
        }
    }
}

/// A fresh temporary name beside `target`: `.tmp.<name>.<pid>.<counter>.<nanos>`. Unique within
/// and across processes, so concurrent writers of one target never share a temporary.
pub fn temp_path_beside(target: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(
        "{TEMP_PREFIX}{name}.{}.{n}.{nanos}",
        std::process::id()
    ))
}

/// fsync the directory `dir`, so that a rename or a creation inside it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    // `Path::new("a.json").parent()` is `""`: the current directory.
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

/// Replace `path` with exactly `bytes`, durably and atomically. The parent directory must exist.
/// On error `path` is untouched (old contents or still absent) and no temporary is left behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomic_with(path, |tmp: &Path| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .map_err(|e| WriteError::new(path, "creating the temporary file", e))?;
        f.write_all(bytes)
            .map_err(|e| WriteError::new(path, "writing the temporary file", e))
    })
}

/// Like [`write_atomic`], for contents that a writer produces at a path (a safetensors or npy
/// encoder): `fill` creates and writes the temporary it is given; this function then fsyncs it,
/// renames it over `path` and fsyncs the directory. If `fill` fails the temporary is removed and
/// its error returned unchanged.
pub fn write_atomic_with<E: From<WriteError>>(
    path: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    if path.file_name().is_none() {
        return Err(WriteError::new(
            path,
            "checking the path",
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file"),
        )
        .into());
    }
    let tmp = temp_path_beside(path);
    let written = fill(&tmp).and_then(|()| {
        let publish = || -> Result<(), WriteError> {
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| WriteError::new(path, "syncing the temporary file", e))?;
            std::fs::rename(&tmp, path)
                .map_err(|e| WriteError::new(path, "renaming the temporary into place", e))
        };
        publish().map_err(E::from)
    });
    if let Err(e) = written {
        // Best effort: the temporary may not exist (fill failed before creating it).
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    sync_dir(dir).map_err(|e| WriteError::new(path, "syncing the directory", e).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "koth-fsutil-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_exactly_the_bytes_and_leaves_no_temporary() {
        let dir = temp_dir();
        let path = dir.join("record.json");
        write_atomic(&path, b"{\"a\":1}\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n");
        assert_eq!(names_in(&dir), vec!["record.json"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn replaces_an_existing_file_through_a_new_inode() {
        let dir = temp_dir();
        let path = dir.join("state.json");
        std::fs::write(&path, b"old contents, longer than the new").unwrap();
        // A reader holding the old file keeps reading the old bytes: the new contents arrive
        // by rename, never by truncating and rewriting the file in place.
        let mut reader = File::open(&path).unwrap();
        write_atomic(&path, b"new").unwrap();
        let mut old = String::new();
        std::io::Read::read_to_string(&mut reader, &mut old).unwrap();
        assert_eq!(old, "old contents, longer than the new");
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(names_in(&dir), vec!["state.json"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_error_names_the_path_and_the_step() {
        let dir = temp_dir();
        let path = dir.join("missing-dir").join("verdict.json");
        let e = write_atomic(&path, b"x").unwrap_err();
        assert_eq!(e.path, path);
        assert_eq!(e.step, "creating the temporary file");
        let shown = e.to_string();
        assert!(shown.contains(&path.display().to_string()), "{shown}");
        assert!(shown.contains("creating the temporary file"), "{shown}");
        assert!(!path.exists());
        let e = write_atomic(Path::new("/"), b"x").unwrap_err();
        assert_eq!(e.step, "checking the path");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failed_rename_keeps_the_old_file_and_removes_the_temporary() {
        let dir = temp_dir();
        // A directory where the file should go: rename(2) of a file over it fails.
        let path = dir.join("occupied");
        std::fs::create_dir(&path).unwrap();
        let e = write_atomic(&path, b"x").unwrap_err();
        assert_eq!(e.step, "renaming the temporary into place");
        assert!(path.is_dir());
        assert_eq!(names_in(&dir), vec!["occupied"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failing_filler_returns_its_own_error_and_leaves_nothing() {
        #[derive(Debug)]
        enum FillError {
            Encoder(&'static str),
            Write(WriteError),
        }
        impl From<WriteError> for FillError {
            fn from(e: WriteError) -> Self {
                FillError::Write(e)
            }
        }
        let dir = temp_dir();
        let path = dir.join("grads.safetensors");
        let r = write_atomic_with(&path, |tmp: &Path| {
            std::fs::write(tmp, b"half").unwrap();
            Err(FillError::Encoder("tensor too large"))
        });
        assert!(matches!(r, Err(FillError::Encoder("tensor too large"))));
        assert!(names_in(&dir).is_empty(), "{:?}", names_in(&dir));
        // A filler that never creates the temporary: the sync step names the path.
        let r = write_atomic_with(&path, |_: &Path| Ok::<(), FillError>(()));
        match r {
            Err(FillError::Write(e)) => assert_eq!(e.step, "syncing the temporary file"),
            other => panic!("expected a sync error, got {other:?}"),
        }
        write_atomic_with(&path, |tmp: &Path| {
            std::fs::write(tmp, b"whole").map_err(|e| WriteError::new(tmp, "test", e))
        })
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
        assert_eq!(names_in(&dir), vec!["grads.safetensors"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_relative_path_syncs_the_current_directory() {
        // `sync_dir` maps the empty parent of a bare file name to ".".
        sync_dir(Path::new("")).unwrap();
    }

    #[test]
    fn temporaries_are_unique_and_marked() {
        let a = temp_path_beside(Path::new("/x/y.json"));
        let b = temp_path_beside(Path::new("/x/y.json"));
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/x")));
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".tmp.y.json."), "{name}");
    }
}
