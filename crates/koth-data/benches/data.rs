//! `cargo bench -p koth-data`: ingest, verification, sampling and gathering throughput.
//!
//! Text: the devnet corpus's training text (`.cache/devnet-corpus/text`, made by
//! scripts/devnet-corpus.sh) when it exists, otherwise generated pseudo-text of the same size.
//! Plain `std::time`; each figure is the best of a few runs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use koth_core::Digest;
use koth_data::bundle::{Bundle, SourceSpec};
use koth_data::ingest::{ingest, read_documents, IngestOptions};
use koth_data::sampler::sample;
use koth_data::tokenizer::train_byte_level_bpe;
use koth_data::{Dataset, SampleRequest, SamplerShard, SamplerSource, Tokenizer};

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let out = f();
        best = best.min(t.elapsed().as_secs_f64());
        last = Some(out);
    }
    (best, last.expect("runs ≥ 1"))
}

fn corpus_dir(tmp: &Path) -> (PathBuf, &'static str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/devnet-corpus/text");
    let dirs = ["comedies", "tragedies", "histories", "poems"];
    if dirs.iter().all(|d| root.join(d).is_dir()) {
        return (root, "devnet Shakespeare training text");
    }
    // ~4 MB of pseudo-text in 40 files.
    const WORDS: &[&str] = &[
        "thou", "art", "king", "crown", "hill", "sword", "night", "love", "death", "river",
        "stone", "light", "song", "fair", "foul", "witch", "queen", "storm", "heath", "ghost",
        "what", "is", "the", "of", "and", "to", "my", "lord", "good", "shall",
    ];
    let mut x: u64 = 1;
    for d in dirs {
        for f in 0..10 {
            let mut text = String::new();
            while text.len() < 100_000 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                text.push_str(WORDS[((x >> 33) as usize) % WORDS.len()]);
                text.push(if x.is_multiple_of(11) { '\n' } else { ' ' });
            }
            let p = tmp.join("text").join(d).join(format!("{f}.txt"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }
    (tmp.join("text"), "generated pseudo-text")
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let (text, what) = corpus_dir(tmp.path());
    let inputs: Vec<PathBuf> = ["comedies", "tragedies", "histories", "poems"]
        .iter()
        .map(|d| text.join(d))
        .collect();
    let docs = read_documents(&inputs, "text").unwrap();
    let bytes: usize = docs.iter().map(String::len).sum();
    println!(
        "corpus: {what}, {} documents, {:.2} MB",
        docs.len(),
        bytes as f64 / 1e6
    );

    // Tokenizer training.
    let (secs, json) = best_of(1, || train_byte_level_bpe(docs.iter(), 4096, 2).unwrap());
    println!(
        "train byte-level BPE, vocab 4096: {secs:.2} s ({:.2} MB/s)",
        bytes as f64 / 1e6 / secs
    );
    let bpe = Tokenizer::from_json_bytes(json.as_bytes(), "file:bench.json".into(), None).unwrap();

    // Ingest: tokenize + write shards + hash.
    let mut n = 0;
    for (name, tok) in [("gpt2-r50k", Tokenizer::gpt2()), ("bpe-4096", bpe)] {
        let (secs, tokens) = best_of(3, || {
            n += 1;
            let out = tmp.path().join(format!("ingest-{n}"));
            let m = ingest(
                &tok,
                &inputs,
                &out,
                &IngestOptions {
                    source: "bench".into(),
                    shard_tokens: 65536,
                    text_field: "text".into(),
                },
            )
            .unwrap();
            m.total_tokens
        });
        println!(
            "ingest {name}: {tokens} tokens in {secs:.3} s = {:.2} MB/s, {:.0} tokens/s",
            bytes as f64 / 1e6 / secs,
            tokens as f64 / secs
        );
    }

    // Verification and gathering on the last GPT-2 ingest (a 1-source bundle).
    let src = tmp.path().join("ingest-3");
    let bundle_path = tmp.path().join("bundle.json");
    let b = Bundle::build(
        &bundle_path,
        &[SourceSpec {
            name: "bench".into(),
            manifest: src.clone(),
            weight: 1,
            private: false,
        }],
    )
    .unwrap();
    b.write_new(&bundle_path).unwrap();
    let shard_bytes: u64 = std::fs::read_dir(&src)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "npy"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    let (secs, _) = best_of(3, || {
        Dataset::open(&bundle_path).unwrap().verify_all().unwrap()
    });
    println!(
        "verify (sha256 + format + ids < vocab): {:.1} MB in {secs:.3} s = {:.0} MB/s",
        shard_bytes as f64 / 1e6,
        shard_bytes as f64 / 1e6 / secs
    );
    let ds = Dataset::open(&bundle_path).unwrap();
    ds.verify_all().unwrap();
    let capacity: u64 = ds.manifests().map(|m| m.total_tokens).sum::<u64>() / 256;
    let n_windows = (capacity / 2).min(2000);
    let s = ds.sample(b"bench", None, n_windows, 256).unwrap();
    let (secs, tokens) = best_of(5, || ds.read_windows(&s.windows).unwrap().len());
    println!(
        "gather {n_windows} windows x 256 tokens (verified shards): {secs:.4} s = {:.0} windows/s, {:.2e} tokens/s",
        n_windows as f64 / secs,
        tokens as f64 / secs
    );

    // Sampling alone (pure; no I/O): a production-sized bundle of 4 sources x 512 shards x
    // 100M tokens, 100k windows of 2048.
    let sources: Vec<SamplerSource> = (0..4)
        .map(|i| SamplerSource {
            name: format!("source{i}"),
            weight: 1 + i,
            private: i == 3,
            shards: (0..512)
                .map(|j| SamplerShard {
                    sha256: Digest::of(format!("{i}/{j}").as_bytes()),
                    tokens: 100_000_000 + j * 997,
                })
                .collect(),
        })
        .collect();
    for n in [1_000u64, 100_000] {
        let (secs, out) = best_of(3, || {
            sample(&SampleRequest {
                bundle_sha256: Digest::of(b"bundle"),
                sources: &sources,
                seed_material: b"competition|block|hotkey",
                validator_secret: Some(b"secret"),
                n,
                seq_len: 2048,
            })
            .unwrap()
        });
        println!(
            "sample {n} windows of 2048 from 4x512 shards: {secs:.4} s = {:.0} windows/s (digest {})",
            n as f64 / secs,
            out.digest
        );
    }
}
