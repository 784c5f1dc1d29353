//! The JSON feeds, as pure functions of the state: `/api/state` (everything, koth's own shape)
//! and `/dashboard.json` (Teutonic's shape, so existing miner tooling can follow a koth
//! validator). The HTTP server that serves them, `/api/events` (SSE) and `/metrics` belong to
//! the shell.

use serde::{Deserialize, Serialize};

use koth_core::competition::RewardPolicy;
use koth_core::{Digest, RejectCode};

use crate::event::{EntryId, Gate, Outcome, VerdictSummary, Weight};
use crate::reward::reward_shares;
use crate::state::{
    Counters, DuelBounds, Entry, Finished, GateRecord, Phase, QueueClass, Reign, ValidatorState,
};

/// Version of the `/api/state` shape; bumped on any incompatible change.
pub const STATE_FEED_VERSION: u32 = 1;

/// `/api/state`: the king, lineage (newest first), queue in evaluation order, the current entry
/// with live bounds, recent history (newest first) and the reward split with its reasons. The
/// validator serialises it; readers (the miner, the devnet) deserialise the same type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateFeed {
    pub version: u32,
    pub started: bool,
    pub competition_sha256: Option<Digest>,
    pub block: u64,
    /// The queue waits until this block after an infrastructure fault.
    pub paused_until: Option<u64>,
    pub king: Option<Reign>,
    /// Every reign, newest first.
    pub lineage: Vec<Reign>,
    /// The entry being gated, dueled or crowned.
    pub current: Option<CurrentView>,
    /// In evaluation order.
    pub queue: Vec<QueuedView>,
    /// Newer entries waiting for their hotkey's active one to finish.
    pub waiting: Vec<EntryView>,
    /// Revealed commitments not decided yet, in the order they will be: each is held until the
    /// chain's reveals up to its commit block + W are read (a digest goes to its earliest
    /// commitment, PROTOCOL §3), then queued or answered. Empty on the embedded chain, where
    /// every reveal is decided in the poll that reads it.
    #[serde(default)]
    pub held: Vec<HeldView>,
    /// Finished entries, newest first.
    pub history: Vec<FinishedView>,
    pub rewards: Option<RewardsView>,
    pub counters: Counters,
}

impl StateFeed {
    /// The finished entry of `digest` submitted by `hotkey`, if the history still holds it.
    pub fn finished(&self, digest: &Digest, hotkey: &str) -> Option<&FinishedView> {
        self.history
            .iter()
            .find(|f| f.digest.as_ref() == Some(digest) && f.hotkey == hotkey)
    }
}

/// An unfinished entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryView {
    pub entry: EntryId,
    pub hotkey: String,
    pub uid: u16,
    pub digest: Digest,
    pub location: String,
    pub commit_block: u64,
    pub reveal_block: u64,
    pub retries: u32,
}

impl From<&Entry> for EntryView {
    fn from(e: &Entry) -> Self {
        EntryView {
            entry: e.id,
            hotkey: e.hotkey.clone(),
            uid: e.uid,
            digest: e.digest,
            location: e.location.clone(),
            commit_block: e.commit_block,
            reveal_block: e.reveal_block,
            retries: e.retries,
        }
    }
}

/// A revealed commitment held until its release block (commit block + W).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldView {
    pub hotkey: String,
    pub uid: Option<u16>,
    /// The payload's digest, when it parses (a malformed one is answered once released).
    pub digest: Option<Digest>,
    pub commit_block: u64,
    pub reveal_block: u64,
    /// Decided once the reveals up to this block have been read.
    pub release_block: u64,
}

/// A queued entry and its place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedView {
    #[serde(flatten)]
    pub entry: EntryView,
    /// 1-based.
    pub position: usize,
    pub class: QueueClass,
}

/// The entry being worked on, and how far it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurrentView {
    #[serde(flatten)]
    pub entry: EntryView,
    /// Gate results of this attempt, in pipeline order.
    pub gates: Vec<GateRecord>,
    #[serde(flatten)]
    pub phase: PhaseView,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum PhaseView {
    /// `running` once the gate has started.
    Gate {
        gate: Gate,
        running: bool,
    },
    /// `progress`: the bounds after the last batch (a bound not computed yet is `None`).
    Duel {
        king: Digest,
        running: bool,
        progress: Option<DuelBounds>,
    },
    Crowning {
        reign: u64,
        verdict: VerdictSummary,
    },
}

/// A finished entry and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinishedView {
    pub entry: EntryId,
    pub hotkey: String,
    pub uid: Option<u16>,
    pub digest: Option<Digest>,
    pub location: Option<String>,
    pub commit_block: u64,
    pub reveal_block: u64,
    pub finished_block: u64,
    pub retries: u32,
    pub gates: Vec<GateRecord>,
    #[serde(flatten)]
    pub result: ResultView,
}

/// How a submission ended, as the feeds say it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ResultView {
    /// Refused at intake (`gate` is `"intake"`) or by a gate (its name, or `"duel"`).
    Rejected {
        code: RejectCode,
        gate: String,
        /// The code explained in words.
        explain: String,
        message: String,
    },
    /// Dueled and crowned: `reign` is the reign it started.
    Crowned {
        reign: u64,
        #[serde(flatten)]
        verdict: VerdictSummary,
    },
    /// Dueled; the king stays.
    KeptKing {
        #[serde(flatten)]
        verdict: VerdictSummary,
    },
    Superseded {
        by: EntryId,
        explain: String,
    },
}

impl ResultView {
    /// The name the feed gives the result (`crowned`, `kept_king`, `rejected`, `superseded`).
    pub fn name(&self) -> &'static str {
        match self {
            ResultView::Rejected { .. } => "rejected",
            ResultView::Crowned { .. } => "crowned",
            ResultView::KeptKing { .. } => "kept_king",
            ResultView::Superseded { .. } => "superseded",
        }
    }

    /// The duel's numbers, for a dueled entry.
    pub fn verdict(&self) -> Option<&VerdictSummary> {
        match self {
            ResultView::Crowned { verdict, .. } | ResultView::KeptKing { verdict } => Some(verdict),
            _ => None,
        }
    }
}

const SUPERSEDED_EXPLAIN: &str =
    "The same hotkey revealed a newer commitment before this one was evaluated.";

impl From<&Outcome> for ResultView {
    fn from(o: &Outcome) -> Self {
        match o {
            Outcome::Rejected {
                code,
                gate,
                message,
            } => ResultView::Rejected {
                code: *code,
                gate: gate.map(Gate::name).unwrap_or("intake").to_string(),
                explain: code.explain().to_string(),
                message: message.clone(),
            },
            Outcome::Dueled {
                verdict,
                crowned: Some(reign),
            } => ResultView::Crowned {
                reign: *reign,
                verdict: verdict.clone(),
            },
            Outcome::Dueled {
                verdict,
                crowned: None,
            } => ResultView::KeptKing {
                verdict: verdict.clone(),
            },
            Outcome::Superseded { by } => ResultView::Superseded {
                by: *by,
                explain: SUPERSEDED_EXPLAIN.to_string(),
            },
        }
    }
}

impl From<&Finished> for FinishedView {
    fn from(f: &Finished) -> Self {
        FinishedView {
            entry: f.id,
            hotkey: f.hotkey.clone(),
            uid: f.uid,
            digest: f.digest,
            location: f.location.clone(),
            commit_block: f.commit_block,
            reveal_block: f.reveal_block,
            finished_block: f.finished_block,
            retries: f.retries,
            gates: f.gates.clone(),
            result: (&f.outcome).into(),
        }
    }
}

/// The reward split and why each hotkey is paid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardsView {
    /// `winner_take_all` or `split_last_k (k = …)`.
    pub policy: String,
    /// The weights the policy gives now.
    pub expected: Vec<Weight>,
    pub why: Vec<RewardWhy>,
    pub last_set_block: Option<u64>,
    pub last_set: Vec<Weight>,
    /// A crown has not been paid yet.
    pub pending: bool,
    pub interval_blocks: u64,
}

/// One reign's part in the reward, in words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardWhy {
    pub reign: u64,
    pub hotkey: Option<String>,
    pub share: f64,
    pub why: String,
}

fn current_view(state: &ValidatorState) -> Option<CurrentView> {
    let (e, phase) = state.active_entry()?;
    let phase = match phase {
        Phase::Gate { gate, started } => PhaseView::Gate {
            gate: *gate,
            running: *started,
        },
        Phase::Duel {
            king,
            running,
            progress,
            ..
        } => PhaseView::Duel {
            king: *king,
            running: *running,
            progress: progress.clone(),
        },
        Phase::Crowning { verdict, reign, .. } => PhaseView::Crowning {
            reign: *reign,
            verdict: verdict.clone(),
        },
    };
    Some(CurrentView {
        entry: e.into(),
        gates: e.gates.clone(),
        phase,
    })
}

fn rewards_view(state: &ValidatorState) -> Option<RewardsView> {
    let rules = state.rules.as_ref()?;
    let policy = match &rules.reward {
        RewardPolicy::WinnerTakeAll => "winner_take_all".to_string(),
        RewardPolicy::SplitLastK { k, .. } => format!("split_last_k (k = {k})"),
    };
    let shares = reward_shares(&rules.reward, &state.reigns);
    let paid_total: f64 = shares
        .iter()
        .filter(|s| s.hotkey.is_some())
        .map(|s| s.share)
        .sum();
    let why = shares
        .iter()
        .map(|s| {
            let position = if s.back == 0 {
                "the king".to_string()
            } else {
                format!("{} reign(s) before the king", s.back)
            };
            let why = match &s.hotkey {
                None => format!(
                    "reign {} ({position}) is the genesis king: its share is not paid",
                    s.reign
                ),
                Some(h) => format!(
                    "reign {} ({position}) held by {h}: share {} of {}",
                    s.reign, s.share, paid_total
                ),
            };
            RewardWhy {
                reign: s.reign,
                hotkey: s.hotkey.clone(),
                share: s.share,
                why,
            }
        })
        .collect();
    Some(RewardsView {
        policy,
        expected: state.expected_weights(),
        why,
        last_set_block: state.weights.last_set_block,
        last_set: state.weights.last.clone(),
        pending: state.weights.dirty,
        interval_blocks: rules.weights_interval_blocks,
    })
}

/// `/api/state` of `state`.
pub fn api_state(state: &ValidatorState) -> StateFeed {
    let queue = state
        .queue
        .iter()
        .enumerate()
        .filter_map(|(i, k)| {
            Some(QueuedView {
                entry: state.entries.get(&k.id)?.into(),
                position: i + 1,
                class: k.class,
            })
        })
        .collect();
    let waiting = state
        .waiting
        .values()
        .filter_map(|id| state.entries.get(id).map(EntryView::from))
        .collect();
    let held = state
        .held
        .iter()
        .map(|r| HeldView {
            hotkey: r.hotkey.clone(),
            uid: r.uid,
            digest: r
                .payload
                .parse::<koth_core::CommitmentPayload>()
                .ok()
                .map(|p| p.digest),
            commit_block: r.commit_block,
            reveal_block: r.reveal_block,
            release_block: state.release_block(r),
        })
        .collect();
    StateFeed {
        version: STATE_FEED_VERSION,
        started: state.rules.is_some(),
        competition_sha256: state.rules.as_ref().map(|r| r.competition_sha256),
        block: state.block,
        paused_until: state.paused_until.filter(|_| state.is_paused()),
        king: state.king().cloned(),
        lineage: state.reigns.iter().rev().cloned().collect(),
        current: current_view(state),
        queue,
        waiting,
        held,
        history: state.history.iter().rev().map(FinishedView::from).collect(),
        rewards: rewards_view(state),
        counters: state.counters.clone(),
    }
}

/// `/dashboard.json` in Teutonic's shape: `king.model_repo`, `king.king_digest`, `king.hotkey`,
/// `king.reign_number`, `queue`, `history`, plus the current evaluation and totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DashboardFeed {
    pub king: Option<DashboardKing>,
    pub current_eval: Option<DashboardCurrent>,
    pub queue: Vec<DashboardQueued>,
    pub history: Vec<DashboardFinished>,
    pub weights: Vec<Weight>,
    pub block: u64,
    pub stats: DashboardStats,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DashboardKing {
    pub model_repo: Option<String>,
    pub king_digest: Digest,
    pub hotkey: Option<String>,
    pub uid: Option<u16>,
    pub reign_number: u64,
    pub crowned_block: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DashboardCurrent {
    pub hotkey: String,
    pub uid: u16,
    pub model_repo: String,
    pub digest: Digest,
    /// A gate's name, `duel` or `crowning`.
    pub stage: String,
    pub n: Option<u64>,
    pub mu_hat: Option<f64>,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DashboardQueued {
    pub position: usize,
    pub hotkey: String,
    pub uid: u16,
    pub model_repo: String,
    pub digest: Digest,
    pub commit_block: u64,
    pub reveal_block: u64,
    pub retries: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DashboardFinished {
    pub hotkey: String,
    pub uid: Option<u16>,
    pub model_repo: Option<String>,
    pub digest: Option<Digest>,
    pub accepted: Option<bool>,
    pub crowned: bool,
    pub n: Option<u64>,
    pub mu_hat: Option<f64>,
    /// The verdict's bounds; `null` for an entry that did not duel and for a bound the rule did
    /// not compute.
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    pub verdict_digest: Option<Digest>,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub block: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DashboardStats {
    pub submissions: u64,
    pub duels: u64,
    pub crowns: u64,
    pub rejected: std::collections::BTreeMap<String, u64>,
    /// Revealed commitments held until their commit block + W (not in `queue` yet).
    #[serde(default)]
    pub held: u64,
}

fn dashboard_finished(f: &Finished) -> DashboardFinished {
    let (verdict, error_code, error) = match &f.outcome {
        Outcome::Dueled { verdict, .. } => (Some(verdict), None, None),
        Outcome::Rejected { code, message, .. } => {
            (None, Some(code.code().to_string()), Some(message.clone()))
        }
        Outcome::Superseded { .. } => (
            None,
            None,
            Some("superseded by a newer commitment".to_string()),
        ),
    };
    DashboardFinished {
        hotkey: f.hotkey.clone(),
        uid: f.uid,
        model_repo: f.location.clone(),
        digest: f.digest,
        accepted: verdict.map(|v| v.accepted),
        crowned: matches!(
            f.outcome,
            Outcome::Dueled {
                crowned: Some(_),
                ..
            }
        ),
        n: verdict.map(|v| v.n),
        mu_hat: verdict.map(|v| v.mu_hat),
        lower: verdict.and_then(|v| v.lower),
        upper: verdict.and_then(|v| v.upper),
        verdict_digest: verdict.map(|v| v.verdict_digest),
        error_code,
        error,
        block: f.finished_block,
    }
}

/// `/dashboard.json` of `state`.
pub fn dashboard_json(state: &ValidatorState) -> DashboardFeed {
    let king = state.king().map(|k| DashboardKing {
        model_repo: k.location.clone(),
        king_digest: k.digest,
        hotkey: k.hotkey.clone(),
        uid: k.uid,
        reign_number: k.number,
        crowned_block: k.block,
    });
    let queue = state
        .queue_in_order()
        .enumerate()
        .map(|(i, e)| DashboardQueued {
            position: i + 1,
            hotkey: e.hotkey.clone(),
            uid: e.uid,
            model_repo: e.location.clone(),
            digest: e.digest,
            commit_block: e.commit_block,
            reveal_block: e.reveal_block,
            retries: e.retries,
        })
        .collect();
    let current_eval = state.active_entry().map(|(e, phase)| {
        let (stage, progress) = match phase {
            Phase::Gate { gate, .. } => (gate.name().to_string(), None),
            Phase::Duel { progress, .. } => ("duel".to_string(), progress.as_ref()),
            Phase::Crowning { .. } => ("crowning".to_string(), None),
        };
        DashboardCurrent {
            hotkey: e.hotkey.clone(),
            uid: e.uid,
            model_repo: e.location.clone(),
            digest: e.digest,
            stage,
            n: progress.map(|p| p.n),
            mu_hat: progress.map(|p| p.mu_hat),
            lower: progress.and_then(|p| p.lower),
            upper: progress.and_then(|p| p.upper),
        }
    });
    DashboardFeed {
        king,
        current_eval,
        queue,
        history: state.history.iter().rev().map(dashboard_finished).collect(),
        weights: state.expected_weights(),
        block: state.block,
        stats: DashboardStats {
            submissions: state.next_entry,
            duels: state.counters.duels_finished,
            crowns: state.counters.crowns,
            rejected: state.counters.rejected.clone(),
            held: state.held.len() as u64,
        },
    }
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
        "held",
        "gauge",
        "Revealed commitments held until their commit block + W (ownership by commit block).",
        state.held.len() as u64,
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
