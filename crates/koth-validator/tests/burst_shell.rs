//! 500 submissions revealed together through the real chain: all queued, deduplicated and
//! answered, gate refusals quickly, with bounded memory. Prints the time per gate rejection
//! (recorded in docs/BENCHMARKS.md); speed is not asserted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use koth_chain::{Chain, EmbeddedChain};
use koth_core::Digest;
use koth_validator::devkit::{self, payload, register, TinyOptions};
use koth_validator::event::Outcome;
use koth_validator::{Shell, ValidatorConfig};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[test]
fn five_hundred_reveals_in_one_block_are_all_answered() {
    const N: usize = 500;
    let tmp = tempfile::tempdir().unwrap();
    let opts = TinyOptions {
        block_time_ms: 3000,
        reveal_delay: 1,
        max_uids: 1024,
        tokens: 20_000,
        ..TinyOptions::default()
    };
    let net = devkit::tiny_network(tmp.path(), &opts).unwrap();
    let chain = EmbeddedChain::open(&net.chain_path).unwrap();
    let miners: Vec<_> = (0..N)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            koth_chain::Keypair::from_seed(seed)
        })
        .collect();
    for m in &miners {
        register(&chain, m).unwrap();
    }
    // A tenth committed something earlier: only the newest commitment of a hotkey counts.
    for (i, m) in miners.iter().enumerate() {
        if i % 10 == 3 {
            chain.commit(m, "an older commitment").unwrap();
        }
    }
    // Start right after a block boundary so every commit lands in one block.
    let start_block = chain.block().unwrap().number;
    while chain.block().unwrap().number == start_block {
        std::thread::sleep(Duration::from_millis(10));
    }
    let shared = Digest::of(b"one digest many hotkeys");
    for (i, m) in miners.iter().enumerate() {
        let p = match i % 5 {
            // Malformed payloads.
            0 => format!("garbage-{i}"),
            // Everyone commits the same digest: the first in queue order owns it, the rest
            // are copies.
            1 => payload(&net.store_url, &shared, m),
            // Unique digests with nothing stored under them.
            _ => payload(
                &net.store_url,
                &Digest::of(format!("nothing {i}").as_bytes()),
                m,
            ),
        };
        chain.commit(m, &p).unwrap();
    }
    // Start the validator once the burst is revealed, so its first poll sees all of it.
    let last = chain.block().unwrap().number + 1 + opts.reveal_delay;
    while chain.block().unwrap().number < last {
        std::thread::sleep(Duration::from_millis(20));
    }
    let commit_blocks: std::collections::BTreeSet<u64> = chain
        .revealed_commitments()
        .unwrap()
        .iter()
        .map(|r| r.commit_block)
        .collect();
    let cfg = ValidatorConfig::load(&net.config_path).unwrap();
    let mut shell = Shell::open(cfg).unwrap();
    let rss_before = rss_kib();
    let t0 = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        shell.step().unwrap();
        let s = shell.journal().state();
        if s.counters.answered as usize >= N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {N} answered before the deadline",
            s.counters.answered
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let total = t0.elapsed();
    let rss_after = rss_kib();
    let s = shell.journal().state();
    let mut by_code: BTreeMap<String, usize> = BTreeMap::new();
    let mut gate_rejections = 0usize;
    let mut per_hotkey: BTreeMap<&str, usize> = BTreeMap::new();
    let ro = koth_validator::log::open_read_only(&net.work_dir.join("validator.db")).unwrap();
    // Time per gate rejection, from the log's own timestamps: GateStarted → GateFailed.
    let (mut started_at, mut gate_ms, mut gate_n) = (BTreeMap::new(), 0i64, 0usize);
    let (mut first_ms, mut last_ms) = (i64::MAX, 0i64);
    ro.replay(|e| {
        match &e.event {
            koth_validator::Event::GateStarted { entry, .. } => {
                started_at.insert(*entry, e.at_unix_ms);
            }
            koth_validator::Event::GateFailed { entry, .. } => {
                if let Some(t) = started_at.get(entry) {
                    gate_ms += e.at_unix_ms - t;
                    gate_n += 1;
                }
            }
            koth_validator::Event::Revealed { .. } => first_ms = first_ms.min(e.at_unix_ms),
            _ => {}
        }
        last_ms = last_ms.max(e.at_unix_ms);
        Ok(())
    })
    .unwrap();
    // History is capped (history_len 256 by default): count from the counters and the log.
    for (code, n) in &s.counters.rejected {
        by_code.insert(code.clone(), *n as usize);
    }
    for f in &s.history {
        *per_hotkey.entry(f.hotkey.as_str()).or_default() += 1;
        if let Outcome::Rejected { gate: Some(_), .. } = &f.outcome {
            gate_rejections += 1;
        }
    }
    assert!(
        per_hotkey.values().all(|&n| n == 1),
        "a hotkey answered twice"
    );
    assert_eq!(
        s.counters.answered as usize, N,
        "every hotkey answered exactly once"
    );
    assert!(s.queue.is_empty() && s.active.is_none());
    let malformed = by_code.get("payload_malformed").copied().unwrap_or(0);
    let owned = by_code.get("digest_owned").copied().unwrap_or(0);
    let unreachable = by_code.get("manifest_unreachable").copied().unwrap_or(0);
    assert_eq!(malformed, N / 5);
    // The shared digest: one owner (fetched: nothing there) and N/5 - 1 copies.
    assert_eq!(owned, N / 5 - 1);
    assert_eq!(unreachable, N * 3 / 5 + 1);
    let gate_count = gate_n;
    assert_eq!(gate_n, unreachable);
    let per_gate = gate_ms as f64 / gate_n as f64 / 1e3;
    let per_answer_ms = (last_ms - first_ms) as f64 / N as f64;
    eprintln!(
        "burst: {N} reveals (commit blocks {commit_blocks:?}) answered in {:.2} s ({per_answer_ms:.2} ms per answer in the log); {gate_count} gate \
         rejections at {:.2} ms each (gate_started to gate_failed); RSS {} → {} KiB; by code {by_code:?}; history {} ({} gate rejections)",
        total.as_secs_f64(),
        per_gate * 1e3,
        rss_before,
        rss_after,
        s.history.len(),
        gate_rejections
    );
    // Memory stays bounded: the state keeps at most history_len finished entries.
    assert!(s.history.len() <= 256);
    assert!(
        rss_after < rss_before + 200 * 1024,
        "RSS grew by more than 200 MiB"
    );
}
