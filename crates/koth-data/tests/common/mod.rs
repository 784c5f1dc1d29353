//! Small corpora and datasets made on the fly: tests depend on no network and no cache.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use koth_data::bundle::{Bundle, SourceSpec};
use koth_data::ingest::{ingest, IngestOptions};
use koth_data::Tokenizer;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

const WORDS: &[&str] = &[
    "the",
    "king",
    "queen",
    "hill",
    "model",
    "loss",
    "token",
    "shard",
    "window",
    "crown",
    "miner",
    "validator",
    "seed",
    "hash",
    "sample",
    "duel",
    "train",
    "weight",
    "data",
    "verse",
    "night",
    "day",
    "love",
    "death",
    "sword",
    "river",
    "stone",
    "light",
    "dark",
    "song",
];

/// `n` pseudo-English sentences, deterministic in `seed`.
pub fn text(seed: u64, sentences: usize) -> String {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut out = String::new();
    for _ in 0..sentences {
        let len = 4 + (rng.next_u32() % 9) as usize;
        for i in 0..len {
            let w = WORDS[(rng.next_u32() as usize) % WORDS.len()];
            if i == 0 {
                let mut c = w.chars();
                if let Some(f) = c.next() {
                    out.extend(f.to_uppercase());
                    out.push_str(c.as_str());
                }
            } else {
                out.push(' ');
                out.push_str(w);
            }
        }
        out.push_str(if rng.next_u32() % 4 == 0 { "!\n" } else { ". " });
    }
    out
}

pub fn write(path: &Path, contents: &str) -> PathBuf {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, contents).unwrap();
    path.to_path_buf()
}

/// Ingest `docs` text documents (one file each) as source `name` under `root/name`.
pub fn make_source(
    root: &Path,
    tok: &Tokenizer,
    name: &str,
    seed: u64,
    docs: usize,
    sentences: usize,
    shard_tokens: u64,
) -> PathBuf {
    let input = root.join(format!("{name}-input"));
    for d in 0..docs {
        write(
            &input.join(format!("doc{d:03}.txt")),
            &text(seed * 1000 + d as u64, sentences),
        );
    }
    let out = root.join(name);
    ingest(
        tok,
        &[input],
        &out,
        &IngestOptions {
            source: name.into(),
            shard_tokens,
            text_field: "text".into(),
        },
    )
    .unwrap();
    out
}

/// Three sources (weights 5, 3, 2; the last private) with GPT-2, and a bundle over them.
pub fn make_bundle(root: &Path) -> PathBuf {
    let tok = Tokenizer::gpt2();
    let specs = [
        ("alpha", 5u64, false, 1u64),
        ("beta", 3, false, 2),
        ("gamma", 2, true, 3),
    ];
    let mut sources = Vec::new();
    for (name, weight, private, seed) in specs {
        let dir = make_source(root, &tok, name, seed, 6, 120, 2000);
        sources.push(SourceSpec {
            name: name.into(),
            manifest: dir,
            weight,
            private,
        });
    }
    let path = root.join("bundle.json");
    let b = Bundle::build(&path, &sources).unwrap();
    b.write_new(&path).unwrap();
    path
}
