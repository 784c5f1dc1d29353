//! The store against a real S3 server: SeaweedFS started on loopback by each test (see
//! `common::Weed`). If `weed` is not installed these tests fail and say how to install it.

mod common;

use std::time::Duration;

use common::{assert_same_tree, make_checkpoint, Weed};
use koth_core::checkpoint::{CheckpointManifest, FileEntry, FileRefusal};
use koth_core::Digest;
use koth_store::{manifest_of_dir, BlockingStore, GcOptions, GetOptions, Location, StoreError};
use object_store::ObjectStore;

const BUCKET: &str = "koth-test";
const PREFIX: &str = "net/checkpoints";

fn location() -> Location {
    format!("s3://{BUCKET}/{PREFIX}").parse().unwrap()
}

fn raw_put(weed: &Weed, key: &str, bytes: Vec<u8>) {
    let client = weed.raw_client(BUCKET);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(client.put(&format!("{PREFIX}/{key}").into(), bytes.into()))
        .unwrap();
}

fn raw_get(weed: &Weed, key: &str) -> Vec<u8> {
    let client = weed.raw_client(BUCKET);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        client
            .get(&format!("{PREFIX}/{key}").into())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    })
}

fn raw_count(weed: &Weed, dir: &str) -> usize {
    use futures::TryStreamExt;
    let client = weed.raw_client(BUCKET);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let v: Vec<_> = client
            .list(Some(&format!("{PREFIX}/{dir}").into()))
            .try_collect()
            .await
            .unwrap();
        v.len()
    })
}

#[test]
fn s3_round_trip_refusals_and_gc() {
    let weed = Weed::start();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    // One shard above the 16 MiB single-request limit, so the multipart path is exercised.
    make_checkpoint(&src, 21, 20 << 20);
    let store = BlockingStore::open(&location(), &weed.s3_options()).unwrap();

    let put = store.put(&src).unwrap();
    assert_eq!(put.digest, manifest_of_dir(&src, 2).unwrap().digest());
    assert_eq!((put.blobs_uploaded, put.blobs_already_stored), (5, 0));
    let again = store.put(&src).unwrap();
    assert_eq!((again.blobs_uploaded, again.blobs_already_stored), (0, 5));
    assert_eq!(raw_count(&weed, "blobs/sha256"), 5);

    let out = tmp.path().join("out");
    let got = store
        .get(&put.digest, &out, &GetOptions::default())
        .unwrap();
    assert_eq!(got.downloaded_bytes, put.total_bytes);
    assert_same_tree(&src, &out);
    store.verify(&put.digest, u64::MAX).unwrap();
    let ls = store.list().unwrap();
    assert_eq!(ls.len(), 1);
    assert_eq!(ls[0].total_bytes, Some(put.total_bytes));

    // A flipped byte in a stored blob.
    let manifest = manifest_of_dir(&src, 2).unwrap();
    let victim = manifest
        .files()
        .iter()
        .find(|f| f.path == "model-00002-of-00002.safetensors")
        .cloned()
        .unwrap();
    let key = format!("blobs/sha256/{}", victim.sha256.hex());
    let original = raw_get(&weed, &key);
    let mut flipped = original.clone();
    flipped[777] ^= 0x80;
    raw_put(&weed, &key, flipped.clone());
    let out2 = tmp.path().join("out2");
    let err = store
        .get(&put.digest, &out2, &GetOptions::default())
        .unwrap_err();
    match &err {
        StoreError::BlobMismatch {
            path,
            expected,
            actual,
        } => {
            assert_eq!(path, &victim.path);
            assert_eq!(*expected, victim.sha256);
            assert_eq!(*actual, Digest::of(&flipped));
        }
        other => panic!("expected BlobMismatch, got {other}"),
    }
    assert!(!out2.exists());
    assert!(matches!(
        store.verify(&put.digest, u64::MAX).unwrap_err(),
        StoreError::BlobMismatch { .. }
    ));

    // A blob stored longer than its manifest says: refused from the object's size, before a
    // byte is read (the upload's fault, whatever the network does).
    let mut longer = original.clone();
    longer.extend_from_slice(b"trailing bytes");
    raw_put(&weed, &key, longer);
    let err = store
        .get(&put.digest, &out2, &GetOptions::default())
        .unwrap_err();
    assert!(
        matches!(err, StoreError::BlobWrongSize { actual, expected, .. }
            if actual == victim.size + 14 && expected == victim.size),
        "{err}"
    );
    assert!(err.reject_code().is_some(), "the submitter's fault: {err}");
    assert!(!out2.exists());

    // Stored truncated: likewise the upload's fault, from the object's size. (Only a stream
    // that ends early while the object's size is right is `BlobTruncated`, ours and retried.)
    raw_put(&weed, &key, original[..100_000].to_vec());
    let err = store
        .get(&put.digest, &out2, &GetOptions::default())
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::BlobWrongSize {
                actual: 100_000,
                ..
            }
        ),
        "{err}"
    );
    raw_put(&weed, &key, original.clone());
    store
        .get(&put.digest, &out2, &GetOptions::default())
        .unwrap();
    assert_same_tree(&src, &out2);

    // A swapped manifest: another checkpoint's manifest stored under this digest.
    let other_src = tmp.path().join("other");
    make_checkpoint(&other_src, 22, 1000);
    let other = store.put(&other_src).unwrap().digest;
    let other_manifest = raw_get(&weed, &format!("manifests/sha256/{}.json", other.hex()));
    let forged_name = Digest::of(b"some other checkpoint");
    raw_put(
        &weed,
        &format!("manifests/sha256/{}.json", forged_name.hex()),
        other_manifest,
    );
    let err = store
        .get(
            &forged_name,
            &tmp.path().join("out3"),
            &GetOptions::default(),
        )
        .unwrap_err();
    match err {
        StoreError::ManifestMismatch { digest, actual } => {
            assert_eq!((digest, actual), (forged_name, other))
        }
        other => panic!("expected ManifestMismatch, got {other}"),
    }
    // gc refuses to run while a manifest does not verify; remove the forgery, then it runs.
    assert!(matches!(
        store
            .gc(&GcOptions {
                min_age: Duration::ZERO,
                dry_run: false
            })
            .unwrap_err(),
        StoreError::GcUnsafe { .. }
    ));
    {
        let client = weed.raw_client(BUCKET);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(
            client.delete(&format!("{PREFIX}/manifests/sha256/{}.json", forged_name.hex()).into()),
        )
        .unwrap();
    }

    // A forged manifest listing a pickle: refused on get, by name.
    let pickle = b"cos\nsystem\n".to_vec();
    let pickle_sha = Digest::of(&pickle);
    raw_put(
        &weed,
        &format!("blobs/sha256/{}", pickle_sha.hex()),
        pickle.clone(),
    );
    let forged = CheckpointManifest::new(vec![
        FileEntry {
            path: "config.json".into(),
            size: 2,
            sha256: Digest::of(b"{}"),
        },
        FileEntry {
            path: "optimizer.pt".into(),
            size: pickle.len() as u64,
            sha256: pickle_sha,
        },
    ])
    .unwrap();
    raw_put(
        &weed,
        &format!("manifests/sha256/{}.json", forged.digest().hex()),
        forged.canonical_bytes(),
    );
    let err = store
        .get(
            &forged.digest(),
            &tmp.path().join("out4"),
            &GetOptions::default(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::FileRefused { path, reason: FileRefusal::Pickle } if path == "optimizer.pt"),
        "{err}"
    );

    // gc: the pickle blob is referenced by the forged manifest; remove that manifest and the
    // blob becomes garbage.
    {
        let client = weed.raw_client(BUCKET);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(
            client.delete(
                &format!("{PREFIX}/manifests/sha256/{}.json", forged.digest().hex()).into(),
            ),
        )
        .unwrap();
    }
    let report = store
        .gc(&GcOptions {
            min_age: Duration::ZERO,
            dry_run: false,
        })
        .unwrap();
    assert_eq!(report.blobs_deleted, vec![pickle_sha]);
    store.verify(&put.digest, u64::MAX).unwrap();
    store.verify(&other, u64::MAX).unwrap();
}

#[test]
fn s3_concurrent_puts_store_one_copy_and_size_cap_holds() {
    let weed = Weed::start();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_checkpoint(&src, 31, 18 << 20);
    let opts = weed.s3_options();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| BlockingStore::open(&location(), &opts).unwrap().put(&src)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let digests: Vec<Digest> = results.into_iter().map(|r| r.unwrap().digest).collect();
    assert_eq!(digests[0], digests[1]);
    assert_eq!(raw_count(&weed, "blobs/sha256"), 5);
    assert_eq!(raw_count(&weed, "manifests/sha256"), 1);
    let store = BlockingStore::open(&location(), &opts).unwrap();
    store.verify(&digests[0], u64::MAX).unwrap();

    let total = manifest_of_dir(&src, 2).unwrap().total_size().unwrap();
    let out = tmp.path().join("out");
    let err = store
        .get(
            &digests[0],
            &out,
            &GetOptions {
                max_total_bytes: total - 1,
                ..GetOptions::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
    assert!(!out.exists());
    store
        .get(&digests[0], &out, &GetOptions::default())
        .unwrap();
    assert_same_tree(&src, &out);

    // Wrong credentials are an error naming the location, not a silent empty listing.
    let mut bad = opts.clone();
    bad.secret_access_key = Some("wrong".into());
    let err = BlockingStore::open(&location(), &bad)
        .unwrap()
        .list()
        .unwrap_err();
    assert!(err.to_string().contains(BUCKET), "{err}");
}
