//! The JSON feeds, as pure functions of the state: `/api/state` (everything, koth's own shape)
//! and `/dashboard.json` (Teutonic's shape, so existing miner tooling can follow a koth
//! validator). The HTTP server that serves them, `/api/events` (SSE) and `/metrics` belong to
//! the shell.

use serde_json::{json, Value};

use koth_core::competition::RewardPolicy;

use crate::event::{Gate, Outcome};
use crate::reward::reward_shares;
use crate::state::{Entry, Finished, Phase, QueueClass, Reign, ValidatorState};

/// Version of the `/api/state` shape; bumped on any incompatible change.
pub const STATE_FEED_VERSION: u32 = 1;

fn reign_json(r: &Reign) -> Value {
    json!({
        "reign": r.number,
        "digest": r.digest,
        "hotkey": r.hotkey,
        "uid": r.uid,
        "location": r.location,
        "entry": r.entry,
        "block": r.block,
        "block_hash": r.block_hash,
    })
}

fn class_name(c: QueueClass) -> &'static str {
    match c {
        QueueClass::Retry => "retry",
        QueueClass::Normal => "normal",
        QueueClass::Demoted => "demoted",
    }
}

fn entry_json(e: &Entry) -> Value {
    json!({
        "entry": e.id,
        "hotkey": e.hotkey,
        "uid": e.uid,
        "digest": e.digest,
        "location": e.location,
        "commit_block": e.commit_block,
        "reveal_block": e.reveal_block,
        "retries": e.retries,
    })
}

fn outcome_fields(o: &Outcome) -> Value {
    match o {
        Outcome::Rejected {
            code,
            gate,
            message,
        } => json!({
            "result": "rejected",
            "code": code.code(),
            "gate": gate.map(Gate::name).unwrap_or("intake"),
            "explain": code.explain(),
            "message": message,
        }),
        Outcome::Dueled { verdict, crowned } => json!({
            "result": if crowned.is_some() { "crowned" } else { "kept_king" },
            "reign": crowned,
            "accepted": verdict.accepted,
            "n": verdict.n,
            "mu_hat": verdict.mu_hat,
            "lower": verdict.lower,
            "upper": verdict.upper,
            "verdict_digest": verdict.verdict_digest,
            "verdict_path": verdict.verdict_path,
        }),
        Outcome::Superseded { by } => json!({
            "result": "superseded",
            "by": by,
            "explain": "The same hotkey revealed a newer commitment before this one was evaluated.",
        }),
    }
}

fn finished_json(f: &Finished) -> Value {
    let mut v = json!({
        "entry": f.id,
        "hotkey": f.hotkey,
        "uid": f.uid,
        "digest": f.digest,
        "location": f.location,
        "commit_block": f.commit_block,
        "reveal_block": f.reveal_block,
        "finished_block": f.finished_block,
        "retries": f.retries,
        "gates": f.gates,
    });
    if let (Value::Object(m), Value::Object(o)) = (&mut v, outcome_fields(&f.outcome)) {
        m.extend(o);
    }
    v
}

fn current_json(state: &ValidatorState) -> Value {
    let Some((e, phase)) = state.active_entry() else {
        return Value::Null;
    };
    let mut v = entry_json(e);
    let extra = match phase {
        Phase::Gate { gate, started } => json!({
            "phase": "gate",
            "gate": gate.name(),
            "running": started,
            "gates": e.gates,
        }),
        Phase::Duel {
            king,
            running,
            progress,
            ..
        } => json!({
            "phase": "duel",
            "king": king,
            "running": running,
            "gates": e.gates,
            "progress": progress,
        }),
        Phase::Crowning { verdict, reign, .. } => json!({
            "phase": "crowning",
            "reign": reign,
            "gates": e.gates,
            "verdict": verdict,
        }),
    };
    if let (Value::Object(m), Value::Object(x)) = (&mut v, extra) {
        m.extend(x);
    }
    v
}

fn rewards_json(state: &ValidatorState) -> Value {
    let Some(rules) = &state.rules else {
        return Value::Null;
    };
    let policy = match &rules.reward {
        RewardPolicy::WinnerTakeAll => "winner_take_all".to_string(),
        RewardPolicy::SplitLastK { k, .. } => format!("split_last_k (k = {k})"),
    };
    let expected = state.expected_weights();
    let shares = reward_shares(&rules.reward, &state.reigns);
    let paid_total: f64 = shares
        .iter()
        .filter(|s| s.hotkey.is_some())
        .map(|s| s.share)
        .sum();
    let why: Vec<Value> = shares
        .iter()
        .map(|s| {
            let position = if s.back == 0 {
                "the king".to_string()
            } else {
                format!("{} reign(s) before the king", s.back)
            };
            let reason = match &s.hotkey {
                None => format!(
                    "reign {} ({position}) is the genesis king: its share is not paid",
                    s.reign
                ),
                Some(h) => format!(
                    "reign {} ({position}) held by {h}: share {} of {}",
                    s.reign, s.share, paid_total
                ),
            };
            json!({"reign": s.reign, "hotkey": s.hotkey, "share": s.share, "why": reason})
        })
        .collect();
    json!({
        "policy": policy,
        "expected": expected,
        "why": why,
        "last_set_block": state.weights.last_set_block,
        "last_set": state.weights.last,
        "pending": state.weights.dirty,
        "interval_blocks": rules.weights_interval_blocks,
    })
}

/// `/api/state`: the king, lineage (newest first), queue in evaluation order, the current entry
/// with live bounds, recent history (newest first) and the reward split with its reasons.
pub fn api_state(state: &ValidatorState) -> Value {
    let queue: Vec<Value> = state
        .queue
        .iter()
        .enumerate()
        .filter_map(|(i, k)| {
            let mut v = entry_json(state.entries.get(&k.id)?);
            if let Value::Object(m) = &mut v {
                m.insert("position".into(), json!(i + 1));
                m.insert("class".into(), json!(class_name(k.class)));
            }
            Some(v)
        })
        .collect();
    let waiting: Vec<Value> = state
        .waiting
        .values()
        .filter_map(|id| state.entries.get(id).map(entry_json))
        .collect();
    json!({
        "version": STATE_FEED_VERSION,
        "started": state.rules.is_some(),
        "competition_sha256": state.rules.as_ref().map(|r| r.competition_sha256),
        "block": state.block,
        "paused_until": state.paused_until.filter(|_| state.is_paused()),
        "king": state.king().map(reign_json),
        "lineage": state.reigns.iter().rev().map(reign_json).collect::<Vec<_>>(),
        "current": current_json(state),
        "queue": queue,
        "waiting": waiting,
        "history": state.history.iter().rev().map(finished_json).collect::<Vec<_>>(),
        "rewards": rewards_json(state),
        "counters": state.counters,
    })
}

/// `/dashboard.json` in Teutonic's shape: `king.model_repo`, `king.king_digest`, `king.hotkey`,
/// `king.reign_number`, `queue`, `history`, plus the current evaluation and totals.
pub fn dashboard_json(state: &ValidatorState) -> Value {
    let king = state.king().map(|k| {
        json!({
            "model_repo": k.location,
            "king_digest": k.digest,
            "hotkey": k.hotkey,
            "uid": k.uid,
            "reign_number": k.number,
            "crowned_block": k.block,
        })
    });
    let queue: Vec<Value> = state
        .queue_in_order()
        .enumerate()
        .map(|(i, e)| {
            json!({
                "position": i + 1,
                "hotkey": e.hotkey,
                "uid": e.uid,
                "model_repo": e.location,
                "digest": e.digest,
                "commit_block": e.commit_block,
                "reveal_block": e.reveal_block,
                "retries": e.retries,
            })
        })
        .collect();
    let history: Vec<Value> = state
        .history
        .iter()
        .rev()
        .map(|f| {
            let (accepted, verdict, error_code, error) = match &f.outcome {
                Outcome::Dueled { verdict, .. } => {
                    (Some(verdict.accepted), Some(verdict), None, None)
                }
                Outcome::Rejected { code, message, .. } => {
                    (None, None, Some(code.code()), Some(message.as_str()))
                }
                Outcome::Superseded { .. } => {
                    (None, None, None, Some("superseded by a newer commitment"))
                }
            };
            json!({
                "hotkey": f.hotkey,
                "uid": f.uid,
                "model_repo": f.location,
                "digest": f.digest,
                "accepted": accepted,
                "crowned": matches!(f.outcome, Outcome::Dueled { crowned: Some(_), .. }),
                "n": verdict.map(|v| v.n),
                "mu_hat": verdict.map(|v| v.mu_hat),
                "lower": verdict.map(|v| v.lower),
                "upper": verdict.map(|v| v.upper),
                "verdict_digest": verdict.map(|v| v.verdict_digest),
                "error_code": error_code,
                "error": error,
                "block": f.finished_block,
            })
        })
        .collect();
    let current = state.active_entry().map(|(e, phase)| {
        let (stage, progress) = match phase {
            Phase::Gate { gate, .. } => (gate.name().to_string(), None),
            Phase::Duel { progress, .. } => ("duel".to_string(), progress.as_ref()),
            Phase::Crowning { .. } => ("crowning".to_string(), None),
        };
        json!({
            "hotkey": e.hotkey,
            "uid": e.uid,
            "model_repo": e.location,
            "digest": e.digest,
            "stage": stage,
            "n": progress.map(|p| p.n),
            "mu_hat": progress.map(|p| p.mu_hat),
            "lower": progress.map(|p| p.lower),
            "upper": progress.map(|p| p.upper),
        })
    });
    json!({
        "king": king,
        "current_eval": current,
        "queue": queue,
        "history": history,
        "weights": state.expected_weights(),
        "block": state.block,
        "stats": {
            "submissions": state.next_entry,
            "duels": state.counters.duels_finished,
            "crowns": state.counters.crowns,
            "rejected": state.counters.rejected,
        },
    })
}

/// `/metrics`: Prometheus text exposition of the state's counters and gauges. (Process metrics
/// such as append latency belong to the shell.)
pub fn metrics_text(state: &ValidatorState) -> String {
    use std::fmt::Write as _;
    let c = &state.counters;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP koth_validator_{name} {help}");
        let _ = writeln!(out, "# TYPE koth_validator_{name} {kind}");
        let _ = writeln!(out, "koth_validator_{name} {value}");
    };
    metric(
        "block",
        "gauge",
        "Highest chain block the validator has seen.",
        state.block,
    );
    metric(
        "reign",
        "gauge",
        "Reign number of the current king (0 = genesis).",
        state.king().map_or(0, |k| k.number),
    );
    metric(
        "queue_length",
        "gauge",
        "Entries waiting in the queue.",
        state.queue.len() as u64,
    );
    metric(
        "active",
        "gauge",
        "1 while an entry is being gated, dueled or crowned.",
        u64::from(state.active.is_some()),
    );
    metric(
        "paused",
        "gauge",
        "1 while the queue is paused after an infrastructure fault.",
        u64::from(state.is_paused()),
    );
    metric(
        "reveals_processed_total",
        "counter",
        "Revealed commitments that became submissions.",
        c.reveals_processed,
    );
    metric(
        "reveals_ignored_total",
        "counter",
        "Revealed commitments ignored (before the start block, repeats).",
        c.reveals_ignored,
    );
    metric(
        "admitted_total",
        "counter",
        "Submissions admitted to the queue.",
        c.admitted,
    );
    metric(
        "answered_total",
        "counter",
        "Submissions answered (verdict, refusal or superseded).",
        c.answered,
    );
    metric(
        "superseded_total",
        "counter",
        "Queued submissions replaced by a newer commitment.",
        c.superseded,
    );
    metric(
        "duels_started_total",
        "counter",
        "Duels started (restarts included).",
        c.duels_started,
    );
    metric(
        "duels_finished_total",
        "counter",
        "Duels that reached a verdict.",
        c.duels_finished,
    );
    metric("crowns_total", "counter", "Crowns.", c.crowns);
    metric(
        "infra_faults_total",
        "counter",
        "Infrastructure faults (never charged to a miner).",
        c.infra_faults,
    );
    metric(
        "recoveries_total",
        "counter",
        "Restarts recovered from the event log.",
        c.recoveries,
    );
    let _ = writeln!(
        out,
        "# HELP koth_validator_rejected_total Submissions refused, by code."
    );
    let _ = writeln!(out, "# TYPE koth_validator_rejected_total counter");
    for code in koth_core::RejectCode::ALL {
        let n = c.rejected.get(code.code()).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "koth_validator_rejected_total{{code=\"{}\"}} {n}",
            code.code()
        );
    }
    out
}

/// One server-sent-events frame for `/api/events`: the log's sequence number as the SSE `id`
/// (a client reconnecting with `Last-Event-ID` resumes from `EventLog::read_from(id + 1, …)`),
/// the event kind as the SSE `event`, its JSON as `data` (one line: serde_json never emits raw
/// newlines).
pub fn sse_frame(logged: &crate::event::LoggedEvent) -> String {
    let data = serde_json::to_string(&logged.event).unwrap_or_else(|_| "null".to_string());
    format!(
        "id: {}\nevent: {}\ndata: {}\n\n",
        logged.seq,
        logged.event.kind(),
        data
    )
}
