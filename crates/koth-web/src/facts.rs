//! What the pages need that the validator's state does not keep, derived from the event log
//! (a pure fold over logged events, so it survives restarts and needs no change to the core):
//! when each reign began, the batch-by-batch trace of the latest duel, and which verdict
//! measured each king's held-out loss.

use std::collections::BTreeMap;

use koth_core::Digest;
use koth_hill::event::{EntryId, Event, VerdictSummary};
use koth_hill::LoggedEvent;

/// Most batches kept for one duel's trace (n_max / batch size is far below this in any sane
/// competition; the cap only bounds memory).
pub const MAX_TRACE_POINTS: usize = 20_000;

/// The sequential rule's state after one batch, as the `duel_progress` events report it.
#[derive(Debug, Clone, PartialEq)]
pub struct TracePoint {
    pub n: u64,
    pub mu_hat: f64,
    /// `None` where the rule has not computed the bound (the event carries none).
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    pub at_unix_ms: i64,
}

/// The latest duel: running, finished, or interrupted by our infrastructure.
#[derive(Debug, Clone, PartialEq)]
pub struct DuelTrace {
    pub entry: EntryId,
    pub king: Digest,
    pub started_unix_ms: i64,
    pub points: Vec<TracePoint>,
    pub finished: Option<VerdictSummary>,
    /// An infrastructure fault or a restart stopped it; the entry is queued again.
    pub interrupted: bool,
}

/// The fold's result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogFacts {
    /// The last sequence number folded in (0: none).
    pub last_seq: i64,
    pub last_event_unix_ms: Option<i64>,
    /// When the log began: the genesis king's reign started then.
    pub started_unix_ms: Option<i64>,
    /// reign number → when it was crowned.
    pub crowned_unix_ms: BTreeMap<u64, i64>,
    /// The latest duel started.
    pub duel: Option<DuelTrace>,
    /// entry → the accepted verdict that crowned it (its loss is the new king's loss).
    pub crowning_verdict: BTreeMap<EntryId, VerdictSummary>,
    /// king digest → the first and the latest finished duel against it.
    pub first_duel_vs: BTreeMap<Digest, VerdictSummary>,
    pub latest_duel_vs: BTreeMap<Digest, VerdictSummary>,
    /// king digest → duels finished against it.
    pub duels_vs: BTreeMap<Digest, u64>,
}

impl LogFacts {
    /// Fold one logged event in. Events at or before `last_seq` are ignored, so feeding an
    /// overlapping batch twice is harmless.
    pub fn fold(&mut self, logged: &LoggedEvent) {
        if logged.seq <= self.last_seq {
            return;
        }
        self.last_seq = logged.seq;
        self.last_event_unix_ms = Some(logged.at_unix_ms);
        let at = logged.at_unix_ms;
        match &logged.event {
            Event::Started { .. } => {
                self.started_unix_ms.get_or_insert(at);
            }
            Event::Crowned { reign, .. } => {
                self.crowned_unix_ms.insert(*reign, at);
            }
            Event::DuelStarted { entry, king, .. } => {
                self.duel = Some(DuelTrace {
                    entry: *entry,
                    king: *king,
                    started_unix_ms: at,
                    points: Vec::new(),
                    finished: None,
                    interrupted: false,
                });
            }
            Event::DuelProgress {
                entry,
                n,
                mu_hat,
                lower,
                upper,
            } => {
                if let Some(d) = self.duel.as_mut().filter(|d| d.entry == *entry) {
                    if d.points.len() < MAX_TRACE_POINTS {
                        d.points.push(TracePoint {
                            n: *n,
                            mu_hat: *mu_hat,
                            lower: *lower,
                            upper: *upper,
                            at_unix_ms: at,
                        });
                    }
                }
            }
            Event::DuelFinished { entry, verdict } => {
                if let Some(d) = self.duel.as_mut().filter(|d| d.entry == *entry) {
                    d.finished = Some(verdict.clone());
                    let king = d.king;
                    self.first_duel_vs
                        .entry(king)
                        .or_insert_with(|| verdict.clone());
                    self.latest_duel_vs.insert(king, verdict.clone());
                    *self.duels_vs.entry(king).or_default() += 1;
                }
                if verdict.accepted {
                    self.crowning_verdict.insert(*entry, verdict.clone());
                }
            }
            // A duel that ended without a verdict: ours (an infra fault) or the challenger's
            // own failure (`duel_refused`); either way its trace has no result.
            Event::InfraFault { entry, .. } | Event::DuelRefused { entry, .. } => {
                if let Some(d) = self
                    .duel
                    .as_mut()
                    .filter(|d| d.entry == *entry && d.finished.is_none())
                {
                    d.interrupted = true;
                }
            }
            Event::Recovered => {
                if let Some(d) = self.duel.as_mut().filter(|d| d.finished.is_none()) {
                    d.interrupted = true;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(seq: i64, event: Event) -> LoggedEvent {
        LoggedEvent {
            seq,
            at_unix_ms: 1_000 * seq,
            event,
        }
    }

    fn summary(accepted: bool) -> VerdictSummary {
        VerdictSummary {
            accepted,
            n: 128,
            mu_hat: 0.1,
            lower: Some(0.05),
            upper: Some(0.15),
            verdict_digest: Digest::of(b"v"),
            verdict_path: "/x.json".into(),
        }
    }

    #[test]
    fn traces_the_latest_duel_and_remembers_crowning_verdicts() {
        let king = Digest::of(b"king");
        let mut f = LogFacts::default();
        let events = [
            Event::DuelStarted {
                entry: 3,
                king,
                seed: koth_hill::SeedMaterial {
                    competition_sha256: Digest::of(b"c"),
                    reveal_block_hash: "h".into(),
                    hotkey: "k".into(),
                },
            },
            Event::DuelProgress {
                entry: 3,
                n: 64,
                mu_hat: 0.2,
                lower: None,
                upper: None,
            },
            Event::DuelProgress {
                entry: 3,
                n: 128,
                mu_hat: 0.2,
                lower: Some(0.1),
                upper: Some(0.3),
            },
            // Progress of another entry does not belong to this trace.
            Event::DuelProgress {
                entry: 9,
                n: 1,
                mu_hat: 9.0,
                lower: Some(9.0),
                upper: Some(9.0),
            },
            Event::DuelFinished {
                entry: 3,
                verdict: summary(true),
            },
            Event::Crowned {
                entry: 3,
                digest: Digest::of(b"new"),
                hotkey: "k".into(),
                reign: 1,
                block: 10,
                block_hash: "b".into(),
                location: None,
            },
        ];
        for (i, e) in events.into_iter().enumerate() {
            f.fold(&logged(i as i64 + 1, e));
        }
        // Folding an old event again changes nothing.
        let before = f.clone();
        f.fold(&logged(2, Event::Recovered));
        assert_eq!(f, before);
        let d = f.duel.as_ref().unwrap();
        assert_eq!(d.points.len(), 2);
        assert_eq!(d.points[0].lower, None, "uncomputed bound");
        assert_eq!(d.points[1].lower, Some(0.1));
        assert!(d.finished.is_some() && !d.interrupted);
        assert!(f.crowning_verdict.contains_key(&3));
        assert_eq!(f.crowned_unix_ms.get(&1), Some(&6_000));
        assert_eq!(f.duels_vs.get(&king), Some(&1));
        assert_eq!(f.last_seq, 6);
    }

    #[test]
    fn a_restart_marks_an_unfinished_duel_interrupted() {
        let mut f = LogFacts::default();
        f.fold(&logged(
            1,
            Event::DuelStarted {
                entry: 1,
                king: Digest::of(b"k"),
                seed: koth_hill::SeedMaterial {
                    competition_sha256: Digest::of(b"c"),
                    reveal_block_hash: "h".into(),
                    hotkey: "k".into(),
                },
            },
        ));
        f.fold(&logged(2, Event::Recovered));
        assert!(f.duel.as_ref().unwrap().interrupted);
    }
}
