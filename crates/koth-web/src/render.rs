//! The pages, as pure functions of what the validator knows: its state, the facts folded from
//! its event log, the verdict records read for the lineage and the latest duel, and the chain's
//! accrued emission. No I/O here, so every page is testable without a network.
//!
//! Each page is a complete HTML document that works without JavaScript; its changing part sits
//! in `<main id="live">`, which the page's script re-fetches (`?partial=1`) when `/api/events`
//! reports an event.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use koth_core::competition::{Competition, Delta, DuelTest, RewardPolicy};
use koth_core::Digest;
use koth_hill::event::{Gate, Outcome};
use koth_hill::reward::reward_shares;
use koth_hill::state::{
    Entry, Finished, GateRecord, GateResult, Phase, QueueClass, Reign, ValidatorState,
};

use crate::facts::{DuelTrace, LogFacts};
use crate::html::{duration_ms, esc, num, short_digest, short_key, signed, url_segment, utc};
use crate::svg::{self, Chart, HLine, Series};
use crate::verdicts::{VerdictFacts, VerdictReadError};

pub use koth_hill::reader::EmissionRow;

/// The chain's emission as far as the dashboard could read it.
#[derive(Debug, Clone, PartialEq)]
pub enum EmissionView {
    /// No chain handle was given to the dashboard.
    NotConfigured,
    /// Reading the chain failed; the reason is shown instead of numbers.
    Unavailable(String),
    Rows(Vec<EmissionRow>),
}

impl EmissionView {
    fn for_hotkey(&self, hotkey: &str) -> Option<&EmissionRow> {
        match self {
            EmissionView::Rows(rows) => rows.iter().find(|r| r.hotkey == hotkey),
            _ => None,
        }
    }
}

/// Rao per token (the chain's unit: 10⁹ rao = 1 token).
const RAO_PER_TOKEN: f64 = 1e9;

/// Everything a page is rendered from.
pub struct PageData<'a> {
    pub state: &'a ValidatorState,
    pub competition: &'a Competition,
    pub facts: &'a LogFacts,
    /// Verdict records by their digest (from [`needed_verdicts`]); an `Err` says why a record
    /// could not be used.
    pub verdicts: &'a BTreeMap<Digest, Result<VerdictFacts, Arc<VerdictReadError>>>,
    pub emission: &'a EmissionView,
    pub now_unix_ms: i64,
}

/// The verdict records (digest, path) the pages want: the one that measured each reign's
/// held-out loss, the latest duel against the king, and the latest duel shown in the live
/// section.
pub fn needed_verdicts(state: &ValidatorState, facts: &LogFacts) -> Vec<(Digest, String)> {
    let mut out: BTreeMap<Digest, String> = BTreeMap::new();
    for r in &state.reigns {
        let v = match r.entry {
            Some(e) => facts.crowning_verdict.get(&e),
            None => facts.first_duel_vs.get(&r.digest),
        };
        if let Some(v) = v {
            out.insert(v.verdict_digest, v.verdict_path.clone());
        }
        if let Some(v) = facts.latest_duel_vs.get(&r.digest) {
            out.insert(v.verdict_digest, v.verdict_path.clone());
        }
    }
    if let Some(v) = facts.duel.as_ref().and_then(|d| d.finished.as_ref()) {
        out.insert(v.verdict_digest, v.verdict_path.clone());
    }
    out.into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// Documents

fn document(title: &str, header_extra: &str, live: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/koth.css">
<script src="/static/koth.js" defer></script>
</head>
<body>
<header class="top"><a class="brand" href="/">koth</a>{header_extra}<span id="conn" class="conn" title="live updates from /api/events">static page</span></header>
<main id="live">
{live}
</main>
<footer>Feeds: <a href="/api/state">/api/state</a> · <a href="/api/events">/api/events</a> (server-sent events) · <a href="/dashboard.json">/dashboard.json</a> · <a href="/metrics">/metrics</a></footer>
</body>
</html>
"#,
        title = esc(title),
    )
}

/// An error page (404, 400): a full document with a sentence and a way back.
pub fn error_page(title: &str, message: &str) -> String {
    document(
        title,
        "",
        &format!(
            r#"<section class="card error"><h1>{}</h1><p>{}</p><p><a href="/">Back to the hill</a></p></section>"#,
            esc(title),
            esc(message)
        ),
    )
}

fn header_extra(d: &PageData) -> String {
    format!(
        r#"<span class="game">{name} · netuid {netuid}</span><span class="block" id="block">block {block}</span>"#,
        name = esc(&d.competition.name),
        netuid = d.competition.netuid,
        block = d.state.block,
    )
}

/// `/`: the whole hill.
pub fn overview_page(d: &PageData) -> String {
    document(
        &format!("koth — {}", d.competition.name),
        &header_extra(d),
        &overview_live(d),
    )
}

/// The changing part of `/` (what `/?partial=1` returns).
pub fn overview_live(d: &PageData) -> String {
    let mut out = String::new();
    if d.state.rules.is_none() {
        out.push_str(
            r#"<section class="card"><p>The validator has not started a game yet.</p></section>"#,
        );
        return out;
    }
    if d.state.is_paused() {
        let _ = write!(
            out,
            r#"<p class="notice">The queue is paused until block {} after an infrastructure fault (ours, never charged to a miner).</p>"#,
            d.state.paused_until.unwrap_or(0)
        );
    }
    out.push_str(r#"<div class="grid2">"#);
    out.push_str(&king_section(d));
    out.push_str(&duel_section(d));
    out.push_str("</div>");
    out.push_str(&lineage_section(d));
    out.push_str(&queue_section(d, None));
    out.push_str(&history_section(d, None));
    out.push_str(&rewards_section(d));
    out
}

// ---------------------------------------------------------------------------------------------
// Pieces

fn hotkey_link(hotkey: &str) -> String {
    format!(
        r#"<a class="hotkey" href="/hotkey/{}" title="{}">{}</a>"#,
        url_segment(hotkey),
        esc(hotkey),
        esc(&short_key(hotkey))
    )
}

fn digest_cell(d: &Digest) -> String {
    let s = d.to_string();
    format!(
        r#"<code class="digest" title="{}">{}</code>"#,
        esc(&s),
        esc(&short_digest(&s))
    )
}

fn when(unix_ms: Option<i64>, now: i64) -> String {
    match unix_ms {
        Some(t) => format!(
            r#"<time title="{}">{} ({} ago)</time>"#,
            utc(t),
            utc(t),
            duration_ms(now - t)
        ),
        None => String::new(),
    }
}

fn verdict<'a>(
    d: &'a PageData,
    digest: &Digest,
) -> Option<&'a Result<VerdictFacts, Arc<VerdictReadError>>> {
    d.verdicts.get(digest)
}

/// A reign's held-out loss: the challenger's mean loss in the verdict that crowned it, or, for
/// the genesis king, its own mean loss in the first duel against it.
fn reign_loss(d: &PageData, r: &Reign) -> Option<Result<f64, Arc<VerdictReadError>>> {
    let v = match r.entry {
        Some(e) => d.facts.crowning_verdict.get(&e)?,
        None => d.facts.first_duel_vs.get(&r.digest)?,
    };
    Some(match verdict(d, &v.verdict_digest)? {
        Ok(f) => Ok(if r.entry.is_some() {
            f.challenger_mean_loss
        } else {
            f.king_mean_loss
        }),
        Err(e) => Err(e.clone()),
    })
}

/// The king's mean loss in the latest duel against it.
fn latest_king_loss(d: &PageData, r: &Reign) -> Option<Result<f64, Arc<VerdictReadError>>> {
    let v = d.facts.latest_duel_vs.get(&r.digest)?;
    Some(match verdict(d, &v.verdict_digest)? {
        Ok(f) => Ok(f.king_mean_loss),
        Err(e) => Err(e.clone()),
    })
}

fn loss_cell(l: Option<Result<f64, Arc<VerdictReadError>>>) -> String {
    match l {
        Some(Ok(x)) => format!(r#"<span class="num">{}</span>"#, num(Some(x), 4)),
        Some(Err(e)) => format!(
            r#"<span class="warn" title="{}">unavailable</span>"#,
            esc(&e.to_string())
        ),
        None => r#"<span class="muted">not measured yet</span>"#.to_string(),
    }
}

fn king_section(d: &PageData) -> String {
    let Some(k) = d.state.king() else {
        return String::new();
    };
    let since_ms = if k.number == 0 {
        d.facts.started_unix_ms
    } else {
        d.facts.crowned_unix_ms.get(&k.number).copied()
    };
    let miner = match &k.hotkey {
        Some(h) => hotkey_link(h),
        None => r#"<span class="muted">genesis (belongs to nobody, paid nothing)</span>"#.into(),
    };
    let duels = d.facts.duels_vs.get(&k.digest).copied().unwrap_or(0);
    format!(
        r#"<section class="card" id="king"><h2>The king</h2>
<dl class="facts">
<dt>Reign</dt><dd id="king-reign">{reign}</dd>
<dt>Digest</dt><dd><code id="king-digest" class="digest-full">{digest}</code></dd>
<dt>Miner</dt><dd>{miner}</dd>
<dt>Since</dt><dd>block {block} {since}</dd>
<dt>Held-out loss</dt><dd>{loss} <span class="muted">nats/token at crowning</span></dd>
<dt>Latest duel</dt><dd>{latest}</dd>
<dt>Location</dt><dd><code>{location}</code></dd>
</dl></section>"#,
        reign = k.number,
        digest = esc(&k.digest.to_string()),
        block = k.block,
        since = when(since_ms, d.now_unix_ms),
        loss = loss_cell(reign_loss(d, k)),
        latest = match latest_king_loss(d, k) {
            None => r#"<span class="muted">no duel against this king yet</span>"#.to_string(),
            some => format!(
                r#"{} <span class="muted">nats/token, the king's loss in the latest of {duels} duel(s) against it</span>"#,
                loss_cell(some)
            ),
        },
        location = esc(k
            .location
            .as_deref()
            .or(d.competition.genesis_location.as_deref())
            .unwrap_or("—")),
    )
}

fn lineage_section(d: &PageData) -> String {
    let mut at_crowning = Vec::new();
    let mut latest = Vec::new();
    let mut rows = String::new();
    for r in d.state.reigns.iter().rev() {
        let loss = reign_loss(d, r);
        let last = latest_king_loss(d, r);
        if let Some(Ok(x)) = &loss {
            at_crowning.push((r.number as f64, *x));
        }
        if let Some(Ok(x)) = &last {
            latest.push((r.number as f64, *x));
        }
        let since = if r.number == 0 {
            d.facts.started_unix_ms
        } else {
            d.facts.crowned_unix_ms.get(&r.number).copied()
        };
        let _ = write!(
            rows,
            r#"<tr><td class="num">{n}</td><td>{digest}</td><td>{miner}</td><td class="num">{block}</td><td>{time}</td><td>{loss}</td><td>{last}</td><td class="num">{duels}</td></tr>"#,
            n = r.number,
            digest = digest_cell(&r.digest),
            miner = r
                .hotkey
                .as_deref()
                .map(hotkey_link)
                .unwrap_or_else(|| r#"<span class="muted">genesis</span>"#.into()),
            block = r.block,
            time = since.map(utc).unwrap_or_default(),
            loss = loss_cell(loss),
            last = loss_cell(last),
            duels = d.facts.duels_vs.get(&r.digest).copied().unwrap_or(0),
        );
    }
    at_crowning.sort_by(|a, b| a.0.total_cmp(&b.0));
    latest.sort_by(|a, b| a.0.total_cmp(&b.0));
    let chart = svg::render(&Chart {
        id: "lineage-chart",
        title: "Held-out loss per reign".into(),
        x_label: "reign".into(),
        y_label: "loss (nats/token)".into(),
        series: vec![
            Series {
                label: "at crowning".into(),
                class: "series-crown",
                points: at_crowning,
                markers: true,
            },
            Series {
                label: "latest duel".into(),
                class: "series-latest",
                points: latest,
                markers: true,
            },
        ],
        hlines: Vec::new(),
        x_range: None,
        x_integer: true,
        empty_text: "No duel has measured a king yet.".into(),
    });
    format!(
        r#"<section class="card" id="lineage"><h2>Lineage of kings</h2>
{chart}
<p class="note">Held-out loss is measured in duels, on windows sampled from the competition's data for that duel (each duel has its own seed). "At crowning": the challenger's mean loss in the duel that crowned it (for the genesis king, its own loss in the first duel against it). "Latest duel": the king's mean loss in the latest duel against it.</p>
<table><thead><tr><th>Reign</th><th>Digest</th><th>Miner</th><th>Crowned at block</th><th>Since</th><th>Loss at crowning</th><th>Loss, latest duel</th><th>Duels</th></tr></thead>
<tbody>{rows}</tbody></table></section>"#
    )
}

/// The effect floor as a threshold on the reported mean, with the words that explain it.
fn threshold(c: &Competition) -> (f64, String) {
    match c.duel.delta {
        Delta::Absolute(x) => (x, format!("δ = {x} nats/token (absolute)")),
        Delta::Relative(r) => (
            0.0,
            format!(
                "δ = {r} × the king's mean loss (relative): the rule tests dᵢ − {r}·ℓᵢ(king) against 0"
            ),
        ),
    }
}

fn rule_words(c: &Competition) -> String {
    match c.duel.test {
        DuelTest::Sequential => format!(
            "Sequential test (anytime-valid confidence sequence), α = {}, batches of {} windows, at most {} windows: crown as soon as the lower bound exceeds δ; keep the king as soon as the upper bound falls below δ, or at the last window.",
            c.duel.alpha, c.duel.batch_size, c.duel.n_max
        ),
        DuelTest::Bootstrap => format!(
            "Bootstrap test, α = {}, {} windows in batches of {}: crown if the α-quantile of the bootstrap means exceeds δ.",
            c.duel.alpha, c.duel.n_max, c.duel.batch_size
        ),
    }
}

fn gates_line(gates: &[GateRecord]) -> String {
    if gates.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = gates
        .iter()
        .map(|g| {
            let (class, word) = match g.result {
                GateResult::Passed => ("pass", "passed"),
                GateResult::Failed => ("fail", "failed"),
                GateResult::NotEnabled => ("muted", "not enabled"),
            };
            format!(r#"<span class="{class}">{} {word}</span>"#, g.gate.name())
        })
        .collect();
    parts.join(", ")
}

fn trace_chart(d: &PageData, trace: &DuelTrace, delta: (f64, &str)) -> (String, String) {
    // A finished duel's record holds the same numbers (and bounds the live events could not
    // report before the rule computed them); prefer it when it was read.
    let recorded = trace
        .finished
        .as_ref()
        .and_then(|v| verdict(d, &v.verdict_digest))
        .and_then(|r| r.as_ref().ok());
    // (n, μ̂, lower, upper) after each batch, from the record or from the live events.
    let (points, threshold, n_max): (Vec<_>, _, _) = match recorded {
        Some(f) => (
            f.bounds
                .iter()
                .map(|b| (b.n, b.mu_hat, b.lower, b.upper))
                .collect(),
            f.threshold,
            f.n_max,
        ),
        None => (
            trace
                .points
                .iter()
                .map(|p| (p.n, p.mu_hat, p.lower, p.upper))
                .collect(),
            delta.0,
            u64::from(d.competition.duel.n_max),
        ),
    };
    let (mut mu, mut lo, mut hi) = (Vec::new(), Vec::new(), Vec::new());
    for (n, mu_hat, lower, upper) in points {
        let x = n as f64;
        mu.push((x, mu_hat));
        lo.extend(lower.map(|l| (x, l)));
        hi.extend(upper.map(|u| (x, u)));
    }
    let batches = mu.len();
    let chart = svg::render(&Chart {
        id: "duel-chart",
        title: format!(
            "Duel of entry {}: μ̂ and confidence bounds against δ",
            trace.entry
        ),
        x_label: "windows scored".into(),
        y_label: "advantage (nats/token)".into(),
        series: vec![
            Series {
                label: "upper bound".into(),
                class: "series-upper",
                points: hi,
                markers: false,
            },
            Series {
                label: "μ̂".into(),
                class: "series-mu",
                points: mu,
                markers: true,
            },
            Series {
                label: "lower bound".into(),
                class: "series-lower",
                points: lo,
                markers: false,
            },
        ],
        hlines: vec![HLine {
            label: format!("δ = {threshold}"),
            class: "series-delta",
            y: threshold,
        }],
        x_range: Some((0.0, n_max as f64)),
        x_integer: false,
        empty_text: "Waiting for the first batch.".into(),
    });
    let source = if recorded.is_some() {
        "from the verdict record".to_string()
    } else {
        format!("from {batches} duel_progress event(s)")
    };
    (chart, source)
}

fn duel_section(d: &PageData) -> String {
    let (delta, delta_words) = threshold(d.competition);
    let mut status = String::new();
    let active = d.state.active_entry();
    match active {
        None => {
            let _ = write!(
                status,
                r#"<p id="duel-status">Idle: nothing is being evaluated. {} submission(s) in the queue.</p>"#,
                d.state.queue.len()
            );
        }
        Some((e, Phase::Gate { gate, started })) => {
            let _ = write!(
                status,
                r#"<p id="duel-status">Entry {id} from {who} is at the <b>{gate}</b> gate ({state}). {gates}</p>"#,
                id = e.id,
                who = hotkey_link(&e.hotkey),
                gate = gate.name(),
                state = if *started { "running" } else { "about to run" },
                gates = gates_line(&e.gates),
            );
        }
        Some((e, Phase::Duel { king, progress, .. })) => {
            let n = progress.as_ref().map_or(0, |p| p.n);
            let n_max = u64::from(d.competition.duel.n_max).max(1);
            let _ = write!(
                status,
                r#"<p id="duel-status">Dueling entry {id} from {who} ({digest}) against the king {king}.</p>
<p><progress id="duel-progress" value="{n}" max="{n_max}"></progress> {n} of at most {n_max} windows</p>
<dl class="facts"><dt>μ̂</dt><dd id="duel-mu">{mu}</dd><dt>Lower bound</dt><dd>{lo}</dd><dt>Upper bound</dt><dd>{hi}</dd><dt>Threshold</dt><dd>{delta_words}</dd></dl>"#,
                id = e.id,
                who = hotkey_link(&e.hotkey),
                digest = digest_cell(&e.digest),
                king = digest_cell(king),
                mu = signed(progress.as_ref().map(|p| p.mu_hat), 5),
                lo = signed(progress.as_ref().and_then(|p| p.lower), 5),
                hi = signed(progress.as_ref().and_then(|p| p.upper), 5),
                delta_words = esc(&delta_words),
            );
        }
        Some((e, Phase::Crowning { reign, verdict, .. })) => {
            let _ = write!(
                status,
                r#"<p id="duel-status">Entry {id} from {who} won its duel (μ̂ {mu}{lo} after {n} windows) and is being crowned as reign {reign}.</p>"#,
                id = e.id,
                who = hotkey_link(&e.hotkey),
                mu = signed(Some(verdict.mu_hat), 5),
                // Only a bound the rule computed is shown.
                lo = verdict
                    .lower
                    .map(|l| format!(", lower bound {}", signed(Some(l), 5)))
                    .unwrap_or_default(),
                n = verdict.n,
            );
        }
    }
    let (chart, caption) = match &d.facts.duel {
        Some(trace) => {
            let (chart, source) = trace_chart(d, trace, (delta, &delta_words));
            let state = match (&trace.finished, trace.interrupted) {
                (Some(v), _) if v.accepted => "finished: the challenger was crowned",
                (Some(_), _) => "finished: the king stays",
                (None, true) => {
                    "interrupted by our infrastructure (the entry is queued again, never charged)"
                }
                (None, false) => "running",
            };
            (
                chart,
                format!(
                    "Latest duel: entry {} against {}, started {}; {state}. Batch by batch, {source}.",
                    trace.entry,
                    esc(&short_digest(&trace.king.to_string())),
                    utc(trace.started_unix_ms)
                ),
            )
        }
        None => (
            svg::render(&Chart {
                id: "duel-chart",
                title: "No duel yet".into(),
                x_label: "windows scored".into(),
                y_label: "advantage (nats/token)".into(),
                series: Vec::new(),
                hlines: Vec::new(),
                x_range: None,
                x_integer: false,
                empty_text: "No duel has run yet.".into(),
            }),
            "No duel has run yet.".to_string(),
        ),
    };
    format!(
        r#"<section class="card" id="duel"><h2>The live duel</h2>
{status}
{chart}
<p class="note">{caption} {rule}</p></section>"#,
        rule = esc(&rule_words(d.competition)),
    )
}

fn class_words(c: QueueClass) -> &'static str {
    match c {
        QueueClass::Retry => "retry (interrupted by us: first in line)",
        QueueClass::Normal => "normal",
        QueueClass::Demoted => "demoted (interrupted by us too often; still never consumed)",
    }
}

fn entry_row(pos: String, class: &str, e: &Entry) -> String {
    format!(
        r#"<tr><td class="num">{pos}</td><td>{class}</td><td class="num">{id}</td><td>{who}</td><td class="num">{uid}</td><td>{digest}</td><td><code class="loc">{loc}</code></td><td class="num">{reveal}</td><td class="num">{retries}</td></tr>"#,
        id = e.id,
        who = hotkey_link(&e.hotkey),
        uid = e.uid,
        digest = digest_cell(&e.digest),
        loc = esc(&e.location),
        reveal = e.reveal_block,
        retries = e.retries,
    )
}

fn queue_section(d: &PageData, only: Option<&str>) -> String {
    let mut rows = String::new();
    let keep = |h: &str| only.is_none_or(|o| o == h);
    if let Some((e, phase)) = d.state.active_entry().filter(|(e, _)| keep(&e.hotkey)) {
        let what = match phase {
            Phase::Gate { gate, .. } => format!("active: {} gate", gate.name()),
            Phase::Duel { .. } => "active: dueling".to_string(),
            Phase::Crowning { .. } => "active: crowning".to_string(),
        };
        rows.push_str(&entry_row("now".into(), &what, e));
    }
    for (i, k) in d.state.queue.iter().enumerate() {
        if let Some(e) = d.state.entries.get(&k.id).filter(|e| keep(&e.hotkey)) {
            rows.push_str(&entry_row((i + 1).to_string(), class_words(k.class), e));
        }
    }
    for id in d.state.waiting.values() {
        if let Some(e) = d.state.entries.get(id).filter(|e| keep(&e.hotkey)) {
            rows.push_str(&entry_row(
                "waiting".into(),
                "newer commitment; queued when the same hotkey's active entry finishes",
                e,
            ));
        }
    }
    let mut body = if rows.is_empty() {
        r#"<p class="muted" id="queue-empty">The queue is empty.</p>"#.to_string()
    } else {
        format!(
            r#"<table id="queue-table"><thead><tr><th>Position</th><th>Class</th><th>Entry</th><th>Hotkey</th><th>UID</th><th>Digest</th><th>Location</th><th>Revealed at block</th><th>Retries</th></tr></thead><tbody>{rows}</tbody></table>"#
        )
    };
    // Revealed commitments not decided yet: a digest goes to its earliest commitment, so each
    // waits until the reveals up to its commit block + W have been read (PROTOCOL §3).
    let held: Vec<String> = d
        .state
        .held
        .iter()
        .filter(|r| keep(&r.hotkey))
        .map(|r| {
            format!(
                "{} (committed at block {}, decided at block {})",
                esc(&short_key(&r.hotkey)),
                r.commit_block,
                d.state.release_block(r)
            )
        })
        .collect();
    if !held.is_empty() {
        body.push_str(&format!(
            r#"<p id="queue-held">Revealed, held until every earlier commitment could have been revealed: {}.</p>"#,
            held.join(", ")
        ));
    }
    format!(
        r#"<section class="card" id="queue"><h2>Queue</h2>{body}<p class="note">Order: entries interrupted by our infrastructure first, then by reveal block, then hotkey. One entry per hotkey; a newer reveal replaces a queued one. Retries count our faults, which never cost a submission.</p></section>"#
    )
}

/// Why a finished submission ended the way it did, in words.
fn outcome_words(f: &Finished, delta_words: &str) -> (String, &'static str, String) {
    match &f.outcome {
        Outcome::Rejected {
            code,
            gate,
            message,
        } => (
            format!(r#"<code class="code">{}</code>"#, code.code()),
            "rejected",
            format!(
                r#"<span class="explain">{}</span> <span class="muted">({} — {})</span>"#,
                esc(code.explain()),
                gate.map(Gate::name).unwrap_or("intake"),
                esc(message)
            ),
        ),
        Outcome::Dueled { verdict, crowned } => match crowned {
            Some(reign) => (
                String::new(),
                "crowned",
                match verdict.lower {
                    Some(lower) => format!(
                        "Crowned as reign {reign}: after {} windows the lower confidence bound {} exceeded the threshold ({}).",
                        verdict.n,
                        signed(Some(lower), 5),
                        esc(delta_words)
                    ),
                    // The rule decided without computing the bound (the bootstrap's resamples
                    // can settle the question first).
                    None => format!(
                        "Crowned as reign {reign}: after {} windows the rule found the challenger better than the king by more than the threshold ({}).",
                        verdict.n,
                        esc(delta_words)
                    ),
                },
            ),
            None => (
                String::new(),
                "kept_king",
                format!(
                    "The king stays: after {} windows the evidence did not show the challenger better by more than the threshold ({}){}.",
                    verdict.n,
                    esc(delta_words),
                    verdict
                        .upper
                        .map(|u| format!("; upper bound {}", signed(Some(u), 5)))
                        .unwrap_or_default()
                ),
            ),
        },
        Outcome::Superseded { by } => (
            String::new(),
            "superseded",
            format!("The same hotkey revealed a newer commitment (entry {by}) before this one was evaluated."),
        ),
    }
}

fn history_section(d: &PageData, only: Option<&str>) -> String {
    let (_, delta_words) = threshold(d.competition);
    let mut rows = String::new();
    for f in d
        .state
        .history
        .iter()
        .rev()
        .filter(|f| only.is_none_or(|o| o == f.hotkey))
    {
        let (code, result, why) = outcome_words(f, &delta_words);
        let (n, mu, lo, hi, vd) = match &f.outcome {
            Outcome::Dueled { verdict: v, .. } => (
                v.n.to_string(),
                signed(Some(v.mu_hat), 5),
                // "—" where the rule computed no bound.
                signed(v.lower, 5),
                signed(v.upper, 5),
                digest_cell(&v.verdict_digest),
            ),
            _ => Default::default(),
        };
        let _ = write!(
            rows,
            r#"<tr class="{result}"><td class="num">{id}</td><td>{who}</td><td>{digest}</td><td><span class="badge {result}">{result_text}</span> {code}</td><td class="num">{n}</td><td class="num">{mu}</td><td class="num">{lo}</td><td class="num">{hi}</td><td class="why">{why}</td><td class="num">{block}</td><td>{vd}</td></tr>"#,
            id = f.id,
            who = hotkey_link(&f.hotkey),
            digest = f.digest.as_ref().map(digest_cell).unwrap_or_default(),
            result_text = result.replace('_', " "),
            block = f.finished_block,
        );
    }
    let body = if rows.is_empty() {
        r#"<p class="muted">No submission has finished yet.</p>"#.to_string()
    } else {
        format!(
            r#"<table id="history-table"><thead><tr><th>Entry</th><th>Hotkey</th><th>Digest</th><th>Verdict</th><th>Windows used</th><th>μ̂</th><th>Lower</th><th>Upper</th><th>Why</th><th>Block</th><th>Verdict record</th></tr></thead><tbody>{rows}</tbody></table>"#
        )
    };
    let kept = d.state.rules.as_ref().map_or(0, |r| r.history_len);
    format!(
        r#"<section class="card" id="history"><h2>History</h2>{body}<p class="note">Newest first; the validator keeps the last {kept} finished submissions in memory (all of them stay in its event log). μ̂ is the mean per-window advantage ℓ(king) − ℓ(challenger) in nats/token; positive means the challenger is better.</p></section>"#
    )
}

fn policy_words(p: &RewardPolicy) -> String {
    match p {
        RewardPolicy::WinnerTakeAll => "Winner-take-all: the king's hotkey receives all of this validator's weight. The genesis king belongs to nobody, so while it reigns no weight is set.".to_string(),
        RewardPolicy::SplitLastK { k, shares } => {
            let split = match shares {
                Some(s) => format!(
                    "shares {} (the king first)",
                    s.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
                ),
                None => "equal shares".to_string(),
            };
            format!("Split over the last {k} kings with {split}: a hotkey that held several of those reigns gets the sum; the genesis king's share is not paid and the rest is renormalised.")
        }
    }
}

fn rewards_section(d: &PageData) -> String {
    let Some(rules) = &d.state.rules else {
        return String::new();
    };
    let expected = d.state.expected_weights();
    let shares = reward_shares(&rules.reward, &d.state.reigns);
    let mut hotkeys: BTreeSet<&str> = BTreeSet::new();
    hotkeys.extend(expected.iter().map(|w| w.hotkey.as_str()));
    hotkeys.extend(d.state.weights.last.iter().map(|w| w.hotkey.as_str()));
    if let EmissionView::Rows(rows) = d.emission {
        hotkeys.extend(rows.iter().filter(|r| r.rao > 0).map(|r| r.hotkey.as_str()));
    }
    let mut rows = String::new();
    for h in &hotkeys {
        let exp = expected.iter().find(|w| w.hotkey == *h).map(|w| w.weight);
        let set = d
            .state
            .weights
            .last
            .iter()
            .find(|w| w.hotkey == *h)
            .map(|w| w.weight);
        let em = d.emission.for_hotkey(h);
        let mut why: Vec<String> = shares
            .iter()
            .filter(|s| s.hotkey.as_deref() == Some(*h))
            .map(|s| {
                if s.back == 0 {
                    format!("holds the crown (reign {}), raw share {}", s.reign, s.share)
                } else {
                    format!(
                        "held reign {}, {} reign(s) before the king, raw share {}",
                        s.reign, s.back, s.share
                    )
                }
            })
            .collect();
        if why.is_empty() {
            why.push(match (exp, em) {
                (None, Some(e)) if e.rao > 0 => {
                    "no weight from this validator now; the emission was accrued earlier or from other validators' weights".to_string()
                }
                _ => "no weight under the policy now".to_string(),
            });
        }
        let _ = write!(
            rows,
            r#"<tr><td>{who}</td><td class="num">{uid}</td><td class="num">{exp}</td><td class="num">{set}</td><td class="num">{em}</td><td>{why}</td></tr>"#,
            who = hotkey_link(h),
            uid = em.map(|e| e.uid.to_string()).unwrap_or_else(|| "—".into()),
            exp = exp
                .map(|w| format!("{:.2} %", 100.0 * w))
                .unwrap_or_else(|| "0 %".into()),
            set = set
                .map(|w| format!("{:.2} %", 100.0 * w))
                .unwrap_or_else(|| "—".into()),
            em = em
                .map(|e| format!("{:.4}", e.rao as f64 / RAO_PER_TOKEN))
                .unwrap_or_else(|| "—".into()),
            why = esc(&why.join("; ")),
        );
    }
    let emission_note = match d.emission {
        EmissionView::NotConfigured => {
            "Accrued emission is not shown: the dashboard was started without a chain handle.".to_string()
        }
        EmissionView::Unavailable(e) => format!("Accrued emission could not be read from the chain: {}", esc(e)),
        EmissionView::Rows(_) => "Accrued emission is read from the chain: each block's emission is split equally among the validators that have set weights, and each validator's part in proportion to its weights (so it reflects every validator of the subnet, not only this one).".to_string(),
    };
    let last_set = match d.state.weights.last_set_block {
        Some(b) => format!("Weights were last set on chain at block {b}"),
        None => "Weights have not been set on chain yet".to_string(),
    };
    let pending = if d.state.weights.dirty {
        "; a crown since then makes new weights due now"
    } else {
        ""
    };
    let body = if rows.is_empty() {
        r#"<p class="muted">Nobody is paid yet: the genesis king reigns.</p>"#.to_string()
    } else {
        format!(
            r#"<table id="rewards-table"><thead><tr><th>Hotkey</th><th>UID</th><th>Weight now (policy)</th><th>Weight last set</th><th>Accrued emission (tokens)</th><th>Why</th></tr></thead><tbody>{rows}</tbody></table>"#
        )
    };
    format!(
        r#"<section class="card" id="rewards"><h2>Rewards</h2><p id="policy">{policy}</p>{body}<p class="note">{last_set}{pending}; they are set again on every crown and at least every {w} blocks. {emission_note}</p></section>"#,
        policy = esc(&policy_words(&rules.reward)),
        w = rules.weights_interval_blocks,
    )
}

// ---------------------------------------------------------------------------------------------
// The hotkey page

/// Whether the validator or the chain knows `hotkey` at all.
pub fn hotkey_known(d: &PageData, hotkey: &str) -> bool {
    let s = d.state;
    s.slots.contains_key(hotkey)
        || s.waiting.contains_key(hotkey)
        || s.last_reveal.contains_key(hotkey)
        || s.history.iter().any(|f| f.hotkey == hotkey)
        || s.reigns.iter().any(|r| r.hotkey.as_deref() == Some(hotkey))
        || s.weights.last.iter().any(|w| w.hotkey == hotkey)
        || d.emission.for_hotkey(hotkey).is_some()
}

/// `/hotkey/{ss58}`; `None` when the hotkey is unknown (the caller answers 404).
pub fn hotkey_page(d: &PageData, hotkey: &str) -> Option<String> {
    let live = hotkey_live(d, hotkey)?;
    Some(document(
        &format!("koth — {}", short_key(hotkey)),
        &header_extra(d),
        &live,
    ))
}

/// The changing part of `/hotkey/{ss58}`.
pub fn hotkey_live(d: &PageData, hotkey: &str) -> Option<String> {
    if !hotkey_known(d, hotkey) {
        return None;
    }
    let s = d.state;
    let king = s.king().filter(|k| k.hotkey.as_deref() == Some(hotkey));
    let reigns: Vec<String> = s
        .reigns
        .iter()
        .filter(|r| r.hotkey.as_deref() == Some(hotkey))
        .map(|r| {
            format!(
                "reign {} (block {}, {})",
                r.number,
                r.block,
                esc(&short_digest(&r.digest.to_string()))
            )
        })
        .collect();
    let weight = s
        .expected_weights()
        .into_iter()
        .find(|w| w.hotkey == hotkey)
        .map(|w| w.weight);
    let em = d.emission.for_hotkey(hotkey);
    let status = if king.is_some() {
        "holds the crown".to_string()
    } else if let Some((e, _)) = s.active_entry().filter(|(e, _)| e.hotkey == hotkey) {
        format!("entry {} is being evaluated", e.id)
    } else if let Some(pos) = s.queue_in_order().position(|e| e.hotkey == hotkey) {
        format!("queued at position {}", pos + 1)
    } else if let Some(r) = s.held.iter().find(|r| r.hotkey == hotkey) {
        format!(
            "revealed; held until block {} (commit block + the reveal delay), then decided",
            s.release_block(r)
        )
    } else {
        "nothing in evaluation".to_string()
    };
    let mut out = format!(
        r#"<section class="card" id="hotkey"><h1>Hotkey <code id="hotkey-id">{h}</code></h1>
<dl class="facts"><dt>UID</dt><dd>{uid}</dd><dt>Now</dt><dd id="hotkey-status">{status}</dd><dt>Reigns held</dt><dd>{reigns}</dd><dt>Weight (policy)</dt><dd>{weight}</dd><dt>Accrued emission</dt><dd>{em}</dd></dl></section>"#,
        h = esc(hotkey),
        uid = em
            .map(|e| e.uid.to_string())
            .unwrap_or_else(|| "not registered (or the chain is not readable)".into()),
        reigns = if reigns.is_empty() {
            "none".to_string()
        } else {
            reigns.join("; ")
        },
        weight = weight
            .map(|w| format!("{:.2} %", 100.0 * w))
            .unwrap_or_else(|| "0 %".into()),
        em = em
            .map(|e| format!("{:.4} tokens", e.rao as f64 / RAO_PER_TOKEN))
            .unwrap_or_else(|| "—".into()),
    );
    out.push_str(&queue_section(d, Some(hotkey)));
    out.push_str(&history_section(d, Some(hotkey)));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_words_name_the_policy() {
        assert!(policy_words(&RewardPolicy::WinnerTakeAll).contains("Winner-take-all"));
        let s = policy_words(&RewardPolicy::SplitLastK {
            k: 3,
            shares: Some(vec![0.5, 0.3, 0.2]),
        });
        assert!(
            s.contains("last 3 kings") && s.contains("0.5, 0.3, 0.2"),
            "{s}"
        );
    }

    #[test]
    fn a_verdicts_words_name_only_the_bounds_the_rule_computed() {
        let finished = |crowned: Option<u64>, lower, upper| Finished {
            id: 4,
            hotkey: "5Hot".into(),
            uid: Some(1),
            digest: Some(Digest::of(b"c")),
            location: None,
            commit_block: 10,
            reveal_block: 12,
            retries: 0,
            gates: Vec::new(),
            outcome: Outcome::Dueled {
                verdict: koth_hill::VerdictSummary {
                    accepted: crowned.is_some(),
                    n: 640,
                    mu_hat: 0.004,
                    lower,
                    upper,
                    verdict_digest: Digest::of(b"v"),
                    verdict_path: "/v.json".into(),
                },
                crowned,
            },
            finished_block: 20,
        };
        let why = |f: &Finished| outcome_words(f, "δ = 0.002").2;
        let w = why(&finished(Some(2), Some(0.0031), None));
        assert!(
            w.contains("lower confidence bound +0.00310 exceeded"),
            "{w}"
        );
        let w = why(&finished(Some(2), None, None));
        assert!(
            w.starts_with("Crowned as reign 2") && !w.contains("bound"),
            "{w}"
        );
        let w = why(&finished(None, Some(-0.01), Some(0.0015)));
        assert!(w.ends_with("; upper bound +0.00150."), "{w}");
        let w = why(&finished(None, Some(-0.01), None));
        assert!(
            w.starts_with("The king stays") && !w.contains("bound"),
            "{w}"
        );
        // Nothing stands in for a missing bound: μ̂ (+0.00400) is not shown as one.
        assert!(!w.contains("0.00400"), "{w}");
    }

    #[test]
    fn error_pages_escape_their_text() {
        let p = error_page("Not found", "<img src=x>");
        assert!(p.contains("&lt;img src=x&gt;") && !p.contains("<img"));
    }
}
