//! Randomised robustness tests (seeded, so a failure reproduces) of the parsers the validator
//! and the worker run on strangers' bytes, beyond those of koth-core (payload, manifest, `.npy`,
//! safetensors header, which have proptest suites there): a store location, `config.json` (as
//! the config gate reads it and as koth-model parses it), `model.safetensors.index.json`, and
//! the worker's duel request. Each must return on any input, never panic, and allocate at most a
//! bounded amount while parsing — in particular, no declared size (a layer count, a shard list)
//! may size an allocation. Memory is measured by a counting global allocator, per thread.

use koth_store::Location;
use koth_validator::worker::DuelRequest;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

#[path = "../../koth-core/tests/support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::peak_during;

/// What parsing `n` bytes may allocate: a small multiple (a JSON value is a few times its text)
/// plus a constant.
fn bound(n: usize) -> usize {
    32 * n + 256 * 1024
}

const CASES: usize = 3000;

fn random_text(rng: &mut ChaCha20Rng, pieces: &[&str], max: usize) -> String {
    let n = rng.random_range(0..max);
    (0..n)
        .map(|_| pieces[rng.random_range(0..pieces.len())])
        .collect()
}

/// Replace one random byte range of `s` with random bytes, or cut it.
fn mutate(rng: &mut ChaCha20Rng, s: &[u8]) -> Vec<u8> {
    let mut v = s.to_vec();
    for _ in 0..rng.random_range(1..6) {
        if v.is_empty() {
            break;
        }
        let i = rng.random_range(0..v.len());
        match rng.random_range(0..4) {
            0 => v[i] = rng.random(),
            1 => v.truncate(i),
            2 => {
                let junk: Vec<u8> = (0..rng.random_range(0..16)).map(|_| rng.random()).collect();
                v.splice(i..i, junk);
            }
            _ => {
                let digits = rng.random_range(1u64..u64::MAX).to_string();
                v.splice(i..i, digits.into_bytes());
            }
        }
    }
    v
}

#[test]
fn locations_never_panic_and_round_trip() {
    let mut rng = ChaCha20Rng::seed_from_u64(16);
    let pieces = [
        "file://", "s3://", "/", "//", "..", ".", "-", "a", "ws", "store", "bucket", "Ü", "\u{0}",
        "\\", "%2e", "evil", ":", "?", "#",
    ];
    let scopes: Vec<Location> = ["file:///ws/store", "s3://bucket/net", "file:///"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    for _ in 0..CASES {
        let s = random_text(&mut rng, &pieces, 12);
        let (parsed, peak) = peak_during(|| s.parse::<Location>());
        assert!(peak <= bound(s.len()), "{peak} bytes for {s:?}");
        if let Ok(l) = parsed {
            // What is accepted prints as a location that parses back to itself.
            let again: Location = l.to_string().parse().unwrap();
            assert_eq!(again, l, "{s:?}");
            for scope in &scopes {
                let _ = l.is_within(scope);
                // No location with a `..` segment is ever accepted, so none escapes a scope.
                assert!(!l.to_string().split('/').any(|c| c == ".."), "{s:?}");
            }
        }
        let allowed = vec!["file:///ws/store".to_string(), "s3://".to_string()];
        if let Ok(l) = s.parse::<Location>() {
            let _ = koth_validator::shell::location_allowed(&l, &allowed);
        }
    }
}

fn tiny_config_text() -> String {
    koth_validator::devkit::tiny_config().to_json_string()
}

#[test]
fn configs_never_panic_and_never_size_an_allocation_by_a_declared_number() {
    let mut rng = ChaCha20Rng::seed_from_u64(1616);
    let base: serde_json::Value = serde_json::from_str(&tiny_config_text()).unwrap();
    let keys: Vec<String> = base.as_object().unwrap().keys().cloned().collect();
    let tmp = tempfile::tempdir().unwrap();
    for case in 0..CASES {
        let text: Vec<u8> = if case % 3 == 0 {
            mutate(&mut rng, tiny_config_text().as_bytes())
        } else {
            // A key set to an extreme value: huge, negative, fractional, of the wrong type.
            let mut v = base.clone();
            let key = &keys[rng.random_range(0..keys.len())];
            v[key] = match rng.random_range(0..6) {
                0 => serde_json::json!(rng.random::<u64>()),
                1 => serde_json::json!(1_000_000_000_000u64),
                2 => serde_json::json!(-rng.random_range(0i64..1000)),
                3 => serde_json::json!(rng.random::<f64>() * 1e12),
                4 => serde_json::json!("many"),
                _ => serde_json::json!([1, 2, 3]),
            };
            v.to_string().into_bytes()
        };
        let as_str = String::from_utf8_lossy(&text).into_owned();
        let (parsed, peak) = peak_during(|| koth_model::ModelConfig::from_json(&as_str, "c"));
        // An accepted config is within the caps; building its tensor list is bounded too.
        if let Ok(c) = parsed {
            assert!(
                c.num_hidden_layers <= 1024 && c.vocab_size <= 1 << 22,
                "{as_str}"
            );
            let (specs, peak) = peak_during(|| c.tensor_specs());
            assert!(specs.len() < 100_000 && peak < 64 << 20, "{peak} bytes");
        }
        assert!(peak <= bound(text.len()), "{peak} bytes for {as_str}");
        // The config gate's read of the same bytes as a fetched file.
        std::fs::write(tmp.path().join("config.json"), &text).unwrap();
        let (_, peak) =
            peak_during(|| koth_validator::gate_run::read_challenger_config(tmp.path()));
        assert!(peak <= bound(text.len()), "{peak} bytes");
    }
}

#[test]
fn indexes_never_panic_and_never_size_an_allocation_by_a_declared_number() {
    let mut rng = ChaCha20Rng::seed_from_u64(161616);
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join(koth_model::weights::INDEX_FILE);
    let good = serde_json::json!({
        "metadata": {"total_size": 1024},
        "weight_map": {
            "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
            "lm_head.weight": "model-00002-of-00002.safetensors",
        }
    })
    .to_string();
    for _ in 0..CASES {
        let text = mutate(&mut rng, good.as_bytes());
        std::fs::write(&index, &text).unwrap();
        let (result, peak) = peak_during(|| koth_model::weights::CheckpointFiles::open(tmp.path()));
        // No shard exists here: every index is refused as the checkpoint's fault, never ours.
        match result {
            Ok(_) => panic!("an index naming absent shards was accepted"),
            Err(koth_model::ModelError::Io { .. }) => {
                panic!("an index problem counted as an I/O error (ours)")
            }
            Err(_) => {}
        }
        assert!(peak <= bound(text.len()), "{peak} bytes");
    }
}

#[test]
fn worker_requests_never_panic() {
    let mut rng = ChaCha20Rng::seed_from_u64(16161616);
    let d = koth_core::Digest::of(b"x");
    let good = serde_json::json!({
        "competition_sha256": d,
        "king": d,
        "king_location": "file:///ws/store",
        "challenger": d,
        "challenger_location": "s3://bucket/m",
        "seed": {
            "competition_sha256": d,
            "reveal_block_hash": "0x00",
            "hotkey": "5F",
        },
    })
    .to_string();
    let _: DuelRequest = serde_json::from_str(&good).unwrap();
    for _ in 0..CASES {
        let text = mutate(&mut rng, good.as_bytes());
        let (_, peak) = peak_during(|| serde_json::from_slice::<DuelRequest>(&text));
        assert!(peak <= bound(text.len()), "{peak} bytes");
    }
}
