//! The miner's data: its own bundle, split into windows it holds out (to judge challengers
//! locally with the validator's rule) and windows it trains on, which never overlap them.
//!
//! - Held out: exactly the windows the local duel scores, drawn by koth-data's sampler from
//!   seed material `koth-miner/holdout/1|<seed>` with `n = holdout_windows` and the
//!   competition's `seq_len` (so `koth_duel::duel::run_duel`, given the same seed material and
//!   `n_max = holdout_windows`, draws the very same windows).
//! - Training: every shard cut into consecutive `train.seq_len` windows from offset 0; a window
//!   that overlaps any held-out window is dropped. The pool is shuffled per epoch by a ChaCha20
//!   stream seeded from sha256 of (seed, bundle sha256, epoch), and read as one endless stream:
//!   micro-batch `i` is rows `i·B … i·B + B − 1` of it. Sources are therefore mixed in
//!   proportion to their tokens (the bundle's weights steer the validator's sample, not this).
//!
//! All of it is a pure function of (bundle, seed, sizes): a resumed run sees the same batches.

use std::collections::BTreeMap;
use std::path::Path;

use koth_core::{Digest, Sha256Writer};
use koth_data::sampler::uniform_below;
use koth_data::{Dataset, SamplerSource, Window};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::error::{MinerError, Result};

/// The seed material of the held-out sample (and of the local duel that scores it).
pub fn holdout_seed_material(seed: u64) -> String {
    format!("koth-miner/holdout/1|{seed}")
}

/// Consecutive `seq_len` windows of every shard that do not overlap `holdout`.
pub fn training_windows(
    sources: &[SamplerSource],
    holdout: &[Window],
    seq_len: u32,
) -> Vec<Window> {
    // Held-out token ranges per (source, shard), sorted by start.
    let mut held: BTreeMap<(u32, u32), Vec<(u64, u64)>> = BTreeMap::new();
    for w in holdout {
        held.entry((w.source, w.shard))
            .or_default()
            .push((w.offset, w.end()));
    }
    for ranges in held.values_mut() {
        ranges.sort_unstable();
    }
    let len = u64::from(seq_len);
    let mut out = Vec::new();
    for (si, source) in sources.iter().enumerate() {
        for (hi, shard) in source.shards.iter().enumerate() {
            let ranges = held
                .get(&(si as u32, hi as u32))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let mut offset = 0u64;
            while offset + len <= shard.tokens {
                let end = offset + len;
                let overlaps = ranges.iter().any(|&(a, b)| a < end && offset < b);
                if !overlaps {
                    out.push(Window {
                        source: si as u32,
                        shard: hi as u32,
                        shard_sha256: shard.sha256,
                        offset,
                        len: seq_len,
                    });
                }
                offset = end;
            }
        }
    }
    out
}

/// The permutation of `n` training windows used in `epoch` of stream `stream` (one stream per
/// attempt, so two attempts from the same king see the data in different orders).
pub fn epoch_order(
    seed: u64,
    stream: u64,
    bundle_sha256: &Digest,
    epoch: u64,
    n: usize,
) -> Vec<usize> {
    let mut h = Sha256Writer::new();
    h.update(b"koth-miner/train-order/1\0");
    h.update(&seed.to_le_bytes());
    h.update(&stream.to_le_bytes());
    h.update(bundle_sha256.as_bytes());
    h.update(&epoch.to_le_bytes());
    let mut rng = ChaCha20Rng::from_seed(*h.finish().as_bytes());
    let mut order: Vec<usize> = (0..n).collect();
    // Fisher–Yates with koth-data's rejection sampler (stable across library versions).
    for i in (1..n).rev() {
        let j = uniform_below(&mut rng, (i + 1) as u64) as usize;
        order.swap(i, j);
    }
    order
}

/// `(stream, epoch)` and that epoch's permutation of the training windows.
type EpochOrder = ((u64, u64), Vec<usize>);

/// An opened miner bundle with its held-out and training windows.
pub struct MinerData {
    dataset: Dataset,
    seed: u64,
    holdout: Vec<Window>,
    train: Vec<Window>,
    /// The last epoch order used.
    order: std::cell::RefCell<Option<EpochOrder>>,
}

impl MinerData {
    /// Open `bundle` and split it: `holdout_windows` windows of `judge_seq_len` tokens held out,
    /// the rest cut into `train_seq_len` windows.
    pub fn open(
        bundle: &Path,
        seed: u64,
        holdout_windows: u64,
        judge_seq_len: u32,
        train_seq_len: u32,
    ) -> Result<Self> {
        let dataset = Dataset::open(bundle)
            .map_err(|e| MinerError::Data(format!("bundle {}: {e}", bundle.display())))?;
        let seed_material = holdout_seed_material(seed);
        let sample = dataset
            .sample(
                seed_material.as_bytes(),
                None,
                holdout_windows,
                judge_seq_len,
            )
            .map_err(|e| {
                MinerError::Data(format!(
                    "bundle {}: holding out {holdout_windows} windows of {judge_seq_len} tokens \
                     (data.holdout_windows): {e}",
                    bundle.display()
                ))
            })?;
        let train = training_windows(&dataset.sampler_sources(), &sample.windows, train_seq_len);
        if train.is_empty() {
            return Err(MinerError::Data(format!(
                "bundle {}: no training window of {train_seq_len} tokens is left after holding \
                 out {holdout_windows} windows",
                bundle.display()
            )));
        }
        Ok(Self {
            dataset,
            seed,
            holdout: sample.windows,
            train,
            order: std::cell::RefCell::new(None),
        })
    }

    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }
    pub fn holdout(&self) -> &[Window] {
        &self.holdout
    }
    pub fn training(&self) -> &[Window] {
        &self.train
    }

    /// Tokens available for training.
    pub fn training_tokens(&self) -> u64 {
        self.train.iter().map(|w| u64::from(w.len)).sum()
    }

    /// The windows of micro-batch `index` (`rows` windows of the endless shuffled `stream`).
    pub fn micro_batch_windows(&self, stream: u64, index: u64, rows: usize) -> Vec<Window> {
        let n = self.train.len() as u64;
        let mut out = Vec::with_capacity(rows);
        for r in 0..rows as u64 {
            let pos = index * rows as u64 + r;
            let (epoch, at) = (pos / n, (pos % n) as usize);
            let mut cached = self.order.borrow_mut();
            let fresh = !matches!(&*cached, Some((key, _)) if *key == (stream, epoch));
            if fresh {
                let order = epoch_order(
                    self.seed,
                    stream,
                    &self.dataset.bundle_sha256(),
                    epoch,
                    self.train.len(),
                );
                *cached = Some(((stream, epoch), order));
            }
            if let Some((_, order)) = &*cached {
                out.push(self.train[order[at]].clone());
            }
        }
        out
    }

    /// The tokens of micro-batch `index` of `stream`, row-major `[rows, seq_len]`.
    pub fn micro_batch(&self, stream: u64, index: u64, rows: usize) -> Result<Vec<u32>> {
        let windows = self.micro_batch_windows(stream, index, rows);
        self.dataset
            .read_windows(&windows)
            .map_err(|e| MinerError::Data(format!("reading training windows: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use koth_data::SamplerShard;

    fn sources() -> Vec<SamplerSource> {
        vec![SamplerSource {
            name: "a".into(),
            weight: 1,
            private: false,
            shards: vec![
                SamplerShard {
                    sha256: Digest::of(b"s0"),
                    tokens: 100,
                },
                SamplerShard {
                    sha256: Digest::of(b"s1"),
                    tokens: 35,
                },
            ],
        }]
    }

    #[test]
    fn training_windows_tile_shards_and_skip_held_out_ranges() {
        let held = vec![Window {
            source: 0,
            shard: 0,
            shard_sha256: Digest::of(b"s0"),
            offset: 15,
            len: 10,
        }];
        let w = training_windows(&sources(), &held, 10);
        let spans: Vec<(u32, u64)> = w.iter().map(|w| (w.shard, w.offset)).collect();
        // Shard 0: 0..10 kept, 10..20 and 20..30 overlap 15..25, the rest kept; shard 1: 3.
        assert_eq!(
            spans,
            vec![
                (0, 0),
                (0, 30),
                (0, 40),
                (0, 50),
                (0, 60),
                (0, 70),
                (0, 80),
                (0, 90),
                (1, 0),
                (1, 10),
                (1, 20)
            ]
        );
        for t in &w {
            for h in &held {
                assert!(!(t.shard == h.shard && t.offset < h.end() && h.offset < t.end()));
            }
        }
    }

    #[test]
    fn epoch_orders_are_permutations_that_differ_by_epoch_and_seed() {
        let b = Digest::of(b"bundle");
        let a = epoch_order(1, 1, &b, 0, 50);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(1, 1, &b, 0, 50));
        assert_ne!(a, epoch_order(1, 1, &b, 1, 50));
        assert_ne!(a, epoch_order(2, 1, &b, 0, 50));
        assert_ne!(a, epoch_order(1, 2, &b, 0, 50));
    }
}
