//! The two storage backends behind one set of operations: a local directory, and any
//! S3-compatible object store through `object_store`.
//!
//! Layout under the root (or the S3 prefix), the same for both:
//! - `blobs/sha256/<hex>`: file bytes, named by their sha256;
//! - `manifests/sha256/<hex>.json`: canonical manifests, named by their own sha256, which is the
//!   checkpoint digest.
//!
//! The backend moves bytes; it trusts nothing it reads. Every byte read is hashed and checked by
//! the caller (`store.rs`) against a digest the caller already holds.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use koth_core::checkpoint::FileEntry;
use koth_core::fsutil::{write_atomic, write_atomic_with, TEMP_PREFIX};
use koth_core::{Digest, Sha256Writer};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjPath;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload, WriteMultipart};

use crate::error::{Result, StoreError};
use crate::hash::IO_CHUNK;
use crate::location::{Location, S3Options};

/// Largest manifest accepted: 10,000 files × ~150 bytes fits many times over.
pub const MAX_MANIFEST_BYTES: u64 = 8 << 20;

/// Blobs at or below this size go up in one request; larger ones as multipart uploads.
const SINGLE_PUT_MAX: u64 = 16 << 20;
/// Multipart part size, and how many parts are in flight per blob.
const PART_SIZE: usize = 16 << 20;
const PARTS_IN_FLIGHT: usize = 4;

pub(crate) fn blob_key(sha: &Digest) -> String {
    format!("blobs/sha256/{}", sha.hex())
}

pub(crate) fn manifest_key(digest: &Digest) -> String {
    format!("manifests/sha256/{}.json", digest.hex())
}

/// A blob as listed by the backend.
#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub sha256: Digest,
    pub size: u64,
    pub modified: SystemTime,
}

/// Whether an upload sent bytes or found the blob already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    Sent,
    AlreadyStored,
}

pub(crate) enum Backend {
    Local(LocalBackend),
    Remote(RemoteBackend),
}

pub(crate) struct LocalBackend {
    root: PathBuf,
}

pub(crate) struct RemoteBackend {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// `s3://bucket/prefix`, for describe().
    display: String,
    /// `s3://bucket`, for messages that name a full key (the key already holds the prefix).
    bucket: String,
}

/// A stream of a blob's bytes from some offset on.
pub(crate) type ByteStream = BoxStream<'static, Result<Bytes>>;

impl Backend {
    pub(crate) fn open(location: &Location, s3: &S3Options) -> Result<Self> {
        match location {
            Location::Local(root) => Ok(Backend::Local(LocalBackend { root: root.clone() })),
            Location::S3 { bucket, prefix } => {
                let mut b = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(s3.region.clone().unwrap_or_else(|| "us-east-1".into()));
                if let Some(endpoint) = &s3.endpoint {
                    b = b
                        .with_endpoint(endpoint)
                        .with_allow_http(s3.allow_http || endpoint.starts_with("http://"));
                } else {
                    b = b.with_allow_http(s3.allow_http);
                }
                match (&s3.access_key_id, &s3.secret_access_key) {
                    (Some(id), Some(secret)) => {
                        b = b.with_access_key_id(id).with_secret_access_key(secret);
                        if let Some(token) = &s3.session_token {
                            b = b.with_token(token);
                        }
                    }
                    (None, None) => b = b.with_skip_signature(true),
                    _ => {
                        return Err(StoreError::BadLocation {
                            location: location.to_string(),
                            reason:
                                "give both an access key id and a secret access key, or neither"
                                    .into(),
                        })
                    }
                }
                let store = b.build().map_err(|e| StoreError::BadLocation {
                    location: location.to_string(),
                    reason: e.to_string(),
                })?;
                Ok(Backend::Remote(RemoteBackend {
                    store: Arc::new(store),
                    prefix: prefix.clone(),
                    display: location.to_string(),
                    bucket: format!("s3://{bucket}"),
                }))
            }
        }
    }

    /// Whether this is a local directory (where a short read is never a dropped connection).
    pub(crate) fn is_local(&self) -> bool {
        matches!(self, Backend::Local(_))
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Backend::Local(l) => format!("file://{}", l.root.display()),
            Backend::Remote(r) => r.display.clone(),
        }
    }

    /// The stored blob's size, or `None` if it is not stored.
    pub(crate) async fn blob_size(&self, sha: &Digest) -> Result<Option<u64>> {
        match self {
            Backend::Local(l) => {
                let path = l.root.join(blob_key(sha));
                match std::fs::metadata(&path) {
                    Ok(m) => Ok(Some(m.len())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
                }
            }
            Backend::Remote(r) => {
                let key = r.key(&blob_key(sha));
                match r.store.head(&key).await {
                    Ok(meta) => Ok(Some(meta.size)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(StoreError::backend(format!("HEAD {}/{key}", r.bucket), e)),
                }
            }
        }
    }

    /// The bytes stored under the manifest key of `digest` (unverified), or `None`.
    pub(crate) async fn read_manifest(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        let too_large = || StoreError::ManifestTooLarge {
            digest: *digest,
            max: MAX_MANIFEST_BYTES,
        };
        match self {
            Backend::Local(l) => {
                let path = l.root.join(manifest_key(digest));
                let Some((file, len)) = l.open_regular(&manifest_key(digest))? else {
                    return Ok(None);
                };
                // Refused from its size before a byte is read.
                if len > MAX_MANIFEST_BYTES {
                    return Err(too_large());
                }
                let mut bytes = Vec::new();
                file.take(MAX_MANIFEST_BYTES + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?;
                if bytes.len() as u64 > MAX_MANIFEST_BYTES {
                    return Err(too_large());
                }
                Ok(Some(bytes))
            }
            Backend::Remote(r) => {
                let key = r.key(&manifest_key(digest));
                let result = match r.store.get(&key).await {
                    Ok(res) => res,
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(r.get_error(&key, e)),
                };
                if result.meta.size > MAX_MANIFEST_BYTES {
                    return Err(too_large());
                }
                // The size header is the server's word; the cap is enforced on the bytes too.
                let mut stream = result.into_stream();
                let mut bytes = Vec::new();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk
                        .map_err(|e| StoreError::backend(format!("GET {}/{key}", r.bucket), e))?;
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
                        return Err(too_large());
                    }
                }
                Ok(Some(bytes))
            }
        }
    }

    /// Store a manifest's canonical bytes under its digest.
    pub(crate) async fn write_manifest(&self, digest: &Digest, bytes: Vec<u8>) -> Result<()> {
        match self {
            Backend::Local(l) => {
                let path = l.root.join(manifest_key(digest));
                tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
                    .await
                    .map_err(|e| StoreError::Task(e.to_string()))?
            }
            Backend::Remote(r) => {
                let key = r.key(&manifest_key(digest));
                r.store
                    .put(&key, PutPayload::from(bytes))
                    .await
                    .map_err(|e| StoreError::backend(format!("PUT {}/{key}", r.bucket), e))?;
                Ok(())
            }
        }
    }

    /// Store the file at `src` as the blob `entry.sha256`, unless it is already stored. The
    /// bytes are hashed as they are sent; if they no longer match `entry` (the file changed since
    /// it was hashed) nothing is stored and `SourceChanged` is returned.
    pub(crate) async fn upload_blob(&self, src: &Path, entry: &FileEntry) -> Result<Upload> {
        match self {
            Backend::Local(l) => {
                let root = l.root.clone();
                let src = src.to_path_buf();
                let entry = entry.clone();
                tokio::task::spawn_blocking(move || local_put_blob(&root, &src, &entry))
                    .await
                    .map_err(|e| StoreError::Task(e.to_string()))?
            }
            Backend::Remote(r) => {
                if self.blob_size(&entry.sha256).await? == Some(entry.size) {
                    return Ok(Upload::AlreadyStored);
                }
                r.put_blob(src, entry).await?;
                Ok(Upload::Sent)
            }
        }
    }

    /// The blob's stored size and its bytes from `offset` to its end (however long the store
    /// says that is: the caller enforces the manifest's size on what arrives), or `None` if it
    /// is not stored.
    pub(crate) async fn read_blob_from(
        &self,
        sha: &Digest,
        offset: u64,
    ) -> Result<Option<(u64, ByteStream)>> {
        match self {
            Backend::Local(l) => {
                let path = l.root.join(blob_key(sha));
                let Some((file, len)) = l.open_regular(&blob_key(sha))? else {
                    return Ok(None);
                };
                local_read_stream(file, path, offset).map(|s| Some((len, s)))
            }
            Backend::Remote(r) => {
                let key = r.key(&blob_key(sha));
                let opts = GetOptions {
                    range: (offset > 0).then_some(GetRange::Offset(offset)),
                    ..GetOptions::default()
                };
                let result = match r.store.get_opts(&key, opts).await {
                    Ok(res) => res,
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(r.get_error(&key, e)),
                };
                let size = result.meta.size;
                let context = format!("reading {}/{key}", r.bucket);
                Ok(Some((
                    size,
                    result
                        .into_stream()
                        .map_err(move |e| StoreError::backend(context.clone(), e))
                        .boxed(),
                )))
            }
        }
    }

    /// Every manifest digest stored (names that are not `<64 hex>.json` are ignored).
    pub(crate) async fn list_manifests(&self) -> Result<Vec<Digest>> {
        let names = self.list_names("manifests/sha256").await?;
        let mut out: Vec<Digest> = names
            .iter()
            .filter_map(|(name, _, _)| name.strip_suffix(".json"))
            .filter_map(|hex| Digest::from_hex(hex).ok())
            .collect();
        out.sort();
        Ok(out)
    }

    /// Every stored blob.
    pub(crate) async fn list_blobs(&self) -> Result<Vec<BlobInfo>> {
        let names = self.list_names("blobs/sha256").await?;
        Ok(names
            .into_iter()
            .filter_map(|(name, size, modified)| {
                Digest::from_hex(&name).ok().map(|sha256| BlobInfo {
                    sha256,
                    size,
                    modified,
                })
            })
            .collect())
    }

    /// Names directly under `dir` with size and modification time. Local temporaries (names
    /// starting with `.`) are included so gc can see them.
    async fn list_names(&self, dir: &str) -> Result<Vec<(String, u64, SystemTime)>> {
        match self {
            Backend::Local(l) => {
                let path = l.root.join(dir);
                tokio::task::spawn_blocking(move || local_list(&path))
                    .await
                    .map_err(|e| StoreError::Task(e.to_string()))?
            }
            Backend::Remote(r) => {
                let prefix = r.key(dir);
                let metas: Vec<_> = r
                    .store
                    .list(Some(&prefix))
                    .try_collect()
                    .await
                    .map_err(|e| StoreError::backend(format!("LIST {}/{prefix}", r.bucket), e))?;
                Ok(metas
                    .into_iter()
                    .filter_map(|m| {
                        let name = m.location.filename()?.to_string();
                        Some((name, m.size, SystemTime::from(m.last_modified)))
                    })
                    .collect())
            }
        }
    }

    pub(crate) async fn delete_blob(&self, sha: &Digest) -> Result<()> {
        match self {
            Backend::Local(l) => {
                let path = l.root.join(blob_key(sha));
                std::fs::remove_file(&path)
                    .map_err(|e| StoreError::io(format!("removing {}", path.display()), e))
            }
            Backend::Remote(r) => {
                let key = r.key(&blob_key(sha));
                r.store
                    .delete(&key)
                    .await
                    .map_err(|e| StoreError::backend(format!("DELETE {}/{key}", r.bucket), e))
            }
        }
    }

    /// Local only: temporaries older than `cutoff` left by interrupted writers. Returns the
    /// paths removed (or that would be, with `dry_run`).
    pub(crate) fn remove_stale_temporaries(
        &self,
        cutoff: SystemTime,
        dry_run: bool,
    ) -> Result<Vec<PathBuf>> {
        let Backend::Local(l) = self else {
            return Ok(Vec::new());
        };
        let mut removed = Vec::new();
        for dir in ["blobs/sha256", "manifests/sha256"] {
            let dir = l.root.join(dir);
            for (name, _, modified) in local_list(&dir)? {
                if name.starts_with(TEMP_PREFIX) && modified < cutoff {
                    let path = dir.join(&name);
                    if !dry_run {
                        std::fs::remove_file(&path).map_err(|e| {
                            StoreError::io(format!("removing {}", path.display()), e)
                        })?;
                    }
                    removed.push(path);
                }
            }
        }
        Ok(removed)
    }
}

impl LocalBackend {
    /// Open `key` (a path under the store's root) for reading, as a regular file inside the
    /// root, or `None` when it does not exist. A stranger controls what is at that name, so:
    /// no symlink is followed anywhere on the way (`openat2` with `RESOLVE_BENEATH |
    /// RESOLVE_NO_SYMLINKS`; where the kernel or a sandbox refuses `openat2`, `O_NOFOLLOW` on
    /// the last component), the
    /// open never blocks (`O_NONBLOCK`: a FIFO does not wait for a writer), and the type is
    /// checked on the open descriptor (`fstat`) before a byte is read: a FIFO, device,
    /// directory or symlink is [`StoreError::NotRegularFile`]. Returns the file and its size.
    fn open_regular(&self, key: &str) -> Result<Option<(File, u64)>> {
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        use rustix::io::Errno;
        let location = format!("file://{}", self.root.display());
        let not_regular = || StoreError::NotRegularFile {
            key: key.to_string(),
            location: location.clone(),
        };
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let opened = rustix::fs::open(
            &self.root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(|root| {
            match rustix::fs::openat2(
                &root,
                key,
                flags,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            ) {
                // Kernels before 5.6 (ENOSYS), and container sandboxes whose seccomp filter
                // does not know the call (EPERM): the plain open, still O_NOFOLLOW.
                Err(Errno::NOSYS | Errno::PERM) => {
                    rustix::fs::open(self.root.join(key), flags, Mode::empty())
                }
                other => other,
            }
        });
        let fd = match opened {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            // A symlink on the way (ELOOP), a name resolving outside the root (EXDEV), a file
            // where a directory of the layout should be (ENOTDIR).
            Err(Errno::LOOP | Errno::XDEV | Errno::NOTDIR) => return Err(not_regular()),
            Err(e @ (Errno::ACCESS | Errno::PERM)) => {
                return Err(StoreError::Unreadable {
                    key: key.to_string(),
                    location,
                    reason: std::io::Error::from(e).to_string(),
                })
            }
            Err(e) => {
                return Err(StoreError::io(
                    format!("opening {}", self.root.join(key).display()),
                    std::io::Error::from(e),
                ))
            }
        };
        let file = File::from(fd);
        let meta = file
            .metadata()
            .map_err(|e| StoreError::io(format!("reading {}", self.root.join(key).display()), e))?;
        if !meta.file_type().is_file() {
            return Err(not_regular());
        }
        Ok(Some((file, meta.len())))
    }
}

impl RemoteBackend {
    /// A failed GET: a refusal to give us the object (403, 401) is the location's, so the
    /// submitter's; anything else (network, 5xx) is ours and retried.
    fn get_error(&self, key: &ObjPath, e: object_store::Error) -> StoreError {
        match e {
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => StoreError::Unreadable {
                key: key.to_string(),
                location: self.bucket.clone(),
                reason: e.to_string(),
            },
            e => StoreError::backend(format!("GET {}/{key}", self.bucket), e),
        }
    }

    fn key(&self, rel: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(rel)
        } else {
            ObjPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    async fn put_blob(&self, src: &Path, entry: &FileEntry) -> Result<()> {
        let key = self.key(&blob_key(&entry.sha256));
        let changed = |actual| StoreError::SourceChanged {
            path: src.to_path_buf(),
            expected: entry.sha256,
            actual,
        };
        if entry.size <= SINGLE_PUT_MAX {
            let path = src.to_path_buf();
            let bytes = tokio::task::spawn_blocking(move || std::fs::read(&path))
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?
                .map_err(|e| StoreError::io(format!("reading {}", src.display()), e))?;
            let actual = Digest::of(&bytes);
            if actual != entry.sha256 || bytes.len() as u64 != entry.size {
                return Err(changed(actual));
            }
            self.store
                .put(&key, PutPayload::from(bytes))
                .await
                .map_err(|e| StoreError::backend(format!("PUT {}/{key}", self.bucket), e))?;
            return Ok(());
        }
        let upload = self.store.put_multipart(&key).await.map_err(|e| {
            StoreError::backend(format!("starting upload {}/{key}", self.bucket), e)
        })?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let file =
            File::open(src).map_err(|e| StoreError::io(format!("opening {}", src.display()), e))?;
        // The file and hasher travel into a blocking task for each chunk and come back with it:
        // disk reads and hashing never block the async workers that drive the uploads.
        let mut state = (file, Sha256Writer::new());
        loop {
            let src_path = src.to_path_buf();
            let (next_state, chunk) = tokio::task::spawn_blocking(move || {
                let (mut file, mut hasher) = state;
                let mut buf = vec![0u8; PART_SIZE];
                let mut filled = 0;
                while filled < buf.len() {
                    match file.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            return Err(StoreError::io(
                                format!("reading {}", src_path.display()),
                                e,
                            ))
                        }
                    }
                }
                buf.truncate(filled);
                hasher.update(&buf);
                Ok(((file, hasher), buf))
            })
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
            state = next_state;
            if chunk.is_empty() {
                break;
            }
            writer
                .wait_for_capacity(PARTS_IN_FLIGHT)
                .await
                .map_err(|e| StoreError::backend(format!("uploading {}/{key}", self.bucket), e))?;
            writer.put(Bytes::from(chunk));
        }
        let hasher = state.1;
        let size = hasher.len();
        let actual = hasher.finish();
        if actual != entry.sha256 || size != entry.size {
            // Abort so nothing is ever stored under a name its bytes do not hash to.
            if let Err(e) = writer.abort().await {
                tracing::warn!(key = %key, error = %e, "aborting multipart upload failed");
            }
            return Err(changed(actual));
        }
        writer.finish().await.map_err(|e| {
            StoreError::backend(format!("completing upload {}/{key}", self.bucket), e)
        })?;
        Ok(())
    }
}

fn create_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| StoreError::io(format!("creating {}", parent.display()), e))?;
    }
    Ok(())
}

/// fsync a directory so a rename inside it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    koth_core::fsutil::sync_dir(dir)
        .map_err(|e| StoreError::io(format!("syncing directory {}", dir.display()), e))
}

/// Write `bytes` to `path` with [`koth_core::fsutil::write_atomic`], creating the parent first.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    create_parent(path)?;
    Ok(write_atomic(path, bytes)?)
}

/// Copy `src` into the local store as blob `entry.sha256`, hashing while copying.
///
/// Safe with several writers on one host: each writes its own temporary and renames it into
/// place; the rename is atomic and every writer's bytes are identical (they hash to the name),
/// so whichever rename lands last leaves the same single copy.
fn local_put_blob(root: &Path, src: &Path, entry: &FileEntry) -> Result<Upload> {
    let target = root.join(blob_key(&entry.sha256));
    if let Ok(meta) = std::fs::metadata(&target) {
        if meta.len() == entry.size {
            let (_, actual) = crate::hash::hash_file(&target)?;
            if actual == entry.sha256 {
                return Ok(Upload::AlreadyStored);
            }
        }
        tracing::warn!(blob = %target.display(), "stored blob is corrupt; replacing it");
    }
    create_parent(&target)?;
    write_atomic_with(&target, |tmp: &Path| {
        let mut input =
            File::open(src).map_err(|e| StoreError::io(format!("opening {}", src.display()), e))?;
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .map_err(|e| StoreError::io(format!("creating {}", tmp.display()), e))?;
        let mut hasher = Sha256Writer::new();
        let mut buf = vec![0u8; IO_CHUNK];
        loop {
            let n = input
                .read(&mut buf)
                .map_err(|e| StoreError::io(format!("reading {}", src.display()), e))?;
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            hasher.update(chunk);
            out.write_all(chunk)
                .map_err(|e| StoreError::io(format!("writing {}", tmp.display()), e))?;
        }
        let size = hasher.len();
        let actual = hasher.finish();
        if actual != entry.sha256 || size != entry.size {
            return Err(StoreError::SourceChanged {
                path: src.to_path_buf(),
                expected: entry.sha256,
                actual,
            });
        }
        Ok(())
    })?;
    Ok(Upload::Sent)
}

/// Stream an opened local blob from `offset` in `IO_CHUNK` pieces, read on a blocking thread.
fn local_read_stream(mut file: File, path: PathBuf, offset: u64) -> Result<ByteStream> {
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| StoreError::io(format!("seeking {}", path.display()), e))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || loop {
        let mut buf = vec![0u8; IO_CHUNK];
        let item = match file.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                buf.truncate(n);
                Ok(Bytes::from(buf))
            }
            Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
        };
        let failed = item.is_err();
        // A closed channel means the reader gave up (e.g. too many bytes): stop quietly.
        if tx.blocking_send(item).is_err() || failed {
            return;
        }
    });
    Ok(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed())
}

fn local_list(dir: &Path) -> Result<Vec<(String, u64, SystemTime)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(format!("listing {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let meta = match entry.metadata() {
            Ok(m) => m,
            // Removed between listing and stat (a concurrent gc or rename): skip it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(StoreError::io(
                    format!("reading metadata of {}", entry.path().display()),
                    e,
                ))
            }
        };
        if meta.is_file() {
            out.push((
                name,
                meta.len(),
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            ));
        }
    }
    Ok(out)
}
