//! The dashboard's HTTP side: an `axum::Router` that the validator merges next to its feeds.
//!
//! Handlers read the validator through a [`HillReader`]: its published state snapshot, new events
//! from its log (folded into [`LogFacts`]) and the chain's accrued emission (cached for a few
//! seconds); they read the verdict records the pages show (checked against their digests, cached
//! once read) and hand all of it to the pure renderers in [`crate::render`]. All file and chain
//! I/O runs on the blocking pool. Every page carries a Content-Security-Policy that allows this
//! origin only.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use koth_core::competition::Competition;
use koth_core::Digest;
use koth_hill::reader::HillReader;

use crate::facts::LogFacts;
use crate::render::{self, EmissionView, PageData};
use crate::verdicts::{read_verdict, VerdictFacts, VerdictReadError};

/// The stylesheet and the script, compiled in: the dashboard fetches nothing from elsewhere.
pub const CSS: &str = include_str!("../static/koth.css");
pub const JS: &str = include_str!("../static/koth.js");
pub const ICON: &str = include_str!("../static/favicon.svg");

/// Only this origin, for everything; no inline script, no inline style.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How long a read of the chain's emission is reused.
const EMISSION_TTL: Duration = Duration::from_secs(3);
/// Events read from the log per query while catching up.
const LOG_PAGE: usize = 5_000;
/// What the dashboard shows: one validator's game.
#[derive(Clone)]
pub struct WebConfig {
    pub competition: Competition,
    /// The validator's state, log and chain (koth-validator's `ValidatorReader`).
    pub reader: Arc<dyn HillReader>,
}

struct Dashboard {
    cfg: WebConfig,
    facts: Mutex<LogFacts>,
    /// Verdict records read successfully (they never change: a record is named by its digest).
    verdicts: Mutex<BTreeMap<Digest, VerdictFacts>>,
    emission: Mutex<Option<(Instant, EmissionView)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The dashboard's routes: `/`, `/hotkey/{ss58}`, `/static/{koth.css,koth.js,favicon.svg}`, and an
/// HTML 404 for anything else. Merge it with the validator's feed router (which serves the
/// feeds the pages link to and the script subscribes to).
pub fn router(cfg: WebConfig) -> Router {
    let dash = Arc::new(Dashboard {
        cfg,
        facts: Mutex::new(LogFacts::default()),
        verdicts: Mutex::new(BTreeMap::new()),
        emission: Mutex::new(None),
    });
    Router::new()
        .route("/", get(index))
        .route("/hotkey/{key}", get(hotkey))
        .route("/static/koth.css", get(css))
        .route("/static/koth.js", get(js))
        .route("/static/favicon.svg", get(icon))
        .fallback(not_found)
        .with_state(dash)
}

fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}

async fn not_found() -> Response {
    html(
        StatusCode::NOT_FOUND,
        render::error_page("Not found", "There is no page at this address."),
    )
}

/// `?partial=1`: only the page's changing part (what the script swaps in).
fn wants_partial(uri: &Uri) -> bool {
    uri.query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "partial=1"))
}

/// The hotkey segment of `/hotkey/{ss58}`, as the address bar has it.
type HotkeySegment = Path<String>;

/// Which page to render.
enum PageKind {
    Overview,
    Hotkey(String),
}

async fn index(State(dash): State<Arc<Dashboard>>, uri: Uri) -> Response {
    render_page(dash, PageKind::Overview, wants_partial(&uri)).await
}

async fn hotkey(
    State(dash): State<Arc<Dashboard>>,
    key: Result<HotkeySegment, PathRejection>,
    uri: Uri,
) -> Response {
    let Ok(Path(key)) = key else {
        return html(
            StatusCode::BAD_REQUEST,
            render::error_page(
                "Bad address",
                "The hotkey in this address is not valid text; expected an SS58 address.",
            ),
        );
    };
    match dash.cfg.reader.canonical_hotkey(&key) {
        Ok(canonical) => render_page(dash, PageKind::Hotkey(canonical), wants_partial(&uri)).await,
        Err(e) => html(
            StatusCode::BAD_REQUEST,
            render::error_page("Bad address", &e.to_string()),
        ),
    }
}

async fn render_page(dash: Arc<Dashboard>, kind: PageKind, partial: bool) -> Response {
    let task = tokio::task::spawn_blocking(move || dash.render(&kind, partial));
    match task.await {
        Ok((status, body)) => html(status, body),
        Err(e) => {
            tracing::error!("dashboard render task failed: {e}");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                render::error_page(
                    "Internal error",
                    "The page could not be rendered; the validator's log has the details.",
                ),
            )
        }
    }
}

impl Dashboard {
    /// Fold the events logged since the last request into the facts.
    fn refresh_facts(&self, facts: &mut LogFacts) {
        loop {
            match self.cfg.reader.events_from(facts.last_seq + 1, LOG_PAGE) {
                Ok(events) => {
                    for e in &events {
                        facts.fold(e);
                    }
                    if events.len() < LOG_PAGE {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!("dashboard: {e}");
                    return;
                }
            }
        }
    }

    fn verdict_facts(
        &self,
        wanted: &[(Digest, String)],
    ) -> BTreeMap<Digest, Result<VerdictFacts, Arc<VerdictReadError>>> {
        let mut cache = lock(&self.verdicts);
        let mut out = BTreeMap::new();
        for (digest, path) in wanted {
            if let Some(f) = cache.get(digest) {
                out.insert(*digest, Ok(f.clone()));
                continue;
            }
            // A failure is not cached: the file may appear (or be restored) later.
            match read_verdict(std::path::Path::new(path), digest) {
                Ok(f) => {
                    cache.insert(*digest, f.clone());
                    out.insert(*digest, Ok(f));
                }
                Err(e) => {
                    out.insert(*digest, Err(Arc::new(e)));
                }
            }
        }
        out
    }

    fn emission(&self) -> EmissionView {
        let mut cached = lock(&self.emission);
        if let Some((at, view)) = cached.as_ref() {
            if at.elapsed() < EMISSION_TTL {
                return view.clone();
            }
        }
        let view = self.read_emission();
        *cached = Some((Instant::now(), view.clone()));
        view
    }

    fn read_emission(&self) -> EmissionView {
        match self.cfg.reader.emission() {
            Ok(None) => EmissionView::NotConfigured,
            Ok(Some(rows)) => EmissionView::Rows(rows),
            Err(e) => EmissionView::Unavailable(e.detail),
        }
    }

    fn render(&self, kind: &PageKind, partial: bool) -> (StatusCode, String) {
        let state = self.cfg.reader.state();
        let mut facts = lock(&self.facts);
        self.refresh_facts(&mut facts);
        let verdicts = self.verdict_facts(&render::needed_verdicts(&state, &facts));
        let emission = self.emission();
        let data = PageData {
            state: &state,
            competition: &self.cfg.competition,
            facts: &facts,
            verdicts: &verdicts,
            emission: &emission,
            now_unix_ms: now_ms(),
        };
        match kind {
            PageKind::Overview => (
                StatusCode::OK,
                if partial {
                    render::overview_live(&data)
                } else {
                    render::overview_page(&data)
                },
            ),
            PageKind::Hotkey(h) => {
                let page = if partial {
                    render::hotkey_live(&data, h)
                } else {
                    render::hotkey_page(&data, h)
                };
                match page {
                    Some(p) => (StatusCode::OK, p),
                    None => (
                        StatusCode::NOT_FOUND,
                        render::error_page(
                            "Unknown hotkey",
                            &format!(
                                "Neither this validator nor the chain knows the hotkey {h}: it has never submitted and is not registered."
                            ),
                        ),
                    ),
                }
            }
        }
    }
}
