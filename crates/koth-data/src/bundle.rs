//! Bundles: the weighted sources a competition samples from, each pinned by the sha256 of its
//! `manifest.json`. A bundle is a JSON file; its sha256 is taken over its canonical form (pretty
//! JSON with sources sorted by name, then a newline), which is exactly what
//! [`Bundle::write_new`] writes, so `sha256sum bundle.json` prints the bundle's digest.

use std::path::{Component, Path, PathBuf};

use koth_core::Digest;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::manifest::{check_relative_path, validate_source_name, BadRelativePath, SourceManifest};
use crate::tokenizer::TokenizerIdentity;

pub const BUNDLE_FORMAT: &str = "koth-bundle/1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub format: String,
    /// The tokenizer every source was made with.
    pub tokenizer: TokenizerIdentity,
    /// Sorted by name; names are unique.
    pub sources: Vec<BundleSource>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSource {
    pub name: String,
    /// The manifest file, relative to the bundle file's directory (`/`-separated; may start
    /// with `../`), or absolute.
    pub manifest: String,
    pub manifest_sha256: Digest,
    /// Relative integer weight: windows are allocated in proportion (largest remainder).
    pub weight: u64,
    /// A private (holdout) source: its windows also depend on the validator's secret, and it is
    /// committed to by `koth data commit-root` before use.
    pub private: bool,
    /// Informational copies from the manifest (checked on load).
    pub shards: u64,
    pub tokens: u64,
}

/// One source to put into a new bundle.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub name: String,
    /// A source directory or its `manifest.json`.
    pub manifest: PathBuf,
    pub weight: u64,
    pub private: bool,
}

impl Bundle {
    /// Build a bundle to be written at `bundle_path` from source specs: reads and hashes each
    /// manifest, checks that names match and tokenizers agree.
    pub fn build(bundle_path: &Path, specs: &[SourceSpec]) -> Result<Bundle> {
        if specs.is_empty() {
            return Err(DataError::Bundle(
                "a bundle needs at least one source".into(),
            ));
        }
        let bundle_dir = absolute_dir_of(bundle_path)?;
        let mut tokenizer: Option<TokenizerIdentity> = None;
        let mut sources = Vec::new();
        for spec in specs {
            validate_source_name(&spec.name).map_err(|e| DataError::Bundle(e.to_string()))?;
            if spec.weight == 0 {
                return Err(DataError::Bundle(format!(
                    "source {:?} has weight 0; weights are positive integers",
                    spec.name
                )));
            }
            let (manifest, bytes, file) = SourceManifest::read(&spec.manifest)?;
            if manifest.source != spec.name {
                return Err(DataError::Bundle(format!(
                    "source {:?}: its manifest {} names the source {:?}",
                    spec.name,
                    file.display(),
                    manifest.source
                )));
            }
            match &tokenizer {
                None => tokenizer = Some(manifest.tokenizer.clone()),
                Some(t) if !t.same_tokenizer(&manifest.tokenizer) => {
                    return Err(DataError::Bundle(format!(
                        "source {:?} was made with tokenizer {} ({}) but an earlier source with \
                         {} ({})",
                        spec.name,
                        manifest.tokenizer.name,
                        manifest.tokenizer.sha256,
                        t.name,
                        t.sha256
                    )))
                }
                Some(_) => {}
            }
            let abs = std::path::absolute(&file).map_err(|e| DataError::io(&file, e))?;
            sources.push(BundleSource {
                name: spec.name.clone(),
                manifest: relative_path(&bundle_dir, &abs),
                manifest_sha256: Digest::of(&bytes),
                weight: spec.weight,
                private: spec.private,
                shards: manifest.shards.len() as u64,
                tokens: manifest.total_tokens,
            });
        }
        sources.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = sources.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(DataError::Bundle(format!(
                "source {:?} is given twice",
                w[0].name
            )));
        }
        let bundle = Bundle {
            format: BUNDLE_FORMAT.into(),
            tokenizer: tokenizer.ok_or_else(|| DataError::Bundle("no sources".into()))?,
            sources,
        };
        Ok(bundle)
    }

    /// The canonical bytes (what is written and hashed).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    pub fn sha256(&self) -> Digest {
        Digest::of(&self.canonical_bytes())
    }

    /// Write to `path`, refusing to overwrite an existing file.
    pub fn write_new(&self, path: &Path) -> Result<()> {
        crate::ingest::write_new_file(path, &self.canonical_bytes())
    }

    /// Read and check a bundle file.
    pub fn read(path: &Path) -> Result<Bundle> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let b: Bundle = serde_json::from_slice(&bytes).map_err(|e| DataError::Json {
            path: path.to_path_buf(),
            what: "a bundle",
            source: e,
        })?;
        b.validate(path)?;
        Ok(b)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |r: String| DataError::invalid(path, r);
        if self.format != BUNDLE_FORMAT {
            return Err(bad(format!(
                "format is {:?}, expected {BUNDLE_FORMAT:?}",
                self.format
            )));
        }
        if self.sources.is_empty() {
            return Err(bad("lists no sources".into()));
        }
        for s in &self.sources {
            validate_source_name(&s.name).map_err(|e| bad(e.to_string()))?;
            if s.weight == 0 {
                return Err(bad(format!("source {:?} has weight 0", s.name)));
            }
            if !Path::new(&s.manifest).is_absolute() {
                check_manifest_reference(&s.manifest)
                    .map_err(|r| bad(format!("source {:?} manifest path: {r}", s.name)))?;
            }
        }
        if self.sources.windows(2).any(|w| w[0].name >= w[1].name) {
            return Err(bad(
                "sources must be sorted by name with no name twice (the sampler's order depends \
                 on it)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The manifest file of `source`, resolved against the bundle file's directory.
    pub fn manifest_path(&self, bundle_path: &Path, source: &BundleSource) -> PathBuf {
        let p = Path::new(&source.manifest);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            bundle_path
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join(p)
        }
    }
}

/// A bundle may point to `../other/manifest.json`; only leading `..` are allowed.
fn check_manifest_reference(p: &str) -> std::result::Result<(), BadRelativePath> {
    let mut rest = p;
    while let Some(r) = rest.strip_prefix("../") {
        rest = r;
    }
    check_relative_path(rest)
}

fn absolute_dir_of(file: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(file).map_err(|e| DataError::io(file, e))?;
    Ok(abs.parent().map(Path::to_path_buf).unwrap_or(abs))
}

/// `to` relative to the directory `from` (both absolute), `/`-separated; absolute if they share
/// no root.
fn relative_path(from: &Path, to: &Path) -> String {
    fn norm(p: &Path) -> Vec<Component<'_>> {
        let mut out: Vec<Component<'_>> = Vec::new();
        for c in p.components() {
            match c {
                Component::CurDir => {}
                Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                    out.pop();
                }
                c => out.push(c),
            }
        }
        out
    }
    let (f, t) = (norm(from), norm(to));
    if f.first() != t.first() {
        return to.display().to_string();
    }
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); f.len() - common];
    parts.extend(
        t[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_path(Path::new("/a/b"), Path::new("/a/b/c/manifest.json")),
            "c/manifest.json"
        );
        assert_eq!(
            relative_path(Path::new("/a/b"), Path::new("/a/x/manifest.json")),
            "../x/manifest.json"
        );
        assert!(check_manifest_reference("../x/manifest.json").is_ok());
        assert!(check_manifest_reference("x/../../y").is_err());
    }
}
