//! Hostile submissions, built the way a miner builds them: a checkpoint put into a store the
//! miner can write, then damaged with that same write access (or committed from a location
//! chosen to mislead). Each comes with the answer the validator owes it: the code, the gate and
//! a phrase of the sentence.
//!
//! Shared by koth-validator's `tests/hostile.rs` (the shell in the test process) and koth's
//! `tests/adversarial_cli.rs` (real `koth validator run` processes); both include this file with
//! `#[path]`, so an attack is written once.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use koth_core::Digest;
use koth_model::{DType, Device, Model};
use koth_validator::devkit::{self, put, TinyNet};
use koth_validator::event::Gate;

/// A submission ready to commit, and the answer it must get.
#[derive(Debug, Clone)]
pub struct Crafted {
    /// What the attack is, for messages.
    pub name: &'static str,
    /// The location to commit.
    pub location: String,
    pub digest: Digest,
    /// The reject code (`RejectCode::code`), the gate that answers, a phrase of the sentence.
    pub code: &'static str,
    pub gate: Gate,
    pub phrase: &'static str,
    /// The checkpoint directory as built (before any damage done in the store).
    pub dir: PathBuf,
}

/// Builds attacks against one tiny network, in directories under `dir`.
pub struct Workshop<'a> {
    pub net: &'a TinyNet,
    pub dir: PathBuf,
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The store's blob path of `file` of checkpoint `dir` (hashed the way the store names it).
pub fn blob_of(store_dir: &Path, dir: &Path, file: &str) -> PathBuf {
    let sha = Digest::of(&std::fs::read(dir.join(file)).unwrap());
    store_dir.join("blobs/sha256").join(sha.hex())
}

/// The store's manifest path of `digest`.
pub fn manifest_of(store_dir: &Path, digest: &Digest) -> PathBuf {
    store_dir
        .join("manifests/sha256")
        .join(format!("{}.json", digest.hex()))
}

/// A copy of the king whose weights are nudged by `seed` (so its blob is its own, not the
/// king's): an honest submission, indistinguishable from the king in a duel.
pub fn variant(king_dir: &Path, to: &Path, seed: f64) {
    let king = Model::load(king_dir, DType::F32, &Device::Cpu).unwrap();
    let m = king
        .map_tensors(|name, t| {
            if name.ends_with("embed_tokens.weight") {
                Ok(t.affine(1.0, 1e-6 * seed)?)
            } else {
                Ok(t.clone())
            }
        })
        .unwrap();
    devkit::save_model(&m, to).unwrap();
    std::fs::copy(king_dir.join("config.json"), to.join("config.json")).unwrap();
}

fn mkfifo(path: &Path) {
    assert!(std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap()
        .success());
}

/// A `config.json` of the king padded with a JSON array of zeros to `bytes` bytes (a parsed
/// JSON value of it takes many times that).
fn padded_config(king_dir: &Path, bytes: usize) -> Vec<u8> {
    let mut cfg = std::fs::read(king_dir.join("config.json")).unwrap();
    while cfg.last() != Some(&b'}') {
        cfg.pop();
    }
    cfg.pop();
    cfg.extend_from_slice(b", \"pad\": [0");
    while cfg.len() < bytes {
        cfg.extend_from_slice(b",0");
    }
    cfg.extend_from_slice(b"]}");
    cfg
}

impl Workshop<'_> {
    pub fn new(net: &TinyNet, dir: PathBuf) -> Workshop<'_> {
        Workshop { net, dir }
    }

    fn store(&self) -> &str {
        &self.net.store_url
    }

    fn crafted(
        &self,
        (name, dir): (&'static str, &Path),
        digest: Digest,
        (code, gate, phrase): (&'static str, Gate, &'static str),
    ) -> Crafted {
        Crafted {
            name,
            location: self.store().to_string(),
            digest,
            code,
            gate,
            phrase,
            dir: dir.to_path_buf(),
        }
    }

    /// An honest submission: a nudged copy of the king (`seed` makes it unique), stored whole.
    pub fn honest(&self, seed: f64) -> (String, Digest) {
        let dir = self.dir.join(format!("honest-{seed}"));
        variant(&self.net.king_dir, &dir, seed);
        (self.store().to_string(), put(self.store(), &dir).unwrap())
    }

    /// The king re-saved in the sharded layout (index + shards), config copied.
    fn sharded_king(&self, dir: &Path) -> PathBuf {
        let king = Model::load(&self.net.king_dir, DType::F32, &Device::Cpu).unwrap();
        king.save_with_shard_limit(dir, 32 * 1024).unwrap();
        std::fs::copy(
            self.net.king_dir.join("config.json"),
            dir.join("config.json"),
        )
        .unwrap();
        dir.join("model.safetensors.index.json")
    }

    // --- Stall by blame: the challenger's own bytes, never our fault. ---

    /// A blob stored shorter than its manifest says.
    pub fn short_blob(&self, seed: f64) -> Crafted {
        let dir = self.dir.join(format!("short-{seed}"));
        variant(&self.net.king_dir, &dir, seed);
        let digest = put(self.store(), &dir).unwrap();
        let blob = blob_of(&self.net.store_dir, &dir, "model.safetensors");
        let bytes = std::fs::read(&blob).unwrap();
        std::fs::write(&blob, &bytes[..bytes.len() / 2]).unwrap();
        self.crafted(
            ("a blob shorter than its manifest", &dir),
            digest,
            ("manifest_unreachable", Gate::Fetch, "the manifest says"),
        )
    }

    /// A blob deleted after the manifest was stored (the config blob, shared with the king,
    /// downloads first and fine; the weights are gone).
    pub fn missing_blob(&self, seed: f64) -> Crafted {
        let dir = self.dir.join(format!("missing-blob-{seed}"));
        variant(&self.net.king_dir, &dir, seed);
        let digest = put(self.store(), &dir).unwrap();
        std::fs::remove_file(blob_of(&self.net.store_dir, &dir, "model.safetensors")).unwrap();
        self.crafted(
            ("a blob deleted from under its manifest", &dir),
            digest,
            ("manifest_unreachable", Gate::Fetch, "is missing from"),
        )
    }

    /// A blob of the right size whose bytes are not the manifest's (it downloads whole into the
    /// staging directory, then fails its hash).
    pub fn corrupt_blob(&self, seed: f64) -> Crafted {
        let dir = self.dir.join(format!("corrupt-{seed}"));
        variant(&self.net.king_dir, &dir, seed);
        let digest = put(self.store(), &dir).unwrap();
        let blob = blob_of(&self.net.store_dir, &dir, "model.safetensors");
        let mut bytes = std::fs::read(&blob).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&blob, &bytes).unwrap();
        self.crafted(
            ("a blob of the right size with other bytes", &dir),
            digest,
            ("manifest_unreachable", Gate::Fetch, "hashes to"),
        )
    }

    /// An index naming a shard the checkpoint does not hold: every header passes the gates,
    /// the loader refuses it in the duel.
    pub fn missing_shard_index(&self) -> Crafted {
        let dir = self.dir.join("missing-shard");
        let index_path = self.sharded_king(&dir);
        let mut index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
        index["weight_map"]["lm_head.weight"] = "model-00099-of-00099.safetensors".into();
        std::fs::write(&index_path, index.to_string()).unwrap();
        let digest = put(self.store(), &dir).unwrap();
        self.crafted(
            ("an index naming a missing shard", &dir),
            digest,
            ("weights_invalid", Gate::Duel, "not in the checkpoint"),
        )
    }

    /// An index that is not UTF-8.
    pub fn non_utf8_index(&self) -> Crafted {
        let dir = self.dir.join("latin1-index");
        let index_path = self.sharded_king(&dir);
        std::fs::write(&index_path, b"{\"weight_map\": {\"\xff\xfe\": 1}}").unwrap();
        let digest = put(self.store(), &dir).unwrap();
        self.crafted(
            ("an index that is not UTF-8", &dir),
            digest,
            ("weights_invalid", Gate::Duel, "not valid UTF-8 JSON"),
        )
    }

    // --- Memory: a stranger's file is capped before it is read. ---

    /// A `config.json` of `bytes` bytes of small numbers (a memory attack if parsed).
    pub fn huge_config(&self, bytes: usize) -> Crafted {
        let dir = self.dir.join("huge-config");
        copy_dir(&self.net.king_dir, &dir);
        std::fs::write(
            dir.join("config.json"),
            padded_config(&self.net.king_dir, bytes),
        )
        .unwrap();
        let digest = put(self.store(), &dir).unwrap();
        self.crafted(
            ("a huge config.json", &dir),
            digest,
            ("config_mismatch", Gate::Config, "over the cap"),
        )
    }

    /// An index of `bytes` bytes (the gates never read it; the loader caps it).
    pub fn huge_index(&self, bytes: usize) -> Crafted {
        let dir = self.dir.join("huge-index");
        let index_path = self.sharded_king(&dir);
        let mut index = std::fs::read(&index_path).unwrap();
        while index.last() != Some(&b'}') {
            index.pop();
        }
        index.pop();
        index.extend_from_slice(b", \"pad\": [0");
        while index.len() < bytes {
            index.extend_from_slice(b",0");
        }
        index.extend_from_slice(b"]}");
        std::fs::write(&index_path, index).unwrap();
        let digest = put(self.store(), &dir).unwrap();
        self.crafted(
            ("a huge model.safetensors.index.json", &dir),
            digest,
            ("weights_invalid", Gate::Duel, "over the cap"),
        )
    }

    /// A `config.json` declaring dimensions that would take petabytes if anything were sized
    /// by them.
    pub fn huge_dimensions(&self) -> Crafted {
        let dir = self.dir.join("huge-dims");
        copy_dir(&self.net.king_dir, &dir);
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        cfg["num_hidden_layers"] = 1_000_000_000_000u64.into();
        cfg["vocab_size"] = (1u64 << 40).into();
        std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
        let digest = put(self.store(), &dir).unwrap();
        self.crafted(
            ("a config.json declaring 10^12 layers", &dir),
            digest,
            ("config_mismatch", Gate::Config, "num_hidden_layers"),
        )
    }

    /// A `config.json` that is not UTF-8.
    pub fn non_utf8_config(&self) -> Crafted {
        let dir = self.dir.join("latin1-config");
        copy_dir(&self.net.king_dir, &dir);
        std::fs::write(dir.join("config.json"), b"{\"model_type\": \"\xe9\"}").unwrap();
        let digest = put(self.store(), &dir).unwrap();
        self.crafted(
            ("a config.json that is not UTF-8", &dir),
            digest,
            ("config_mismatch", Gate::Config, "not valid JSON"),
        )
    }

    // --- Hang: odd file types are refused from their type, never waited on. ---

    /// A FIFO where a blob should be.
    pub fn fifo_blob(&self, seed: f64) -> Crafted {
        let dir = self.dir.join(format!("fifo-{seed}"));
        variant(&self.net.king_dir, &dir, seed);
        let digest = put(self.store(), &dir).unwrap();
        let blob = blob_of(&self.net.store_dir, &dir, "model.safetensors");
        std::fs::remove_file(&blob).unwrap();
        mkfifo(&blob);
        self.crafted(
            ("a FIFO where a blob should be", &dir),
            digest,
            ("manifest_unreachable", Gate::Fetch, "not a regular file"),
        )
    }

    /// A FIFO where the manifest should be (the digest is that of a real manifest, so only
    /// reading it could tell).
    pub fn fifo_manifest(&self, seed: f64) -> Crafted {
        let dir = self.dir.join(format!("fifo-manifest-{seed}"));
        variant(&self.net.king_dir, &dir, seed);
        let digest = put(self.store(), &dir).unwrap();
        let manifest = manifest_of(&self.net.store_dir, &digest);
        std::fs::remove_file(&manifest).unwrap();
        mkfifo(&manifest);
        self.crafted(
            ("a FIFO where the manifest should be", &dir),
            digest,
            ("manifest_unreachable", Gate::Fetch, "not a regular file"),
        )
    }

    /// A blob that is a symlink to an endless device outside the store (`/dev/zero`).
    pub fn symlink_to_device(&self, seed: f64) -> Crafted {
        let dir = self.dir.join(format!("symlink-{seed}"));
        variant(&self.net.king_dir, &dir, seed);
        let digest = put(self.store(), &dir).unwrap();
        let blob = blob_of(&self.net.store_dir, &dir, "model.safetensors");
        std::fs::remove_file(&blob).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &blob).unwrap();
        self.crafted(
            ("a blob symlinked to /dev/zero", &dir),
            digest,
            ("manifest_unreachable", Gate::Fetch, "not a regular file"),
        )
    }

    // --- Locations: compared parsed, never as text. ---

    /// A store beside the allowed one whose path only shares its text prefix.
    pub fn evil_sibling(&self, seed: f64) -> Crafted {
        let evil_dir = PathBuf::from(format!("{}-evil", self.net.store_dir.display()));
        let evil_url = format!("file://{}", evil_dir.display());
        let src = self.dir.join(format!("evil-{seed}"));
        variant(&self.net.king_dir, &src, seed);
        let digest = put(&evil_url, &src).unwrap();
        Crafted {
            location: evil_url,
            ..self.crafted(
                (
                    "a store that only shares the allowed store's text prefix",
                    &src,
                ),
                digest,
                (
                    "manifest_unreachable",
                    Gate::Fetch,
                    "not one this validator fetches from",
                ),
            )
        }
    }

    /// A location inside the allowed store's text that climbs out of it with `..`.
    pub fn dot_dot_escape(&self, seed: f64) -> Crafted {
        let outside = self.dir.join(format!("outside-{seed}"));
        let src = self.dir.join(format!("dotdot-{seed}"));
        variant(&self.net.king_dir, &src, seed);
        let url = format!("file://{}", outside.display());
        let digest = put(&url, &src).unwrap();
        // `<store>/../<…>/outside-…`: the text starts with the allowed store.
        let rel = pathdiff(&outside, &self.net.store_dir);
        Crafted {
            location: format!("{}/{}", self.store(), rel),
            ..self.crafted(
                (
                    "a location that climbs out of the allowed store with ..",
                    &src,
                ),
                digest,
                ("manifest_unreachable", Gate::Fetch, "must not contain .."),
            )
        }
    }
}

/// `to` relative to `from` (both absolute), with `..` components.
fn pathdiff(to: &Path, from: &Path) -> String {
    let to: Vec<_> = to.components().collect();
    let from: Vec<_> = from.components().collect();
    let common = to.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); from.len() - common];
    parts.extend(
        to[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}
