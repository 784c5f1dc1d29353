//! The king belongs to the validator: before a crown is logged, the shell copies the new king's
//! checkpoint into a store the validator controls (`[store] king_location`), reads the copy back
//! and verifies it against the digest. The crown event records the copy's location, so remote
//! eval workers and the feeds (`/api/state`, `/dashboard.json`) name it from then on; the owner
//! deleting or overwriting their own copy changes nothing.
//!
//! The copy is made from the validator's cache (the fetch gate verified the challenger into it;
//! when the cache has lost it, it is fetched again from where the winner committed it). It is
//! idempotent: the store is content-addressed, a put skips the blobs already stored (a local
//! blob is re-hashed, a corrupt one replaced) and writes the manifest last, so the crown carried
//! out again after a restart (the log is replayed and the `Crown` effect asked for again)
//! copies nothing twice and ends with the same location.

use std::path::PathBuf;

use koth_core::Digest;
use koth_store::{BlockingStore, CheckpointCache, GetOptions, Location, S3Options, StoreError};

/// Why the king could not be copied into the validator's store. Always our side: the crown is
/// retried after a pause (the verdict stands).
#[derive(Debug, thiserror::Error)]
pub enum KingCopyError {
    #[error(
        "the king {digest} is not in the validator's cache, and fetching it again from {location} \
         (where it was committed) failed: {source}"
    )]
    Source {
        digest: Digest,
        location: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("pinning the king {digest} in the validator's cache: {source}")]
    Pin {
        digest: Digest,
        #[source]
        source: Box<StoreError>,
    },
    #[error("the king store {location} (validator.toml `store.king_location`): {source}")]
    Open {
        location: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("copying the king {digest} from {} into {location}: {source}", dir.display())]
    Put {
        digest: Digest,
        dir: PathBuf,
        location: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error(
        "the copy of the king put into {location} from {} has the digest {actual}, expected \
         {digest}: the cached checkpoint is not the king",
        dir.display()
    )]
    Mismatch {
        digest: Digest,
        actual: Digest,
        dir: PathBuf,
        location: String,
    },
    #[error("reading back the copy of the king {digest} from {location}: {source}")]
    Verify {
        digest: Digest,
        location: String,
        #[source]
        source: Box<StoreError>,
    },
}

/// Where to copy kings to, and how long each store operation may take.
pub struct KingStore<'a> {
    /// `[store] king_location` (checked to parse at start-up).
    pub location: &'a str,
    pub s3: &'a S3Options,
    /// The competition's size cap: the source fetch is held to it, and it sets the deadline of
    /// every operation ([`koth_store::fetch_deadline`] of twice the cap, as for the king fetch).
    pub size_cap_bytes: u64,
}

impl KingStore<'_> {
    /// Copy the king `digest` into this store and verify the copy; returns the location to
    /// record in the crown. `committed` is where the winner committed it, used only when the
    /// cache no longer holds it. The cache entry is pinned first, so it stays while it is king.
    pub fn keep(
        &self,
        cache: &CheckpointCache,
        digest: &Digest,
        committed: &str,
    ) -> Result<String, KingCopyError> {
        let deadline = koth_store::fetch_deadline(self.size_cap_bytes.saturating_mul(2));
        let dir = cache.path_of(digest);
        if !dir.is_dir() {
            let source = |source| KingCopyError::Source {
                digest: *digest,
                location: committed.to_string(),
                source: Box::new(source),
            };
            let loc: Location = committed.parse().map_err(source)?;
            let store = BlockingStore::open(&loc, self.s3)
                .map_err(source)?
                .with_deadline(deadline);
            let opts = GetOptions {
                max_total_bytes: self.size_cap_bytes,
                max_bytes_per_sec: None,
            };
            cache.fetch(&store, digest, &opts).map_err(source)?;
        }
        // The cache entry must not be evicted under the copy (nor while it is king).
        cache.pin(digest).map_err(|source| KingCopyError::Pin {
            digest: *digest,
            source: Box::new(source),
        })?;
        let open = |source| KingCopyError::Open {
            location: self.location.to_string(),
            source: Box::new(source),
        };
        let loc: Location = self.location.parse().map_err(open)?;
        let store = BlockingStore::open(&loc, self.s3)
            .map_err(open)?
            .with_deadline(deadline);
        let report = store.put(&dir).map_err(|source| KingCopyError::Put {
            digest: *digest,
            dir: dir.clone(),
            location: self.location.to_string(),
            source: Box::new(source),
        })?;
        if report.digest != *digest {
            return Err(KingCopyError::Mismatch {
                digest: *digest,
                actual: report.digest,
                dir,
                location: self.location.to_string(),
            });
        }
        // Read every byte back from the store: the location recorded must really hold the king.
        store
            .verify(digest, u64::MAX)
            .map_err(|source| KingCopyError::Verify {
                digest: *digest,
                location: self.location.to_string(),
                source: Box::new(source),
            })?;
        Ok(self.location.to_string())
    }
}
