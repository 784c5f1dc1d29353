//! The validator's HTTP feeds: `/api/state`, `/api/events` (server-sent events),
//! `/dashboard.json`, `/metrics` (Prometheus text) and `/healthz`.
//!
//! The shell publishes into a [`FeedHub`] after every event it logs (a snapshot of the state and
//! the logged event); the handlers only read it, so a slow client never slows the validator.
//! [`api_router`] is a plain `axum::Router` so the binary can merge a dashboard's pages into it.

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::stream::{self, Stream, StreamExt};
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};

use crate::log::LoggedEvent;
use crate::state::ValidatorState;

/// Events an SSE client may fall behind by before it is told to reconnect (and catch up from
/// the log with `Last-Event-ID`).
const SSE_BUFFER: usize = 4096;
/// Most events replayed from the log to a reconnecting client in one go.
const CATCH_UP_LIMIT: usize = 10_000;
/// Most `/api/events` subscribers at once; one more is answered 503 with `Retry-After`, so
/// subscribers cannot pile up without bound.
pub const MAX_SSE_SUBSCRIBERS: usize = 64;
/// Most log catch-ups (`Last-Event-ID` replays, up to [`CATCH_UP_LIMIT`] events read from disk)
/// running at once; one more is answered 503, so reconnect storms cannot turn into disk reads
/// without bound.
pub const MAX_CONCURRENT_CATCH_UPS: usize = 2;
/// Most connections one HTTP port serves at once ([`CappedListener`]); further connections wait
/// in the kernel's backlog until one closes.
pub const MAX_CONNECTIONS: usize = 256;

/// What the shell shares with the HTTP handlers.
pub struct FeedHub {
    state: RwLock<Arc<ValidatorState>>,
    events: broadcast::Sender<Arc<LoggedEvent>>,
    log_path: PathBuf,
    catch_ups: Arc<Semaphore>,
}

pub type SharedFeed = Arc<FeedHub>;

impl FeedHub {
    pub fn new(state: ValidatorState, log_path: PathBuf) -> SharedFeed {
        let (events, _) = broadcast::channel(SSE_BUFFER);
        Arc::new(FeedHub {
            state: RwLock::new(Arc::new(state)),
            events,
            log_path,
            catch_ups: Arc::new(Semaphore::new(MAX_CONCURRENT_CATCH_UPS)),
        })
    }

    /// How many `/api/events` streams are open.
    pub fn subscribers(&self) -> usize {
        self.events.receiver_count()
    }

    /// Called by the shell after an event was logged and applied.
    pub fn publish(&self, state: ValidatorState, logged: LoggedEvent) {
        if let Ok(mut s) = self.state.write() {
            *s = Arc::new(state);
        }
        // No subscriber is not an error.
        let _ = self.events.send(Arc::new(logged));
    }

    pub fn snapshot(&self) -> Arc<ValidatorState> {
        match self.state.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The feeds as a router with its state applied; merge it with other routers freely.
pub fn api_router(hub: SharedFeed) -> Router {
    Router::new()
        .route("/api/state", get(api_state))
        .route("/api/events", get(api_events))
        .route("/dashboard.json", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(hub)
}

async fn api_state(State(hub): State<SharedFeed>) -> Json<crate::feed::StateFeed> {
    Json(crate::feed::api_state(&hub.snapshot()))
}

async fn dashboard(State(hub): State<SharedFeed>) -> Json<crate::feed::DashboardFeed> {
    Json(crate::feed::dashboard_json(&hub.snapshot()))
}

async fn metrics(State(hub): State<SharedFeed>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::feed::metrics_text(&hub.snapshot()),
    )
        .into_response()
}

async fn healthz(State(hub): State<SharedFeed>) -> Response {
    let s = hub.snapshot();
    (
        StatusCode::OK,
        Json(serde_json::json!({"ok": true, "block": s.block})),
    )
        .into_response()
}

fn to_sse(logged: &LoggedEvent) -> SseEvent {
    let data = serde_json::to_string(&logged.event).unwrap_or_else(|_| "null".to_string());
    SseEvent::default()
        .id(logged.seq.to_string())
        .event(logged.event.kind())
        .data(data)
}

/// 503 with a `Retry-After`, naming the limit that was hit.
fn busy(what: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "5")],
        what,
    )
        .into_response()
}

async fn api_events(State(hub): State<SharedFeed>, headers: HeaderMap) -> Response {
    if hub.subscribers() >= MAX_SSE_SUBSCRIBERS {
        return busy(format!(
            "{MAX_SSE_SUBSCRIBERS} event streams are open already; retry later"
        ));
    }
    let last_id: Option<i64> = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let permit = match last_id {
        Some(_) => match hub.catch_ups.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                return busy(format!(
                    "{MAX_CONCURRENT_CATCH_UPS} clients are catching up from the log already; retry later"
                ))
            }
        },
        None => None,
    };
    event_stream(hub, last_id, permit).await.into_response()
}

async fn event_stream(
    hub: SharedFeed,
    last_id: Option<i64>,
    catch_up_permit: Option<OwnedSemaphorePermit>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    // Subscribe before catching up so nothing falls between the two.
    let rx = hub.events.subscribe();
    let mut backlog = Vec::new();
    if let Some(last) = last_id {
        let path = hub.log_path.clone();
        let read = tokio::task::spawn_blocking(move || {
            crate::log::open_read_only(&path).and_then(|l| l.read_from(last + 1, CATCH_UP_LIMIT))
        })
        .await;
        if let Ok(Ok(events)) = read {
            backlog = events;
        }
    }
    drop(catch_up_permit);
    let after = backlog.last().map(|e| e.seq).or(last_id).unwrap_or(0);
    let backlog = stream::iter(backlog.into_iter().map(|e| Ok(to_sse(&e))));
    let live = stream::unfold(rx, move |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) if e.seq > after => return Some((Ok(to_sse(&e)), rx)),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // The client fell behind the buffer: end the stream; it reconnects with
                    // Last-Event-ID and catches up from the log.
                    return None;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(backlog.chain(live)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// A TCP listener that serves at most `max` connections at once: `accept` waits for one of them
/// to close first (the rest wait in the kernel's backlog), so a peer that opens connections
/// without end cannot exhaust the process's file descriptors or memory. Use it with
/// `axum::serve(CappedListener::new(listener, MAX_CONNECTIONS), router)`.
pub struct CappedListener {
    inner: tokio::net::TcpListener,
    permits: Arc<Semaphore>,
    quiet_limit: Option<Duration>,
}

impl CappedListener {
    pub fn new(inner: tokio::net::TcpListener, max: usize) -> Self {
        CappedListener {
            inner,
            permits: Arc::new(Semaphore::new(max.max(1))),
            quiet_limit: None,
        }
    }

    /// Close a connection on which the server has written nothing for `limit` (since it was
    /// accepted or since its last write): a peer that sends a request's head byte by byte
    /// (slowloris), or holds an idle keep-alive connection, frees its slot after `limit`. Only
    /// for ports whose every answer starts at once and whose streams write at least every
    /// `limit` (the feeds: SSE keep-alives every 15 s); not for the eval worker, whose first
    /// progress line may take longer than any such limit.
    pub fn with_quiet_limit(mut self, limit: Duration) -> Self {
        self.quiet_limit = Some(limit);
        self
    }
}

/// Quiet time after which the feeds' port closes a connection ([`CappedListener::with_quiet_limit`]).
pub const FEED_QUIET_LIMIT: Duration = Duration::from_secs(60);

/// A connection of a [`CappedListener`]; its slot is freed when it is dropped.
pub struct CappedStream {
    stream: tokio::net::TcpStream,
    _slot: OwnedSemaphorePermit,
    /// `(limit, the deadline)`: reset by every write.
    quiet: Option<(Duration, std::pin::Pin<Box<tokio::time::Sleep>>)>,
}

impl axum::serve::Listener for CappedListener {
    type Io = CappedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed, so acquiring only waits.
        let slot = loop {
            if let Ok(p) = self.permits.clone().acquire_owned().await {
                break p;
            }
        };
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let quiet = self
            .quiet_limit
            .map(|limit| (limit, Box::pin(tokio::time::sleep(limit))));
        (
            CappedStream {
                stream,
                _slot: slot,
                quiet,
            },
            addr,
        )
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl tokio::io::AsyncRead for CappedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some((limit, deadline)) = &mut self.quiet {
            if deadline.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("nothing was answered on this connection for {limit:?}"),
                )));
            }
        }
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CappedStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let written = std::pin::Pin::new(&mut self.stream).poll_write(cx, buf);
        if let (std::task::Poll::Ready(Ok(n)), Some((limit, deadline))) =
            (&written, &mut self.quiet)
        {
            if *n > 0 {
                deadline
                    .as_mut()
                    .reset(tokio::time::Instant::now() + *limit);
            }
        }
        written
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
