//! The canonical checkpoint manifest and the checkpoint digest (PROTOCOL §3).
//!
//! A checkpoint is a set of files. Its manifest lists every file as (path, size, sha256 of the
//! bytes), sorted by path, and the checkpoint's digest is the sha256 of the manifest's canonical
//! bytes. The miner, the store and the validator all compute the same digest from the same files,
//! so this module is the one definition of those bytes, and it does no I/O: hashing files from
//! disk lives in `koth-store`.
//!
//! Canonical bytes: compact JSON (no whitespace) with fields in this fixed order, followed by one
//! `\n`:
//!
//! ```text
//! {"format":"koth.checkpoint.v1","files":[{"path":"config.json","size":123,"sha256":"sha256:<hex>"},…]}
//! ```
//!
//! Files are sorted by path (bytewise), paths are unique, and paths use only `[A-Za-z0-9._-]`
//! and `/` separators, so no JSON escape can ever appear and the bytes are unambiguous. Parsing
//! re-encodes and compares: a manifest that is not byte-for-byte canonical is refused, so one
//! checkpoint has exactly one digest.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// The format tag written into every canonical manifest.
pub const MANIFEST_FORMAT: &str = "koth.checkpoint.v1";

/// Longest path accepted in a manifest, in bytes.
pub const MAX_PATH_LEN: usize = 255;

/// Most files accepted in one manifest. A Hugging Face checkpoint has a handful of shards and a
/// few small files; a manifest with more entries than this is not a checkpoint.
pub const MAX_FILES: usize = 10_000;

/// One file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative path inside the checkpoint directory, `/`-separated.
    pub path: String,
    /// Length of the file in bytes.
    pub size: u64,
    /// sha256 of the file's bytes.
    pub sha256: Digest,
}

/// The list of a checkpoint's files; its canonical bytes hash to the checkpoint digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointManifest {
    files: Vec<FileEntry>,
}

/// Why a manifest or a path inside one is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest path {path:?} is invalid: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("manifest lists {path:?} more than once")]
    DuplicatePath { path: String },
    #[error("manifest lists no files")]
    Empty,
    #[error("manifest lists {count} files; at most {max} are accepted")]
    TooManyFiles { count: usize, max: usize },
    #[error("manifest's total size overflows 64 bits")]
    SizeOverflow,
    #[error("manifest is not valid JSON of the expected shape: {0}")]
    Json(String),
    #[error("manifest format is {found:?}, expected {MANIFEST_FORMAT:?}")]
    WrongFormat { found: String },
    #[error(
        "manifest is not in canonical form (compact JSON, fixed field order, files sorted by path, one trailing newline)"
    )]
    NotCanonical,
}

/// Why a file may not be part of a checkpoint (PROTOCOL §3: nothing executable, nothing unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRefusal {
    /// Python source, which some loaders execute (`trust_remote_code`).
    Executable,
    /// A pickle-based format (`.bin`, `.pt`, `.pth`, `.pkl`, `.ckpt`, …); unpickling runs code.
    Pickle,
    /// Checkpoint files live at the top level of the directory, as in Hugging Face's layout.
    Nested,
    /// Not one of the allowed names.
    Unknown,
}

impl fmt::Display for FileRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            FileRefusal::Executable => "executable code (Python) is never accepted",
            FileRefusal::Pickle => "pickle-based weights run code when loaded; use safetensors",
            FileRefusal::Nested => "files must be at the top level of the checkpoint directory",
            FileRefusal::Unknown => {
                "not an allowed file (config.json, generation_config.json, *.safetensors, \
                 model.safetensors.index.json, tokenizer files)"
            }
        };
        f.write_str(s)
    }
}

/// Exact file names allowed besides `*.safetensors`.
pub const ALLOWED_NAMES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
];

const PICKLE_EXTENSIONS: &[&str] = &[
    ".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npz",
];

/// Whether `path` may be part of a checkpoint: `Ok(())` or the reason it is refused.
///
/// Pure: it looks at the name only. The validator separately refuses `auto_map` inside
/// config.json, and parses every safetensors header.
pub fn file_policy(path: &str) -> Result<(), FileRefusal> {
    let lower = path.to_ascii_lowercase();
    if lower.ends_with(".py") || lower.ends_with(".pyc") || lower.ends_with(".so") {
        return Err(FileRefusal::Executable);
    }
    if PICKLE_EXTENSIONS.iter().any(|ext| lower.ends_with(ext)) {
        return Err(FileRefusal::Pickle);
    }
    if path.contains('/') {
        return Err(FileRefusal::Nested);
    }
    if ALLOWED_NAMES.contains(&path) {
        return Ok(());
    }
    // `*.safetensors` with a non-empty stem; the charset is already restricted by validate_path.
    match path.strip_suffix(".safetensors") {
        Some(stem) if !stem.is_empty() && !stem.starts_with('.') => Ok(()),
        _ => Err(FileRefusal::Unknown),
    }
}

/// Check that `path` is a safe relative path: non-empty, at most [`MAX_PATH_LEN`] bytes, only
/// `[A-Za-z0-9._-]` and `/`, no empty, `.` or `..` component, no leading or trailing `/`, and
/// no component starting with `.` (hidden files and the store's own temporaries).
pub fn validate_path(path: &str) -> Result<(), ManifestError> {
    let bad = |reason| {
        Err(ManifestError::BadPath {
            path: path.to_string(),
            reason,
        })
    };
    if path.is_empty() {
        return bad("empty");
    }
    if path.len() > MAX_PATH_LEN {
        return bad("longer than 255 bytes");
    }
    if path.starts_with('/') {
        return bad("absolute");
    }
    if path.contains('\\') {
        return bad("contains a backslash");
    }
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
    {
        return bad("only A-Z a-z 0-9 . _ - and / are allowed");
    }
    for component in path.split('/') {
        if component.is_empty() {
            return bad("empty path component");
        }
        if component == "." || component == ".." {
            return bad("contains a . or .. component");
        }
        if component.starts_with('.') {
            return bad("hidden component (starts with .)");
        }
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct Wire {
    format: String,
    files: Vec<FileEntry>,
}

impl CheckpointManifest {
    /// Build a manifest from files in any order: paths are validated, sorted and checked unique.
    pub fn new(mut files: Vec<FileEntry>) -> Result<Self, ManifestError> {
        if files.is_empty() {
            return Err(ManifestError::Empty);
        }
        if files.len() > MAX_FILES {
            return Err(ManifestError::TooManyFiles {
                count: files.len(),
                max: MAX_FILES,
            });
        }
        for f in &files {
            validate_path(&f.path)?;
        }
        files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        for pair in files.windows(2) {
            if pair[0].path == pair[1].path {
                return Err(ManifestError::DuplicatePath {
                    path: pair[0].path.clone(),
                });
            }
        }
        let m = Self { files };
        m.total_size()?;
        Ok(m)
    }

    /// The files, sorted by path.
    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    /// Sum of all file sizes.
    pub fn total_size(&self) -> Result<u64, ManifestError> {
        self.files.iter().try_fold(0u64, |acc, f| {
            acc.checked_add(f.size).ok_or(ManifestError::SizeOverflow)
        })
    }

    /// The canonical bytes (see the module docs).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let wire = WireRef {
            format: MANIFEST_FORMAT,
            files: &self.files,
        };
        // Serialising plain strings, integers and digests into a Vec cannot fail.
        let mut out = serde_json::to_vec(&wire).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// The checkpoint digest: sha256 of the canonical bytes.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.canonical_bytes())
    }

    /// Parse canonical bytes; anything that is not exactly canonical is refused.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let wire: Wire =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        if wire.format != MANIFEST_FORMAT {
            return Err(ManifestError::WrongFormat { found: wire.format });
        }
        let manifest = Self::new(wire.files)?;
        if manifest.canonical_bytes() != bytes {
            return Err(ManifestError::NotCanonical);
        }
        Ok(manifest)
    }

    /// Every file's policy verdict: the first refused file and why, if any.
    pub fn check_policy(&self) -> Result<(), (String, FileRefusal)> {
        for f in &self.files {
            file_policy(&f.path).map_err(|r| (f.path.clone(), r))?;
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct WireRef<'a> {
    format: &'a str,
    files: &'a [FileEntry],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, size: u64, data: &[u8]) -> FileEntry {
        FileEntry {
            path: path.to_string(),
            size,
            sha256: Digest::of(data),
        }
    }

    #[test]
    fn canonical_bytes_are_sorted_compact_and_stable() {
        let m = CheckpointManifest::new(vec![
            entry("model.safetensors", 3, b"abc"),
            entry("config.json", 2, b"{}"),
        ])
        .unwrap();
        let text = String::from_utf8(m.canonical_bytes()).unwrap();
        let expected = format!(
            "{{\"format\":\"koth.checkpoint.v1\",\"files\":[{{\"path\":\"config.json\",\"size\":2,\"sha256\":\"{}\"}},{{\"path\":\"model.safetensors\",\"size\":3,\"sha256\":\"{}\"}}]}}\n",
            Digest::of(b"{}"),
            Digest::of(b"abc")
        );
        assert_eq!(text, expected);
        // Pinned: changing the canonical form changes every digest in the network.
        assert_eq!(m.digest(), Digest::of(expected.as_bytes()));
        let back = CheckpointManifest::from_canonical_bytes(text.as_bytes()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.digest(), m.digest());
    }

    #[test]
    fn non_canonical_encodings_are_refused() {
        let m = CheckpointManifest::new(vec![
            entry("config.json", 2, b"{}"),
            entry("model.safetensors", 3, b"abc"),
        ])
        .unwrap();
        let text = String::from_utf8(m.canonical_bytes()).unwrap();
        let no_newline = text.trim_end();
        assert_eq!(
            CheckpointManifest::from_canonical_bytes(no_newline.as_bytes()),
            Err(ManifestError::NotCanonical)
        );
        let spaced = text.replace(",\"files\"", ", \"files\"");
        assert_eq!(
            CheckpointManifest::from_canonical_bytes(spaced.as_bytes()),
            Err(ManifestError::NotCanonical)
        );
        // Unsorted order: same files, different bytes.
        let files = m.files();
        let unsorted = format!(
            "{{\"format\":\"koth.checkpoint.v1\",\"files\":[{},{}]}}\n",
            serde_json::to_string(&files[1]).unwrap(),
            serde_json::to_string(&files[0]).unwrap()
        );
        assert_eq!(
            CheckpointManifest::from_canonical_bytes(unsorted.as_bytes()),
            Err(ManifestError::NotCanonical)
        );
        let wrong_format = text.replace("koth.checkpoint.v1", "koth.checkpoint.v9");
        assert!(matches!(
            CheckpointManifest::from_canonical_bytes(wrong_format.as_bytes()),
            Err(ManifestError::WrongFormat { .. })
        ));
        assert!(matches!(
            CheckpointManifest::from_canonical_bytes(b"not json"),
            Err(ManifestError::Json(_))
        ));
    }

    #[test]
    fn bad_paths_are_refused() {
        for p in [
            "",
            "/etc/passwd",
            "../x.safetensors",
            "a/../b",
            "a//b",
            "a\\b",
            "./config.json",
            ".hidden",
            "dir/",
            "sp ace.json",
            "uni\u{e9}.json",
        ] {
            assert!(validate_path(p).is_err(), "{p:?} should be refused");
        }
        assert!(validate_path(&"a".repeat(256)).is_err());
        for p in [
            "config.json",
            "model-00001-of-00002.safetensors",
            "sub/dir.txt",
        ] {
            assert!(validate_path(p).is_ok(), "{p:?} should be accepted");
        }
    }

    #[test]
    fn duplicates_empty_and_overflow_are_refused() {
        assert!(matches!(
            CheckpointManifest::new(vec![
                entry("config.json", 2, b"{}"),
                entry("config.json", 2, b"{}"),
            ]),
            Err(ManifestError::DuplicatePath { .. })
        ));
        assert_eq!(CheckpointManifest::new(vec![]), Err(ManifestError::Empty));
        assert_eq!(
            CheckpointManifest::new(vec![
                entry("a.safetensors", u64::MAX, b""),
                entry("b.safetensors", 1, b""),
            ]),
            Err(ManifestError::SizeOverflow)
        );
    }

    #[test]
    fn file_policy_allows_only_hf_weights_config_and_tokenizer() {
        for ok in [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "model-00001-of-00003.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "vocab.json",
            "merges.txt",
            "tokenizer.model",
        ] {
            assert_eq!(file_policy(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            file_policy("modeling_evil.py"),
            Err(FileRefusal::Executable)
        );
        assert_eq!(file_policy("pytorch_model.bin"), Err(FileRefusal::Pickle));
        assert_eq!(file_policy("weights.pkl"), Err(FileRefusal::Pickle));
        assert_eq!(file_policy("optimizer.pt"), Err(FileRefusal::Pickle));
        assert_eq!(
            file_policy("sub/model.safetensors"),
            Err(FileRefusal::Nested)
        );
        assert_eq!(file_policy("README.md"), Err(FileRefusal::Unknown));
        assert_eq!(file_policy(".safetensors"), Err(FileRefusal::Unknown));
        assert_eq!(
            file_policy("chat_template.jinja"),
            Err(FileRefusal::Unknown)
        );
        let m = CheckpointManifest::new(vec![
            entry("config.json", 2, b"{}"),
            entry("modeling.py", 1, b"x"),
        ])
        .unwrap();
        assert_eq!(
            m.check_policy(),
            Err(("modeling.py".to_string(), FileRefusal::Executable))
        );
    }
}
