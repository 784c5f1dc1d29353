//! Ingest: text files, folders and JSONL → shards of at most `shard_tokens` tokens plus
//! `manifest.json`.
//!
//! Documents: a text file is one document; a folder contributes every `.txt`, `.md` and
//! `.jsonl` file under it (recursively, in byte order of their paths, hidden files skipped);
//! each line of a `.jsonl` file is a JSON object whose `text` field (a string) is one document.
//! Every document is followed by the tokenizer's EOS id, and the token stream runs on across
//! shard boundaries (as Teutonic's shards do). Nothing is overwritten: the output directory must
//! not exist or be empty, and each file is written under a temporary name and renamed.

use std::fs;
use std::path::{Path, PathBuf};

use koth_core::npy::{encode_header, NpyDtype};
use koth_core::{Digest, Sha256Writer};

use crate::error::{DataError, Result};
use crate::manifest::{
    validate_source_name, InputEntry, ShardEntry, SourceManifest, MANIFEST_FILE, MANIFEST_FORMAT,
};
use crate::tokenizer::Tokenizer;

/// Options for [`ingest`].
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub source: String,
    pub shard_tokens: u64,
    /// The JSONL field that holds a document's text.
    pub text_field: String,
}

/// One input file and how to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    pub path: PathBuf,
    /// Recorded in the manifest: the file's name, or `folder/relative` for a file inside a
    /// given folder (never the absolute location).
    pub name: String,
    pub jsonl: bool,
}

/// Expand input paths (files and folders) into the ordered list of files to read.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<InputFile>> {
    let mut out = Vec::new();
    for input in inputs {
        let meta = fs::metadata(input).map_err(|e| DataError::io(input, e))?;
        if meta.is_dir() {
            let mut files = Vec::new();
            walk(input, &mut files)?;
            files.sort();
            // Recorded names leave out where the folder lives, so the same corpus ingested on
            // two machines gives the same manifest.
            let base = base_name(input);
            let before = out.len();
            for f in files {
                let rel = f
                    .strip_prefix(input)
                    .unwrap_or(&f)
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push(InputFile {
                    jsonl: is_jsonl(&f),
                    name: format!("{base}/{rel}"),
                    path: f,
                });
            }
            if out.len() == before {
                return Err(DataError::Input {
                    path: input.clone(),
                    reason: "folder holds no .txt, .md or .jsonl files".into(),
                });
            }
        } else {
            out.push(InputFile {
                jsonl: is_jsonl(input),
                name: base_name(input),
                path: input.clone(),
            });
        }
    }
    Ok(out)
}

fn base_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn is_jsonl(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "jsonl")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let ft = entry.file_type().map_err(|e| DataError::io(&path, e))?;
        if ft.is_dir() {
            walk(&path, out)?;
        } else if ft.is_file()
            && path
                .extension()
                .is_some_and(|e| e == "txt" || e == "md" || e == "jsonl")
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Call `f` with each document of `input`, in order. Returns the file's size and sha256.
pub fn for_each_document(
    input: &InputFile,
    text_field: &str,
    mut f: impl FnMut(&str) -> Result<()>,
) -> Result<(u64, Digest)> {
    let bytes = fs::read(&input.path).map_err(|e| DataError::io(&input.path, e))?;
    let digest = Digest::of(&bytes);
    let len = bytes.len() as u64;
    if input.jsonl {
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            let bad = |reason: String| DataError::Input {
                path: input.path.clone(),
                reason: format!("line {}: {reason}", i + 1),
            };
            let value: serde_json::Value =
                serde_json::from_slice(line).map_err(|e| bad(format!("not JSON: {e}")))?;
            let text = value
                .get(text_field)
                .ok_or_else(|| bad(format!("no {text_field:?} field")))?
                .as_str()
                .ok_or_else(|| bad(format!("the {text_field:?} field is not a string")))?;
            f(text)?;
        }
    } else {
        let text = std::str::from_utf8(&bytes).map_err(|e| DataError::Input {
            path: input.path.clone(),
            reason: format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.valid_up_to()
            ),
        })?;
        f(text)?;
    }
    Ok((len, digest))
}

/// Read every document of `inputs` (for tokenizer training).
pub fn read_documents(inputs: &[PathBuf], text_field: &str) -> Result<Vec<String>> {
    let mut docs = Vec::new();
    for input in expand_inputs(inputs)? {
        for_each_document(&input, text_field, |t| {
            docs.push(t.to_string());
            Ok(())
        })?;
    }
    Ok(docs)
}

/// Writes a token stream as consecutive shards.
struct ShardWriter {
    dir: PathBuf,
    shard_tokens: usize,
    pending: Vec<u32>,
    shards: Vec<ShardEntry>,
}

impl ShardWriter {
    fn push(&mut self, ids: &[u32]) -> Result<()> {
        let mut rest = ids;
        while !rest.is_empty() {
            let room = self.shard_tokens - self.pending.len();
            let take = room.min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == self.shard_tokens {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let name = format!("shard-{:05}.npy", self.shards.len());
        let path = self.dir.join(&name);
        let mut bytes = encode_header(NpyDtype::U32, &[self.pending.len()]);
        bytes.reserve(self.pending.len() * 4);
        for id in &self.pending {
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        let mut hasher = Sha256Writer::new();
        hasher.update(&bytes);
        write_new_file(&path, &bytes)?;
        self.shards.push(ShardEntry {
            path: name,
            tokens: self.pending.len() as u64,
            sha256: hasher.finish(),
        });
        self.pending.clear();
        Ok(())
    }
}

/// Write `bytes` to `path` with [`koth_core::fsutil::write_atomic`]; refuse if `path` exists.
pub(crate) fn write_new_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.exists() {
        return Err(DataError::OutputExists {
            path: path.to_path_buf(),
        });
    }
    koth_core::fsutil::write_atomic(path, bytes).map_err(|e| DataError::io(path, e.source))
}

/// Tokenize `inputs` into shards and a manifest in `out_dir`. Returns the manifest.
pub fn ingest(
    tokenizer: &Tokenizer,
    inputs: &[PathBuf],
    out_dir: &Path,
    opts: &IngestOptions,
) -> Result<SourceManifest> {
    validate_source_name(&opts.source).map_err(|e| DataError::invalid(out_dir, e.to_string()))?;
    let shard_tokens = usize::try_from(opts.shard_tokens)
        .ok()
        .filter(|&n| n > 0 && n <= 1 << 32)
        .ok_or_else(|| DataError::invalid(out_dir, "shard tokens must be between 1 and 2^32"))?;
    if inputs.is_empty() {
        return Err(DataError::invalid(out_dir, "no inputs given"));
    }
    let files = expand_inputs(inputs)?;
    prepare_out_dir(out_dir)?;
    let mut writer = ShardWriter {
        dir: out_dir.to_path_buf(),
        shard_tokens,
        pending: Vec::with_capacity(shard_tokens.min(1 << 24)),
        shards: Vec::new(),
    };
    let eos = tokenizer.identity().eos_id;
    let mut input_entries = Vec::new();
    let mut documents = 0u64;
    for file in &files {
        let mut file_docs = 0u64;
        let (bytes, sha256) = for_each_document(file, &opts.text_field, |text| {
            let mut ids = tokenizer.encode(text)?;
            ids.push(eos);
            file_docs += 1;
            writer.push(&ids)
        })?;
        documents += file_docs;
        tracing::debug!(input = %file.name, documents = file_docs, "ingested");
        input_entries.push(InputEntry {
            path: file.name.clone(),
            bytes,
            sha256,
            documents: file_docs,
        });
    }
    writer.flush()?;
    if writer.shards.is_empty() {
        return Err(DataError::invalid(
            out_dir,
            "the inputs hold no documents, so there is nothing to write",
        ));
    }
    let manifest = SourceManifest {
        format: MANIFEST_FORMAT.into(),
        source: opts.source.clone(),
        tokenizer: tokenizer.identity().clone(),
        dtype: "<u4".into(),
        documents,
        total_tokens: writer.shards.iter().map(|s| s.tokens).sum(),
        inputs: input_entries,
        shards: writer.shards,
    };
    write_new_file(&out_dir.join(MANIFEST_FILE), &manifest.to_bytes())?;
    Ok(manifest)
}

/// Build a manifest for existing `.npy` shards (e.g. Teutonic's) in `dir`: every `*.npy` file
/// directly in it, sorted by name, is checked (format, ids below the tokenizer's vocabulary)
/// and hashed.
pub fn manifest_for_existing(
    dir: &Path,
    source: &str,
    tokenizer: &crate::tokenizer::TokenizerIdentity,
) -> Result<SourceManifest> {
    validate_source_name(source).map_err(|e| DataError::invalid(dir, e.to_string()))?;
    let mut names: Vec<String> = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".npy") && !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    if names.is_empty() {
        return Err(DataError::invalid(dir, "holds no .npy shards"));
    }
    let mut shards = Vec::new();
    for name in names {
        let facts = crate::shard::inspect(&dir.join(&name), Some(tokenizer.vocab_size))?;
        if facts.tokens == 0 {
            return Err(DataError::ShardFormat {
                path: dir.join(&name),
                reason: "holds zero tokens".into(),
            });
        }
        shards.push(ShardEntry {
            path: name,
            tokens: facts.tokens,
            sha256: facts.sha256,
        });
    }
    Ok(SourceManifest {
        format: MANIFEST_FORMAT.into(),
        source: source.into(),
        tokenizer: tokenizer.clone(),
        dtype: "<u4".into(),
        documents: 0,
        total_tokens: shards.iter().map(|s| s.tokens).sum(),
        inputs: Vec::new(),
        shards,
    })
}

fn prepare_out_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        let mut entries = fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
        if entries.next().is_some() {
            return Err(DataError::OutputExists {
                path: dir.to_path_buf(),
            });
        }
    } else {
        fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    }
    Ok(())
}
