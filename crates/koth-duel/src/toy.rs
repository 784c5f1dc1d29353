//! A tiny, fully synthetic duel world for smoke tests and examples: a two-source bundle of
//! Markov-chain token streams over a 64-token vocabulary, a 2-layer model that scores it, and a
//! way to train a challenger further on the same distribution. Everything is seeded, made on
//! the fly, and runs on a CPU in seconds. Not for production use.

use std::path::{Path, PathBuf};

use koth_core::npy::{NpyArray, NpyData};
use koth_core::Digest;
use koth_data::bundle::{Bundle, SourceSpec};
use koth_data::manifest::MANIFEST_FILE;
use koth_data::TokenizerIdentity;
use koth_model::{AdamWConfig, DType, Device, Model, ModelConfig, TokenIds, Trainer};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Vocabulary size of the toy world.
pub const TOY_VOCAB: u32 = 64;

/// The toy sources, in bundle order, with their weights.
pub const TOY_SOURCES: [(&str, u64); 2] = [("alpha", 3), ("beta", 1)];

#[derive(Debug, thiserror::Error)]
pub enum ToyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Npy(#[from] koth_core::NpyError),
    #[error(transparent)]
    Data(#[from] koth_data::DataError),
    #[error(transparent)]
    Model(#[from] koth_model::ModelError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ToyError + '_ {
    move |source| ToyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The made-up tokenizer the toy shards claim: ids 0..64, EOS 0.
pub fn toy_tokenizer() -> TokenizerIdentity {
    TokenizerIdentity {
        name: "toy-markov-64".into(),
        sha256: Digest::of(b"koth toy tokenizer: ids 0..64, eos 0"),
        vocab_size: TOY_VOCAB,
        eos_id: 0,
        eos_token: "<eos>".into(),
    }
}

/// `n` tokens of source `source` (0 or 1): a Markov chain whose next token is a fixed affine
/// map of the previous one plus a little noise, so a small model learns it in a few dozen steps.
pub fn markov_tokens(source: usize, seed: u64, n: usize) -> Vec<u32> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ (source as u64).wrapping_mul(0x9E37_79B9));
    let mut prev = rng.next_u32() % TOY_VOCAB;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let noise = rng.next_u32() % 4;
        prev = match source {
            0 => (5 * prev + 3 + noise) % TOY_VOCAB,
            _ => (prev + 11 + 2 * noise) % TOY_VOCAB,
        };
        out.push(prev);
    }
    out
}

/// Write a toy bundle under `dir` (two sources, two shards each of `tokens_per_shard` tokens)
/// and return the bundle file's path.
pub fn write_toy_bundle(
    dir: &Path,
    tokens_per_shard: usize,
    seed: u64,
) -> Result<PathBuf, ToyError> {
    let tokenizer = toy_tokenizer();
    let mut specs = Vec::new();
    for (i, (name, weight)) in TOY_SOURCES.iter().enumerate() {
        let src = dir.join(name);
        std::fs::create_dir_all(&src).map_err(io(&src))?;
        for shard in 0..2u64 {
            let tokens = markov_tokens(i, seed.wrapping_add(1000 * shard + 7), tokens_per_shard);
            let path = src.join(format!("shard-{shard:05}.npy"));
            let file = std::fs::File::create(&path).map_err(io(&path))?;
            NpyArray {
                shape: vec![tokens.len()],
                data: NpyData::U32(tokens),
            }
            .write(std::io::BufWriter::new(file))?;
        }
        let manifest = koth_data::ingest::manifest_for_existing(&src, name, &tokenizer)?;
        let mpath = src.join(MANIFEST_FILE);
        std::fs::write(&mpath, manifest.to_bytes()).map_err(io(&mpath))?;
        specs.push(SourceSpec {
            name: (*name).into(),
            manifest: src,
            weight: *weight,
            private: false,
        });
    }
    let bundle_path = dir.join("bundle.json");
    let bundle = Bundle::build(&bundle_path, &specs)?;
    bundle.write_new(&bundle_path)?;
    Ok(bundle_path)
}

/// A 2-layer qwen3-style config over the toy vocabulary.
pub fn toy_config() -> Result<ModelConfig, ToyError> {
    let json = serde_json::json!({
        "model_type": "qwen3",
        "vocab_size": TOY_VOCAB,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": false,
    });
    Ok(ModelConfig::from_json(&json.to_string(), "toy")?)
}

/// A freshly initialised toy model (f32, CPU).
pub fn toy_model(seed: u64) -> Result<Model, ToyError> {
    Ok(Model::init(&toy_config()?, seed, DType::F32, &Device::Cpu)?)
}

/// `model` trained `steps` AdamW steps further on fresh toy data (both sources), `batch`
/// windows of `seq_len` tokens per step at learning rate `lr`. Returns a snapshot.
pub fn train_further(
    model: &Model,
    steps: usize,
    batch: usize,
    seq_len: usize,
    lr: f64,
    seed: u64,
) -> Result<Model, ToyError> {
    let mut trainer = Trainer::new(model, AdamWConfig::default())?;
    for step in 0..steps {
        let mut ids = Vec::with_capacity(batch * seq_len);
        for row in 0..batch {
            let source = row % TOY_SOURCES.len();
            let s = seed
                .wrapping_mul(1_000_003)
                .wrapping_add((step * batch + row) as u64);
            ids.extend(markov_tokens(source, s, seq_len));
        }
        trainer.step(&TokenIds::new(ids, batch, seq_len)?, lr)?;
    }
    Ok(trainer.model().map_tensors(|_, t| Ok(t.copy()?))?)
}
