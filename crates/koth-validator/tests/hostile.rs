//! Hostile miners against the real shell (a real embedded chain, a real local store, the real
//! gates and duel, tiny models on the CPU). Each attack is a submission built from the miner's
//! own bytes; each must be answered with the miner's code — never counted as our
//! infrastructure fault, which would re-queue it and pause everyone — and must never block
//! the loop. The next honest submission is then dueled.
//!
//! Attacks: a blob stored shorter than its manifest, a FIFO where a blob should be, a 64 MiB
//! `config.json` (a memory attack if parsed), a non-UTF-8 `config.json`, an index naming a shard
//! the checkpoint lacks, and a location that only shares a text prefix with the allowed store.

use std::path::Path;
use std::time::{Duration, Instant};

use koth_chain::{Chain, EmbeddedChain, Keypair};
use koth_core::Digest;
use koth_model::{DType, Device, Model};
use koth_validator::devkit::{self, key, payload, put, register, TinyOptions};
use koth_validator::event::{Gate, Outcome};
use koth_validator::state::Finished;
use koth_validator::{Shell, ValidatorConfig};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The store's blob path of `file` of checkpoint `dir` (hashed the way the store names it).
fn blob_of(store_dir: &Path, dir: &Path, file: &str) -> std::path::PathBuf {
    let sha = Digest::of(&std::fs::read(dir.join(file)).unwrap());
    store_dir.join("blobs/sha256").join(sha.hex())
}

/// A copy of the king whose weights are nudged (so its blob is its own, not the king's).
fn variant(king_dir: &Path, to: &Path, seed: f64) {
    let king = Model::load(king_dir, DType::F32, &Device::Cpu).unwrap();
    let m = king
        .map_tensors(|name, t| {
            if name.ends_with("embed_tokens.weight") {
                Ok(t.affine(1.0, 1e-6 * seed)?)
            } else {
                Ok(t.clone())
            }
        })
        .unwrap();
    devkit::save_model(&m, to).unwrap();
    std::fs::copy(king_dir.join("config.json"), to.join("config.json")).unwrap();
}

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

/// A hostile submission: its miner, its payload, the code and gate it must be answered with,
/// and a phrase the answer's sentence must hold.
type Attack = (Keypair, String, (&'static str, Option<Gate>), &'static str);

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
    let store = net.store_url.clone();
    let work = tmp.path().join("crafted");
    let mut attacks: Vec<Attack> = Vec::new();
    let mut n = 60;
    let mut miner = || {
        n += 1;
        let k = key(n);
        register(&chain, &k).unwrap();
        k
    };

    // A blob stored shorter than its manifest says.
    let short_dir = work.join("short");
    variant(&net.king_dir, &short_dir, 1.0);
    let short = put(&store, &short_dir).unwrap();
    let blob = blob_of(&net.store_dir, &short_dir, "model.safetensors");
    let bytes = std::fs::read(&blob).unwrap();
    std::fs::write(&blob, &bytes[..bytes.len() / 2]).unwrap();
    let m = miner();
    let p = payload(&store, &short, &m);
    attacks.push((
        m,
        p,
        ("manifest_unreachable", Some(Gate::Fetch)),
        "the manifest says",
    ));

    // A FIFO where a blob should be: refused from its type, never waited on.
    let fifo_dir = work.join("fifo");
    variant(&net.king_dir, &fifo_dir, 2.0);
    let fifo = put(&store, &fifo_dir).unwrap();
    let blob = blob_of(&net.store_dir, &fifo_dir, "model.safetensors");
    std::fs::remove_file(&blob).unwrap();
    assert!(std::process::Command::new("mkfifo")
        .arg(&blob)
        .status()
        .unwrap()
        .success());
    let m = miner();
    let p = payload(&store, &fifo, &m);
    attacks.push((
        m,
        p,
        ("manifest_unreachable", Some(Gate::Fetch)),
        "not a regular file",
    ));

    // A 64 MiB config.json of small numbers (over a gigabyte as a parsed JSON value).
    let huge_dir = work.join("huge-config");
    copy_dir(&net.king_dir, &huge_dir);
    let mut cfg = std::fs::read(huge_dir.join("config.json")).unwrap();
    while cfg.last() != Some(&b'}') {
        cfg.pop();
    }
    cfg.pop();
    cfg.extend_from_slice(b", \"pad\": [0");
    while cfg.len() < 64 << 20 {
        cfg.extend_from_slice(b",0");
    }
    cfg.extend_from_slice(b"]}");
    std::fs::write(huge_dir.join("config.json"), &cfg).unwrap();
    let huge = put(&store, &huge_dir).unwrap();
    let m = miner();
    let p = payload(&store, &huge, &m);
    attacks.push((
        m,
        p,
        ("config_mismatch", Some(Gate::Config)),
        "over the cap",
    ));

    // A config.json that is not UTF-8.
    let latin_dir = work.join("latin1-config");
    copy_dir(&net.king_dir, &latin_dir);
    std::fs::write(latin_dir.join("config.json"), b"{\"model_type\": \"\xe9\"}").unwrap();
    let latin = put(&store, &latin_dir).unwrap();
    let m = miner();
    let p = payload(&store, &latin, &m);
    attacks.push((
        m,
        p,
        ("config_mismatch", Some(Gate::Config)),
        "not valid JSON",
    ));

    // An index naming a shard the checkpoint does not hold: every header passes the gates, the
    // loader refuses it in the duel.
    let index_dir = work.join("missing-shard");
    let king = Model::load(&net.king_dir, DType::F32, &Device::Cpu).unwrap();
    king.save_with_shard_limit(&index_dir, 32 * 1024).unwrap();
    let index_path = index_dir.join("model.safetensors.index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["weight_map"]["lm_head.weight"] = "model-00099-of-00099.safetensors".into();
    std::fs::write(&index_path, index.to_string()).unwrap();
    std::fs::copy(
        net.king_dir.join("config.json"),
        index_dir.join("config.json"),
    )
    .unwrap();
    let missing = put(&store, &index_dir).unwrap();
    let m = miner();
    let p = payload(&store, &missing, &m);
    attacks.push((
        m,
        p,
        ("weights_invalid", Some(Gate::Duel)),
        "not in the checkpoint",
    ));

    // A store beside the allowed one whose path only shares its text prefix.
    let evil_dir = std::path::PathBuf::from(format!("{}-evil", net.store_dir.display()));
    let evil_url = format!("file://{}", evil_dir.display());
    let evil_src = work.join("evil");
    variant(&net.king_dir, &evil_src, 3.0);
    let evil = put(&evil_url, &evil_src).unwrap();
    let m = miner();
    let p = payload(&evil_url, &evil, &m);
    attacks.push((
        m,
        p,
        ("manifest_unreachable", Some(Gate::Fetch)),
        "not one this validator fetches from",
    ));

    for (m, p, _, _) in &attacks {
        chain.commit(m, p).unwrap();
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
    while !attacks.iter().all(|(m, ..)| answered(&shell, m).is_some()) {
        // Every step returns: nothing blocks the loop.
        let step = Instant::now();
        shell.step().unwrap();
        assert!(step.elapsed() < Duration::from_secs(120), "a step hung");
        assert!(Instant::now() < deadline, "not every attack was answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    for (m, _, (want_code, want_gate), want_text) in &attacks {
        let f = answered(&shell, m).unwrap();
        let (code, gate, message) = rejection(&f);
        assert_eq!((code.as_str(), gate), (*want_code, *want_gate), "{message}");
        assert!(message.contains(want_text), "{want_code}: {message}");
        assert_eq!(
            f.retries, 0,
            "{want_code} was retried as our fault: {message}"
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
    let honest_dir = work.join("honest");
    variant(&net.king_dir, &honest_dir, 4.0);
    let honest = put(&store, &honest_dir).unwrap();
    let m = miner();
    chain.commit(&m, &payload(&store, &honest, &m)).unwrap();
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
