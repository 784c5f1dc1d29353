//! Hostile miners against the real shell (a real embedded chain, a real local store, the real
//! gates and duel, tiny models on the CPU). Each attack is a submission built from the miner's
//! own bytes; each must be answered with the miner's code — never counted as our
//! infrastructure fault, which would re-queue it and pause everyone — and must never block
//! the loop. The next honest submission is then dueled.
//!
//! Attacks (built by `tests/support/hostile.rs`, which koth's `tests/adversarial_cli.rs` runs
//! against validator processes): a blob stored shorter than its manifest, a FIFO where a blob
//! should be, a 64 MiB `config.json` (a memory attack if parsed), a non-UTF-8 `config.json`, an
//! index naming a shard the checkpoint lacks, and a location that only shares a text prefix
//! with the allowed store.

#[path = "support/hostile.rs"]
mod hostile;

use std::time::{Duration, Instant};

use hostile::{Crafted, Workshop};
use koth_chain::{Chain, EmbeddedChain, Keypair};
use koth_validator::devkit::{self, key, payload, register, TinyOptions};
use koth_validator::event::{Gate, Outcome};
use koth_validator::state::Finished;
use koth_validator::{Shell, ValidatorConfig};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn rejection(f: &Finished) -> (String, Option<Gate>, String) {
    match &f.outcome {
        Outcome::Rejected {
            code,
            gate,
            message,
        } => (code.code().to_string(), *gate, message.clone()),
        other => panic!("entry {} was not rejected: {other:?}", f.id),
    }
}

#[test]
fn hostile_submissions_are_answered_with_their_own_codes_and_never_stall_the_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = TinyOptions {
        // Large enough that the 64 MiB config reaches the config gate.
        size_cap_bytes: 256 << 20,
        tokens: 50_000,
        ..TinyOptions::default()
    };
    let net = devkit::tiny_network(tmp.path(), &opts).unwrap();
    let chain = EmbeddedChain::open(&net.chain_path).unwrap();
    let shop = Workshop::new(&net, tmp.path().join("crafted"));
    let mut n = 60;
    let mut miner = || {
        n += 1;
        let k = key(n);
        register(&chain, &k).unwrap();
        k
    };

    let crafted: Vec<Crafted> = vec![
        shop.short_blob(1.0),
        shop.fifo_blob(2.0),
        shop.huge_config(64 << 20),
        shop.non_utf8_config(),
        shop.missing_shard_index(),
        shop.evil_sibling(3.0),
    ];
    let attacks: Vec<(Keypair, Crafted)> = crafted.into_iter().map(|c| (miner(), c)).collect();
    for (m, c) in &attacks {
        chain
            .commit(m, &payload(&c.location, &c.digest, m))
            .unwrap();
    }

    let mut shell = Shell::open(ValidatorConfig::load(&net.config_path).unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    let answered = |shell: &Shell, k: &Keypair| {
        let hotkey = k.account().to_ss58();
        shell
            .journal()
            .state()
            .history
            .iter()
            .find(|f| f.hotkey == hotkey)
            .cloned()
    };
    while !attacks.iter().all(|(m, _)| answered(&shell, m).is_some()) {
        // Every step returns: nothing blocks the loop.
        let step = Instant::now();
        shell.step().unwrap();
        assert!(step.elapsed() < Duration::from_secs(120), "a step hung");
        assert!(Instant::now() < deadline, "not every attack was answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    for (m, c) in &attacks {
        let f = answered(&shell, m).unwrap();
        let (code, gate, message) = rejection(&f);
        assert_eq!(
            (code.as_str(), gate),
            (c.code, Some(c.gate)),
            "{}: {message}",
            c.name
        );
        assert!(message.contains(c.phrase), "{}: {message}", c.name);
        assert_eq!(
            f.retries, 0,
            "{} was retried as our fault: {message}",
            c.name
        );
    }
    let s = shell.journal().state();
    assert_eq!(s.counters.infra_faults, 0, "an attack counted as our fault");
    assert!(s.paused_until.is_none() || s.paused_until <= Some(s.block));

    // The 64 MiB config was refused from its size, never parsed: the whole test process (the
    // validator, its tiny models, the data) stays far below what parsing it would take.
    let peak = peak_rss_kib();
    eprintln!("peak RSS {peak} KiB");
    assert!(peak < 512 * 1024, "peak RSS {peak} KiB");

    // The next honest submission is dueled.
    let (location, honest) = shop.honest(4.0);
    let m = miner();
    chain.commit(&m, &payload(&location, &honest, &m)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    let f = loop {
        shell.step().unwrap();
        if let Some(f) = answered(&shell, &m) {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "the honest submission was never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        matches!(f.outcome, Outcome::Dueled { .. }),
        "{:?}",
        f.outcome
    );
}
