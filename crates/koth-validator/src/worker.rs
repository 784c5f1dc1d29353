//! The remote eval worker (`koth duel serve`) and the validator's client for it.
//!
//! Protocol (HTTP/1.1, JSON):
//! - every request carries `Authorization: Bearer <token>`; anything else is 401;
//! - `POST /duel` with a [`DuelRequest`] runs one duel; while one runs, another is 409. The
//!   response streams JSON lines: `{"progress": BoundsAfterBatch}` after every batch, then one
//!   `{"verdict": Verdict}`, `{"challenger_fault": "…"}` (the challenger does not load, or its
//!   loss is not finite where the king's is) or `{"error": "…"}` (anything else);
//! - `DELETE /duel` cancels the running duel (404 when none runs);
//! - `GET /healthz` says whether a duel runs.
//!
//! The worker fetches both checkpoints by digest from their locations through the store (every
//! file verified), so it trusts nothing the validator did not pin by hash; it refuses a request
//! made for another competition file. For the validator, a worker that cannot be reached, drops
//! the connection, times out, reports an error or returns a verdict that does not match the
//! request ([`check_worker_verdict`]) is an infrastructure fault — never the miner's; only a
//! `challenger_fault` line is the miner's (`weights_invalid`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use koth_core::competition::Competition;
use koth_core::verdict::{BoundsAfterBatch, Verdict};
use koth_core::Digest;
use koth_data::Dataset;
use koth_store::{BlockingStore, CheckpointCache, GetOptions, Location, S3Options};

use crate::duel_run::{run_duel, DuelFailure, DuelSetup};
use crate::event::SeedMaterial;
use koth_duel::duel::{Progress, ProgressFn};

/// One duel to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuelRequest {
    pub competition_sha256: Digest,
    pub king: Digest,
    pub king_location: String,
    pub challenger: Digest,
    pub challenger_location: String,
    pub seed: SeedMaterial,
    /// The reign pool to take the king's losses from (king-loss reuse); absent: live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub king_pool: Option<crate::event::PoolSpec>,
}

/// One line of the response stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerLine {
    Progress(BoundsAfterBatch),
    Verdict(Box<Verdict>),
    /// The challenger's own failure (the sentence the miner reads).
    ChallengerFault(String),
    Error(String),
}

/// What `koth duel serve` needs.
pub struct WorkerConfig {
    pub token: String,
    pub competition: Competition,
    pub bundle_path: PathBuf,
    pub cache_dir: PathBuf,
    pub cache_budget_bytes: u64,
    pub s3: S3Options,
    pub device: String,
    pub dtype: String,
}

struct WorkerState {
    cfg: WorkerConfig,
    dataset: Mutex<Option<Dataset>>,
    /// The reign pool of the last king, scored once per reign.
    pools: crate::duel_run::PoolCache,
    /// Set while a duel runs; its cancel flag.
    running: Mutex<Option<Arc<AtomicBool>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("data bundle {path}: {message}")]
    Bundle { path: PathBuf, message: String },
    #[error("cache {path}: {message}")]
    Cache { path: PathBuf, message: String },
    #[error("the token is empty: give a secret bearer token")]
    EmptyToken,
    #[error("the worker's async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("--listen {listen}: {source}")]
    Listen {
        listen: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
}

/// Why a duel on a remote worker gave no answer: always our side (the worker, the network, a
/// timeout), never the miner's.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("worker client: {0}")]
    Client(String),
    #[error("worker {url} timed out")]
    TimedOut { url: String },
    #[error("worker {url} unreachable: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("worker {url} answered {status}: {body}")]
    Refused {
        url: String,
        status: reqwest::StatusCode,
        body: String,
    },
    #[error("worker {url}: the duel took longer than {timeout:?}")]
    TooLong { url: String, timeout: Duration },
    #[error("worker {url}: connection lost: {source}")]
    ConnectionLost {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("worker {url}: stream ended without a verdict")]
    StreamEnded { url: String },
    #[error("worker {url}: bad line: {source}")]
    BadLine {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("duel on worker {url} cancelled")]
    Cancelled { url: String },
    #[error("worker {url}: a line of its answer is longer than {max} bytes")]
    LineTooLong { url: String, max: usize },
    #[error("worker {url}: {message}")]
    Failed { url: String, message: String },
}

/// Longest line of a worker's answer the validator buffers (a verdict with every window's
/// losses is a few hundred KiB): a worker that never sends a newline cannot grow the
/// validator's memory without bound.
pub const MAX_WORKER_LINE_BYTES: usize = 32 << 20;

/// What a remote worker answered: a verdict, or the challenger's own failure.
enum RemoteAnswer {
    Verdict(Box<Verdict>),
    /// The sentence the miner reads.
    ChallengerFault(String),
}

/// A worker's verdict that does not answer the request it was sent for.
#[derive(Debug, thiserror::Error)]
pub enum VerdictMismatch {
    #[error("{what}: asked for {asked}, the verdict has {got}")]
    Field {
        what: &'static str,
        asked: String,
        got: String,
    },
    #[error(transparent)]
    Invalid(#[from] koth_duel::duel::InvalidVerdict),
    #[error("re-deciding the recorded windows: {0}")]
    Redecide(#[from] koth_duel::rule::DecideError),
}

/// The worker's router (bearer token required on every route).
pub fn worker_router(cfg: WorkerConfig) -> Result<Router, WorkerError> {
    if cfg.token.is_empty() {
        return Err(WorkerError::EmptyToken);
    }
    let ds = Dataset::open(&cfg.bundle_path).map_err(|e| WorkerError::Bundle {
        path: cfg.bundle_path.clone(),
        message: e.to_string(),
    })?;
    if ds.bundle_sha256() != cfg.competition.data.bundle_sha256 {
        return Err(WorkerError::Bundle {
            path: cfg.bundle_path.clone(),
            message: format!(
                "hashes to {}, the competition pins {}",
                ds.bundle_sha256(),
                cfg.competition.data.bundle_sha256
            ),
        });
    }
    CheckpointCache::open(&cfg.cache_dir, cfg.cache_budget_bytes).map_err(|e| {
        WorkerError::Cache {
            path: cfg.cache_dir.clone(),
            message: e.to_string(),
        }
    })?;
    let state = Arc::new(WorkerState {
        cfg,
        dataset: Mutex::new(Some(ds)),
        pools: Default::default(),
        running: Mutex::new(None),
    });
    Ok(Router::new()
        .route("/duel", post(start_duel).delete(cancel_duel))
        .route("/healthz", get(health))
        .with_state(state))
}

fn authorized(state: &WorkerState, headers: &HeaderMap) -> bool {
    let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(given) = v.strip_prefix("Bearer ") else {
        return false;
    };
    // Constant-time comparison: the token is a secret.
    let (a, b) = (given.as_bytes(), state.cfg.token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "missing or wrong bearer token\n",
    )
        .into_response()
}

async fn health(State(state): State<Arc<WorkerState>>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let busy = state.running.lock().map(|r| r.is_some()).unwrap_or(true);
    Json(serde_json::json!({"ok": true, "busy": busy})).into_response()
}

async fn cancel_duel(State(state): State<Arc<WorkerState>>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let flag = state.running.lock().ok().and_then(|r| r.clone());
    match flag {
        Some(f) => {
            f.store(true, Ordering::SeqCst);
            (StatusCode::OK, "cancelling\n").into_response()
        }
        None => (StatusCode::NOT_FOUND, "no duel is running\n").into_response(),
    }
}

/// Clears the running flag when the duel's task ends, however it ends.
struct RunningGuard(Arc<WorkerState>);
impl Drop for RunningGuard {
    fn drop(&mut self) {
        if let Ok(mut r) = self.0.running.lock() {
            *r = None;
        }
    }
}

async fn start_duel(
    State(state): State<Arc<WorkerState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let request: DuelRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("bad duel request: {e}\n")).into_response()
        }
    };
    if request.competition_sha256 != state.cfg.competition.sha256() {
        return (
            StatusCode::CONFLICT,
            format!(
                "this worker serves competition {}, the request is for {}\n",
                state.cfg.competition.sha256(),
                request.competition_sha256
            ),
        )
            .into_response();
    }
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let Ok(mut running) = state.running.lock() else {
            return (StatusCode::INTERNAL_SERVER_ERROR, "worker state poisoned\n").into_response();
        };
        if running.is_some() {
            return (StatusCode::CONFLICT, "a duel is already running\n").into_response();
        }
        *running = Some(cancel.clone());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<WorkerLine>(64);
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        let _guard = RunningGuard(st.clone());
        let line = match run_request(&st, &request, &cancel, &tx) {
            Ok(v) => WorkerLine::Verdict(Box::new(v)),
            Err(DuelFailure::Challenger(m)) => WorkerLine::ChallengerFault(m),
            Err(DuelFailure::Infra(e)) => WorkerLine::Error(e),
        };
        let _ = tx.blocking_send(line);
    });
    let stream = tokio_stream_from(rx).map(|line| {
        let mut s =
            serde_json::to_string(&line).unwrap_or_else(|_| "{\"error\":\"encode\"}".into());
        s.push('\n');
        Ok::<_, std::convert::Infallible>(s)
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

/// Pin `king` and unpin every other checkpoint: the worker keeps the king it was last asked to
/// duel against, and earlier kings become ordinary cache entries that the budget may evict
/// (pinning every king ever seen would fill the disk over a long game). Failures only cost
/// cache hits, so they are logged, not returned.
fn pin_only_the_king(cache: &CheckpointCache, king: &Digest) {
    if let Err(e) = cache.pin(king) {
        tracing::warn!(%king, "pinning the king: {e}");
    }
    match cache.entries() {
        Ok(entries) => {
            for old in entries.iter().filter(|e| e.pinned && &e.digest != king) {
                if let Err(e) = cache.unpin(&old.digest) {
                    tracing::warn!(digest = %old.digest, "unpinning an old king: {e}");
                }
            }
        }
        Err(e) => tracing::warn!("listing the cache: {e}"),
    }
}

fn run_request(
    st: &WorkerState,
    req: &DuelRequest,
    cancel: &AtomicBool,
    tx: &tokio::sync::mpsc::Sender<WorkerLine>,
) -> Result<Verdict, DuelFailure> {
    let infra = DuelFailure::Infra;
    let cfg = &st.cfg;
    let cache = CheckpointCache::open(&cfg.cache_dir, cfg.cache_budget_bytes)
        .map_err(|e| infra(format!("cache: {e}")))?;
    let fetch = |digest: &Digest, location: &str| -> Result<PathBuf, DuelFailure> {
        let loc: Location = location
            .parse()
            .map_err(|e| infra(format!("location {location:?}: {e}")))?;
        let store = BlockingStore::open(&loc, &cfg.s3)
            .map_err(|e| infra(format!("{location}: {e}")))?
            .with_deadline(koth_store::fetch_deadline(
                cfg.competition.intake.size_cap_bytes,
            ));
        cache
            .fetch(
                &store,
                digest,
                &GetOptions {
                    max_total_bytes: cfg.competition.intake.size_cap_bytes.max(1),
                    max_bytes_per_sec: None,
                },
            )
            .map_err(|e| infra(format!("fetching {digest} from {location}: {e}")))
    };
    let king_dir = fetch(&req.king, &req.king_location)?;
    pin_only_the_king(&cache, &req.king);
    let chal_dir = fetch(&req.challenger, &req.challenger_location)?;
    let ds_guard = st
        .dataset
        .lock()
        .map_err(|_| infra("worker dataset poisoned".to_string()))?;
    let Some(dataset) = ds_guard.as_ref() else {
        return Err(infra("no dataset".into()));
    };
    let setup = DuelSetup {
        competition: &cfg.competition,
        dataset,
        bundle_path: &cfg.bundle_path,
        device: &cfg.device,
        dtype: &cfg.dtype,
        // The worker holds no validator secret: validator.toml refuses a remote worker for a
        // bundle with private sources.
        holdout_secret: None,
        king_pool: req.king_pool.as_ref().map(|spec| (spec, &st.pools)),
    };
    let mut sink = ProgressFn(|p: &Progress| {
        // A closed channel means the client went away: stop.
        tx.blocking_send(WorkerLine::Progress(p.bounds)).is_ok() && !cancel.load(Ordering::SeqCst)
    });
    run_duel(
        &setup,
        (&req.king, &king_dir),
        (&req.challenger, &chal_dir),
        &req.seed,
        &mut sink,
    )
    .map_err(DuelFailure::from)
}

/// Run `request` on the worker at `url`; `progress` sees every batch and returns `false` to
/// cancel. `Err(DuelFailure::Challenger)` only when the worker reports the challenger's own
/// failure; everything else that goes wrong (unreachable, refused, dropped, timed out, the
/// worker's own error) is `Err(DuelFailure::Infra)`. The verdict is returned as sent: the caller
/// checks it against the request with [`check_worker_verdict`].
pub fn remote_duel(
    url: &str,
    token: &str,
    request: &DuelRequest,
    timeout: Duration,
    progress: &mut dyn FnMut(&BoundsAfterBatch) -> bool,
) -> Result<Verdict, DuelFailure> {
    match remote_duel_lines(url, token, request, timeout, progress) {
        Ok(RemoteAnswer::Verdict(v)) => Ok(*v),
        Ok(RemoteAnswer::ChallengerFault(m)) => Err(DuelFailure::Challenger(m)),
        Err(e) => Err(DuelFailure::Infra(e.to_string())),
    }
}

fn remote_duel_lines(
    url: &str,
    token: &str,
    request: &DuelRequest,
    timeout: Duration,
    progress: &mut dyn FnMut(&BoundsAfterBatch) -> bool,
) -> Result<RemoteAnswer, RemoteError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RemoteError::Client(format!("runtime: {e}")))?;
    let url_of = || url.to_string();
    let deadline = Instant::now() + timeout;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| RemoteError::Client(e.to_string()))?;
        let endpoint = format!("{url}/duel");
        let resp = tokio::time::timeout_at(
            deadline.into(),
            client
                .post(&endpoint)
                .bearer_auth(token)
                .json(request)
                .send(),
        )
        .await
        .map_err(|_| RemoteError::TimedOut { url: url_of() })?
        .map_err(|source| RemoteError::Unreachable {
            url: url_of(),
            source,
        })?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(RemoteError::Refused {
                url: url_of(),
                status,
                body: text.trim().to_string(),
            });
        }
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        let mut scanned = 0usize;
        loop {
            let next = tokio::time::timeout_at(deadline.into(), body.next())
                .await
                .map_err(|_| RemoteError::TooLong {
                    url: url_of(),
                    timeout,
                });
            let chunk = match next {
                Ok(Some(Ok(c))) => c,
                Ok(Some(Err(source))) => {
                    return Err(RemoteError::ConnectionLost {
                        url: url_of(),
                        source,
                    })
                }
                Ok(None) => return Err(RemoteError::StreamEnded { url: url_of() }),
                Err(e) => {
                    cancel_remote(&client, url, token).await;
                    return Err(e);
                }
            };
            buf.extend_from_slice(&chunk);
            // Only the bytes after `scanned` can hold a newline not seen yet (no rescans of a
            // long unfinished line).
            while let Some(pos) = buf[scanned..]
                .iter()
                .position(|b| *b == b'\n')
                .map(|p| p + scanned)
            {
                scanned = 0;
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let parsed: WorkerLine =
                    serde_json::from_slice(&line).map_err(|source| RemoteError::BadLine {
                        url: url_of(),
                        source,
                    })?;
                match parsed {
                    WorkerLine::Progress(b) => {
                        if !progress(&b) {
                            cancel_remote(&client, url, token).await;
                            return Err(RemoteError::Cancelled { url: url_of() });
                        }
                    }
                    WorkerLine::Verdict(v) => return Ok(RemoteAnswer::Verdict(v)),
                    WorkerLine::ChallengerFault(m) => return Ok(RemoteAnswer::ChallengerFault(m)),
                    WorkerLine::Error(message) => {
                        return Err(RemoteError::Failed {
                            url: url_of(),
                            message,
                        })
                    }
                }
            }
            // What is left is one unfinished line.
            scanned = buf.len();
            if buf.len() > MAX_WORKER_LINE_BYTES {
                cancel_remote(&client, url, token).await;
                return Err(RemoteError::LineTooLong {
                    url: url_of(),
                    max: MAX_WORKER_LINE_BYTES,
                });
            }
        }
    })
}

/// Check a worker's verdict against the request it answers and the competition, before the
/// validator logs it: the competition file, both digests, the seed material, the data bundle,
/// the rule, the effect floor and the batch size must be the ones asked for; the record must be
/// well formed (window vectors of one length hashing to their digest, sizes in bounds); and the
/// competition's rule run over the recorded per-window losses, batch by batch, must reach the
/// recorded decision after the recorded number of windows. Any mismatch is an error naming the
/// field: the shell treats it as an infrastructure fault (a misconfigured or broken worker is
/// ours, never the miner's).
pub fn check_worker_verdict(
    request: &DuelRequest,
    competition: &Competition,
    v: &Verdict,
) -> Result<(), VerdictMismatch> {
    fn same<T: PartialEq + std::fmt::Debug>(
        what: &'static str,
        asked: T,
        got: T,
    ) -> Result<(), VerdictMismatch> {
        if asked == got {
            Ok(())
        } else {
            Err(VerdictMismatch::Field {
                what,
                asked: format!("{asked:?}"),
                got: format!("{got:?}"),
            })
        }
    }
    same(
        "competition sha256",
        Some(request.competition_sha256),
        v.competition_sha256,
    )?;
    same(
        "competition sha256",
        competition.sha256(),
        request.competition_sha256,
    )?;
    same("king digest", request.king, v.king.digest)?;
    same("challenger digest", request.challenger, v.challenger.digest)?;
    let seed = crate::duel_run::seed_string(&request.seed);
    same(
        "seed material",
        seed.as_str(),
        v.sample.seed_material.as_str(),
    )?;
    same(
        "data bundle sha256",
        competition.data.bundle_sha256,
        v.sample.bundle_sha256,
    )?;
    same("seq_len", competition.data.seq_len, v.sample.seq_len)?;
    let (spec, floor) = crate::duel_run::rule_of(competition);
    same("rule", spec, v.rule)?;
    same("effect floor", floor, v.effect_floor)?;
    same(
        "batch size",
        competition.duel.batch_size,
        v.scoring.batch_size,
    )?;
    // The king's losses come from the reign pool the request named (seed and size), or from
    // scoring the king live when it named none.
    same(
        "king pool (seed material, windows)",
        request.king_pool.as_ref().map(|p| {
            (
                p.seed_material.clone(),
                u64::from(p.batches) * u64::from(competition.duel.batch_size),
            )
        }),
        v.king_pool
            .as_ref()
            .map(|p| (p.seed_material.clone(), p.windows)),
    )?;
    let boot_seed = koth_duel::rule::bootstrap_seed(&seed);
    if matches!(spec, koth_core::verdict::RuleSpec::Bootstrap { .. }) {
        same("bootstrap seed", Some(boot_seed), v.bootstrap_seed)?;
    }
    koth_duel::duel::check_verdict(v)?;
    let w = &v.windows;
    let diffs: Vec<f64> = w
        .king
        .iter()
        .zip(&w.challenger)
        .map(|(&k, &c)| f64::from(k) - f64::from(c))
        .collect();
    let king: Vec<f64> = w.king.iter().map(|&k| f64::from(k)).collect();
    let report = koth_duel::rule::decide(
        &spec,
        floor,
        &diffs,
        Some(&king),
        competition.duel.batch_size.max(1) as usize,
        boot_seed,
    )?;
    same(
        "decision over the recorded windows",
        report.decision,
        v.outcome.decision,
    )?;
    same("windows used", report.n_used, v.outcome.n_used)
}

async fn cancel_remote(client: &reqwest::Client, url: &str, token: &str) {
    let _ = client
        .delete(format!("{url}/duel"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
}

/// `koth duel serve`: serve until SIGINT/SIGTERM.
pub fn serve(listen: std::net::SocketAddr, cfg: WorkerConfig) -> Result<(), WorkerError> {
    let router = worker_router(cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(WorkerError::Runtime)?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| WorkerError::Listen { listen, source })?;
        tracing::info!(%listen, "eval worker serving");
        let listener = crate::http::CappedListener::new(listener, crate::http::MAX_CONNECTIONS);
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(WorkerError::Serve)
    })
}

#[cfg(test)]
mod pin_tests {
    use super::*;

    #[test]
    fn a_new_king_unpins_the_old_one() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = CheckpointCache::open(tmp.path(), 0).unwrap();
        let (old, new) = (Digest::of(b"old king"), Digest::of(b"new king"));
        for d in [old, new] {
            std::fs::create_dir_all(cache.path_of(&d)).unwrap();
            std::fs::write(cache.path_of(&d).join("config.json"), b"{}").unwrap();
        }
        pin_only_the_king(&cache, &old);
        pin_only_the_king(&cache, &new);
        let pinned: Vec<Digest> = cache
            .entries()
            .unwrap()
            .into_iter()
            .filter(|e| e.pinned)
            .map(|e| e.digest)
            .collect();
        assert_eq!(pinned, vec![new]);
        // With a zero budget the old king is now evictable; the new one is not.
        cache.evict_to_budget(None).unwrap();
        assert!(!cache.contains(&old));
        assert!(cache.contains(&new));
    }
}
