//! `koth data …` end to end through the built binary: determinism across processes, refusal of
//! corrupted shards, the holdout root, and clear errors for bad flags.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn koth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_koth"))
        .args(args)
        .env("KOTH_LOG", "warn")
        .output()
        .expect("running koth")
}

fn ok(args: &[&str]) -> String {
    let out = koth(args);
    assert!(
        out.status.success(),
        "koth {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = koth(args);
    assert!(!out.status.success(), "koth {args:?} should have failed");
    String::from_utf8(out.stderr).unwrap()
}

/// Deterministic pseudo-text (no network, no cache).
fn corpus(seed: u64, lines: usize) -> String {
    const WORDS: &[&str] = &[
        "thou", "art", "king", "crown", "hill", "sword", "night", "love", "death", "river",
        "stone", "light", "song", "fair", "foul", "witch", "queen", "storm", "heath", "ghost",
    ];
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = String::new();
    for _ in 0..lines {
        for i in 0..8 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if i > 0 {
                out.push(' ');
            }
            out.push_str(WORDS[((x >> 33) as usize) % WORDS.len()]);
        }
        out.push_str(".\n");
    }
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Train a tokenizer, ingest three sources (one private), bundle them. Returns the bundle path.
fn build(root: &Path) -> std::path::PathBuf {
    let text = root.join("text");
    for (name, seed) in [("comedies", 1u64), ("tragedies", 2), ("holdout", 3)] {
        for d in 0..3u64 {
            let p = text.join(name).join(format!("play{d}.txt"));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, corpus(seed * 10 + d, 80)).unwrap();
        }
    }
    let tok = root.join("tokenizer.json");
    let info = ok(&[
        "data",
        "tokenizer",
        "train",
        "--input",
        s(&text.join("comedies")),
        s(&text.join("tragedies")),
        "--vocab-size",
        "300",
        "--out",
        s(&tok),
    ]);
    assert!(
        info.contains("\"vocab_size\": 300") || info.contains("\"vocab_size\": 2"),
        "{info}"
    );
    for name in ["comedies", "tragedies", "holdout"] {
        let out = ok(&[
            "data",
            "ingest",
            "--tokenizer",
            s(&tok),
            "--input",
            s(&text.join(name)),
            "--source",
            name,
            "--shard-tokens",
            "1500",
            "--out",
            s(&root.join("src").join(name)),
        ]);
        assert!(
            out.starts_with(&format!("source {name} documents 3 tokens ")),
            "{out}"
        );
    }
    let bundle = root.join("bundle.json");
    let c = format!("comedies={}:3", s(&root.join("src/comedies")));
    let t = format!("tragedies={}:2", s(&root.join("src/tragedies")));
    let h = format!("holdout={}:1", s(&root.join("src/holdout")));
    let digest = ok(&[
        "data",
        "bundle",
        "--source",
        &c,
        &t,
        &h,
        "--private",
        "holdout",
        "--out",
        s(&bundle),
    ]);
    assert!(digest.trim().starts_with("sha256:"), "{digest}");
    fs::write(root.join("secret"), b"validator secret").unwrap();
    bundle
}

fn sample(root: &Path, bundle: &Path, out: &str) -> (String, Vec<u8>) {
    let path = root.join(out);
    let digest = ok(&[
        "data",
        "sample",
        "--bundle",
        s(bundle),
        "--seed-material",
        "competition|blockhash|hotkey",
        "--n",
        "24",
        "--seq-len",
        "32",
        "--secret-file",
        s(&root.join("secret")),
        "--out",
        s(&path),
        "--windows-out",
        s(&root.join(format!("{out}.json"))),
    ]);
    (digest.trim().to_string(), fs::read(&path).unwrap())
}

#[test]
fn two_builds_two_processes_same_digest_and_bytes() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ba = build(a.path());
    let bb = build(b.path());
    // Same corpus built twice in two places: byte-identical bundles.
    assert_eq!(fs::read(&ba).unwrap(), fs::read(&bb).unwrap());
    let (d1, x1) = sample(a.path(), &ba, "s1.npy");
    let (d2, x2) = sample(a.path(), &ba, "s2.npy");
    let (d3, x3) = sample(b.path(), &bb, "s3.npy");
    assert!(d1.starts_with("sha256:"), "{d1}");
    assert_eq!(d1, d2);
    assert_eq!(d1, d3);
    assert_eq!(x1, x2);
    assert_eq!(x1, x3);
    // The array is uint32 [24, 32].
    let header = koth_core::npy::parse_header(&x1).unwrap();
    assert_eq!(header.shape, vec![24, 32]);
    assert_eq!(header.dtype, koth_core::npy::NpyDtype::U32);
    assert_eq!(x1.len() - header.data_offset, 24 * 32 * 4);
    // The window record carries the digest.
    let rec: serde_json::Value =
        serde_json::from_slice(&fs::read(a.path().join("s1.npy.json")).unwrap()).unwrap();
    assert_eq!(rec["sample_digest"], d1.as_str());
    assert_eq!(rec["windows"].as_array().unwrap().len(), 24);
    // 24 windows at weights 3:2:1 → 12, 8, 4.
    assert_eq!(rec["per_source"]["comedies"], 12);
    assert_eq!(rec["per_source"]["tragedies"], 8);
    assert_eq!(rec["per_source"]["holdout"], 4);
    // Another seed: another sample.
    let other = ok(&[
        "data",
        "sample",
        "--bundle",
        s(&ba),
        "--seed-material",
        "other",
        "--n",
        "24",
        "--seq-len",
        "32",
        "--secret-file",
        s(&a.path().join("secret")),
        "--out",
        s(&a.path().join("s4.npy")),
    ]);
    assert_ne!(other.trim(), d1);
    // Output files are never overwritten.
    let err = fails(&[
        "data",
        "sample",
        "--bundle",
        s(&ba),
        "--seed-material",
        "x",
        "--n",
        "2",
        "--seq-len",
        "8",
        "--secret-file",
        s(&a.path().join("secret")),
        "--out",
        s(&a.path().join("s1.npy")),
    ]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(fs::read(a.path().join("s1.npy")).unwrap(), x1);
}

#[test]
fn a_one_byte_change_in_a_shard_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let bundle = build(root.path());
    let verified = ok(&["data", "verify", "--bundle", s(&bundle)]);
    assert!(verified.starts_with("ok bundle sha256:"), "{verified}");
    let shard = root.path().join("src/tragedies/shard-00001.npy");
    let mut bytes = fs::read(&shard).unwrap();
    let i = bytes.len() - 5;
    bytes[i] ^= 0x01;
    fs::write(&shard, &bytes).unwrap();
    let err = fails(&["data", "verify", "--bundle", s(&bundle)]);
    assert!(
        err.contains("shard-00001.npy") && err.contains("sha256 mismatch"),
        "{err}"
    );
    assert_eq!(
        err.matches("sha256:").count(),
        2,
        "expected and actual hashes: {err}"
    );
    // Sampling refuses too (some window lands in the changed shard with this many windows).
    let err = fails(&[
        "data",
        "sample",
        "--bundle",
        s(&bundle),
        "--seed-material",
        "x",
        "--n",
        "60",
        "--seq-len",
        "16",
        "--secret-file",
        s(&root.path().join("secret")),
        "--out",
        s(&root.path().join("bad.npy")),
    ]);
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(!root.path().join("bad.npy").exists());
}

#[test]
fn holdout_root_and_private_sources() {
    let root = tempfile::tempdir().unwrap();
    let bundle = build(root.path());
    let secret = root.path().join("secret");
    let r1 = ok(&[
        "data",
        "commit-root",
        "--bundle",
        s(&bundle),
        "--secret-file",
        s(&secret),
    ]);
    // The bundle as a positional argument (`koth data commit-root B`), as in the issue.
    let r2 = ok(&[
        "data",
        "commit-root",
        s(&bundle),
        "--secret-file",
        s(&secret),
    ]);
    assert!(r1.trim().starts_with("sha256:") && r1 == r2, "{r1} {r2}");
    // Neither, or both at once, is a usage error naming the bundle.
    let err = fails(&["data", "commit-root", "--secret-file", s(&secret)]);
    assert!(err.contains("BUNDLE"), "{err}");
    let err = fails(&[
        "data",
        "commit-root",
        s(&bundle),
        "--bundle",
        s(&bundle),
        "--secret-file",
        s(&secret),
    ]);
    assert!(
        err.contains("--bundle") && err.contains("cannot be used with"),
        "{err}"
    );
    // A missing bundle file is named.
    let err = fails(&[
        "data",
        "commit-root",
        s(&root.path().join("nope.json")),
        "--secret-file",
        s(&secret),
    ]);
    assert!(err.contains("nope.json"), "{err}");
    fs::write(root.path().join("secret2"), b"another").unwrap();
    let r3 = ok(&[
        "data",
        "commit-root",
        "--bundle",
        s(&bundle),
        "--secret-file",
        s(&root.path().join("secret2")),
    ]);
    assert_ne!(r1, r3);
    // Without the secret, a bundle with private sources cannot be sampled.
    let err = fails(&[
        "data",
        "sample",
        "--bundle",
        s(&bundle),
        "--seed-material",
        "x",
        "--n",
        "6",
        "--seq-len",
        "8",
        "--out",
        s(&root.path().join("x.npy")),
    ]);
    assert!(err.contains("holdout") && err.contains("secret"), "{err}");
}

#[test]
fn gpt2_encode_and_bad_flags() {
    let out = ok(&[
        "data",
        "tokenizer",
        "encode",
        "--tokenizer",
        "gpt2",
        "Hello world",
    ]);
    assert_eq!(out.trim(), "15496 995");
    let info = ok(&["data", "tokenizer", "info", "--tokenizer", "gpt2"]);
    assert!(
        info.contains("\"eos_id\": 50256") && info.contains("gpt2-r50k"),
        "{info}"
    );
    let root = tempfile::tempdir().unwrap();
    let err = fails(&[
        "data",
        "bundle",
        "--source",
        "nocolon=dir",
        "--out",
        s(&root.path().join("b.json")),
    ]);
    assert!(err.contains("NAME=DIR:WEIGHT"), "{err}");
    let err = fails(&[
        "data",
        "bundle",
        "--source",
        "a=dir:x",
        "--out",
        s(&root.path().join("b.json")),
    ]);
    assert!(err.contains("weight"), "{err}");
    let err = fails(&[
        "data",
        "verify",
        "--bundle",
        s(&root.path().join("missing.json")),
    ]);
    assert!(err.contains("missing.json"), "{err}");
    let err = fails(&[
        "data",
        "tokenizer",
        "info",
        "--tokenizer",
        s(&root.path().join("t.json")),
    ]);
    assert!(err.contains("t.json"), "{err}");
}
