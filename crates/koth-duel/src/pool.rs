//! King-loss reuse: a reign pool.
//!
//! At crowning the king is scored once on a pool of windows drawn from the crowning block's
//! hash, in whole batches. Each duel of that reign draws *whole pool batches* by its own seed
//! and scores only the challenger, so a duel costs half. A pool batch is scored by the
//! challenger exactly as it was by the king (the same windows, in the same order, as one batch
//! of the same size), so a window's king loss is the one scoring the king now would give: the
//! GPU kernels need not be batch-invariant (cuBLAS picks its algorithm by shape), only
//! deterministic, which they are. `koth duel replay` rebuilds the pool, checks its digest, and
//! recomputes both sides.

use koth_core::verdict::{king_pool_digest, KingPoolRecord};
use koth_core::Digest;
use koth_data::{Dataset, Window};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::duel::DuelSetup;
use crate::score::{ScoreError, WindowScorer};

/// Most windows a reign pool may hold: the most a duel may score
/// ([`koth_core::competition::MAX_N_MAX`]), so building or replaying a pool is bounded like a duel.
pub const MAX_POOL_WINDOWS: u64 = koth_core::competition::MAX_N_MAX as u64;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("drawing the pool's windows: {0}")]
    Data(#[from] koth_data::DataError),
    #[error("scoring the king on pool batch {batch}: {source}")]
    Score {
        batch: u32,
        #[source]
        source: ScoreError,
    },
    #[error("the king's loss on pool window {window} is not finite ({value})")]
    NonFinite { window: u64, value: f32 },
    #[error("invalid pool: {0}")]
    Setup(String),
    #[error("the rebuilt pool differs from the recorded one: {0}")]
    Differs(String),
}

/// A king's losses on a reign pool of windows, scored in whole batches.
#[derive(Debug, Clone)]
pub struct KingPool {
    /// Seed material of the pool's sample (the crowning block's hash for a validator).
    pub seed_material: String,
    pub sample_digest: Digest,
    pub seq_len: u32,
    pub batch_size: u32,
    /// The king's checkpoint digest.
    pub king: Digest,
    pub windows: Vec<Window>,
    pub king_losses: Vec<f32>,
    /// [`king_pool_digest`] of the above.
    pub digest: Digest,
}

impl KingPool {
    /// Draw `batches * batch_size` windows from `seed_material` and score the king on them,
    /// one pool batch at a time.
    #[allow(clippy::too_many_arguments)]
    pub fn score(
        dataset: &Dataset,
        seed_material: &str,
        validator_secret: Option<&[u8]>,
        king_digest: Digest,
        king: &mut dyn WindowScorer,
        batches: u32,
        batch_size: u32,
        seq_len: u32,
    ) -> Result<Self, PoolError> {
        if batches == 0 || batch_size == 0 {
            return Err(PoolError::Setup(format!(
                "a pool needs at least one batch of at least one window (got {batches} × {batch_size})"
            )));
        }
        if seq_len < 2 {
            return Err(PoolError::Setup(format!(
                "seq_len must be at least 2, got {seq_len}"
            )));
        }
        let n = u64::from(batches) * u64::from(batch_size);
        if n > MAX_POOL_WINDOWS {
            return Err(PoolError::Setup(format!(
                "a pool of {batches} batches of {batch_size} windows is {n} windows; at most {MAX_POOL_WINDOWS}"
            )));
        }
        let sample = dataset.sample(seed_material.as_bytes(), validator_secret, n, seq_len)?;
        if sample.windows.len() as u64 != n {
            return Err(PoolError::Setup(format!(
                "the sampler drew {} windows for a pool of {n}",
                sample.windows.len()
            )));
        }
        let bs = batch_size as usize;
        let mut king_losses = Vec::with_capacity(n as usize);
        for (b, windows) in sample.windows.chunks(bs).enumerate() {
            let tokens = dataset.read_windows(windows)?;
            let losses = king
                .score(&tokens, windows.len(), seq_len as usize)
                .map_err(|source| PoolError::Score {
                    batch: b as u32,
                    source,
                })?;
            if losses.len() != windows.len() {
                return Err(PoolError::Score {
                    batch: b as u32,
                    source: ScoreError::Count {
                        expected: windows.len(),
                        got: losses.len(),
                    },
                });
            }
            if let Some(i) = losses.iter().position(|v| !v.is_finite()) {
                return Err(PoolError::NonFinite {
                    window: (b * bs + i) as u64,
                    value: losses[i],
                });
            }
            king_losses.extend_from_slice(&losses);
        }
        let digest = king_pool_digest(&sample.digest.0, batch_size, &king_digest, &king_losses);
        Ok(KingPool {
            seed_material: seed_material.to_owned(),
            sample_digest: sample.digest.0,
            seq_len,
            batch_size,
            king: king_digest,
            windows: sample.windows,
            king_losses,
            digest,
        })
    }

    /// Batches in the pool.
    pub fn batches(&self) -> u32 {
        (self.windows.len() / self.batch_size.max(1) as usize) as u32
    }

    /// The windows of pool batch `b`.
    pub fn batch_windows(&self, b: u32) -> &[Window] {
        let bs = self.batch_size as usize;
        &self.windows[b as usize * bs..(b as usize + 1) * bs]
    }

    /// The king's losses on pool batch `b`.
    pub fn batch_losses(&self, b: u32) -> &[f32] {
        let bs = self.batch_size as usize;
        &self.king_losses[b as usize * bs..(b as usize + 1) * bs]
    }

    /// The pool batches a duel with `seed_material` uses, in order: a permutation of all pool
    /// batches drawn by ChaCha20 from the duel's seed, cut to the batches `n_max` windows need.
    pub fn batch_order(&self, seed_material: &str, n_max: u64) -> Vec<u32> {
        let mut w = koth_core::Sha256Writer::new();
        w.update(b"koth/duel/pool-batch-order/1\n");
        w.update(seed_material.as_bytes());
        let seed = w.finish();
        let mut rng = ChaCha20Rng::from_seed(*seed.as_bytes());
        let mut order: Vec<u32> = (0..self.batches()).collect();
        order.shuffle(&mut rng);
        let needed = n_max.div_ceil(u64::from(self.batch_size.max(1))) as usize;
        order.truncate(needed.min(order.len()));
        order
    }

    /// Why a duel `setup` cannot run on this pool, if it cannot.
    pub fn check_fits(&self, setup: &DuelSetup) -> Result<(), PoolMismatch> {
        if setup.king.digest != self.king {
            return Err(PoolMismatch::King {
                pool: self.king,
                duel: setup.king.digest,
            });
        }
        if setup.batch_size != self.batch_size || setup.seq_len != self.seq_len {
            return Err(PoolMismatch::Layout {
                pool: (self.batch_size, self.seq_len),
                duel: (setup.batch_size, setup.seq_len),
            });
        }
        let needed = setup
            .rule
            .n_max()
            .div_ceil(u64::from(self.batch_size.max(1)));
        if needed > u64::from(self.batches()) {
            return Err(PoolMismatch::TooSmall {
                windows: setup.rule.n_max(),
                needed,
                batches: self.batches(),
            });
        }
        Ok(())
    }

    /// Check a rebuilt pool against a verdict's record of it.
    pub fn matches(&self, record: &KingPoolRecord) -> Result<(), PoolError> {
        let mut differences = Vec::new();
        if self.sample_digest != record.sample_digest {
            differences.push(format!(
                "sample digest {} (recorded {})",
                self.sample_digest, record.sample_digest
            ));
        }
        if self.windows.len() as u64 != record.windows || self.batch_size != record.batch_size {
            differences.push(format!(
                "{} windows in batches of {} (recorded {} in batches of {})",
                self.windows.len(),
                self.batch_size,
                record.windows,
                record.batch_size
            ));
        }
        if self.digest != record.digest {
            differences.push(format!(
                "pool digest {} (recorded {}): the king's losses on the pool differ",
                self.digest, record.digest
            ));
        }
        if differences.is_empty() {
            Ok(())
        } else {
            Err(PoolError::Differs(differences.join("; ")))
        }
    }
}

/// Why a duel cannot run on a king pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolMismatch {
    #[error("the pool was scored by king {pool}, the duel's king is {duel}")]
    King { pool: Digest, duel: Digest },
    #[error(
        "the pool has batches of {} windows of {} tokens, the duel {} of {}",
        pool.0, pool.1, duel.0, duel.1
    )]
    Layout { pool: (u32, u32), duel: (u32, u32) },
    #[error(
        "the rule may use {windows} windows ({needed} batches), the pool has {batches} batches"
    )]
    TooSmall {
        windows: u64,
        needed: u64,
        batches: u32,
    },
}
