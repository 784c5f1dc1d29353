//! Ingest, manifests, bundles, shard verification, window reads and the holdout root, on small
//! corpora made here.

mod common;

use std::fs;
use std::path::Path;

use koth_core::npy::{encode_header, NpyArray, NpyData, NpyDtype};
use koth_core::Digest;
use koth_data::bundle::{Bundle, SourceSpec};
use koth_data::ingest::{ingest, IngestOptions};
use koth_data::{holdout, DataError, Dataset, SourceManifest, Tokenizer};

fn opts(source: &str, shard_tokens: u64) -> IngestOptions {
    IngestOptions {
        source: source.into(),
        shard_tokens,
        text_field: "text".into(),
    }
}

#[test]
fn text_folder_and_jsonl_ingest_with_eos_between_documents() {
    let dir = tempfile::tempdir().unwrap();
    let tok = Tokenizer::gpt2();
    let eos = tok.identity().eos_id;
    let a = common::write(&dir.path().join("in/a.txt"), "Hello world");
    common::write(&dir.path().join("in/folder/b.txt"), "The quick brown fox");
    common::write(&dir.path().join("in/folder/sub/c.md"), "jumps over");
    common::write(&dir.path().join("in/folder/ignored.bin"), "not text");
    common::write(&dir.path().join("in/folder/.hidden.txt"), "hidden");
    let jsonl = common::write(
        &dir.path().join("in/d.jsonl"),
        "{\"text\": \"the lazy dog\", \"id\": 1}\n\n{\"text\": \"!\"}\n",
    );
    let out = dir.path().join("out");
    let m = ingest(
        &tok,
        &[a, dir.path().join("in/folder"), jsonl],
        &out,
        &opts("mixed", 4),
    )
    .unwrap();
    // Documents in order: a.txt, folder/b.txt, folder/sub/c.md, then two JSONL lines.
    assert_eq!(m.documents, 5);
    let expected: Vec<u32> = [
        vec![15496, 995],
        vec![464, 2068, 7586, 21831],
        tok.encode("jumps over").unwrap(),
        tok.encode("the lazy dog").unwrap(),
        vec![0],
    ]
    .into_iter()
    .flat_map(|mut d| {
        d.push(eos);
        d
    })
    .collect();
    assert_eq!(m.total_tokens, expected.len() as u64);
    assert_eq!(m.inputs.len(), 4);
    assert!(m
        .inputs
        .iter()
        .all(|i| !i.path.contains("hidden") && !i.path.ends_with(".bin")));
    // Shards of 4 tokens, the stream running on across them; each shard is a valid .npy.
    let mut stream = Vec::new();
    for s in &m.shards {
        let bytes = fs::read(out.join(&s.path)).unwrap();
        assert_eq!(Digest::of(&bytes), s.sha256);
        let arr = NpyArray::from_bytes(&bytes).unwrap();
        assert_eq!(arr.shape, vec![s.tokens as usize]);
        stream.extend(arr.to_token_ids().unwrap());
    }
    assert!(m.shards[..m.shards.len() - 1].iter().all(|s| s.tokens == 4));
    assert_eq!(stream, expected);
    // The manifest on disk is what was returned.
    let (read, _, _) = SourceManifest::read(&out).unwrap();
    assert_eq!(read, m);
    // Ingesting into a non-empty directory is refused; nothing there is touched.
    let before = fs::read(out.join("manifest.json")).unwrap();
    let err = ingest(
        &tok,
        &[dir.path().join("in/a.txt")],
        &out,
        &opts("mixed", 4),
    )
    .unwrap_err();
    assert!(matches!(err, DataError::OutputExists { .. }), "{err}");
    assert_eq!(fs::read(out.join("manifest.json")).unwrap(), before);
}

#[test]
fn bad_inputs_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let tok = Tokenizer::gpt2();
    let bad_json = common::write(
        &dir.path().join("bad.jsonl"),
        "{\"text\": \"ok\"}\n{\"txt\": 1}\n",
    );
    let err = ingest(&tok, &[bad_json], &dir.path().join("o1"), &opts("s", 10)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("bad.jsonl") && msg.contains("line 2") && msg.contains("\"text\""),
        "{msg}"
    );
    let latin1 = dir.path().join("latin1.txt");
    fs::write(&latin1, b"caf\xe9").unwrap();
    let msg = ingest(&tok, &[latin1], &dir.path().join("o2"), &opts("s", 10))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("latin1.txt") && msg.contains("UTF-8"), "{msg}");
    let msg = ingest(
        &tok,
        &[dir.path().join("missing.txt")],
        &dir.path().join("o3"),
        &opts("s", 10),
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("missing.txt"), "{msg}");
    let ok = common::write(&dir.path().join("ok.txt"), "fine");
    let msg = ingest(&tok, &[ok], &dir.path().join("o4"), &opts("bad name!", 10))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("bad name!"), "{msg}");
}

/// Write a raw shard file: header for `shape`/`dtype`, then `body`.
fn raw_shard(path: &Path, dtype: NpyDtype, shape: &[usize], body: &[u8]) {
    let mut bytes = encode_header(dtype, shape);
    bytes.extend_from_slice(body);
    fs::write(path, bytes).unwrap();
}

#[test]
fn corrupted_shards_are_refused_before_use() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = common::make_bundle(dir.path());
    let ds = Dataset::open(&bundle).unwrap();
    let sample = ds.sample(b"seed", Some(b"secret"), 30, 32).unwrap();
    let w = sample
        .windows
        .iter()
        .find(|w| w.source == 0)
        .unwrap()
        .clone();
    let (_, _, manifest_file) = SourceManifest::read(&dir.path().join("alpha")).unwrap();
    let m = ds.manifests().next().unwrap().clone();
    let shard_path = manifest_file
        .parent()
        .unwrap()
        .join(&m.shards[w.shard as usize].path);
    let original = fs::read(&shard_path).unwrap();

    // One byte changed in the token data: refused, naming the shard and both hashes.
    let mut changed = original.clone();
    let last = changed.len() - 3;
    changed[last] ^= 1;
    fs::write(&shard_path, &changed).unwrap();
    let fresh = Dataset::open(&bundle).unwrap();
    let err = fresh.read_window(&w).unwrap_err();
    match &err {
        DataError::ShardHash {
            path,
            expected,
            actual,
        } => {
            assert_eq!(path, &shard_path);
            assert_eq!(*expected, m.shards[w.shard as usize].sha256);
            assert_eq!(*actual, Digest::of(&changed));
        }
        other => panic!("expected a hash mismatch, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&m.shards[w.shard as usize].sha256.to_string()));
    assert!(msg.contains(&Digest::of(&changed).to_string()));
    assert!(msg.contains(&shard_path.display().to_string()));
    // One byte changed in the header's padding: also refused.
    let mut header_changed = original.clone();
    let pad = koth_core::npy::parse_header(&original).unwrap().data_offset - 2;
    assert_eq!(header_changed[pad], b' ');
    header_changed[pad] = b'\t';
    fs::write(&shard_path, &header_changed).unwrap();
    assert!(matches!(
        Dataset::open(&bundle).unwrap().verify_all(),
        Err(DataError::ShardHash { .. })
    ));

    // Truncated: a clear error, not a hash mismatch.
    fs::write(&shard_path, &original[..original.len() - 8]).unwrap();
    let msg = Dataset::open(&bundle)
        .unwrap()
        .read_window(&w)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("truncated") && msg.contains(&shard_path.display().to_string()),
        "{msg}"
    );
    // Misaligned: an odd byte count.
    fs::write(&shard_path, &original[..original.len() - 1]).unwrap();
    let msg = Dataset::open(&bundle)
        .unwrap()
        .read_window(&w)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("misaligned"), "{msg}");
    // Restored: reads again. A dataset that verified the shard before the change keeps reading
    // the verified bytes' file handle; a fresh one verifies again.
    fs::write(&shard_path, &original).unwrap();
    let ds2 = Dataset::open(&bundle).unwrap();
    assert_eq!(ds2.read_window(&w).unwrap().len(), 32);

    // A manifest edited after bundling: refused by its pinned hash.
    let manifest_bytes = fs::read(&manifest_file).unwrap();
    let mut edited = manifest_bytes.clone();
    edited.push(b' ');
    fs::write(&manifest_file, &edited).unwrap();
    let err = Dataset::open(&bundle).unwrap_err();
    assert!(matches!(err, DataError::ManifestHash { .. }), "{err}");
    fs::write(&manifest_file, &manifest_bytes).unwrap();
}

#[test]
fn wrong_dtype_shape_and_out_of_vocab_ids_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.npy");
    // Wrong dtype: int64 ids.
    let mut b = Vec::new();
    NpyArray {
        shape: vec![3],
        data: NpyData::I64(vec![1, 2, 3]),
    }
    .write(&mut b)
    .unwrap();
    fs::write(&p, &b).unwrap();
    let msg = koth_data::shard::inspect(&p, Some(100))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("<i8") && msg.contains("<u4") && msg.contains("x.npy"),
        "{msg}"
    );
    // 2-D.
    raw_shard(&p, NpyDtype::U32, &[2, 2], &[0u8; 16]);
    let msg = koth_data::shard::inspect(&p, Some(100))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("1-D"), "{msg}");
    // Not an npy at all.
    fs::write(&p, b"hello").unwrap();
    assert!(matches!(
        koth_data::shard::inspect(&p, Some(100)),
        Err(DataError::Npy { .. })
    ));
    // An id at the vocabulary size.
    let ids: Vec<u8> = [5u32, 99, 100, 7]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    raw_shard(&p, NpyDtype::U32, &[4], &ids);
    match koth_data::shard::inspect(&p, Some(100)) {
        Err(DataError::TokenOutOfVocab {
            id,
            position,
            vocab_size,
            ..
        }) => assert_eq!((id, position, vocab_size), (100, 2, 100)),
        other => panic!("expected an out-of-vocabulary error, got {other:?}"),
    }
    assert_eq!(koth_data::shard::inspect(&p, Some(101)).unwrap().tokens, 4);
    // Trailing bytes after the promised data.
    let mut more = ids.clone();
    more.extend_from_slice(&[0, 0, 0, 0]);
    raw_shard(&p, NpyDtype::U32, &[4], &more);
    let msg = koth_data::shard::inspect(&p, None).unwrap_err().to_string();
    assert!(msg.contains("trailing"), "{msg}");
}

#[test]
fn out_of_vocab_ids_in_a_bundle_are_refused_even_with_a_matching_hash() {
    // A manifest whose hashes match but whose tokenizer is too small for its ids.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let ids: Vec<u8> = (0u32..64)
        .map(|i| i * 1000)
        .flat_map(|x| x.to_le_bytes())
        .collect();
    raw_shard(&src.join("shard-00000.npy"), NpyDtype::U32, &[64], &ids);
    let bytes = fs::read(src.join("shard-00000.npy")).unwrap();
    let mut ident = Tokenizer::gpt2().identity().clone();
    ident.vocab_size = 50257;
    let mut m = koth_data::ingest::manifest_for_existing(&src, "big", &ident).unwrap_err();
    assert!(
        matches!(m, DataError::TokenOutOfVocab { id: 51000, .. }),
        "{m}"
    );
    ident.vocab_size = 70000;
    ident.eos_id = 0;
    let manifest = koth_data::ingest::manifest_for_existing(&src, "big", &ident).unwrap();
    assert_eq!(manifest.shards[0].sha256, Digest::of(&bytes));
    // Now claim the GPT-2 vocabulary in the manifest, keeping the hashes.
    let mut lying = manifest.clone();
    lying.tokenizer = Tokenizer::gpt2().identity().clone();
    fs::write(src.join("manifest.json"), lying.to_bytes()).unwrap();
    let bpath = dir.path().join("b.json");
    let b = Bundle::build(
        &bpath,
        &[SourceSpec {
            name: "big".into(),
            manifest: src.clone(),
            weight: 1,
            private: false,
        }],
    )
    .unwrap();
    b.write_new(&bpath).unwrap();
    m = Dataset::open(&bpath).unwrap().verify_all().unwrap_err();
    assert!(
        matches!(
            m,
            DataError::TokenOutOfVocab {
                id: 51000,
                position: 51,
                vocab_size: 50257,
                ..
            }
        ),
        "{m}"
    );
}

#[test]
fn same_inputs_same_digest_and_tokens() {
    // Two independent builds of the same corpus in two directories: identical manifests,
    // bundle digests, samples and tokens.
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let b1 = common::make_bundle(d1.path());
    let b2 = common::make_bundle(d2.path());
    assert_eq!(fs::read(&b1).unwrap(), fs::read(&b2).unwrap());
    let (x, y) = (Dataset::open(&b1).unwrap(), Dataset::open(&b2).unwrap());
    assert_eq!(x.bundle_sha256(), y.bundle_sha256());
    assert_eq!(x.bundle_sha256(), Digest::of(&fs::read(&b1).unwrap()));
    let sx = x.sample(b"comp|block|hotkey", Some(b"s"), 40, 48).unwrap();
    let sy = y.sample(b"comp|block|hotkey", Some(b"s"), 40, 48).unwrap();
    assert_eq!(sx, sy);
    let tx = x.read_windows(&sx.windows).unwrap();
    assert_eq!(tx, y.read_windows(&sy.windows).unwrap());
    assert_eq!(tx.len(), 40 * 48);
    // Batches stream the same tokens.
    let batched: Vec<u32> = x
        .batches(&sx.windows, 7)
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
        .concat();
    assert_eq!(batched, tx);
    // Each window's tokens are its shard's tokens at its offset.
    let w = &sx.windows[3];
    let m = x.manifests().nth(w.source as usize).unwrap();
    let dir = d1.path().join(&m.source);
    let arr = NpyArray::from_bytes(&fs::read(dir.join(&m.shards[w.shard as usize].path)).unwrap())
        .unwrap()
        .to_token_ids()
        .unwrap();
    assert_eq!(
        x.read_window(w).unwrap(),
        arr[w.offset as usize..w.end() as usize].to_vec()
    );
    // A window list that does not belong to the bundle is refused.
    let mut forged = w.clone();
    forged.shard_sha256 = Digest::of(b"other");
    assert!(x.read_window(&forged).is_err());
    forged = w.clone();
    forged.offset = u64::MAX - 3;
    assert!(x.read_window(&forged).is_err());
}

#[test]
fn holdout_root_commits_to_private_pool_and_secret() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = common::make_bundle(dir.path());
    let ds = Dataset::open(&bundle).unwrap();
    let root = holdout::commit_root(&ds, b"secret").unwrap();
    assert_eq!(root, holdout::commit_root(&ds, b"secret").unwrap());
    assert_ne!(root, holdout::commit_root(&ds, b"secreT").unwrap());
    let text = holdout::commitment_text(&ds, b"secret").unwrap();
    // Only the private source (gamma) is committed, with every shard.
    assert!(text.contains("source gamma ") && !text.contains("source alpha"));
    let gamma = ds.manifests().nth(2).unwrap();
    for s in &gamma.shards {
        assert!(text.contains(&format!("shard {} {}", s.sha256, s.tokens)));
    }
    // A bundle without private sources has nothing to commit.
    let b = Bundle::build(
        &dir.path().join("public.json"),
        &[SourceSpec {
            name: "alpha".into(),
            manifest: dir.path().join("alpha"),
            weight: 1,
            private: false,
        }],
    )
    .unwrap();
    b.write_new(&dir.path().join("public.json")).unwrap();
    let public = Dataset::open(&dir.path().join("public.json")).unwrap();
    assert!(holdout::commit_root(&public, b"secret").is_err());
    // Sampling a bundle with a private source needs the secret.
    let msg = ds.sample(b"seed", None, 10, 16).unwrap_err().to_string();
    assert!(msg.contains("gamma") && msg.contains("secret"), "{msg}");
}

#[test]
fn bundles_refuse_mismatched_sources() {
    let dir = tempfile::tempdir().unwrap();
    let gpt2 = Tokenizer::gpt2();
    let a = common::make_source(dir.path(), &gpt2, "a", 1, 2, 20, 500);
    let trained =
        koth_data::tokenizer::train_byte_level_bpe([common::text(5, 300)].iter(), 300, 2).unwrap();
    let small =
        Tokenizer::from_json_bytes(trained.as_bytes(), "file:small.json".into(), None).unwrap();
    let b = common::make_source(dir.path(), &small, "b", 2, 2, 20, 500);
    let spec = |name: &str, manifest: &Path, weight| SourceSpec {
        name: name.into(),
        manifest: manifest.to_path_buf(),
        weight,
        private: false,
    };
    let out = dir.path().join("x.json");
    let msg = Bundle::build(&out, &[spec("a", &a, 1), spec("b", &b, 1)])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("tokenizer"), "{msg}");
    let msg = Bundle::build(&out, &[spec("a", &b, 1)])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("names the source \"b\""), "{msg}");
    let msg = Bundle::build(&out, &[spec("a", &a, 0)])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("weight 0"), "{msg}");
    let msg = Bundle::build(&out, &[spec("a", &a, 1), spec("a", &a, 2)])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("twice"), "{msg}");
    // Refuses to overwrite.
    let ok = Bundle::build(&out, &[spec("a", &a, 1)]).unwrap();
    ok.write_new(&out).unwrap();
    assert!(matches!(
        ok.write_new(&out),
        Err(DataError::OutputExists { .. })
    ));
}
