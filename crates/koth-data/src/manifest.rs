//! `manifest.json`: one per source directory. It names the source and its tokenizer and lists
//! every shard with its path (relative to the manifest's directory), token count and sha256.
//! A shard whose bytes do not hash to its entry is refused before use.

use std::path::{Component, Path, PathBuf};

use koth_core::Digest;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::tokenizer::TokenizerIdentity;

pub const MANIFEST_FORMAT: &str = "koth-source-manifest/1";
pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceManifest {
    pub format: String,
    pub source: String,
    pub tokenizer: TokenizerIdentity,
    /// Always `<u4`: little-endian uint32 token ids.
    pub dtype: String,
    pub documents: u64,
    pub total_tokens: u64,
    /// What was ingested (provenance; not needed to read the shards).
    pub inputs: Vec<InputEntry>,
    pub shards: Vec<ShardEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputEntry {
    /// The input file's name, or `folder/relative` for a file inside a given folder.
    pub path: String,
    pub bytes: u64,
    pub sha256: Digest,
    pub documents: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardEntry {
    /// Relative to the manifest's directory, `/`-separated, never `..` or absolute.
    pub path: String,
    pub tokens: u64,
    pub sha256: Digest,
}

impl SourceManifest {
    /// The bytes written to `manifest.json` (pretty JSON and a newline); a bundle pins their
    /// sha256.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Parse and check a manifest's bytes; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let m: SourceManifest = serde_json::from_slice(bytes).map_err(|e| DataError::Json {
            path: path.to_path_buf(),
            what: "a source manifest",
            source: e,
        })?;
        m.validate(path)?;
        Ok(m)
    }

    /// Read `manifest.json` from a source directory or a manifest file path.
    pub fn read(path: &Path) -> Result<(Self, Vec<u8>, PathBuf)> {
        let file = if path.is_dir() {
            path.join(MANIFEST_FILE)
        } else {
            path.to_path_buf()
        };
        let bytes = std::fs::read(&file).map_err(|e| DataError::io(&file, e))?;
        let m = Self::from_bytes(&bytes, &file)?;
        Ok((m, bytes, file))
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |reason: String| DataError::invalid(path, reason);
        if self.format != MANIFEST_FORMAT {
            return Err(bad(format!(
                "format is {:?}, expected {MANIFEST_FORMAT:?}",
                self.format
            )));
        }
        validate_source_name(&self.source).map_err(|e| bad(e.to_string()))?;
        if self.dtype != "<u4" {
            return Err(bad(format!("dtype is {:?}, expected \"<u4\"", self.dtype)));
        }
        if self.tokenizer.eos_id >= self.tokenizer.vocab_size {
            return Err(bad(format!(
                "tokenizer EOS id {} is not below its vocab size {}",
                self.tokenizer.eos_id, self.tokenizer.vocab_size
            )));
        }
        let mut sum: u64 = 0;
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.shards {
            check_relative_path(&s.path)
                .map_err(|r| bad(format!("shard path {:?}: {r}", s.path)))?;
            if !seen.insert(&s.path) {
                return Err(bad(format!("shard {:?} is listed twice", s.path)));
            }
            if s.tokens == 0 {
                return Err(bad(format!("shard {:?} has zero tokens", s.path)));
            }
            sum = sum
                .checked_add(s.tokens)
                .ok_or_else(|| bad("token counts overflow".into()))?;
        }
        if sum != self.total_tokens {
            return Err(bad(format!(
                "total_tokens is {} but the shards add up to {sum}",
                self.total_tokens
            )));
        }
        Ok(())
    }
}

/// A source name outside the allowed alphabet or length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("source name {name:?} must be 1–64 characters of A–Z a–z 0–9 - _ .")]
pub struct BadSourceName {
    pub name: String,
}

/// Why a stored relative path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadRelativePath {
    #[error("must be a non-empty /-separated relative path")]
    NotAPath,
    #[error("must be relative and must not contain \"..\"")]
    LeavesItsDirectory,
}

/// Source names are short identifiers: they appear in CLI flags, verdicts and seeds.
pub fn validate_source_name(name: &str) -> std::result::Result<(), BadSourceName> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(BadSourceName {
            name: name.to_string(),
        })
    }
}

/// A stored relative path must stay inside its directory: no absolute paths, no `..`.
pub(crate) fn check_relative_path(p: &str) -> std::result::Result<(), BadRelativePath> {
    if p.is_empty() || p.contains('\\') {
        return Err(BadRelativePath::NotAPath);
    }
    for c in Path::new(p).components() {
        match c {
            Component::Normal(_) => {}
            Component::CurDir => {}
            _ => return Err(BadRelativePath::LeavesItsDirectory),
        }
    }
    Ok(())
}
