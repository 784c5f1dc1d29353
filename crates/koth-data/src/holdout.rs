//! Private holdout: the root hash a validator publishes before it scores on private sources.
//!
//! The root commits to (1) the sha256 of the validator's secret, which private sources' window
//! seeds mix in, so the validator cannot later choose a secret that favours anyone, and (2) for
//! every private source (sorted by name) its name, manifest sha256 and every shard's sha256 and
//! token count, so the pool cannot be swapped after the fact. Encoding (v1, UTF-8 lines):
//!
//! ```text
//! koth-holdout-root/1
//! secret <sha256 of the secret bytes>
//! source <name> <manifest sha256> <shard count>
//! shard <sha256> <tokens>          (one per shard, manifest order)
//! ```
//!
//! The root is `sha256` of those bytes. On reveal (when the pool retires) the validator
//! publishes the secret, the manifests and the shards; anyone recomputes the root with
//! `koth data commit-root` and then replays every verdict scored on the pool.

use koth_core::Digest;

use crate::dataset::Dataset;
use crate::error::{DataError, Result};

/// The text that is hashed into the root (exposed so a verifier can show what it checked).
pub fn commitment_text(dataset: &Dataset, secret: &[u8]) -> Result<String> {
    let mut text = String::from("koth-holdout-root/1\n");
    text.push_str(&format!("secret {}\n", Digest::of(secret)));
    let mut any = false;
    for (b, m) in dataset.bundle().sources.iter().zip(dataset.manifests()) {
        if !b.private {
            continue;
        }
        any = true;
        text.push_str(&format!(
            "source {} {} {}\n",
            b.name,
            b.manifest_sha256,
            m.shards.len()
        ));
        for s in &m.shards {
            text.push_str(&format!("shard {} {}\n", s.sha256, s.tokens));
        }
    }
    if !any {
        return Err(DataError::Bundle(
            "the bundle has no private sources, so there is nothing to commit to".into(),
        ));
    }
    Ok(text)
}

/// The holdout root: sha256 of [`commitment_text`].
pub fn commit_root(dataset: &Dataset, secret: &[u8]) -> Result<Digest> {
    Ok(Digest::of(commitment_text(dataset, secret)?.as_bytes()))
}
