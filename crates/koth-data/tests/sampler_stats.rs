//! The sampler's guarantees over many seeds: shares equal the largest-remainder allocation
//! exactly; windows never overlap, never repeat, stay inside their shards, spread over shards.

use std::collections::{BTreeMap, BTreeSet};

use koth_core::Digest;
use koth_data::alloc::largest_remainder;
use koth_data::sampler::{round_robin_counts, sample, SampleError};
use koth_data::{SampleRequest, SamplerShard, SamplerSource};

fn shard(tag: &str, tokens: u64) -> SamplerShard {
    SamplerShard {
        sha256: Digest::of(tag.as_bytes()),
        tokens,
    }
}

fn sources() -> Vec<SamplerSource> {
    vec![
        SamplerSource {
            name: "comedies".into(),
            weight: 5,
            private: false,
            shards: (0..7)
                .map(|i| shard(&format!("c{i}"), 1000 + 337 * i))
                .collect(),
        },
        SamplerSource {
            name: "histories".into(),
            weight: 2,
            private: false,
            // Uneven shards: one tiny (no full window at seq_len 64), one huge.
            shards: vec![
                shard("h0", 50),
                shard("h1", 20_000),
                shard("h2", 700),
                shard("h3", 64),
            ],
        },
        SamplerSource {
            name: "holdout".into(),
            weight: 3,
            private: true,
            shards: (0..3).map(|i| shard(&format!("p{i}"), 4096)).collect(),
        },
    ]
}

fn request<'a>(sources: &'a [SamplerSource], seed: &'a [u8], n: u64) -> SampleRequest<'a> {
    SampleRequest {
        bundle_sha256: Digest::of(b"bundle"),
        sources,
        seed_material: seed,
        validator_secret: Some(b"validator secret"),
        n,
        seq_len: 64,
    }
}

#[test]
fn shares_overlaps_and_spread_over_many_seeds() {
    let sources = sources();
    let weights: Vec<u64> = sources.iter().map(|s| s.weight).collect();
    let mut digests = BTreeSet::new();
    let mut offsets_seen: BTreeSet<(u32, u32, u64)> = BTreeSet::new();
    for seed in 0..400u32 {
        let n = 1 + u64::from(seed % 97);
        let seed_bytes = seed.to_le_bytes();
        let s = sample(&request(&sources, &seed_bytes, n)).unwrap();
        assert_eq!(s.windows.len() as u64, n);
        // Shares: exactly the largest-remainder allocation.
        let expected = largest_remainder(&weights, n).unwrap();
        assert_eq!(s.per_source, expected);
        let mut counted = vec![0u64; sources.len()];
        for w in &s.windows {
            counted[w.source as usize] += 1;
        }
        assert_eq!(counted, expected, "seed {seed}");
        // Bounds, no duplicates, no overlaps.
        let mut by_shard: BTreeMap<(u32, u32), Vec<(u64, u64)>> = BTreeMap::new();
        for w in &s.windows {
            assert_eq!(w.len, 64);
            let sh = &sources[w.source as usize].shards[w.shard as usize];
            assert_eq!(w.shard_sha256, sh.sha256);
            assert!(w.end() <= sh.tokens, "window past shard end: {w:?}");
            by_shard
                .entry((w.source, w.shard))
                .or_default()
                .push((w.offset, w.end()));
            offsets_seen.insert((w.source, w.shard, w.offset));
        }
        for (key, mut spans) in by_shard.clone() {
            spans.sort();
            for pair in spans.windows(2) {
                assert!(
                    pair[0].1 <= pair[1].0,
                    "overlap in {key:?}: {pair:?} (seed {seed})"
                );
            }
        }
        // Spread: within a source, counts per shard are round-robin (differ by at most one
        // among shards that are not full).
        for (si, src) in sources.iter().enumerate() {
            let caps: Vec<u64> = src.shards.iter().map(|s| s.tokens / 64).collect();
            let counts: Vec<u64> = (0..src.shards.len())
                .map(|j| {
                    by_shard
                        .get(&(si as u32, j as u32))
                        .map_or(0, |v| v.len() as u64)
                })
                .collect();
            let not_full: Vec<u64> = counts
                .iter()
                .zip(&caps)
                .filter(|(c, cap)| c < cap)
                .map(|(c, _)| *c)
                .collect();
            if let (Some(min), Some(max)) = (not_full.iter().min(), counts.iter().max()) {
                assert!(
                    max - min <= 1,
                    "source {} counts {counts:?} caps {caps:?}",
                    src.name
                );
            }
        }
        digests.insert(s.digest);
    }
    assert_eq!(digests.len(), 400, "different seeds gave the same sample");
    // Over many seeds the windows cover many different offsets (the phase and slot choice are
    // random, not a fixed grid).
    assert!(offsets_seen.len() > 2000, "{}", offsets_seen.len());
}

#[test]
fn same_request_same_sample_and_digest() {
    let sources = sources();
    let a = sample(&request(&sources, b"competition|block|hotkey", 50)).unwrap();
    let b = sample(&request(&sources, b"competition|block|hotkey", 50)).unwrap();
    assert_eq!(a, b);
    let c = sample(&request(&sources, b"competition|block|hotkeY", 50)).unwrap();
    assert_ne!(a.digest, c.digest);
}

#[test]
fn sources_are_mixed_along_the_list() {
    // A sequential duel may stop after a few batches: the first windows must already mix the
    // sources, not list one source after another.
    let sources = sources();
    let s = sample(&request(&sources, b"mix", 90)).unwrap();
    let first: BTreeSet<u32> = s.windows[..15].iter().map(|w| w.source).collect();
    assert_eq!(first.len(), 3, "{:?}", &s.windows[..15]);
}

#[test]
fn private_sources_depend_on_the_secret_and_need_it() {
    let sources = sources();
    let mut req = request(&sources, b"seed", 40);
    let a = sample(&req).unwrap();
    req.validator_secret = Some(b"another secret");
    let b = sample(&req).unwrap();
    let private_of = |s: &koth_data::Sample| -> Vec<_> {
        let mut v: Vec<_> = s
            .windows
            .iter()
            .filter(|w| w.source == 2)
            .cloned()
            .collect();
        v.sort_by_key(|w| (w.shard, w.offset));
        v
    };
    let public_of = |s: &koth_data::Sample| -> Vec<_> {
        let mut v: Vec<_> = s
            .windows
            .iter()
            .filter(|w| w.source != 2)
            .cloned()
            .collect();
        v.sort_by_key(|w| (w.source, w.shard, w.offset));
        v
    };
    assert_ne!(private_of(&a), private_of(&b));
    assert_eq!(
        public_of(&a),
        public_of(&b),
        "public windows must not depend on the secret"
    );
    req.validator_secret = None;
    assert_eq!(
        sample(&req),
        Err(SampleError::MissingSecret("holdout".into()))
    );
}

#[test]
fn a_source_that_cannot_supply_its_windows_is_an_error() {
    let sources = sources();
    // comedies' shards hold 15+20+26+31+36+41+47 = 216 windows of 64 tokens; weight 5/10.
    // n = 434 gives comedies exactly 217.
    match sample(&request(&sources, b"seed", 434)) {
        Err(SampleError::Capacity {
            source_name,
            needed,
            capacity,
            ..
        }) => {
            assert_eq!(
                (source_name.as_str(), needed, capacity),
                ("comedies", 217, 216)
            );
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(s) => panic!("sampled {:?} windows per source", s.per_source),
    }
    // The largest sample that fits uses every slot of comedies, still without overlap.
    let s = sample(&request(&sources, b"seed", 432)).unwrap();
    assert_eq!(s.per_source[0], 216);
    let mut seen = BTreeSet::new();
    for w in s.windows.iter().filter(|w| w.source == 0) {
        assert!(seen.insert((w.shard, w.offset)));
    }
}

#[test]
fn a_huge_n_is_refused_before_anything_is_allocated() {
    let sources = sources();
    // u64::MAX windows would be an allocation no machine survives: the capacity check comes
    // first and names the source.
    for n in [u64::MAX, u64::from(u32::MAX) * 64] {
        match sample(&request(&sources, b"seed", n)) {
            Err(SampleError::Capacity {
                needed, capacity, ..
            }) => assert!(needed > capacity, "{needed} <= {capacity}"),
            other => panic!("n = {n}: expected a capacity error, got {other:?}"),
        }
    }
}

#[test]
fn zero_seq_len_is_refused() {
    let sources = sources();
    let mut req = request(&sources, b"seed", 5);
    req.seq_len = 0;
    assert_eq!(sample(&req), Err(SampleError::ZeroSeqLen));
}

#[test]
fn round_robin_counts_fill_evenly() {
    assert_eq!(round_robin_counts(&[10, 10, 10], 7), vec![3, 2, 2]);
    assert_eq!(round_robin_counts(&[1, 10, 10], 7), vec![1, 3, 3]);
    assert_eq!(round_robin_counts(&[0, 2, 10], 12), vec![0, 2, 10]);
}

#[test]
fn golden_digest_is_pinned() {
    // The sampler is a protocol: any change to it changes verdict replays, so its output for a
    // fixed request is pinned here (the same request as `cargo bench -p koth-data` prints).
    let sources: Vec<SamplerSource> = (0..4u64)
        .map(|i| SamplerSource {
            name: format!("source{i}"),
            weight: 1 + i,
            private: i == 3,
            shards: (0..512u64)
                .map(|j| SamplerShard {
                    sha256: Digest::of(format!("{i}/{j}").as_bytes()),
                    tokens: 100_000_000 + j * 997,
                })
                .collect(),
        })
        .collect();
    let s = sample(&SampleRequest {
        bundle_sha256: Digest::of(b"bundle"),
        sources: &sources,
        seed_material: b"competition|block|hotkey",
        validator_secret: Some(b"secret"),
        n: 1000,
        seq_len: 2048,
    })
    .unwrap();
    assert_eq!(s.per_source, vec![100, 200, 300, 400]);
    assert_eq!(
        s.digest.to_string(),
        "sha256:63d429accd2cc2daf52a2d4f5c6eeefc368a31be3ac2adeb886e7847a9a8c6eb"
    );
}
