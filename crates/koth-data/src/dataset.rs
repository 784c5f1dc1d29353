//! An opened bundle: its manifests (each checked against the sha256 the bundle pins), the
//! sampler's view of it, and window reads from shards verified on first use.
//!
//! Verification is cached per process: a shard is hashed once, the first time a window of it
//! is read (or by [`Dataset::verify_all`]), and its file is kept open from then on.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use koth_core::Digest;

use crate::bundle::Bundle;
use crate::error::{DataError, Result};
use crate::manifest::SourceManifest;
use crate::sampler::{sample, Sample, SampleRequest, SamplerShard, SamplerSource, Window};
use crate::shard::{ShardExpectation, VerifiedShard};

#[derive(Debug)]
pub struct Dataset {
    bundle: Bundle,
    bundle_sha256: Digest,
    sources: Vec<OpenSource>,
}

#[derive(Debug)]
struct OpenSource {
    manifest: SourceManifest,
    dir: PathBuf,
    shards: Vec<OnceLock<VerifiedShard>>,
}

impl Dataset {
    /// Open `bundle_path` and every manifest it names. Shards are not read yet.
    pub fn open(bundle_path: &Path) -> Result<Dataset> {
        let bundle = Bundle::read(bundle_path)?;
        let mut sources = Vec::with_capacity(bundle.sources.len());
        for s in &bundle.sources {
            let file = bundle.manifest_path(bundle_path, s);
            let bytes = std::fs::read(&file).map_err(|e| DataError::io(&file, e))?;
            let actual = Digest::of(&bytes);
            if actual != s.manifest_sha256 {
                return Err(DataError::ManifestHash {
                    path: file,
                    expected: s.manifest_sha256,
                    actual,
                });
            }
            let manifest = SourceManifest::from_bytes(&bytes, &file)?;
            if manifest.source != s.name {
                return Err(DataError::invalid(
                    &file,
                    format!(
                        "names the source {:?} but the bundle lists it as {:?}",
                        manifest.source, s.name
                    ),
                ));
            }
            if !manifest.tokenizer.same_tokenizer(&bundle.tokenizer) {
                return Err(DataError::invalid(
                    &file,
                    format!(
                        "was made with tokenizer {} ({}), the bundle's is {} ({})",
                        manifest.tokenizer.name,
                        manifest.tokenizer.sha256,
                        bundle.tokenizer.name,
                        bundle.tokenizer.sha256
                    ),
                ));
            }
            let dir = file
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            let shards = manifest.shards.iter().map(|_| OnceLock::new()).collect();
            sources.push(OpenSource {
                manifest,
                dir,
                shards,
            });
        }
        Ok(Dataset {
            bundle_sha256: bundle.sha256(),
            bundle,
            sources,
        })
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    pub fn bundle_sha256(&self) -> Digest {
        self.bundle_sha256
    }

    /// Manifests in bundle order.
    pub fn manifests(&self) -> impl Iterator<Item = &SourceManifest> {
        self.sources.iter().map(|s| &s.manifest)
    }

    /// The sampler's view: names, weights, private flags, shard hashes and lengths.
    pub fn sampler_sources(&self) -> Vec<SamplerSource> {
        self.bundle
            .sources
            .iter()
            .zip(&self.sources)
            .map(|(b, s)| SamplerSource {
                name: b.name.clone(),
                weight: b.weight,
                private: b.private,
                shards: s
                    .manifest
                    .shards
                    .iter()
                    .map(|e| SamplerShard {
                        sha256: e.sha256,
                        tokens: e.tokens,
                    })
                    .collect(),
            })
            .collect()
    }

    /// Draw `n` windows of `seq_len` tokens (see [`crate::sampler`]).
    pub fn sample(
        &self,
        seed_material: &[u8],
        validator_secret: Option<&[u8]>,
        n: u64,
        seq_len: u32,
    ) -> Result<Sample> {
        let sources = self.sampler_sources();
        sample(&SampleRequest {
            bundle_sha256: self.bundle_sha256,
            sources: &sources,
            seed_material,
            validator_secret,
            n,
            seq_len,
        })
        .map_err(|e| DataError::Sample(e.to_string()))
    }

    /// The shard a window names, verified (hashed, checked) on first use in this process.
    fn shard(&self, source: u32, shard: u32) -> Result<&VerifiedShard> {
        let s = self.sources.get(source as usize).ok_or_else(|| {
            DataError::Sample(format!(
                "window names source {source}, which the bundle lacks"
            ))
        })?;
        let entry = s.manifest.shards.get(shard as usize).ok_or_else(|| {
            DataError::Sample(format!(
                "window names shard {shard} of source {:?}, which has {}",
                s.manifest.source,
                s.manifest.shards.len()
            ))
        })?;
        let cell = &s.shards[shard as usize];
        if let Some(v) = cell.get() {
            return Ok(v);
        }
        let path = s.dir.join(&entry.path);
        let verified = VerifiedShard::open(
            &path,
            &ShardExpectation {
                sha256: entry.sha256,
                tokens: entry.tokens,
                vocab_size: self.bundle.tokenizer.vocab_size,
            },
        )?;
        tracing::debug!(shard = %path.display(), "verified");
        // Another thread may have verified it meanwhile; either result is the same file.
        Ok(cell.get_or_init(|| verified))
    }

    /// Verify every shard of every source now (instead of on first use).
    pub fn verify_all(&self) -> Result<u64> {
        let mut count = 0;
        for (i, s) in self.sources.iter().enumerate() {
            for j in 0..s.shards.len() {
                self.shard(i as u32, j as u32)?;
                count += 1;
            }
        }
        Ok(count)
    }

    /// The tokens of one window.
    pub fn read_window(&self, window: &Window) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(window.len as usize);
        self.read_window_into(window, &mut out)?;
        Ok(out)
    }

    /// Append the tokens of one window to `out`. The window's shard hash must be the one the
    /// manifest lists (a window list from another bundle is refused).
    pub fn read_window_into(&self, window: &Window, out: &mut Vec<u32>) -> Result<()> {
        let shard = self.shard(window.source, window.shard)?;
        let listed =
            self.sources[window.source as usize].manifest.shards[window.shard as usize].sha256;
        if listed != window.shard_sha256 {
            return Err(DataError::Sample(format!(
                "window names shard {} with hash {} but the manifest lists {listed}",
                shard.path().display(),
                window.shard_sha256
            )));
        }
        shard.read_into(window.offset, u64::from(window.len), out)
    }

    /// All windows' tokens, concatenated: a row-major `[windows.len(), len]` array.
    pub fn read_windows(&self, windows: &[Window]) -> Result<Vec<u32>> {
        let total: usize = windows.iter().map(|w| w.len as usize).sum();
        let mut out = Vec::with_capacity(total);
        for w in windows {
            self.read_window_into(w, &mut out)?;
        }
        Ok(out)
    }

    /// Batches of `batch_size` windows (the last may be shorter), each a row-major token array,
    /// read lazily: a duel streams these and may stop early.
    pub fn batches<'a>(
        &'a self,
        windows: &'a [Window],
        batch_size: usize,
    ) -> impl Iterator<Item = Result<Vec<u32>>> + 'a {
        windows
            .chunks(batch_size.max(1))
            .map(move |chunk| self.read_windows(chunk))
    }
}
