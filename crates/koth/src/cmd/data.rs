//! `koth data …`: tokenizers, ingest, bundles, the deterministic sampler, the holdout root.
//! Parses arguments, calls `koth_data`, prints. Results go to stdout; progress to stderr.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use koth_core::npy::{encode_header, NpyDtype};
use koth_data::bundle::{Bundle, SourceSpec};
use koth_data::ingest::{ingest, manifest_for_existing, read_documents, IngestOptions};
use koth_data::manifest::MANIFEST_FILE;
use koth_data::tokenizer::train_byte_level_bpe;
use koth_data::{holdout, Dataset, Tokenizer};

#[derive(Subcommand)]
pub enum DataCommand {
    /// Tokenizers: train a byte-level BPE, show a tokenizer's identity, encode text.
    #[command(subcommand)]
    Tokenizer(TokenizerCommand),
    /// Tokenize text files, folders (.txt, .md, .jsonl) and JSONL into uint32 .npy shards plus
    /// manifest.json. An EOS id follows every document.
    Ingest(IngestArgs),
    /// Write manifest.json for existing uint32 .npy shards (e.g. Teutonic's) in a folder.
    Manifest(ManifestArgs),
    /// Write a bundle: weighted sources, each pinned by its manifest's sha256. Prints the
    /// bundle's sha256.
    Bundle(BundleArgs),
    /// Verify every shard of a bundle against its manifest (hash, format, ids < vocab).
    Verify(BundleOnly),
    /// Draw N windows of L tokens from a bundle, deterministically from seed material; write
    /// them as a uint32 [N, L] .npy and print the sample digest.
    Sample(SampleArgs),
    /// Print the root hash a validator publishes before scoring on the bundle's private
    /// sources (commits to the secret's hash and every private shard).
    CommitRoot(CommitRootArgs),
}

#[derive(Subcommand)]
pub enum TokenizerCommand {
    /// Train a byte-level BPE (GPT-2 pre-tokenizer, <|endoftext|> = id 0) and write
    /// tokenizer.json.
    Train {
        /// Text files, folders or .jsonl files to train on.
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        /// Vocabulary size, special token included (at least 257).
        #[arg(long)]
        vocab_size: u32,
        /// Pairs seen fewer times than this are not merged.
        #[arg(long, default_value_t = 2)]
        min_frequency: u64,
        /// JSONL field holding the text.
        #[arg(long, default_value = "text")]
        text_field: String,
        /// Where to write tokenizer.json (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a tokenizer's identity (name, sha256, vocab size, EOS) as JSON.
    Info(TokenizerArg),
    /// Print the token ids of TEXT, space-separated.
    Encode {
        #[command(flatten)]
        tokenizer: TokenizerArg,
        text: String,
    },
}

#[derive(Args)]
pub struct TokenizerArg {
    /// `gpt2` (built-in, tiktoken's r50k) or a path to a Hugging Face tokenizer.json.
    #[arg(long)]
    tokenizer: String,
    /// End-of-text token of a tokenizer.json (default: the first of <|endoftext|>, </s>,
    /// <|end_of_text|>, <eos>, <|im_end|> it has).
    #[arg(long)]
    eos: Option<String>,
}

impl TokenizerArg {
    fn load(&self) -> Result<Tokenizer> {
        Tokenizer::load(&self.tokenizer, self.eos.as_deref())
            .with_context(|| format!("loading --tokenizer {}", self.tokenizer))
    }
}

#[derive(Args)]
pub struct IngestArgs {
    #[command(flatten)]
    tokenizer: TokenizerArg,
    /// Text files, folders or .jsonl files, read in the order given.
    #[arg(long, required = true, num_args = 1..)]
    input: Vec<PathBuf>,
    /// The source's name (A–Z a–z 0–9 - _ .).
    #[arg(long)]
    source: String,
    /// Tokens per shard (the last shard holds the rest).
    #[arg(long, default_value_t = 100_000_000)]
    shard_tokens: u64,
    /// JSONL field holding the text.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Output folder (must not exist or be empty).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct ManifestArgs {
    #[command(flatten)]
    tokenizer: TokenizerArg,
    /// Folder holding the .npy shards; manifest.json is written there.
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    source: String,
}

#[derive(Args)]
pub struct BundleArgs {
    /// A source as NAME=DIR:WEIGHT (DIR holds manifest.json; WEIGHT a positive integer).
    #[arg(long = "source", required = true, num_args = 1..)]
    sources: Vec<String>,
    /// Mark the named source private (holdout). Repeatable.
    #[arg(long)]
    private: Vec<String>,
    /// Where to write the bundle (must not exist).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct BundleOnly {
    #[arg(long)]
    bundle: PathBuf,
}

#[derive(Args)]
pub struct SampleArgs {
    #[arg(long)]
    bundle: PathBuf,
    /// Seed material as UTF-8 text (a validator composes competition sha256, reveal-block hash
    /// and hotkey).
    #[arg(
        long,
        conflicts_with = "seed_material_hex",
        required_unless_present = "seed_material_hex"
    )]
    seed_material: Option<String>,
    /// Seed material as hex bytes.
    #[arg(long)]
    seed_material_hex: Option<String>,
    /// Number of windows.
    #[arg(long)]
    n: u64,
    /// Tokens per window.
    #[arg(long)]
    seq_len: u32,
    /// File holding the validator secret (needed when the bundle has private sources).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Where to write the uint32 [N, L] .npy (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// Also write the window list and digest as JSON here (must not exist).
    #[arg(long)]
    windows_out: Option<PathBuf>,
}

#[derive(Args)]
pub struct CommitRootArgs {
    /// The bundle (bundle.json), as `koth data commit-root B`; `--bundle B` works too.
    #[arg(
        value_name = "BUNDLE",
        required_unless_present = "bundle_flag",
        conflicts_with = "bundle_flag"
    )]
    bundle: Option<PathBuf>,
    /// The bundle, given as a flag (the same as the positional BUNDLE).
    #[arg(long = "bundle", value_name = "BUNDLE")]
    bundle_flag: Option<PathBuf>,
    /// File holding the validator secret that private windows mix in.
    #[arg(long)]
    secret_file: PathBuf,
    /// Print the committed text as well as the root.
    #[arg(long)]
    show: bool,
}

pub fn run(c: DataCommand) -> Result<()> {
    match c {
        DataCommand::Tokenizer(t) => run_tokenizer(t),
        DataCommand::Ingest(a) => run_ingest(a),
        DataCommand::Manifest(a) => run_manifest(a),
        DataCommand::Bundle(a) => run_bundle(a),
        DataCommand::Verify(a) => run_verify(a),
        DataCommand::Sample(a) => run_sample(a),
        DataCommand::CommitRoot(a) => run_commit_root(a),
    }
}

fn run_tokenizer(c: TokenizerCommand) -> Result<()> {
    match c {
        TokenizerCommand::Train {
            input,
            vocab_size,
            min_frequency,
            text_field,
            out,
        } => {
            refuse_existing(&out, "--out")?;
            let docs = read_documents(&input, &text_field).context("reading --input")?;
            let bytes: usize = docs.iter().map(String::len).sum();
            tracing::info!(
                documents = docs.len(),
                bytes,
                vocab_size,
                "training byte-level BPE"
            );
            let json = train_byte_level_bpe(docs.iter(), vocab_size, min_frequency)?;
            // Load what we trained before writing it: the file must be usable.
            let name = format!(
                "file:{}",
                out.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            );
            let tok = Tokenizer::from_json_bytes(json.as_bytes(), name, None)?;
            write_new(&out, json.as_bytes())
                .with_context(|| format!("writing --out {}", out.display()))?;
            println!("{}", serde_json::to_string_pretty(tok.identity())?);
            Ok(())
        }
        TokenizerCommand::Info(t) => {
            let tok = t.load()?;
            println!("{}", serde_json::to_string_pretty(tok.identity())?);
            Ok(())
        }
        TokenizerCommand::Encode { tokenizer, text } => {
            let tok = tokenizer.load()?;
            let ids = tok.encode(&text)?;
            let line: Vec<String> = ids.iter().map(u32::to_string).collect();
            println!("{}", line.join(" "));
            Ok(())
        }
    }
}

fn run_ingest(a: IngestArgs) -> Result<()> {
    let tok = a.tokenizer.load()?;
    let start = std::time::Instant::now();
    let m = ingest(
        &tok,
        &a.input,
        &a.out,
        &IngestOptions {
            source: a.source.clone(),
            shard_tokens: a.shard_tokens,
            text_field: a.text_field,
        },
    )
    .with_context(|| format!("ingesting source {:?} into {}", a.source, a.out.display()))?;
    let bytes: u64 = m.inputs.iter().map(|i| i.bytes).sum();
    let secs = start.elapsed().as_secs_f64();
    tracing::info!(
        seconds = secs,
        mb_per_s = bytes as f64 / 1e6 / secs.max(1e-9),
        "ingested"
    );
    println!(
        "source {} documents {} tokens {} shards {} manifest {}",
        m.source,
        m.documents,
        m.total_tokens,
        m.shards.len(),
        a.out.join(MANIFEST_FILE).display()
    );
    Ok(())
}

fn run_manifest(a: ManifestArgs) -> Result<()> {
    let tok = a.tokenizer.load()?;
    let path = a.dir.join(MANIFEST_FILE);
    refuse_existing(&path, "--dir")?;
    let m = manifest_for_existing(&a.dir, &a.source, tok.identity())
        .with_context(|| format!("building a manifest for {}", a.dir.display()))?;
    write_new(&path, &m.to_bytes())?;
    println!(
        "source {} tokens {} shards {} manifest {}",
        m.source,
        m.total_tokens,
        m.shards.len(),
        path.display()
    );
    Ok(())
}

/// `NAME=DIR:WEIGHT`: the name up to the first `=`, the weight after the last `:`.
fn parse_source(spec: &str) -> Result<(String, PathBuf, u64)> {
    let (name, rest) = spec
        .split_once('=')
        .with_context(|| format!("--source {spec:?}: expected NAME=DIR:WEIGHT"))?;
    let (dir, weight) = rest
        .rsplit_once(':')
        .with_context(|| format!("--source {spec:?}: expected NAME=DIR:WEIGHT (no :WEIGHT)"))?;
    let weight: u64 = weight.parse().with_context(|| {
        format!("--source {spec:?}: weight {weight:?} is not a positive integer")
    })?;
    if name.is_empty() || dir.is_empty() {
        bail!("--source {spec:?}: expected NAME=DIR:WEIGHT");
    }
    Ok((name.to_string(), PathBuf::from(dir), weight))
}

fn run_bundle(a: BundleArgs) -> Result<()> {
    refuse_existing(&a.out, "--out")?;
    let mut specs = Vec::new();
    for s in &a.sources {
        let (name, dir, weight) = parse_source(s)?;
        specs.push(SourceSpec {
            private: a.private.contains(&name),
            name,
            manifest: dir,
            weight,
        });
    }
    for p in &a.private {
        if !specs.iter().any(|s| &s.name == p) {
            bail!("--private {p:?} names no --source");
        }
    }
    let bundle = Bundle::build(&a.out, &specs).context("building the bundle")?;
    bundle
        .write_new(&a.out)
        .with_context(|| format!("writing --out {}", a.out.display()))?;
    println!("{}", bundle.sha256());
    Ok(())
}

fn run_verify(a: BundleOnly) -> Result<()> {
    let ds = open(&a.bundle)?;
    let n = ds
        .verify_all()
        .with_context(|| format!("verifying {}", a.bundle.display()))?;
    let tokens: u64 = ds.manifests().map(|m| m.total_tokens).sum();
    println!(
        "ok bundle {} sources {} shards {n} tokens {tokens}",
        ds.bundle_sha256(),
        ds.bundle().sources.len()
    );
    Ok(())
}

fn run_sample(a: SampleArgs) -> Result<()> {
    refuse_existing(&a.out, "--out")?;
    if let Some(w) = &a.windows_out {
        refuse_existing(w, "--windows-out")?;
    }
    let seed: Vec<u8> = match (&a.seed_material, &a.seed_material_hex) {
        (Some(s), _) => s.as_bytes().to_vec(),
        (None, Some(h)) => decode_hex(h).context("--seed-material-hex")?,
        (None, None) => bail!("give --seed-material or --seed-material-hex"),
    };
    let secret = match &a.secret_file {
        Some(p) => Some(
            std::fs::read(p).with_context(|| format!("reading --secret-file {}", p.display()))?,
        ),
        None => None,
    };
    let ds = open(&a.bundle)?;
    let sample = ds
        .sample(&seed, secret.as_deref(), a.n, a.seq_len)
        .with_context(|| format!("sampling {}", a.bundle.display()))?;
    // Stream the windows into the array file in batches, published durably and atomically.
    koth_core::fsutil::write_atomic_with(&a.out, |tmp: &Path| -> Result<()> {
        let f = File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut w = BufWriter::new(f);
        w.write_all(&encode_header(
            NpyDtype::U32,
            &[sample.windows.len(), a.seq_len as usize],
        ))?;
        for batch in ds.batches(&sample.windows, 256) {
            let tokens = batch.context("reading windows")?;
            let mut bytes = Vec::with_capacity(tokens.len() * 4);
            for t in tokens {
                bytes.extend_from_slice(&t.to_le_bytes());
            }
            w.write_all(&bytes)?;
        }
        w.flush()
            .with_context(|| format!("writing {}", tmp.display()))
    })
    .with_context(|| format!("writing --out {}", a.out.display()))?;
    if let Some(path) = &a.windows_out {
        let names: Vec<&str> = ds
            .bundle()
            .sources
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        let record = serde_json::json!({
            "bundle_sha256": ds.bundle_sha256(),
            "seq_len": a.seq_len,
            "n": a.n,
            "seed_material_hex": encode_hex(&seed),
            "sample_digest": sample.digest,
            "per_source": names.iter().zip(&sample.per_source)
                .map(|(n, c)| ((*n).to_string(), *c)).collect::<std::collections::BTreeMap<_, _>>(),
            "windows": sample.windows,
        });
        let mut bytes = serde_json::to_vec_pretty(&record)?;
        bytes.push(b'\n');
        write_new(path, &bytes)
            .with_context(|| format!("writing --windows-out {}", path.display()))?;
    }
    println!("{}", sample.digest);
    Ok(())
}

fn run_commit_root(a: CommitRootArgs) -> Result<()> {
    // clap requires exactly one of the two; this is the same check for a caller that bypasses it.
    let Some(bundle) = a.bundle.or(a.bundle_flag) else {
        bail!("commit-root needs the bundle: `koth data commit-root BUNDLE --secret-file F`");
    };
    let secret = std::fs::read(&a.secret_file)
        .with_context(|| format!("reading --secret-file {}", a.secret_file.display()))?;
    let ds = open(&bundle)?;
    let text = holdout::commitment_text(&ds, &secret)
        .with_context(|| format!("committing to {}", bundle.display()))?;
    if a.show {
        eprint!("{text}");
    }
    println!("{}", koth_core::Digest::of(text.as_bytes()));
    Ok(())
}

fn open(bundle: &Path) -> Result<Dataset> {
    Dataset::open(bundle).with_context(|| format!("opening --bundle {}", bundle.display()))
}

fn refuse_existing(path: &Path, flag: &str) -> Result<()> {
    if path.exists() {
        bail!(
            "{flag} {} already exists; refusing to overwrite it",
            path.display()
        );
    }
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

fn decode_hex(s: &str) -> Result<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{s:?} is not an even number of hex digits");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).context("hex digit"))
        .collect()
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
