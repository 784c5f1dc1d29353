//! The store against its local-directory backend: round trip, every refusal, resume,
//! concurrent writers, gc and the cache.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{assert_same_tree, local_location, make_checkpoint};
use koth_core::checkpoint::{CheckpointManifest, FileEntry, FileRefusal};
use koth_core::clock::{Clock, ManualClock, SystemClock};
use koth_core::Digest;
use koth_store::{
    manifest_of_dir, BlockingStore, CheckpointCache, GcOptions, GetOptions, S3Options, StoreError,
};

fn open(root: &Path) -> BlockingStore {
    BlockingStore::open(&local_location(root), &S3Options::default()).unwrap()
}

fn blob_path(root: &Path, sha: &Digest) -> std::path::PathBuf {
    root.join("blobs/sha256").join(sha.hex())
}

fn manifest_path(root: &Path, digest: &Digest) -> std::path::PathBuf {
    root.join("manifests/sha256")
        .join(format!("{}.json", digest.hex()))
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn put_get_verify_ls_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, root, out) = (
        tmp.path().join("src"),
        tmp.path().join("store"),
        tmp.path().join("out"),
    );
    make_checkpoint(&src, 1, 300_000);
    let store = open(&root);

    let put = store.put(&src).unwrap();
    assert_eq!(put.digest, manifest_of_dir(&src, 2).unwrap().digest());
    assert_eq!(put.files, 5);
    assert_eq!(put.blobs_uploaded, 5);
    assert_eq!(put.blobs_already_stored, 0);
    // The manifest file is exactly the canonical bytes and hashes to the digest.
    let manifest_bytes = std::fs::read(manifest_path(&root, &put.digest)).unwrap();
    assert_eq!(Digest::of(&manifest_bytes), put.digest);

    // Putting again sends nothing.
    let again = store.put(&src).unwrap();
    assert_eq!(again.digest, put.digest);
    assert_eq!((again.blobs_uploaded, again.blobs_already_stored), (0, 5));

    let got = store
        .get(&put.digest, &out, &GetOptions::default())
        .unwrap();
    assert!(!got.already_present);
    assert_eq!(got.downloaded_bytes, put.total_bytes);
    assert_same_tree(&src, &out);
    // No staging directory or lock is left behind.
    assert_eq!(files_in(tmp.path()), vec!["out", "src", "store"]);

    // A second get into the same complete output is a no-op.
    let again = store
        .get(&put.digest, &out, &GetOptions::default())
        .unwrap();
    assert!(again.already_present);

    let v = store.verify(&put.digest, u64::MAX).unwrap();
    assert_eq!((v.files, v.total_bytes), (5, put.total_bytes));

    let ls = store.list().unwrap();
    assert_eq!(ls.len(), 1);
    assert_eq!(ls[0].digest, put.digest);
    assert_eq!(ls[0].total_bytes, Some(put.total_bytes));
    assert!(ls[0].problem.is_none());

    // An unknown digest is a clear "not found".
    let missing = Digest::of(b"nothing");
    let err = store
        .get(&missing, &tmp.path().join("x"), &GetOptions::default())
        .unwrap_err();
    assert!(matches!(err, StoreError::ManifestNotFound { .. }), "{err}");
    assert!(err.to_string().contains(&missing.to_string()));
}

#[test]
fn flipped_byte_in_a_stored_blob_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, root, out) = (
        tmp.path().join("src"),
        tmp.path().join("store"),
        tmp.path().join("out"),
    );
    make_checkpoint(&src, 2, 100_000);
    let store = open(&root);
    let digest = store.put(&src).unwrap().digest;
    let manifest = manifest_of_dir(&src, 2).unwrap();
    let victim = manifest
        .files()
        .iter()
        .find(|f| f.path == "model-00001-of-00002.safetensors")
        .unwrap();
    let path = blob_path(&root, &victim.sha256);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[12_345] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let actual = Digest::of(&bytes);

    let err = store
        .get(&digest, &out, &GetOptions::default())
        .unwrap_err();
    match &err {
        StoreError::BlobMismatch {
            path,
            expected,
            actual: got,
        } => {
            assert_eq!(path, "model-00001-of-00002.safetensors");
            assert_eq!(*expected, victim.sha256);
            assert_eq!(*got, actual);
        }
        other => panic!("expected BlobMismatch, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("model-00001-of-00002.safetensors") && msg.contains(&actual.to_string()));
    assert!(
        !out.exists(),
        "a refused checkpoint must never appear as output"
    );

    let err = store.verify(&digest, u64::MAX).unwrap_err();
    assert!(matches!(err, StoreError::BlobMismatch { .. }), "{err}");

    // Putting the original again repairs the corrupt blob, and the get then succeeds.
    let put = store.put(&src).unwrap();
    assert_eq!(put.blobs_uploaded, 1);
    store.get(&digest, &out, &GetOptions::default()).unwrap();
    assert_same_tree(&src, &out);
}

#[test]
fn swapped_manifest_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    make_checkpoint(&a, 3, 10_000);
    make_checkpoint(&b, 4, 10_000);
    let store = open(&root);
    let da = store.put(&a).unwrap().digest;
    let db = store.put(&b).unwrap().digest;
    // Someone with write access puts A's manifest under B's name.
    std::fs::copy(manifest_path(&root, &da), manifest_path(&root, &db)).unwrap();

    let out = tmp.path().join("out");
    let err = store.get(&db, &out, &GetOptions::default()).unwrap_err();
    match &err {
        StoreError::ManifestMismatch { digest, actual } => {
            assert_eq!((*digest, *actual), (db, da));
        }
        other => panic!("expected ManifestMismatch, got {other}"),
    }
    assert!(err.to_string().contains(&db.to_string()) && err.to_string().contains(&da.to_string()));
    assert!(!out.exists());
    // ls shows the problem instead of hiding the entry.
    let ls = store.list().unwrap();
    let entry = ls.iter().find(|e| e.digest == db).unwrap();
    assert!(entry.problem.as_deref().unwrap().contains("hashes to"));
    // gc refuses to run while a manifest does not verify.
    let err = store
        .gc(&GcOptions {
            min_age: Duration::ZERO,
            dry_run: false,
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::GcUnsafe { .. }), "{err}");
}

#[test]
fn extra_files_are_refused_on_put() {
    for (name, expected) in [
        ("modeling_llama.py", FileRefusal::Executable),
        ("pytorch_model.bin", FileRefusal::Pickle),
        ("README.md", FileRefusal::Unknown),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let (src, root) = (tmp.path().join("src"), tmp.path().join("store"));
        make_checkpoint(&src, 5, 1000);
        std::fs::write(src.join(name), b"import os").unwrap();
        let err = open(&root).put(&src).unwrap_err();
        match &err {
            StoreError::FileRefused { path, reason } => {
                assert_eq!(path, name);
                assert_eq!(*reason, expected);
            }
            other => panic!("expected FileRefused for {name}, got {other}"),
        }
        assert!(err.to_string().contains(name));
        // Nothing at all was stored.
        assert!(files_in(&root.join("manifests/sha256")).is_empty());
        assert!(files_in(&root.join("blobs/sha256")).is_empty());
    }
    // A subdirectory is refused too.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_checkpoint(&src, 5, 1000);
    std::fs::create_dir(src.join("sub")).unwrap();
    let err = open(&tmp.path().join("store")).put(&src).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::FileRefused {
                reason: FileRefusal::Nested,
                ..
            }
        ),
        "{err}"
    );
}

/// Write a forged manifest (and its blobs) straight into a local store, bypassing `put`.
fn forge(root: &Path, files: &[(&str, &[u8])]) -> Digest {
    let entries = files
        .iter()
        .map(|(path, data)| {
            let sha256 = Digest::of(data);
            let blob = blob_path(root, &sha256);
            std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
            std::fs::write(&blob, data).unwrap();
            FileEntry {
                path: path.to_string(),
                size: data.len() as u64,
                sha256,
            }
        })
        .collect();
    let manifest = CheckpointManifest::new(entries).unwrap();
    let digest = manifest.digest();
    let path = manifest_path(root, &digest);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, manifest.canonical_bytes()).unwrap();
    digest
}

#[test]
fn forged_manifest_with_an_extra_file_is_refused_on_get() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let digest = forge(
        &root,
        &[
            ("config.json", b"{}"),
            ("model.safetensors", b"weights"),
            ("weights.pkl", b"cos\nsystem\n"),
        ],
    );
    let out = tmp.path().join("out");
    let err = open(&root)
        .get(&digest, &out, &GetOptions::default())
        .unwrap_err();
    match &err {
        StoreError::FileRefused { path, reason } => {
            assert_eq!(path, "weights.pkl");
            assert_eq!(*reason, FileRefusal::Pickle);
        }
        other => panic!("expected FileRefused, got {other}"),
    }
    assert!(!out.exists());
}

#[test]
fn size_cap_is_enforced_from_the_manifest_and_while_streaming() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, root) = (tmp.path().join("src"), tmp.path().join("store"));
    make_checkpoint(&src, 6, 50_000);
    let store = open(&root);
    let put = store.put(&src).unwrap();

    // From the manifest: nothing is downloaded.
    let out = tmp.path().join("out");
    let opts = GetOptions {
        max_total_bytes: put.total_bytes - 1,
        ..GetOptions::default()
    };
    let err = store.get(&put.digest, &out, &opts).unwrap_err();
    match err {
        StoreError::TooLarge { total, cap } => {
            assert_eq!((total, cap), (put.total_bytes, put.total_bytes - 1))
        }
        other => panic!("expected TooLarge, got {other}"),
    }
    assert!(!out.exists());
    assert_eq!(
        files_in(tmp.path()),
        vec!["src", "store"],
        "nothing may be staged"
    );

    // The stored blob is longer than the manifest says: refused from its size (the upload's
    // fault), before a byte is read.
    let entry = manifest_of_dir(&src, 2)
        .unwrap()
        .files()
        .iter()
        .find(|f| f.path == "model-00002-of-00002.safetensors")
        .cloned()
        .unwrap();
    let blob = blob_path(&root, &entry.sha256);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&blob, &bytes).unwrap();
    let err = store
        .get(&put.digest, &out, &GetOptions::default())
        .unwrap_err();
    match &err {
        StoreError::BlobWrongSize {
            path,
            expected,
            actual,
            ..
        } => {
            assert_eq!(path, &entry.path);
            assert_eq!((*expected, *actual), (entry.size, entry.size + 4096));
        }
        other => panic!("expected BlobWrongSize, got {other}"),
    }
    assert!(!out.exists());
    let err = store.verify(&put.digest, u64::MAX).unwrap_err();
    assert!(matches!(err, StoreError::BlobWrongSize { .. }), "{err}");
}

#[test]
fn interrupted_get_resumes_from_part_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, root, out) = (
        tmp.path().join("src"),
        tmp.path().join("store"),
        tmp.path().join("out"),
    );
    make_checkpoint(&src, 7, 2_000_000);
    let store = open(&root);
    let digest = store.put(&src).unwrap().digest;
    let manifest = manifest_of_dir(&src, 2).unwrap();
    let big = manifest
        .files()
        .iter()
        .find(|f| f.path == "model-00001-of-00002.safetensors")
        .cloned()
        .unwrap();
    let blob = blob_path(&root, &big.sha256);
    let original = std::fs::read(&blob).unwrap();

    // A blob stored shorter than its manifest says is the upload's fault, refused from the
    // file's size before a byte is read (a file store never drops a connection).
    std::fs::write(&blob, &original[..700_000]).unwrap();
    let err = store
        .get(&digest, &out, &GetOptions::default())
        .unwrap_err();
    match &err {
        StoreError::BlobWrongSize {
            path,
            expected,
            actual,
            ..
        } => {
            assert_eq!(path, &big.path);
            assert_eq!((*expected, *actual), (big.size, 700_000));
        }
        other => panic!("expected BlobWrongSize, got {other}"),
    }
    assert!(err.reject_code().is_some(), "the submitter's fault: {err}");
    assert!(!out.exists());

    // An interrupted get (killed after 700,000 bytes of the big file) left its staging
    // directory; the store heals and the rerun resumes from what was received.
    let staging = out.with_file_name(format!(".out.koth-partial-{}", &digest.hex()[..16]));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(
        staging.join(format!("{}.part", big.path)),
        &original[..700_000],
    )
    .unwrap();
    std::fs::write(&blob, &original).unwrap();
    let got = store.get(&digest, &out, &GetOptions::default()).unwrap();
    let small_total: u64 = manifest
        .files()
        .iter()
        .filter(|f| f.path != big.path)
        .map(|f| f.size)
        .sum();
    assert_eq!(got.resumed_bytes, 700_000, "{got:?}");
    assert_eq!(got.downloaded_bytes, big.size - 700_000 + small_total);
    assert_same_tree(&src, &out);
}

#[test]
fn a_part_file_with_wrong_bytes_is_discarded_and_the_rerun_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, root, out) = (
        tmp.path().join("src"),
        tmp.path().join("store"),
        tmp.path().join("out"),
    );
    make_checkpoint(&src, 8, 200_000);
    let store = open(&root);
    let digest = store.put(&src).unwrap().digest;
    // A first get is interrupted and leaves a staging directory; forge its .part with garbage.
    let staging = tmp
        .path()
        .join(format!(".out.koth-partial-{}", &digest.hex()[..16]));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(
        staging.join("model-00001-of-00002.safetensors.part"),
        vec![0xAAu8; 50_000],
    )
    .unwrap();
    let err = store
        .get(&digest, &out, &GetOptions::default())
        .unwrap_err();
    assert!(matches!(err, StoreError::BlobMismatch { .. }), "{err}");
    assert!(!out.exists());
    assert!(!staging
        .join("model-00001-of-00002.safetensors.part")
        .exists());
    store.get(&digest, &out, &GetOptions::default()).unwrap();
    assert_same_tree(&src, &out);
    assert!(!staging.exists());
}

#[test]
fn an_existing_different_output_is_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, root, out) = (
        tmp.path().join("src"),
        tmp.path().join("store"),
        tmp.path().join("out"),
    );
    make_checkpoint(&src, 9, 1000);
    let store = open(&root);
    let digest = store.put(&src).unwrap().digest;
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("config.json"), b"mine").unwrap();
    let err = store
        .get(&digest, &out, &GetOptions::default())
        .unwrap_err();
    assert!(matches!(err, StoreError::OutputExists { .. }), "{err}");
    assert_eq!(std::fs::read(out.join("config.json")).unwrap(), b"mine");
    assert_eq!(files_in(&out), vec!["config.json"]);

    // Same names but one file's bytes differ: also refused, also untouched.
    std::fs::remove_dir_all(&out).unwrap();
    store.get(&digest, &out, &GetOptions::default()).unwrap();
    std::fs::write(out.join("tokenizer.json"), b"changed").unwrap();
    let err = store
        .get(&digest, &out, &GetOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    assert_eq!(
        std::fs::read(out.join("tokenizer.json")).unwrap(),
        b"changed"
    );

    // An empty directory is filled.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    store.get(&digest, &empty, &GetOptions::default()).unwrap();
    assert_same_tree(&src, &empty);
}

#[test]
fn concurrent_puts_of_one_checkpoint_both_succeed_and_store_one_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, root) = (tmp.path().join("src"), tmp.path().join("store"));
    make_checkpoint(&src, 10, 3_000_000);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3).map(|_| s.spawn(|| open(&root).put(&src))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let digests: Vec<Digest> = results.into_iter().map(|r| r.unwrap().digest).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]));
    // Exactly one copy of each blob and one manifest, no temporaries.
    assert_eq!(files_in(&root.join("blobs/sha256")).len(), 5);
    assert_eq!(files_in(&root.join("manifests/sha256")).len(), 1);
    open(&root).verify(&digests[0], u64::MAX).unwrap();
}

#[test]
fn gc_removes_only_unreferenced_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, root) = (tmp.path().join("src"), tmp.path().join("store"));
    make_checkpoint(&src, 11, 5000);
    let store = open(&root);
    let digest = store.put(&src).unwrap().digest;
    // An orphan blob (a put that died before writing its manifest) and a stale temporary.
    let orphan = Digest::of(b"orphan");
    std::fs::write(blob_path(&root, &orphan), b"orphan").unwrap();
    std::fs::write(root.join("blobs/sha256/.tmp.x.1.2.3"), b"partial").unwrap();

    // Too young to collect: kept.
    let young = store
        .gc(&GcOptions {
            min_age: Duration::from_secs(3600),
            dry_run: false,
        })
        .unwrap();
    assert!(young.blobs_deleted.is_empty());
    assert_eq!(young.temporaries_removed, 0);

    let dry = store
        .gc(&GcOptions {
            min_age: Duration::ZERO,
            dry_run: true,
        })
        .unwrap();
    assert_eq!(dry.blobs_deleted, vec![orphan]);
    assert!(blob_path(&root, &orphan).exists());

    let report = store
        .gc(&GcOptions {
            min_age: Duration::ZERO,
            dry_run: false,
        })
        .unwrap();
    assert_eq!(report.blobs_deleted, vec![orphan]);
    assert_eq!(report.bytes_freed, 6);
    assert_eq!(report.blobs_kept, 5);
    assert_eq!(report.temporaries_removed, 1);
    assert!(!blob_path(&root, &orphan).exists());
    store.verify(&digest, u64::MAX).unwrap();
}

#[test]
fn cache_evicts_least_recently_used_and_never_the_pinned_king() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = open(&root);
    let mut digests = Vec::new();
    for seed in 0..4 {
        let src = tmp.path().join(format!("src{seed}"));
        make_checkpoint(&src, 100 + seed, 100_000);
        digests.push(store.put(&src).unwrap().digest);
    }
    let one = manifest_of_dir(&tmp.path().join("src0"), 2)
        .unwrap()
        .total_size()
        .unwrap();
    // Room for two checkpoints.
    // Uses are ordered by an injected clock, advanced between fetches instead of sleeping.
    let clock = ManualClock::new(SystemClock.now_ms());
    let cache = CheckpointCache::open_with_clock(
        &tmp.path().join("cache"),
        2 * one + one / 2,
        Arc::new(clock.clone()),
    )
    .unwrap();
    let opts = GetOptions::default();

    let king = digests[0];
    cache.fetch(&store, &king, &opts).unwrap();
    cache.pin(&king).unwrap();
    clock.advance(1);
    cache.fetch(&store, &digests[1], &opts).unwrap();
    clock.advance(1);
    // The king is the least recently used, but pinned: digests[1] goes instead.
    cache.fetch(&store, &digests[2], &opts).unwrap();
    assert!(cache.contains(&king));
    assert!(!cache.contains(&digests[1]));
    assert!(cache.contains(&digests[2]));
    clock.advance(1);
    cache.fetch(&store, &digests[3], &opts).unwrap();
    assert!(cache.contains(&king));
    assert!(!cache.contains(&digests[2]));
    assert!(cache.contains(&digests[3]));
    let entries = cache.entries().unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().any(|e| e.digest == king && e.pinned));
    assert_same_tree(&tmp.path().join("src0"), &cache.path_of(&king));

    // Unpinned, the old king is evicted like any other entry.
    cache.unpin(&king).unwrap();
    clock.advance(1);
    cache.fetch(&store, &digests[1], &opts).unwrap();
    assert!(!cache.contains(&king));

    // A half-written entry (a staging directory) is never considered present.
    let hex = digests[2].hex();
    std::fs::create_dir_all(
        tmp.path()
            .join("cache")
            .join(format!(".{hex}.koth-partial-x")),
    )
    .unwrap();
    assert!(!cache.contains(&digests[2]));
    assert!(cache
        .entries()
        .unwrap()
        .iter()
        .all(|e| e.digest != digests[2]));
}

/// Run `f` on another thread and fail the test if it has not returned within `secs` (a store
/// open that blocks on a FIFO would otherwise hang the test runner).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("the store blocked instead of refusing")
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_fifo_symlink_or_directory_in_the_store_is_refused_at_once_as_the_submitters_fault() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, root) = (tmp.path().join("src"), tmp.path().join("store"));
    make_checkpoint(&src, 31, 10_000);
    let digest = open(&root).put(&src).unwrap().digest;
    let manifest = manifest_of_dir(&src, 2).unwrap();
    let victim = manifest.files()[0].clone();
    let blob = blob_path(&root, &victim.sha256);
    let original = std::fs::read(&blob).unwrap();
    let get = |root: &Path, out: &Path| {
        let (root, out) = (root.to_path_buf(), out.to_path_buf());
        within(20, move || {
            open(&root)
                .get(&digest, &out, &GetOptions::default())
                .unwrap_err()
        })
    };
    let refused = |err: &StoreError, what: &str| {
        assert!(
            matches!(err, StoreError::NotRegularFile { .. }),
            "{what}: {err}"
        );
        assert!(err.reject_code().is_some(), "{what}: {err}");
    };

    // A FIFO where a blob should be: never opened for reading, never waited on.
    std::fs::remove_file(&blob).unwrap();
    mkfifo(&blob);
    refused(&get(&root, &tmp.path().join("o1")), "fifo blob");
    // A symlink to the right bytes outside the store: not followed.
    std::fs::remove_file(&blob).unwrap();
    let outside = tmp.path().join("outside");
    std::fs::write(&outside, &original).unwrap();
    std::os::unix::fs::symlink(&outside, &blob).unwrap();
    refused(&get(&root, &tmp.path().join("o2")), "symlinked blob");
    // A directory.
    std::fs::remove_file(&blob).unwrap();
    std::fs::create_dir(&blob).unwrap();
    refused(&get(&root, &tmp.path().join("o3")), "directory blob");
    std::fs::remove_dir(&blob).unwrap();
    std::fs::write(&blob, &original).unwrap();

    // A symlinked directory of the layout: the open never leaves the store's root.
    let blobs = root.join("blobs/sha256");
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::rename(&blobs, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &blobs).unwrap();
    refused(&get(&root, &tmp.path().join("o4")), "symlinked blobs dir");
    std::fs::remove_file(&blobs).unwrap();
    std::fs::rename(&elsewhere, &blobs).unwrap();

    // A FIFO where the manifest should be.
    let mpath = manifest_path(&root, &digest);
    let mbytes = std::fs::read(&mpath).unwrap();
    std::fs::remove_file(&mpath).unwrap();
    mkfifo(&mpath);
    let r = root.clone();
    let err = within(20, move || {
        open(&r).fetch_manifest(&digest, u64::MAX).unwrap_err()
    });
    refused(&err, "fifo manifest");
    std::fs::remove_file(&mpath).unwrap();
    std::fs::write(&mpath, mbytes).unwrap();

    // Healed, the same checkpoint downloads.
    let out = tmp.path().join("ok");
    open(&root)
        .get(&digest, &out, &GetOptions::default())
        .unwrap();
    assert_same_tree(&src, &out);
}

#[test]
fn a_failed_get_leaves_no_staging_when_the_fault_is_the_submitters() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, root) = (tmp.path().join("src"), tmp.path().join("store"));
    make_checkpoint(&src, 32, 200_000);
    let store = open(&root);
    let digest = store.put(&src).unwrap().digest;
    let manifest = manifest_of_dir(&src, 2).unwrap();
    let victim = manifest.files()[1].clone();
    std::fs::remove_file(blob_path(&root, &victim.sha256)).unwrap();
    let out = tmp.path().join("dl").join("out");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let err = store
        .get(&digest, &out, &GetOptions::default())
        .unwrap_err();
    assert!(matches!(err, StoreError::BlobMissing { .. }), "{err}");
    assert!(
        files_in(out.parent().unwrap()).is_empty(),
        "left behind: {:?}",
        files_in(out.parent().unwrap())
    );
}

#[test]
fn the_cache_budget_counts_partial_downloads_and_removes_stale_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = open(&root);
    let src = tmp.path().join("src");
    make_checkpoint(&src, 33, 100_000);
    let digest = store.put(&src).unwrap().digest;
    let one = manifest_of_dir(&src, 2).unwrap().total_size().unwrap();
    let cache_dir = tmp.path().join("cache");
    let cache = CheckpointCache::open(&cache_dir, 2 * one).unwrap();
    // What an interrupted get of another checkpoint left: 3 × `one` bytes of .part files.
    let stale = cache_dir.join(format!(
        ".{}.koth-partial-0123456789abcdef",
        Digest::of(b"other").hex()
    ));
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(
        stale.join("model.safetensors.part"),
        vec![0u8; 3 * one as usize],
    )
    .unwrap();
    assert_eq!(cache.partial_bytes().unwrap(), 3 * one);
    // A partial download whose get is still running (its lock is held) is never removed.
    let running = cache_dir.join(format!(
        ".{}.koth-partial-fedcba9876543210",
        Digest::of(b"running").hex()
    ));
    std::fs::create_dir_all(&running).unwrap();
    std::fs::write(running.join("x.part"), vec![0u8; 10]).unwrap();
    let lock = std::fs::File::create(running.join(".lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();

    cache
        .fetch(&store, &digest, &GetOptions::default())
        .unwrap();
    assert!(
        !stale.exists(),
        "the stale partial download was not removed"
    );
    assert!(running.exists(), "a running download was removed");
    assert!(cache.contains(&digest));
    assert_eq!(cache.partial_bytes().unwrap(), 10);
}

#[test]
fn a_store_slower_than_the_deadline_times_out_and_the_rerun_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, root, out) = (
        tmp.path().join("src"),
        tmp.path().join("store"),
        tmp.path().join("out"),
    );
    make_checkpoint(&src, 34, 300_000);
    let digest = open(&root).put(&src).unwrap().digest;
    // 100 KB/s for ~600 KB: far past a one-second deadline (a store that trickles bytes).
    let slow = GetOptions {
        max_bytes_per_sec: Some(100_000),
        ..GetOptions::default()
    };
    let store = open(&root).with_deadline(Duration::from_secs(1));
    let started = std::time::Instant::now();
    let err = store.get(&digest, &out, &slow).unwrap_err();
    assert!(matches!(err, StoreError::TimedOut { .. }), "{err}");
    assert!(err.reject_code().is_none(), "a timeout is ours: {err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!out.exists());
    // Within the deadline, the rerun completes (resuming what the slow one received).
    let got = store.get(&digest, &out, &GetOptions::default()).unwrap();
    assert!(got.resumed_bytes > 0, "{got:?}");
    assert_same_tree(&src, &out);
    assert!(koth_store::fetch_deadline(4_000_000_000) >= Duration::from_secs(120 + 476));
}
