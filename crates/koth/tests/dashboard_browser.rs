//! The dashboard end to end, in a real browser: a tiny network, a real `koth validator run`
//! process with history (a crowned challenger, a refused one), then headless Chromium driven by
//! playwright-core (crates/koth-web/tests/browser/dashboard.mjs) loads `/`, checks the king, the
//! queue and the charts, sees a submission made after the page loaded arrive without a reload,
//! checks that no request left the page's origin, and saves a screenshot.
//!
//! Needs Debian's `chromium` and playwright-core installed by `scripts/test` (or
//! KOTH_CHROMIUM / KOTH_NODE_MODULES pointing at them). Without them the test FAILS and says
//! what is missing, unless KOTH_SKIP_BROWSER=1 is set.

mod support;

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use koth_chain::{Chain, EmbeddedChain, Keypair};
use koth_core::Digest;
use koth_validator::devkit::{self, key, payload, put, register, TinyNet, TinyOptions};
use koth_validator::state::Phase;
use koth_validator::ValidatorState;
use support::free_port;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Chromium, playwright-core's node_modules and node, or a message naming what is missing.
fn browser_tools() -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let mut missing = Vec::new();
    let which = |name: &str| -> Option<PathBuf> {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
    };
    let chromium = std::env::var_os("KOTH_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| which("chromium"));
    let chromium = match chromium {
        Some(c) if c.is_file() => Some(c),
        other => {
            missing.push(format!(
                "chromium (KOTH_CHROMIUM={other:?}; install Debian's `chromium`, which scripts/test does)"
            ));
            None
        }
    };
    let modules = std::env::var_os("KOTH_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/node/node_modules"));
    if !modules.join("playwright-core/package.json").is_file() {
        missing.push(format!(
            "playwright-core in {} (scripts/test installs it with npm ci from crates/koth-web/tests/browser/package-lock.json; or set KOTH_NODE_MODULES)",
            modules.display()
        ));
    }
    let node = which("node");
    if node.is_none() {
        missing.push("node (Node.js ≥ 20) on PATH".into());
    }
    match (chromium, node) {
        (Some(c), Some(n)) if missing.is_empty() => Ok((c, modules, n)),
        _ => Err(missing.join("; ")),
    }
}

/// How long the validator holds carol's crown (KOTH_FAULT_CROWN_DELAY_MS) while the browser
/// looks at the page; the submission made after the page loaded is read once it ends.
const CROWN_HOLD_MS: u64 = 15_000;

fn start_validator(config: &Path, log: &Path, crown_delay_ms: u64) -> Kill {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Kill(
        Command::new(env!("CARGO_BIN_EXE_koth"))
            .args(["validator", "run", "--config"])
            .arg(config)
            .env("KOTH_LOG", "info")
            .env("KOTH_FAULT_CROWN_DELAY_MS", crown_delay_ms.to_string())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    )
}

fn state_of(log: &Path) -> Option<ValidatorState> {
    koth_validator::log::open_read_only(log)
        .and_then(|l| l.load_state())
        .ok()
}

fn wait_for(log: &Path, what: &str, secs: u64, ok: impl Fn(&ValidatorState) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if state_of(log).is_some_and(|s| ok(&s)) {
            return;
        }
        if Instant::now() >= deadline {
            let s = state_of(log);
            panic!(
                "timed out waiting for {what}; the validator's state: {}",
                s.map(
                    |s| serde_json::to_string(&koth_validator::feed::api_state(&s))
                        .unwrap_or_default()
                )
                .unwrap_or_else(|| "(unreadable)".into())
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn commit(chain: &EmbeddedChain, net: &TinyNet, miner: &Keypair, dir: &Path) -> String {
    let digest = put(&net.store_url, dir).unwrap();
    commit_stored(chain, net, miner, &digest);
    digest.to_string()
}

/// Commits a checkpoint already in the store: no upload between two commits that must land in
/// the same block.
fn commit_stored(chain: &EmbeddedChain, net: &TinyNet, miner: &Keypair, digest: &Digest) {
    chain
        .commit(miner, &payload(&net.store_url, digest, miner))
        .unwrap();
}

/// A copy of the king whose config differs on a locked key (refused at the config gate);
/// `tag` makes its digest unique.
fn bad_config(net: &TinyNet, dir: &Path, tag: &str) {
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir(&net.king_dir).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    cfg["hidden_size"] = serde_json::json!(48);
    cfg["_name_or_path"] = serde_json::json!(tag);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
}

#[test]
fn the_dashboard_in_a_browser_shows_the_hill_and_updates_live() {
    if std::env::var("KOTH_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("KOTH_SKIP_BROWSER=1: the dashboard's browser test is skipped");
        return;
    }
    let (chromium, node_modules, node) = match browser_tools() {
        Ok(t) => t,
        Err(missing) => panic!(
            "the dashboard's browser test needs: {missing}. Run scripts/test (it installs them) \
             or set KOTH_SKIP_BROWSER=1 to skip this test explicitly."
        ),
    };

    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let opts = TinyOptions {
        listen: format!("127.0.0.1:{port}"),
        ..TinyOptions::default()
    };
    let net = devkit::tiny_network(tmp.path(), &opts).unwrap();
    let chain = EmbeddedChain::open(&net.chain_path).unwrap();
    // carol and dave commit in the same block; the queue orders them by hotkey, and carol must
    // come first.
    let (mut carol, mut dave) = (key(42), key(43));
    if carol.account().to_ss58() > dave.account().to_ss58() {
        std::mem::swap(&mut carol, &mut dave);
    }
    let [alice, bob, eve] = [40u8, 41, 44].map(key);
    for m in [&alice, &bob, &carol, &dave, &eve] {
        register(&chain, m).unwrap();
    }
    let log = net.work_dir.join("validator.db");
    let server_log = tmp.path().join("validator.log");
    let first = start_validator(&net.config_path, &server_log, 0);

    // History: alice's trained challenger is crowned, bob's bad config is refused.
    let alice_dir = tmp.path().join("alice");
    devkit::train_better(&net.king_dir, &alice_dir, 6, opts.seq_len as usize).unwrap();
    let alice_digest = commit(&chain, &net, &alice, &alice_dir);
    let bob_dir = tmp.path().join("bob");
    bad_config(&net, &bob_dir, "bob");
    commit(&chain, &net, &bob, &bob_dir);
    wait_for(&log, "alice crowned and bob refused", 120, |s| {
        s.history.len() == 2 && s.king().is_some_and(|k| k.number == 1) && s.active.is_none()
    });
    let king = state_of(&log).unwrap().king().unwrap().digest.to_string();
    assert_eq!(king, alice_digest);

    // Restart the validator (the dashboard rebuilds everything from the log) with the crash
    // test's hook that holds a crown for a while: carol wins her duel and is held mid-crown
    // while the page is looked at, with dave queued behind her. Deterministic, however fast
    // the duels are.
    drop(first);
    let _validator = start_validator(&net.config_path, &server_log, CROWN_HOLD_MS);
    let carol_dir = tmp.path().join("carol");
    devkit::train_better(&alice_dir, &carol_dir, 8, opts.seq_len as usize).unwrap();
    let dave_dir = tmp.path().join("dave");
    bad_config(&net, &dave_dir, "dave");
    let carol_ss58 = carol.account().to_ss58();
    let dave_ss58 = dave.account().to_ss58();
    // Both uploads first, then the two commitments back to back, so that a block boundary
    // (and with it a reveal in a later block, observed only after carol's duel) cannot fall
    // between them: the upload is the slow part (it failed so once on a loaded machine).
    let carol_digest = put(&net.store_url, &carol_dir).unwrap();
    let dave_digest = put(&net.store_url, &dave_dir).unwrap();
    commit_stored(&chain, &net, &carol, &carol_digest);
    commit_stored(&chain, &net, &dave, &dave_digest);
    wait_for(&log, "carol held mid-crown with dave queued", 60, |s| {
        let crowning = matches!(
            s.active_entry(),
            Some((e, Phase::Crowning { .. })) if e.hotkey == carol_ss58
        );
        crowning && s.queue_in_order().any(|e| e.hotkey == dave_ss58)
    });

    // The browser.
    let eve_ss58 = eve.account().to_ss58();
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let script = workspace().join("crates/koth-web/tests/browser/dashboard.mjs");
    let mut browser = Command::new(&node)
        .arg(&script)
        .env("KOTH_DASHBOARD_URL", format!("http://127.0.0.1:{port}/"))
        .env("KOTH_CHROMIUM", &chromium)
        .env("KOTH_NODE_MODULES", &node_modules)
        .env("KOTH_SCREENSHOT", &screenshot)
        .env("KOTH_EXPECT_KING", &king)
        .env("KOTH_EXPECT_QUEUED", &dave_ss58)
        .env("KOTH_EXPECT_NEW", &eve_ss58)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {} {}: {e}", node.display(), script.display()));
    let stdout = browser.stdout.take().unwrap();
    let mut stdin = browser.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("browser: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let _browser = Kill(browser);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut lines = Vec::new();
    let mut submitted = false;
    let result = loop {
        let line = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => l,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                assert!(
                    Instant::now() < deadline,
                    "the browser script did not finish: {lines:#?}"
                );
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break None,
        };
        lines.push(line.clone());
        if line == "READY" && !submitted {
            // The page is loaded and checked: now something happens on the hill.
            let eve_dir = tmp.path().join("eve");
            bad_config(&net, &eve_dir, "eve");
            commit(&chain, &net, &eve, &eve_dir);
            submitted = true;
            let _ = writeln!(stdin, "SUBMITTED");
        }
        if let Some(json) = line.strip_prefix("RESULT ") {
            break Some(serde_json::from_str::<serde_json::Value>(json).unwrap());
        }
    };
    let result = result.unwrap_or_else(|| {
        panic!(
            "the browser script ended without a result: {lines:#?}\nvalidator log: {}",
            std::fs::read_to_string(&server_log).unwrap_or_default()
        )
    });
    assert!(submitted, "the script never reported READY");
    assert_eq!(result["ok"], true, "{result:#}");
    assert_eq!(result["king_digest"], king.as_str());
    assert!(result["queue_has_expected"] == true, "{result:#}");
    assert!(
        result["chart_points"].as_u64().unwrap_or(0) > 0,
        "{result:#}"
    );
    assert!(result["live_update_seen"] == true, "{result:#}");
    assert!(result["reloaded"] == false, "{result:#}");
    assert_eq!(
        result["foreign_requests"].as_array().map(Vec::len),
        Some(0),
        "{result:#}"
    );
    assert!(result["requests"].as_u64().unwrap_or(0) >= 3, "{result:#}");
    assert!(
        screenshot.is_file(),
        "no screenshot at {}",
        screenshot.display()
    );
    println!("screenshot: {}", screenshot.display());
}
