//! A local cache of verified checkpoints with a byte budget.
//!
//! Layout: `<root>/<64 hex>/` holds one complete checkpoint. Entries only ever appear through
//! `get`'s final rename of a fully verified download, so a directory named by a digest is a
//! complete entry, and a crash mid-download leaves only a hidden staging directory that is
//! never counted as present (and is resumed by the next fetch). `<root>/cache-state.json`
//! records pins and last use; it is advisory: if it is lost, entries fall back to their
//! directory mtime and nothing is pinned until the caller pins again.
//!
//! Eviction removes least recently used, unpinned entries until the total fits the budget. The
//! current king is pinned and never evicted. An entry is first renamed to a hidden name (it stops
//! being present at once), then deleted.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use koth_core::clock::{Clock, SystemClock};
use koth_core::Digest;
use serde::{Deserialize, Serialize};

use crate::backend::write_atomically;
use crate::error::{Result, StoreError};
use crate::store::{BlockingStore, GetOptions, Store};

const STATE_FILE: &str = "cache-state.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheState {
    pinned: Vec<Digest>,
    /// Milliseconds since the Unix epoch of the last use, by digest.
    last_used_ms: BTreeMap<Digest, u64>,
}

/// One cached checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct CacheEntry {
    pub digest: Digest,
    pub path: PathBuf,
    pub bytes: u64,
    pub last_used_ms: u64,
    pub pinned: bool,
}

pub struct CheckpointCache {
    root: PathBuf,
    budget_bytes: u64,
    /// Orders entries by last use; tests pass a manual clock instead of sleeping.
    clock: Arc<dyn Clock>,
}

impl CheckpointCache {
    /// Open (creating if needed) a cache at `root` that keeps at most `budget_bytes` of
    /// unpinned checkpoints.
    pub fn open(root: &Path, budget_bytes: u64) -> Result<Self> {
        Self::open_with_clock(root, budget_bytes, Arc::new(SystemClock))
    }

    /// [`CheckpointCache::open`] with the clock that stamps each use.
    pub fn open_with_clock(root: &Path, budget_bytes: u64, clock: Arc<dyn Clock>) -> Result<Self> {
        std::fs::create_dir_all(root)
            .map_err(|e| StoreError::io(format!("creating cache {}", root.display()), e))?;
        Ok(Self {
            root: root.to_path_buf(),
            budget_bytes,
            clock,
        })
    }

    /// Where the checkpoint `digest` lives when cached.
    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        self.root.join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path_of(digest).is_dir()
    }

    /// The cached checkpoint's directory, fetching it from `store` first if needed, then evicting
    /// down to the budget (never the entry just returned, never a pinned one).
    pub fn fetch(
        &self,
        store: &BlockingStore,
        digest: &Digest,
        opts: &GetOptions,
    ) -> Result<PathBuf> {
        let path = self.path_of(digest);
        if !path.is_dir() {
            store.get(digest, &path, opts)?;
        }
        self.touch(digest)?;
        self.evict_to_budget(Some(digest))?;
        Ok(path)
    }

    /// Async form of [`fetch`](Self::fetch).
    pub async fn fetch_async(
        &self,
        store: &Store,
        digest: &Digest,
        opts: &GetOptions,
    ) -> Result<PathBuf> {
        let path = self.path_of(digest);
        if !path.is_dir() {
            store.get(digest, &path, opts).await?;
        }
        self.touch(digest)?;
        self.evict_to_budget(Some(digest))?;
        Ok(path)
    }

    /// Pin `digest` (the current king): it is never evicted until unpinned.
    pub fn pin(&self, digest: &Digest) -> Result<()> {
        self.update_state(|s| {
            if !s.pinned.contains(digest) {
                s.pinned.push(*digest);
                s.pinned.sort();
            }
        })
    }

    pub fn unpin(&self, digest: &Digest) -> Result<()> {
        self.update_state(|s| s.pinned.retain(|d| d != digest))
    }

    /// Record a use of `digest` now.
    pub fn touch(&self, digest: &Digest) -> Result<()> {
        let now = self.clock.now_ms();
        self.update_state(|s| {
            s.last_used_ms.insert(*digest, now);
        })
    }

    /// Every complete entry, least recently used first.
    pub fn entries(&self) -> Result<Vec<CacheEntry>> {
        let _lock = self.lock()?;
        self.entries_locked(&self.read_state()?)
    }

    /// Evict least recently used, unpinned entries (other than `keep`) until the total is within
    /// the budget. Returns the evicted digests. Pinned entries and `keep` may leave the total
    /// above the budget; they are never removed.
    pub fn evict_to_budget(&self, keep: Option<&Digest>) -> Result<Vec<Digest>> {
        let _lock = self.lock()?;
        let mut state = self.read_state()?;
        let entries = self.entries_locked(&state)?;
        let partial = self.partial_downloads()?;
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum::<u64>()
            + partial.iter().map(|(_, bytes, _)| bytes).sum::<u64>();
        // What failed downloads left behind counts against the budget and goes first, oldest
        // first — unless a get is still writing it (its lock is held).
        for (path, bytes, _) in &partial {
            if total <= self.budget_bytes {
                break;
            }
            if remove_unless_locked(path)? {
                tracing::info!(dir = %path.display(), bytes, "removed a partial download");
                total = total.saturating_sub(*bytes);
            }
        }
        let mut evicted = Vec::new();
        for entry in &entries {
            if total <= self.budget_bytes {
                break;
            }
            if entry.pinned || Some(&entry.digest) == keep {
                continue;
            }
            let doomed = self.root.join(format!(
                ".evicting-{}-{}",
                entry.digest.hex(),
                std::process::id()
            ));
            std::fs::rename(&entry.path, &doomed)
                .map_err(|e| StoreError::io(format!("evicting {}", entry.path.display()), e))?;
            std::fs::remove_dir_all(&doomed)
                .map_err(|e| StoreError::io(format!("removing {}", doomed.display()), e))?;
            tracing::info!(digest = %entry.digest, bytes = entry.bytes, "evicted from cache");
            total = total.saturating_sub(entry.bytes);
            state.last_used_ms.remove(&entry.digest);
            evicted.push(entry.digest);
        }
        if !evicted.is_empty() {
            self.write_state(&state)?;
        }
        Ok(evicted)
    }

    /// Bytes held by partial downloads (staging directories of gets that failed or are still
    /// running), which the budget counts.
    pub fn partial_bytes(&self) -> Result<u64> {
        let _lock = self.lock()?;
        Ok(self.partial_downloads()?.iter().map(|(_, b, _)| b).sum())
    }

    /// Staging directories (`.<hex>.koth-partial-…`) with their size and age, oldest first.
    fn partial_downloads(&self) -> Result<Vec<(PathBuf, u64, u64)>> {
        let mut out = Vec::new();
        let dir = std::fs::read_dir(&self.root)
            .map_err(|e| StoreError::io(format!("listing cache {}", self.root.display()), e))?;
        for item in dir {
            let item = item
                .map_err(|e| StoreError::io(format!("listing cache {}", self.root.display()), e))?;
            let is_partial = item
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with('.') && n.contains(".koth-partial-"));
            let path = item.path();
            // symlink_metadata: a cache entry is never a symlink; never walk out of the cache.
            let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
            if is_partial && is_dir {
                let bytes = dir_size(&path)?;
                out.push((path.clone(), bytes, mtime_ms(&path)));
            }
        }
        out.sort_by_key(|(path, _, mtime)| (*mtime, path.clone()));
        Ok(out)
    }

    fn entries_locked(&self, state: &CacheState) -> Result<Vec<CacheEntry>> {
        let mut out = Vec::new();
        let dir = std::fs::read_dir(&self.root)
            .map_err(|e| StoreError::io(format!("listing cache {}", self.root.display()), e))?;
        for item in dir {
            let item = item
                .map_err(|e| StoreError::io(format!("listing cache {}", self.root.display()), e))?;
            let Some(digest) = item
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            else {
                continue;
            };
            let path = item.path();
            if !path.is_dir() {
                continue;
            }
            let bytes = dir_size(&path)?;
            let last_used_ms = match state.last_used_ms.get(&digest) {
                Some(ms) => *ms,
                None => mtime_ms(&path),
            };
            out.push(CacheEntry {
                digest,
                path,
                bytes,
                last_used_ms,
                pinned: state.pinned.contains(&digest),
            });
        }
        out.sort_by_key(|e| (e.last_used_ms, e.digest));
        Ok(out)
    }

    fn update_state(&self, change: impl FnOnce(&mut CacheState)) -> Result<()> {
        let _lock = self.lock()?;
        let mut state = self.read_state()?;
        change(&mut state);
        self.write_state(&state)
    }

    fn read_state(&self) -> Result<CacheState> {
        let path = self.root.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Cache {
                path: path.clone(),
                reason: format!(
                    "state file is not valid JSON ({e}); remove it to reset pins and LRU order"
                ),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CacheState::default()),
            Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
        }
    }

    fn write_state(&self, state: &CacheState) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| StoreError::Cache {
            path: self.root.join(STATE_FILE),
            reason: e.to_string(),
        })?;
        write_atomically(&self.root.join(STATE_FILE), &bytes)
    }

    /// Serialises state changes between processes sharing the cache.
    fn lock(&self) -> Result<File> {
        let path = self.root.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
            StoreError::io(
                format!("locking {}", path.display()),
                std::io::Error::from(e),
            )
        })?;
        Ok(file)
    }
}

/// Remove a staging directory unless a get holds its lock (it is still downloading). Returns
/// whether it was removed.
fn remove_unless_locked(dir: &Path) -> Result<bool> {
    let lock_path = dir.join(".lock");
    match OpenOptions::new().write(true).open(&lock_path) {
        Ok(file) => {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => return Ok(false),
                Err(e) => {
                    return Err(StoreError::io(
                        format!("locking {}", lock_path.display()),
                        std::io::Error::from(e),
                    ))
                }
            }
            std::fs::remove_dir_all(dir)
                .map_err(|e| StoreError::io(format!("removing {}", dir.display()), e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::remove_dir_all(dir)
                .map_err(|e| StoreError::io(format!("removing {}", dir.display()), e))?;
        }
        Err(e) => {
            return Err(StoreError::io(
                format!("opening {}", lock_path.display()),
                e,
            ))
        }
    }
    Ok(true)
}

fn mtime_ms(path: &Path) -> u64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0u64;
    for item in std::fs::read_dir(dir)
        .map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?
    {
        let item = item.map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
        let meta = item
            .metadata()
            .map_err(|e| StoreError::io(format!("reading {}", item.path().display()), e))?;
        total += if meta.is_dir() {
            dir_size(&item.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
