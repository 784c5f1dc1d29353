//! The loopback node: `scripts/subtensor/loopback_node.py`, a one-subnet test double of a
//! subtensor node whose every storage answer is SCALE-encoded by Bittensor's Python SDK from
//! the pinned runtime metadata, started here as a child process and stopped by PID when
//! dropped. koth's tests play whole rounds against it; it is also a way to try a validator and
//! a miner configured for subtensor without a node (docs/BITTENSOR.md).
//!
//! It needs a source checkout (the script and the metadata live in the repository) and the
//! SDK's Python (`scripts/bittensor-venv.sh`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::chain::DrandConfig;

/// The repository root of this source checkout.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    #[error("scripts/bittensor-venv.sh: {0}")]
    Venv(String),
    #[error("starting the loopback node: {0}")]
    Start(String),
}

/// The Python with bittensor==10.5.0, from `scripts/bittensor-venv.sh` (which installs it from
/// PyPI when missing).
pub fn bittensor_python() -> Result<PathBuf, LoopbackError> {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/bittensor-venv.sh"))
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| LoopbackError::Venv(e.to_string()))?;
    if !out.status.success() {
        return Err(LoopbackError::Venv(format!("exited with {}", out.status)));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .ok_or_else(|| LoopbackError::Venv("printed no python".into()))
}

/// How to start the node.
#[derive(Debug, Clone)]
pub struct LoopbackOptions {
    /// The chain state (subnet parameters, neurons, ...): the schema is in the script's header.
    pub state: serde_json::Value,
    /// Seconds per block (0: blocks only on `koth_produceBlocks`).
    pub block_time_s: f64,
    /// Blocks the finalized head lags the best block.
    pub finality_lag: u64,
    /// `Drand.LastStoredRound` at genesis; it grows by one per block. The node holds drand
    /// quicknet's published round-1000 signature, so timelocks to round 1000 reveal once this
    /// reaches it.
    pub drand_start_round: u64,
    /// Where the state file and the node's log go.
    pub dir: PathBuf,
}

/// A running loopback node; stopped (SIGTERM by PID, then reaped) when dropped.
pub struct LoopbackNode {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl LoopbackNode {
    pub fn start(python: &Path, opts: &LoopbackOptions) -> Result<Self, LoopbackError> {
        let start = |m: String| LoopbackError::Start(m);
        std::fs::create_dir_all(&opts.dir).map_err(|e| start(e.to_string()))?;
        let state = opts.dir.join("loopback-state.json");
        std::fs::write(
            &state,
            serde_json::to_vec_pretty(&opts.state).unwrap_or_default(),
        )
        .map_err(|e| start(format!("{}: {e}", state.display())))?;
        let log = opts.dir.join("loopback-node.log");
        let log_file =
            std::fs::File::create(&log).map_err(|e| start(format!("{}: {e}", log.display())))?;
        let repo = repo_root();
        let mut child = Command::new(python)
            .arg(repo.join("scripts/subtensor/loopback_node.py"))
            .args(["--port", "0"])
            .arg("--state")
            .arg(&state)
            .arg("--metadata")
            .arg(repo.join("crates/koth-subtensor/tests/fixtures/metadata.scale"))
            .args(["--block-time", &opts.block_time_s.to_string()])
            .args(["--finality-lag", &opts.finality_lag.to_string()])
            .args(["--drand-start-round", &opts.drand_start_round.to_string()])
            .args(["--drand-rounds-per-block", "1"])
            // drand quicknet's published round-1000 pulse.
            .arg("--drand-fixture")
            .arg(repo.join("crates/koth-timelock/tests/fixtures/quicknet.json"))
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|e| start(format!("{}: {e}", python.display())))?;
        // The node prints `LISTENING <port>` once it serves; a node that never does (a broken
        // venv, a hung import) is given up after a minute rather than waited on forever.
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(stdout).read_line(&mut line);
                let _ = tx.send(line);
            });
        }
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| "(nothing within 60 s)".into());
        let node = |port| LoopbackNode {
            child,
            port,
            log: log.clone(),
        };
        match line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
        {
            Some(port) => Ok(node(port)),
            None => {
                let n = node(0);
                Err(start(format!(
                    "it printed {line:?} instead of LISTENING <port>; its log:\n{}",
                    n.log_text()
                )))
            }
        }
    }

    /// `ws://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The node's log so far: every extrinsic accepted, refused or failed, with the reason.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for LoopbackNode {
    fn drop(&mut self) {
        // SIGTERM by PID; SIGKILL if it has not exited within five seconds.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A drand clock (quicknet's key, a long period) in which `now_unix_secs` lies half-way into
/// round 1000, the round whose published signature the node holds: a commitment timelocked
/// within the next days targets round 1000 ([`koth_timelock::commitment_reveal_round`]).
pub fn drand_at_round_1000(now_unix_secs: u64) -> DrandConfig {
    let period = 1_000_000;
    DrandConfig {
        genesis_time: now_unix_secs.saturating_sub(1000 * period + period / 2),
        period,
    }
}
