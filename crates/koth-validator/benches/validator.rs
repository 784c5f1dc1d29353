//! `cargo bench -p koth-validator`: how fast the core applies events, how long a durable append
//! takes (WAL, synchronous=FULL: one fsync per event), and how fast a restart replays the log.

use std::time::Instant;

use koth_core::competition::RewardPolicy;
use koth_core::{Digest, RejectCode};
use koth_validator::{apply, Effect, Event, EventLog, Reveal, Rules, ValidatorState};

fn rules() -> Rules {
    Rules {
        competition_sha256: Digest::of(b"bench"),
        genesis_king: Digest::of(b"genesis"),
        genesis_location: None,
        start_block: 0,
        weights_interval_blocks: 100,
        reward: RewardPolicy::WinnerTakeAll,
        max_infra_retries: 5,
        history_len: 256,
        near_copy: false,
        trainability_probe: false,
        reveal_delay_blocks: Some(3),
        near_copy_history: 16,
        king_pool_batches: 0,
    }
}

/// One burst of `n` reveals in one block, each then failed at its first gate: the events.
fn burst_events(state: &mut ValidatorState, round: u64, n: u64) -> Vec<Event> {
    let mut events = Vec::new();
    let block = state.block + 10;
    let reveals: Vec<Reveal> = (0..n)
        .map(|i| {
            let hk = format!("hk{i:04}");
            let d = Digest::of(format!("{round}-{i}").as_bytes());
            Reveal {
                hotkey: hk.clone(),
                uid: Some(i as u16),
                payload: format!("v4|s3://b/{hk}|{d}|{hk}"),
                commit_block: block - 3,
                reveal_block: block,
                block_hash: format!("0x{block:x}"),
            }
        })
        .collect();
    let mut ev = Event::Revealed { block, reveals };
    loop {
        let fx = apply(state, &ev).expect("applies");
        events.push(ev);
        let Some(Effect::RunGate { entry, gate, .. }) =
            fx.into_iter().find(|e| matches!(e, Effect::RunGate { .. }))
        else {
            break;
        };
        let started = Event::GateStarted { entry, gate };
        apply(state, &started).expect("applies");
        events.push(started);
        ev = Event::GateFailed {
            entry,
            gate,
            code: RejectCode::ManifestUnreachable,
            message: "404".into(),
        };
    }
    events
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    // Core: build a realistic event stream, then time applying it from scratch.
    let mut state = ValidatorState::new();
    let started = Event::Started { rules: rules() };
    apply(&mut state, &started).expect("starts");
    let mut events = vec![started];
    for round in 0..20 {
        events.extend(burst_events(&mut state, round, 500));
    }
    let t = Instant::now();
    let mut replayed = ValidatorState::new();
    for e in &events {
        apply(&mut replayed, e).expect("applies");
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(replayed, state);
    println!(
        "core apply: {} events (20 bursts of 500 reveals, each answered) in {:.3} s = {:.0} events/s",
        events.len(),
        secs,
        events.len() as f64 / secs
    );
    let mut s = ValidatorState::new();
    apply(&mut s, &Event::Started { rules: rules() }).expect("starts");
    let burst = &events[1];
    let t = Instant::now();
    apply(&mut s, burst).expect("applies");
    println!(
        "core apply: one Revealed event with 500 reveals: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    // Log: durable appends, then replay.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.db");
    let mut log = EventLog::create(&path).expect("create");
    let appends = 2000.min(events.len());
    let mut lat = Vec::with_capacity(appends);
    let t_all = Instant::now();
    for e in &events[..appends] {
        let t = Instant::now();
        log.append(e).expect("append");
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let total = t_all.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    println!(
        "log append (WAL, synchronous=FULL): {appends} events, median {:.3} ms, p99 {:.3} ms, {:.0} appends/s",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        appends as f64 / total
    );
    let t = Instant::now();
    let loaded = log.load_state().expect("load");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "log load_state (decode + apply): {} events in {:.3} s = {:.0} events/s (directory {})",
        log.len(),
        secs,
        log.len() as f64 / secs,
        dir.path().display()
    );
    assert!(loaded.next_entry > 0);
}
