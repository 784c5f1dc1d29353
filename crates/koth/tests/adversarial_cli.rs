//! The adversarial suite: each attack class of issue 16 against a real `koth validator run`
//! process on a tiny network (`koth_validator::devkit`), submitted through the chain as a miner
//! submits (a checkpoint put into a store, damaged with the miner's own write access, committed
//! and revealed). One validator process per class; the attacks of a class run against it in
//! sequence. Every test asserts, throughout:
//!
//! - each submission is answered with its own code, at its gate, with a sentence that says why,
//!   within [`ANSWER_BLOCKS`] blocks of its reveal, and never retried as our fault (no
//!   infrastructure fault at all);
//! - `GET /api/state` answers every poll (about every 100 ms) within [`FEED_ANSWER`], and the
//!   block it shows trails the chain's head by at most [`LOOP_LAG_BLOCKS`] (the main loop never
//!   waits on a stranger's I/O);
//! - the process's peak RSS (`VmHWM` in `/proc/<pid>/status`) stays under [`PEAK_RSS_KIB`];
//! - the next honest submission is dueled.
//!
//! The attacks are built by koth-validator's `tests/support/hostile.rs` (shared with
//! `tests/hostile.rs`, which runs the shell in process).

mod support;

#[path = "../../koth-validator/tests/support/hostile.rs"]
mod hostile;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hostile::{Crafted, Workshop};
use koth_chain::{Chain, EmbeddedChain, Keypair, Keystore};
use koth_core::Digest;
use koth_miner::devkit::SHORT_TRAIN;
use koth_miner::follow::FeedClient;
use koth_validator::devkit::{self, key, payload, put, register, TinyNet, TinyOptions};
use koth_validator::feed::{FinishedView, PhaseView, ResultView, StateFeed};
use koth_validator::ValidatorConfig;
use support::{free_port, koth};

/// Milliseconds per block of the test chain.
const BLOCK_MS: u64 = 250;
/// Every attack is answered within this many blocks of its reveal (all of a class's attacks are
/// revealed together and answered one after the other).
const ANSWER_BLOCKS: u64 = 40;
/// Every `GET /api/state` is answered within this.
const FEED_ANSWER: Duration = Duration::from_secs(1);
/// The block `/api/state` shows trails the chain's head by at most this many blocks.
const LOOP_LAG_BLOCKS: u64 = 40;
/// The validator process's peak resident memory stays under this (KiB): the tiny network needs
/// under 100 MiB, and either 64 MiB file of the memory attacks parsed as JSON would take over a
/// gigabyte. The miner process of the miner-side test is held to it too.
const PEAK_RSS_KIB: u64 = 256 * 1024;
/// Wall-clock limit for any one wait of the suite.
const WAIT: Duration = Duration::from_secs(150);

/// `VmHWM` of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// How the validator of a test is set up.
#[derive(Default)]
struct Setup {
    /// The competition's size cap (the memory attacks need one above their 64 MiB files).
    size_cap_bytes: Option<u64>,
    /// Duels on a `koth duel serve` worker process instead of in process.
    remote_worker: bool,
    /// `[store] king_location`, relative to the network's root.
    king_store: Option<&'static str>,
    /// The competition's `weights.interval_blocks` (the devkit's is 100).
    weights_interval_blocks: Option<u64>,
}

const WORKER_TOKEN_ENV: &str = "KOTH_ADVERSARIAL_WORKER_TOKEN";
const WORKER_TOKEN: &str = "adversarial-suite-token";

/// One tiny network with its validator process (and worker process), watched.
struct Hill {
    _tmp: tempfile::TempDir,
    net: TinyNet,
    chain: EmbeddedChain,
    feed: FeedClient,
    feed_url: String,
    validator: Child,
    worker: Option<(Child, u16)>,
    next_key: u8,
    /// The slowest `/api/state` answer and the largest lag seen, for the report.
    slowest: Duration,
    max_lag: u64,
    polls: u64,
    name: &'static str,
}

impl Hill {
    fn start(name: &'static str, setup: Setup) -> Hill {
        let tmp = tempfile::tempdir().unwrap();
        let port = free_port();
        let opts = TinyOptions {
            block_time_ms: BLOCK_MS,
            tokens: 50_000,
            size_cap_bytes: setup.size_cap_bytes.unwrap_or(1 << 20),
            listen: format!("127.0.0.1:{port}"),
            ..TinyOptions::default()
        };
        let net = devkit::tiny_network(tmp.path(), &opts).unwrap();
        if let Some(blocks) = setup.weights_interval_blocks {
            let text = std::fs::read_to_string(&net.competition_path).unwrap();
            let mut file = koth_core::competition::Competition::from_toml_str(&text)
                .unwrap()
                .to_file();
            file.weights.interval_blocks = blocks;
            std::fs::write(&net.competition_path, file.to_toml().unwrap()).unwrap();
        }
        let mut cfg = ValidatorConfig::from_toml_str(
            &std::fs::read_to_string(&net.config_path).unwrap(),
            &net.config_path,
        )
        .unwrap();
        if let Some(dir) = setup.king_store {
            cfg.store.king_location = Some(format!("file://{}", net.root.join(dir).display()));
        }
        let worker = setup.remote_worker.then(|| {
            let wport = free_port();
            cfg.eval.worker = format!("http://127.0.0.1:{wport}");
            cfg.eval.token_env = Some(WORKER_TOKEN_ENV.into());
            (start_worker(&net, wport, "worker-cache"), wport)
        });
        std::fs::write(&net.config_path, cfg.to_toml().unwrap()).unwrap();
        let chain = EmbeddedChain::open(&net.chain_path).unwrap();
        let feed_url = format!("http://127.0.0.1:{port}");
        let validator = start_validator(&net, None);
        let mut hill = Hill {
            _tmp: tmp,
            feed: FeedClient::new(&feed_url, FEED_ANSWER).unwrap(),
            feed_url,
            net,
            chain,
            validator,
            worker,
            next_key: 100,
            slowest: Duration::ZERO,
            max_lag: 0,
            polls: 0,
            name,
        };
        hill.wait_ready();
        hill
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.net.root.join("validator.log")).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].to_string()
    }

    /// Until the feed answers with the game started.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(s) = self.feed.fetch_state() {
                if s.started {
                    return;
                }
            }
            if let Ok(Some(status)) = self.validator.try_wait() {
                panic!(
                    "{}: the validator exited ({status}):\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: the feed never came up",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A registered miner with a fresh hotkey.
    fn miner(&mut self) -> Keypair {
        self.next_key += 1;
        let k = key(self.next_key);
        register(&self.chain, &k).unwrap();
        k
    }

    /// Commit `digest` at `location` from a fresh miner.
    fn commit(&mut self, location: &str, digest: &Digest) -> Keypair {
        let m = self.miner();
        self.chain
            .commit(&m, &payload(location, digest, &m))
            .unwrap();
        m
    }

    /// One poll of `/api/state`, checked: it answers within the bound, its block keeps up with
    /// the chain, the process is alive and under the memory bound.
    fn poll(&mut self) -> StateFeed {
        if let Ok(Some(status)) = self.validator.try_wait() {
            panic!(
                "{}: the validator exited ({status}):\n{}",
                self.name,
                self.log_tail()
            );
        }
        let t = Instant::now();
        let state = self.feed.fetch_state().unwrap_or_else(|e| {
            panic!(
                "{}: /api/state did not answer within {FEED_ANSWER:?}: {e}\n{}",
                self.name,
                self.log_tail()
            )
        });
        let took = t.elapsed();
        assert!(
            took < FEED_ANSWER,
            "{}: /api/state took {took:?}",
            self.name
        );
        self.slowest = self.slowest.max(took);
        self.polls += 1;
        let head = self.chain.block().unwrap().number;
        let lag = head.saturating_sub(state.block);
        self.max_lag = self.max_lag.max(lag);
        assert!(
            lag <= LOOP_LAG_BLOCKS,
            "{}: the validator's state is at block {}, the chain at {head}: its loop is stuck\n{}",
            self.name,
            state.block,
            self.log_tail()
        );
        let rss = self.peak_rss();
        assert!(
            rss < PEAK_RSS_KIB,
            "{}: the validator's peak RSS is {rss} KiB, over {PEAK_RSS_KIB} KiB",
            self.name
        );
        state
    }

    fn peak_rss(&self) -> u64 {
        peak_rss_kib(self.validator.id()).expect("the validator's /proc status")
    }

    /// Poll until every submission (hotkey, digest) has an answer; the answers, in order.
    fn answers(&mut self, submissions: &[(&Keypair, Digest)]) -> (Vec<FinishedView>, StateFeed) {
        let deadline = Instant::now() + WAIT;
        loop {
            let state = self.poll();
            let found: Vec<Option<FinishedView>> = submissions
                .iter()
                .map(|(k, digest)| state.finished(digest, &k.account().to_ss58()).cloned())
                .collect();
            if found.iter().all(Option::is_some) {
                let answers: Vec<FinishedView> = found.into_iter().flatten().collect();
                for f in &answers {
                    let blocks = f.finished_block.saturating_sub(f.reveal_block);
                    assert!(
                        blocks <= ANSWER_BLOCKS,
                        "{}: entry {} answered {blocks} blocks after its reveal: {:?}",
                        self.name,
                        f.entry,
                        f.result
                    );
                }
                return (answers, state);
            }
            assert!(
                Instant::now() < deadline,
                "{}: not every submission was answered; queue {:?}, current {:?}\n{}",
                self.name,
                state.queue,
                state.current,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Commit every attack from a fresh miner, wait for the answers, and check each is the
    /// attack's own.
    fn run_attacks(&mut self, attacks: &[Crafted]) -> StateFeed {
        let miners: Vec<Keypair> = attacks.iter().map(|_| self.miner()).collect();
        self.run_attacks_from(&miners.iter().collect::<Vec<_>>(), attacks)
    }

    /// [`Hill::run_attacks`] committed by the given miners.
    fn run_attacks_from(&mut self, miners: &[&Keypair], attacks: &[Crafted]) -> StateFeed {
        for (m, c) in miners.iter().zip(attacks) {
            self.chain
                .commit(m, &payload(&c.location, &c.digest, m))
                .unwrap();
        }
        let submissions: Vec<(&Keypair, Digest)> = miners
            .iter()
            .zip(attacks)
            .map(|(m, c)| (*m, c.digest))
            .collect();
        let (answers, state) = self.answers(&submissions);
        for (c, f) in attacks.iter().zip(&answers) {
            match &f.result {
                ResultView::Rejected {
                    code,
                    gate,
                    message,
                    ..
                } => {
                    assert_eq!(
                        (code.code(), gate.as_str()),
                        (c.code, c.gate.name()),
                        "{}: {}: {message}",
                        self.name,
                        c.name
                    );
                    assert!(
                        message.contains(c.phrase),
                        "{}: {}: {message:?} lacks {:?}",
                        self.name,
                        c.name,
                        c.phrase
                    );
                }
                other => panic!("{}: {} was not refused: {other:?}", self.name, c.name),
            }
            assert_eq!(
                f.retries, 0,
                "{}: {} was retried as our fault",
                self.name, c.name
            );
            eprintln!(
                "{}: {} → {} at {} in {} blocks",
                self.name,
                c.name,
                c.code,
                c.gate.name(),
                f.finished_block - f.reveal_block
            );
        }
        self.assert_no_infra_fault(&state);
        state
    }

    fn assert_no_infra_fault(&self, state: &StateFeed) {
        assert_eq!(
            state.counters.infra_faults,
            0,
            "{}: an attack was counted as our fault\n{}",
            self.name,
            self.log_tail()
        );
    }

    /// The next honest submission (a nudged copy of the genesis king) is dueled.
    fn honest_is_dueled(&mut self, seed: f64) -> FinishedView {
        let (location, digest) = workshop(self).honest(seed);
        let m = self.commit(&location, &digest);
        let (answers, state) = self.answers(&[(&m, digest)]);
        let f = answers.into_iter().next().unwrap();
        assert!(
            matches!(
                f.result,
                ResultView::KeptKing { .. } | ResultView::Crowned { .. }
            ),
            "{}: the honest submission was not dueled: {:?}",
            self.name,
            f.result
        );
        self.assert_no_infra_fault(&state);
        f
    }

    /// The closing report line, and the final memory check.
    fn finish(&mut self) {
        let rss = self.peak_rss();
        assert!(rss < PEAK_RSS_KIB, "{}: peak RSS {rss} KiB", self.name);
        eprintln!(
            "{}: peak RSS {rss} KiB (bound {PEAK_RSS_KIB}); {} polls of /api/state, slowest {:?}; \
             largest lag {} blocks",
            self.name, self.polls, self.slowest, self.max_lag
        );
    }

    /// Staging directories (`.<name>.koth-partial-…`) left in the validator's cache.
    fn staging_left(&self) -> Vec<String> {
        std::fs::read_dir(self.net.work_dir.join("cache"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.contains("koth-partial"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Hill {
    fn drop(&mut self) {
        let _ = self.validator.kill();
        let _ = self.validator.wait();
        if let Some((w, _)) = &mut self.worker {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

fn start_validator(net: &TinyNet, crown_delay_ms: Option<u64>) -> Child {
    let mut c = koth();
    c.args(["validator", "run", "--config"])
        .arg(&net.config_path)
        .env("KOTH_LOG", "warn")
        .env(WORKER_TOKEN_ENV, WORKER_TOKEN)
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(net.root.join("validator.log"))
                .unwrap(),
        );
    if let Some(ms) = crown_delay_ms {
        c.env("KOTH_FAULT_CROWN_DELAY_MS", ms.to_string());
    }
    c.spawn().unwrap()
}

/// `koth duel serve` on `port` with its cache in `<root>/<cache>`; returns once it accepts
/// connections.
fn start_worker(net: &TinyNet, port: u16, cache: &str) -> Child {
    let mut child = koth()
        .args(["duel", "serve", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--token-env", WORKER_TOKEN_ENV, "--competition"])
        .arg(&net.competition_path)
        .arg("--cache")
        .arg(net.root.join(cache))
        .env(WORKER_TOKEN_ENV, WORKER_TOKEN)
        .env("KOTH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(net.root.join(format!("{cache}.log"))).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the worker exited ({status}): {}",
                std::fs::read_to_string(net.root.join(format!("{cache}.log"))).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "the worker never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn workshop(hill: &Hill) -> Workshop<'_> {
    Workshop::new(&hill.net, hill.net.root.join("crafted"))
}

/// Stall by blame: failures the challenger's own files cause (a blob shorter than its
/// manifest, a blob deleted from under it, an index naming a missing shard, an index that is
/// not UTF-8) are the challenger's, answered at once with their codes; none pauses the queue.
#[test]
fn stall_by_blame_the_challengers_own_files_are_answered_at_once_never_retried() {
    let mut hill = Hill::start("stall", Setup::default());
    let shop = workshop(&hill);
    let attacks = vec![
        shop.short_blob(1.0),
        shop.missing_blob(2.0),
        shop.missing_shard_index(),
        shop.non_utf8_index(),
        shop.non_utf8_config(),
    ];
    drop(shop);
    let state = hill.run_attacks(&attacks);
    assert!(
        state.paused_until.is_none_or(|until| until <= state.block),
        "the queue is paused after the attacks: {state:?}"
    );
    hill.honest_is_dueled(3.0);
    hill.finish();
}

/// Memory: a 64 MiB `config.json` and a 64 MiB index (over a gigabyte each as parsed JSON) are
/// refused from their size before a byte is parsed, and a config declaring 10^12 layers is
/// refused before anything is sized by it; the process stays under the RSS bound.
#[test]
fn memory_oversized_files_and_declared_dimensions_are_refused_before_they_are_read() {
    let mut hill = Hill::start(
        "memory",
        Setup {
            size_cap_bytes: Some(256 << 20),
            ..Setup::default()
        },
    );
    let shop = workshop(&hill);
    let attacks = vec![
        shop.huge_config(64 << 20),
        shop.huge_index(64 << 20),
        shop.huge_dimensions(),
    ];
    drop(shop);
    hill.run_attacks(&attacks);
    hill.honest_is_dueled(4.0);
    hill.finish();
}

/// Hang: a FIFO where a blob or the manifest should be, and a blob that is a symlink to an
/// endless device, are refused from their type (opened non-blocking, no-follow, fstat'ed)
/// without waiting on them; the loop keeps ticking.
#[test]
fn hang_fifos_and_device_symlinks_are_refused_from_their_type_never_waited_on() {
    let mut hill = Hill::start("hang", Setup::default());
    let shop = workshop(&hill);
    let attacks = vec![
        shop.fifo_blob(5.0),
        shop.fifo_manifest(6.0),
        shop.symlink_to_device(7.0),
    ];
    drop(shop);
    hill.run_attacks(&attacks);
    hill.honest_is_dueled(8.0);
    hill.finish();
}

/// Locations are compared parsed: a sibling store that only shares the allowed store's text
/// prefix, and a location that climbs out of it with `..`, are refused without a fetch.
#[test]
fn location_a_text_prefix_or_dot_dot_does_not_pass_for_the_allowed_store() {
    let mut hill = Hill::start("location", Setup::default());
    let shop = workshop(&hill);
    let attacks = vec![shop.evil_sibling(9.0), shop.dot_dot_escape(10.0)];
    drop(shop);
    hill.run_attacks(&attacks);
    hill.honest_is_dueled(11.0);
    hill.finish();
}

/// Disk: a download that fails for the submission's own reasons (a blob of the right size but
/// other bytes, which is staged whole before its hash fails; a short blob) leaves no staging
/// directory in the validator's cache.
#[test]
fn disk_a_download_refused_as_the_submitters_fault_leaves_no_staging_behind() {
    let mut hill = Hill::start("disk", Setup::default());
    let shop = workshop(&hill);
    let attacks = vec![shop.corrupt_blob(12.0), shop.short_blob(13.0)];
    drop(shop);
    hill.run_attacks(&attacks);
    assert_eq!(
        hill.staging_left(),
        Vec::<String>::new(),
        "staging left behind"
    );
    hill.honest_is_dueled(14.0);
    hill.finish();
}

/// Send `head` (a request, possibly incomplete) on a new connection; the status line that comes
/// back within `wait`, if any.
fn send_head(addr: &str, head: &[u8], wait: Duration) -> (TcpStream, Option<String>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(head).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&got)
        .lines()
        .next()
        .map(str::to_owned)
        .filter(|l| !l.is_empty());
    (s, line)
}

/// HTTP: a peer holds every `/api/events` slot (64) and asks for one more (503, `Retry-After`),
/// holds 32 connections on request heads it never finishes (slowloris) and sends a 1 MiB
/// header; meanwhile `/api/state` keeps answering within the bound, and a submission made
/// while all of it is held is dueled.
#[test]
fn http_held_event_streams_slow_heads_and_huge_headers_do_not_silence_the_feed() {
    let mut hill = Hill::start("http", Setup::default());
    let addr = hill.feed_url.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for i in 0..koth_validator::http::MAX_SSE_SUBSCRIBERS {
        let (s, line) = send_head(
            &addr,
            b"GET /api/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
            FEED_ANSWER,
        );
        let line = line.unwrap_or_else(|| panic!("subscriber {i} got no answer"));
        assert!(line.contains("200"), "subscriber {i}: {line}");
        held.push(s);
        if i % 16 == 0 {
            hill.poll();
        }
    }
    let (_s, line) = send_head(
        &addr,
        b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n",
        FEED_ANSWER,
    );
    let line = line.expect("the subscriber over the cap got no answer");
    assert!(line.contains("503"), "over the cap: {line}");
    for _ in 0..32 {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /api/state HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .unwrap();
        held.push(s);
    }
    hill.poll();
    let mut huge = b"GET /api/state HTTP/1.1\r\nHost: x\r\nX-Huge: ".to_vec();
    huge.resize(huge.len() + (1 << 20), b'a');
    huge.extend_from_slice(b"\r\n\r\n");
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(FEED_ANSWER)).unwrap();
    // The server may close the connection before it has read the whole head.
    let _ = s.write_all(&huge);
    let mut buf = [0u8; 256];
    let answer = match s.read(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(_) => String::new(),
    };
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "a 1 MiB header was answered {answer:?}"
    );
    drop(s);
    hill.honest_is_dueled(15.0);
    // Everything is still held.
    assert_eq!(held.len(), koth_validator::http::MAX_SSE_SUBSCRIBERS + 32);
    hill.poll();
    drop(held);
    hill.finish();
}

/// `<root>/<name>.toml` of a fresh registered miner `name` (its key in the network's keystore)
/// that follows the validator's feed (`feed`) or, without one, the chain.
fn fresh_miner(hill: &mut Hill, name: &str, feed: Option<String>) -> std::path::PathBuf {
    let k = hill.miner();
    Keystore::new(&hill.net.keystore).insert(name, &k).unwrap();
    let train: toml::Table = toml::from_str(SHORT_TRAIN).unwrap();
    let file = koth_miner::config::MinerFile::local(
        name,
        &hill.net.store_url,
        (feed, 60),
        koth_miner::config::DataSection {
            bundle: "data/bundle.json".into(),
            holdout_windows: 32,
            seed: 1,
        },
        train,
    );
    let path = hill.net.root.join(format!("{name}.toml"));
    std::fs::write(&path, file.to_toml().unwrap()).unwrap();
    path
}

/// Run `cmd` to its end; its exit code, its stderr, and its peak RSS in KiB (`ru_maxrss` of
/// this one child, from `wait4`).
// The child is reaped by `wait4` (which also gives its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn run_measured(mut cmd: Command, log: &Path) -> (i32, String, u64) {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is a valid value to be overwritten by wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for the child this function spawned; `status` and `usage` are valid for
    // writes. The child is reaped here, so its `Child` is never waited on again.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4 failed");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (
        code,
        std::fs::read_to_string(log).unwrap_or_default(),
        usage.ru_maxrss as u64,
    )
}

/// A fresh miner process: `koth miner check` follows the king from the validator's feed, fetches
/// it by digest from the location the feed names and checks `dir` against it. The king it
/// reports (it fails if it cannot fetch the king).
fn fresh_miner_king(hill: &mut Hill, dir: &Path) -> Digest {
    let path = fresh_miner(hill, "fresh", Some(hill.feed_url.clone()));
    let out = koth()
        .args(["miner", "check", "--json", "--config"])
        .arg(&path)
        .arg(dir)
        .env("KOTH_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_else(|| {
        panic!(
            "the fresh miner printed nothing ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["king"].as_str().unwrap().parse().unwrap()
}

/// Shared stores: the king's owner deletes it after the crown. The validator copied it into its
/// own store (`[store] king_location`) and verified the copy before logging the crown — also
/// when it is SIGKILLed between the copy and the log, and copies again after the restart — so
/// the feed names the validator's copy: a fresh miner process fetches the king from there, and
/// the next duel, on a fresh eval worker process that has never seen the king, loads it.
#[test]
fn shared_store_a_king_whose_owner_deletes_it_stays_fetchable_for_workers_and_miners() {
    let mut hill = Hill::start(
        "king",
        Setup {
            remote_worker: true,
            king_store: Some("validator-kings"),
            ..Setup::default()
        },
    );
    let kings_dir = hill.net.root.join("validator-kings");
    let kings = format!("file://{}", kings_dir.display());
    // Alice trains a better model and publishes it into a store of her own (inside the allowed
    // one), which she will delete.
    let alice_dir = hill.net.store_dir.join("alice");
    let alice_store = format!("file://{}", alice_dir.display());
    let better_dir = hill.net.root.join("better");
    devkit::train_better(&hill.net.king_dir, &better_dir, 30, 32).unwrap();
    let better = put(&alice_store, &better_dir).unwrap();

    // The validator runs with a pause between the copy and the crown's log entry: it is
    // SIGKILLed there and restarted, and must copy again (idempotently) before it crowns.
    hill.validator.kill().unwrap();
    hill.validator.wait().unwrap();
    hill.validator = start_validator(&hill.net, Some(60_000));
    hill.wait_ready();
    let alice = hill.commit(&alice_store, &better);
    let copy_manifest = hostile::manifest_of(&kings_dir, &better);
    let deadline = Instant::now() + WAIT;
    loop {
        let state = hill.poll();
        let crowning = matches!(
            state.current.as_ref().map(|c| &c.phase),
            Some(PhaseView::Crowning { .. })
        );
        if crowning && copy_manifest.is_file() {
            break;
        }
        assert!(
            state.history.is_empty(),
            "alice was answered before the crown could be interrupted: {:?}",
            state.history
        );
        assert!(
            Instant::now() < deadline,
            "never saw the copy made mid-crown\n{}",
            hill.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    hill.validator.kill().unwrap(); // SIGKILL: the copy is made, the crown not logged
    hill.validator.wait().unwrap();
    hill.validator = start_validator(&hill.net, None);
    hill.wait_ready();
    let (answers, state) = hill.answers(&[(&alice, better)]);
    assert!(
        matches!(answers[0].result, ResultView::Crowned { reign: 1, .. }),
        "{:?}",
        answers[0].result
    );
    assert_eq!(state.counters.crowns, 1);
    assert!(state.counters.recoveries >= 2, "{:?}", state.counters);
    let king = state.king.clone().unwrap();
    assert_eq!(king.digest, better);
    assert_eq!(
        king.location.as_deref(),
        Some(kings.as_str()),
        "the feed names the validator's copy"
    );
    assert_eq!(
        answers[0].location.as_deref(),
        Some(alice_store.as_str()),
        "the history keeps what alice committed"
    );
    hill.assert_no_infra_fault(&state);

    // Alice deletes her store.
    std::fs::remove_dir_all(&alice_dir).unwrap();

    // A fresh miner follows the king from the feed and fetches it.
    let probe = hill.net.root.join("probe");
    hostile::variant(&hill.net.king_dir, &probe, 16.0);
    assert_eq!(fresh_miner_king(&mut hill, &probe), better);

    // A fresh worker (a new cache: it has never seen the king) takes over on the same port.
    let (mut old, port) = hill.worker.take().unwrap();
    old.kill().unwrap();
    old.wait().unwrap();
    hill.worker = Some((start_worker(&hill.net, port, "fresh-worker-cache"), port));
    let f = hill.honest_is_dueled(17.0);
    assert_eq!(f.retries, 0);
    assert!(
        hill.net
            .root
            .join("fresh-worker-cache")
            .join(better.hex())
            .is_dir(),
        "the fresh worker fetched the king"
    );
    hill.finish();
}

/// The miner side: a stranger's `config.json` declaring 10^12 layers must not exhaust a miner's
/// memory. The route it takes: a miner that follows the chain alone takes as king the newest
/// commitment of the hotkey the validator's weights pay, so the king's owner, after the crown,
/// commits such a checkpoint (the validator refuses it, `config_mismatch`, and keeps paying
/// them); after the next weights a fresh `koth miner once` on the chain fetches it as the king
/// and refuses it from the cap on the dimensions before anything is allocated.
#[test]
fn miner_side_a_kings_owner_cannot_exhaust_a_chain_following_miner_with_declared_dimensions() {
    let mut hill = Hill::start(
        "miner",
        Setup {
            weights_interval_blocks: Some(4),
            ..Setup::default()
        },
    );
    let better_dir = hill.net.root.join("better");
    devkit::train_better(&hill.net.king_dir, &better_dir, 30, 32).unwrap();
    let better = put(&hill.net.store_url, &better_dir).unwrap();
    let alice = hill.commit(&hill.net.store_url.clone(), &better);
    let (answers, _) = hill.answers(&[(&alice, better)]);
    assert!(
        matches!(answers[0].result, ResultView::Crowned { .. }),
        "{:?}",
        answers[0].result
    );
    // The owner commits a checkpoint whose config declares 10^12 layers.
    let shop = workshop(&hill);
    let bomb = shop.huge_dimensions();
    drop(shop);
    let state = hill.run_attacks_from(&[&alice], std::slice::from_ref(&bomb));
    let reveal = state
        .history
        .iter()
        .find(|f| f.digest == Some(bomb.digest))
        .unwrap()
        .reveal_block;
    // The validator sets weights (still paying alice) after that reveal.
    let deadline = Instant::now() + WAIT;
    loop {
        hill.poll();
        let set = hill
            .chain
            .weights()
            .unwrap()
            .iter()
            .filter(|w| w.validator_hotkey == hill.net.validator.account())
            .map(|w| w.set_block)
            .max();
        if set.is_some_and(|b| b >= reveal) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no weights after the bomb's reveal"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let config = fresh_miner(&mut hill, "chainfollower", None);
    let mut cmd = koth();
    cmd.args(["miner", "once", "--config"])
        .arg(&config)
        .env("KOTH_LOG", "info");
    let (code, stderr, rss) = run_measured(cmd, &hill.net.root.join("chainfollower.log"));
    eprintln!("miner: exit {code}, peak RSS {rss} KiB (bound {PEAK_RSS_KIB})");
    assert_ne!(code, 0, "the miner trained from the bomb: {stderr}");
    assert!(
        stderr.contains(&bomb.digest.to_string()) || stderr.contains(&bomb.digest.hex()),
        "the miner did not take the bomb as king: {stderr}"
    );
    assert!(
        stderr.contains("exceeds koth's cap"),
        "not refused from the cap on its dimensions: {stderr}"
    );
    assert!(rss < PEAK_RSS_KIB, "the miner's peak RSS is {rss} KiB");
    hill.honest_is_dueled(18.0);
    hill.finish();
}
