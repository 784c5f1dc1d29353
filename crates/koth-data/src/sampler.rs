//! The deterministic sampler (PROTOCOL §6): seed material → `n` windows of `seq_len` tokens.
//!
//! Pure: it sees shard hashes and lengths, never files, so it is tested without I/O and any
//! machine holding the same bundle regenerates the same windows.
//!
//! Algorithm (version `koth-sample/v1`; any change to it must change that tag):
//! 1. `master = sha256(seed material)`.
//! 2. Windows are allocated to sources by weight with largest remainder ([`crate::alloc`]).
//! 3. Per source, an RNG `ChaCha20Rng(sha256("koth-sample/v1/source\0" ‖ master ‖ len(name) ‖
//!    name [‖ len(secret) ‖ secret if the source is private]))`:
//!    - a shard of `T` tokens is cut into `⌊T/L⌋` disjoint slots of `L = seq_len` tokens on a grid
//!      that starts at a random phase in `0..=T − ⌊T/L⌋·L` (so the unused tail is not always the
//!      same tokens);
//!    - the shards are put in a random order and the source's windows are dealt round-robin over
//!      them, a shard dropping out when its slots are used up. This spreads a source's windows
//!      over as many shards as possible (each shard gets ⌊k/s⌋ or ⌈k/s⌉ unless it is too short):
//!      windows from one shard are correlated (one document, one author), so spreading them
//!      makes the duel's per-window differences closer to independent. Round-robin rather than
//!      proportional to length, because proportional allocation puts most windows into a few
//!      large shards, which is the correlation we avoid;
//!    - in each shard the slots are chosen uniformly without replacement (Floyd's algorithm).
//!      Slots never overlap, so windows never overlap and no token is scored twice.
//! 4. The whole list is shuffled with `ChaCha20Rng(sha256("koth-sample/v1/order\0" ‖ master))`,
//!    so every prefix (a sequential duel stops early) mixes the sources as the weights say.
//!
//! Integers are drawn from the ChaCha20 stream with our own rejection sampling
//! ([`uniform_below`]), never a library helper whose algorithm could change between versions.
//!
//! The [`SampleDigest`] is sha256 over `"koth-sample-digest/v1\n" ‖ bundle sha256 ‖ seq_len ‖
//! count ‖ each window (source index, shard index, shard sha256, offset, length)`, integers
//! little-endian (u64, except indices and length u32).

use std::collections::BTreeSet;
use std::fmt;

use koth_core::{Digest, Sha256Writer};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::alloc::{largest_remainder, AllocError};

/// One shard as the sampler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamplerShard {
    pub sha256: Digest,
    pub tokens: u64,
}

/// One source of a bundle, in bundle order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamplerSource {
    pub name: String,
    pub weight: u64,
    /// Windows of a private source also depend on the validator's secret.
    pub private: bool,
    pub shards: Vec<SamplerShard>,
}

/// Everything a sample depends on.
#[derive(Debug, Clone, Copy)]
pub struct SampleRequest<'a> {
    pub bundle_sha256: Digest,
    pub sources: &'a [SamplerSource],
    pub seed_material: &'a [u8],
    /// Required when any source is private.
    pub validator_secret: Option<&'a [u8]>,
    pub n: u64,
    pub seq_len: u32,
}

/// A window: `len` consecutive tokens starting at `offset` in one shard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Window {
    /// Index of the source in the bundle.
    pub source: u32,
    /// Index of the shard in the source's manifest.
    pub shard: u32,
    pub shard_sha256: Digest,
    /// Token offset within the shard's data.
    pub offset: u64,
    pub len: u32,
}

impl Window {
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }
}

/// sha256 over the ordered window list (see the module docs for the exact encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SampleDigest(pub Digest);

impl fmt::Display for SampleDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The sampler's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub windows: Vec<Window>,
    /// Windows per source, in bundle order (the largest-remainder allocation).
    pub per_source: Vec<u64>,
    pub digest: SampleDigest,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SampleError {
    #[error("seq_len must be at least 1")]
    ZeroSeqLen,
    #[error("cannot allocate windows: {0}")]
    Alloc(#[from] AllocError),
    #[error(
        "source {source_name:?} must supply {needed} windows of {seq_len} tokens but its shards \
         hold only {capacity} non-overlapping ones"
    )]
    Capacity {
        source_name: String,
        needed: u64,
        capacity: u64,
        seq_len: u32,
    },
    #[error("source {0:?} is private: sampling it needs the validator secret")]
    MissingSecret(String),
    #[error("too many sources or shards to index with u32")]
    TooMany,
}

const SOURCE_TAG: &[u8] = b"koth-sample/v1/source\0";
const ORDER_TAG: &[u8] = b"koth-sample/v1/order\0";
const DIGEST_TAG: &[u8] = b"koth-sample-digest/v1\n";

/// Draw the sample. Deterministic: the same request gives the same windows and digest.
pub fn sample(req: &SampleRequest<'_>) -> Result<Sample, SampleError> {
    if req.seq_len == 0 {
        return Err(SampleError::ZeroSeqLen);
    }
    if u32::try_from(req.sources.len()).is_err() {
        return Err(SampleError::TooMany);
    }
    let weights: Vec<u64> = req.sources.iter().map(|s| s.weight).collect();
    let per_source = largest_remainder(&weights, req.n)?;
    // Every source must be able to supply its share before anything is allocated: `n` comes
    // from a competition file or a verdict record, and a crafted huge `n` must be an error,
    // not an allocation the process cannot survive.
    for (source, &needed) in req.sources.iter().zip(&per_source) {
        let capacity = source_capacity(source, req.seq_len);
        if needed > capacity {
            return Err(SampleError::Capacity {
                source_name: source.name.clone(),
                needed,
                capacity,
                seq_len: req.seq_len,
            });
        }
    }
    let master = Digest::of(req.seed_material);
    let mut windows = Vec::with_capacity(usize::try_from(req.n).unwrap_or(0));
    for (index, (source, &needed)) in req.sources.iter().zip(&per_source).enumerate() {
        if needed == 0 {
            continue;
        }
        let secret = if source.private {
            Some(
                req.validator_secret
                    .ok_or_else(|| SampleError::MissingSecret(source.name.clone()))?,
            )
        } else {
            None
        };
        let mut rng = source_rng(&master, &source.name, secret);
        windows.extend(source_windows(
            &mut rng,
            index as u32,
            source,
            needed,
            req.seq_len,
        )?);
    }
    let mut order_rng = tagged_rng(ORDER_TAG, &master, &[]);
    shuffle(&mut order_rng, &mut windows);
    let digest = sample_digest(&req.bundle_sha256, req.seq_len, &windows);
    Ok(Sample {
        windows,
        per_source,
        digest,
    })
}

/// The sample digest of an ordered window list.
pub fn sample_digest(bundle_sha256: &Digest, seq_len: u32, windows: &[Window]) -> SampleDigest {
    let mut h = Sha256Writer::new();
    h.update(DIGEST_TAG);
    h.update(bundle_sha256.as_bytes());
    h.update(&u64::from(seq_len).to_le_bytes());
    h.update(&(windows.len() as u64).to_le_bytes());
    for w in windows {
        h.update(&w.source.to_le_bytes());
        h.update(&w.shard.to_le_bytes());
        h.update(w.shard_sha256.as_bytes());
        h.update(&w.offset.to_le_bytes());
        h.update(&w.len.to_le_bytes());
    }
    SampleDigest(h.finish())
}

fn source_rng(master: &Digest, name: &str, secret: Option<&[u8]>) -> ChaCha20Rng {
    let mut extra = Vec::with_capacity(16 + name.len());
    extra.extend_from_slice(&(name.len() as u64).to_le_bytes());
    extra.extend_from_slice(name.as_bytes());
    if let Some(secret) = secret {
        extra.extend_from_slice(&(secret.len() as u64).to_le_bytes());
        extra.extend_from_slice(secret);
    }
    tagged_rng(SOURCE_TAG, master, &extra)
}

fn tagged_rng(tag: &[u8], master: &Digest, extra: &[u8]) -> ChaCha20Rng {
    let mut h = Sha256Writer::new();
    h.update(tag);
    h.update(master.as_bytes());
    h.update(extra);
    ChaCha20Rng::from_seed(*h.finish().as_bytes())
}

/// Windows for one source: round-robin over a random shard order, disjoint slots per shard.
/// Non-overlapping windows of `seq_len` tokens a source's shards hold (saturating).
fn source_capacity(source: &SamplerSource, seq_len: u32) -> u64 {
    let len = u64::from(seq_len.max(1));
    source
        .shards
        .iter()
        .fold(0u64, |acc, s| acc.saturating_add(s.tokens / len))
}

fn source_windows(
    rng: &mut ChaCha20Rng,
    source_index: u32,
    source: &SamplerSource,
    needed: u64,
    seq_len: u32,
) -> Result<Vec<Window>, SampleError> {
    let len = u64::from(seq_len);
    let slots: Vec<u64> = source.shards.iter().map(|s| s.tokens / len).collect();
    let capacity = source_capacity(source, seq_len);
    if needed > capacity {
        return Err(SampleError::Capacity {
            source_name: source.name.clone(),
            needed,
            capacity,
            seq_len,
        });
    }
    if u32::try_from(source.shards.len()).is_err() {
        return Err(SampleError::TooMany);
    }
    let mut order: Vec<usize> = (0..source.shards.len()).collect();
    shuffle(rng, &mut order);
    let ordered_slots: Vec<u64> = order.iter().map(|&i| slots[i]).collect();
    let counts = round_robin_counts(&ordered_slots, needed);
    let mut out = Vec::new();
    for (&shard_index, &count) in order.iter().zip(&counts) {
        if count == 0 {
            continue;
        }
        let shard = &source.shards[shard_index];
        let shard_slots = slots[shard_index];
        let spare = shard.tokens - shard_slots * len;
        let phase = uniform_below(rng, spare + 1);
        for slot in choose_distinct(rng, shard_slots, count) {
            out.push(Window {
                source: source_index,
                shard: shard_index as u32,
                shard_sha256: shard.sha256,
                offset: phase + slot * len,
                len: seq_len,
            });
        }
    }
    Ok(out)
}

/// How many windows each shard (in dealing order) gets when `needed` windows are dealt one at a
/// time round-robin, skipping full shards. Computed by water-filling rather than by dealing:
/// the level `t` is the largest with Σ min(capacityᵢ, t) ≤ needed; the rest go one each to the
/// first shards (in dealing order) with capacity above `t`. Requires needed ≤ Σ capacity.
pub fn round_robin_counts(capacity: &[u64], needed: u64) -> Vec<u64> {
    let filled = |t: u64| -> u128 { capacity.iter().map(|&c| u128::from(c.min(t))).sum() };
    let max = capacity.iter().copied().max().unwrap_or(0);
    let (mut lo, mut hi) = (0u64, max);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if filled(mid) <= u128::from(needed) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let mut counts: Vec<u64> = capacity.iter().map(|&c| c.min(lo)).collect();
    let mut left = needed - counts.iter().sum::<u64>();
    for (count, &cap) in counts.iter_mut().zip(capacity) {
        if left == 0 {
            break;
        }
        if cap > lo {
            *count += 1;
            left -= 1;
        }
    }
    counts
}

/// `k` distinct values from `0..m`, uniformly (Floyd's algorithm), in increasing order.
fn choose_distinct(rng: &mut ChaCha20Rng, m: u64, k: u64) -> BTreeSet<u64> {
    let mut chosen = BTreeSet::new();
    for j in (m - k)..m {
        let t = uniform_below(rng, j + 1);
        if !chosen.insert(t) {
            chosen.insert(j);
        }
    }
    chosen
}

/// Fisher–Yates with [`uniform_below`].
fn shuffle<T>(rng: &mut ChaCha20Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = uniform_below(rng, i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// A uniform integer in `0..n` (n ≥ 1) by rejection: values below `2⁶⁴ mod n` are redrawn so
/// the accepted range is a whole number of copies of `0..n`.
pub fn uniform_below(rng: &mut ChaCha20Rng, n: u64) -> u64 {
    debug_assert!(n > 0);
    let n = n.max(1);
    let threshold = n.wrapping_neg() % n;
    loop {
        let x = rng.next_u64();
        if x >= threshold {
            return x % n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dealt(capacity: &[u64], needed: u64) -> Vec<u64> {
        let mut counts = vec![0u64; capacity.len()];
        let mut left = needed;
        while left > 0 {
            for (c, &cap) in counts.iter_mut().zip(capacity) {
                if left > 0 && *c < cap {
                    *c += 1;
                    left -= 1;
                }
            }
        }
        counts
    }

    #[test]
    fn water_filling_equals_dealing() {
        let caps = [3u64, 0, 7, 1, 5, 5, 2];
        let total: u64 = caps.iter().sum();
        for needed in 0..=total {
            assert_eq!(
                round_robin_counts(&caps, needed),
                dealt(&caps, needed),
                "{needed}"
            );
        }
    }

    #[test]
    fn floyd_gives_distinct_in_range() {
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        for (m, k) in [(10u64, 10u64), (10, 0), (1000, 17), (1, 1)] {
            let s = choose_distinct(&mut rng, m, k);
            assert_eq!(s.len() as u64, k);
            assert!(s.iter().all(|&x| x < m));
        }
    }

    #[test]
    fn uniform_below_is_in_range_and_covers() {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            seen[uniform_below(&mut rng, 7) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (850..1150).contains(&c)), "{seen:?}");
        assert_eq!(uniform_below(&mut rng, 1), 0);
    }

    #[test]
    fn chacha_stream_is_the_pinned_one() {
        // Pins the RNG stream itself to the ChaCha20 test vector (RFC 7539 §2.3.2 with a zero
        // key and nonce: keystream 76 b8 e0 ad a0 f1 3d 90 …): if a dependency update changed
        // the stream, every sample digest would change silently.
        let mut rng = ChaCha20Rng::from_seed([0; 32]);
        assert_eq!(rng.next_u64(), 0x903d_f1a0_ade0_b876);
    }
}
