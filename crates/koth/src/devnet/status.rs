//! The live summary: one line every few seconds, from the validator's `/api/state` and each
//! miner's `attempts.jsonl`. Formatting is pure; the feed is read by the miner's feed client
//! (`koth_miner::follow::FeedClient`) into the type the validator writes it from.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use koth_validator::feed::{PhaseView, StateFeed};
use serde_json::Value;

/// What one miner has done so far, from its `attempts.jsonl`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MinerProgress {
    pub attempts: u64,
    pub submitted: u64,
    /// The last attempt's outcome in a word.
    pub last: Option<String>,
}

/// Read `attempts.jsonl` (missing: nothing yet). Lines that do not parse are skipped: the
/// miner may be writing the last one right now.
pub fn miner_progress(attempts_jsonl: &Path) -> MinerProgress {
    let text = std::fs::read_to_string(attempts_jsonl).unwrap_or_default();
    let mut p = MinerProgress::default();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        p.attempts += 1;
        let submitted = v.get("submitted").and_then(Value::as_bool).unwrap_or(false);
        if submitted {
            p.submitted += 1;
        }
        let validator = v
            .get("validator")
            .and_then(|x| x.get("outcome"))
            .and_then(Value::as_str);
        let local = v
            .get("local")
            .and_then(|x| x.get("verdict"))
            .and_then(Value::as_str);
        p.last = match (validator, local, submitted) {
            (Some(o), _, _) => Some(o.to_string()),
            (None, _, true) => Some("submitted".into()),
            (None, Some(l), false) => Some(format!("local {l}")),
            (None, None, false) => Some("not submitted".into()),
        };
    }
    p
}

fn short_elapsed(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}", s / 60, s % 60)
}

/// One summary line from `/api/state` (`None`: not reachable yet) and the miners.
pub fn summary_line(
    elapsed: Duration,
    state: Option<&StateFeed>,
    names: &BTreeMap<String, String>,
    miners: &[(String, MinerProgress, bool)],
) -> String {
    let mut parts = vec![format!("[{}]", short_elapsed(elapsed))];
    let name_of = |h: &str| names.get(h).cloned().unwrap_or_else(|| h.to_string());
    match state {
        None => parts.push("validator: not answering yet".into()),
        Some(s) => {
            parts.push(format!("block {}", s.block));
            let holder = s
                .king
                .as_ref()
                .and_then(|k| k.hotkey.as_deref())
                .map_or_else(|| "genesis".to_string(), name_of);
            parts.push(format!(
                "king r{} ({holder})",
                s.king.as_ref().map_or(0, |k| k.number)
            ));
            parts.push(format!("queue {}", s.queue.len()));
            let now = match s.current.as_ref().map(|c| (c, &c.phase)) {
                Some((c, PhaseView::Duel { progress, .. })) => {
                    let who = names
                        .get(&c.entry.hotkey)
                        .cloned()
                        .unwrap_or_else(|| "?".into());
                    let bound =
                        |b: Option<f64>| b.map_or_else(|| "…".to_string(), |b| format!("{b:+.4}"));
                    match progress {
                        Some(p) => format!(
                            "duel {who}: n {} μ̂ {:+.4} [{}, {}]",
                            p.n,
                            p.mu_hat,
                            bound(p.lower),
                            bound(p.upper),
                        ),
                        None => format!("duel {who}: loading"),
                    }
                }
                Some((_, PhaseView::Gate { gate, .. })) => format!("gate {}", gate.name()),
                Some((_, PhaseView::Crowning { .. })) => "crowning".into(),
                None => "idle".into(),
            };
            parts.push(now);
        }
    }
    let miners: Vec<String> = miners
        .iter()
        .map(|(name, p, alive)| {
            let state = if *alive { "" } else { " EXITED" };
            format!(
                "{name}: {} att/{} sub{}{}",
                p.attempts,
                p.submitted,
                p.last
                    .as_deref()
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default(),
                state
            )
        })
        .collect();
    if !miners.is_empty() {
        parts.push(format!("| {}", miners.join(", ")));
    }
    parts.join(" · ").replace(" · |", " |")
}

#[cfg(test)]
mod tests {
    use super::*;
    use koth_core::Digest;
    use koth_validator::feed::api_state;
    use koth_validator::ValidatorState;

    #[test]
    fn attempts_are_counted_and_the_last_outcome_named() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("attempts.jsonl");
        assert_eq!(miner_progress(&path), MinerProgress::default());
        std::fs::write(
            &path,
            concat!(
                r#"{"attempt":1,"submitted":true,"local":{"verdict":"crown"},"validator":{"outcome":"crowned","code":null}}"#,
                "\n",
                r#"{"attempt":2,"submitted":false,"local":{"verdict":"keep"},"validator":null}"#,
                "\n",
                r#"{"attempt":3,"submi"#,
            ),
        )
        .unwrap();
        let p = miner_progress(&path);
        assert_eq!(p.attempts, 2);
        assert_eq!(p.submitted, 1);
        assert_eq!(p.last.as_deref(), Some("local keep"));
    }

    #[test]
    fn a_summary_line_shows_the_king_the_queue_the_duel_and_the_miners() {
        let names: BTreeMap<String, String> = [("5Hot".to_string(), "miner-2".to_string())].into();
        let entry = |hotkey: &str, n: u8| {
            serde_json::json!({"entry": n, "hotkey": hotkey, "uid": n, "digest": Digest::of(&[n]),
                               "location": "file:///s", "commit_block": 1, "reveal_block": 2,
                               "retries": 0})
        };
        let mut state = serde_json::to_value(api_state(&ValidatorState::new())).unwrap();
        state["block"] = 42.into();
        state["king"] = serde_json::json!({"reign": 3, "digest": Digest::of(b"k"),
            "hotkey": "5Hot", "uid": 1, "location": null, "entry": 1, "block": 40,
            "block_hash": null});
        let mut queued = entry("5A", 2);
        queued["position"] = 1.into();
        queued["class"] = "normal".into();
        state["queue"] = serde_json::json!([queued.clone(), queued]);
        let mut current = entry("5Hot", 3);
        current["gates"] = serde_json::json!([]);
        current["phase"] = "duel".into();
        current["king"] = serde_json::to_value(Digest::of(b"k")).unwrap();
        current["running"] = true.into();
        current["progress"] =
            serde_json::json!({"n": 64, "mu_hat": 0.125, "lower": 0.05, "upper": 0.2});
        state["current"] = current;
        let state: StateFeed = serde_json::from_value(state).unwrap();
        let miners = vec![
            (
                "miner-1".to_string(),
                MinerProgress {
                    attempts: 4,
                    submitted: 2,
                    last: Some("crowned".into()),
                },
                true,
            ),
            ("miner-2".to_string(), MinerProgress::default(), false),
        ];
        let line = summary_line(Duration::from_secs(75), Some(&state), &names, &miners);
        assert!(line.starts_with("[01:15]"), "{line}");
        for want in [
            "block 42",
            "king r3 (miner-2)",
            "queue 2",
            "duel miner-2: n 64",
            "+0.1250",
            "miner-1: 4 att/2 sub (crowned)",
            "miner-2: 0 att/0 sub EXITED",
        ] {
            assert!(line.contains(want), "{want:?} missing in {line}");
        }
        let mut idle = serde_json::to_value(api_state(&ValidatorState::new())).unwrap();
        idle["block"] = 1.into();
        idle["king"] = serde_json::json!({"reign": 0, "digest": Digest::of(b"g"), "hotkey": null,
            "uid": null, "location": null, "entry": null, "block": 0, "block_hash": null});
        let idle: StateFeed = serde_json::from_value(idle).unwrap();
        let line = summary_line(Duration::ZERO, Some(&idle), &names, &[]);
        assert!(
            line.contains("king r0 (genesis)") && line.contains("idle"),
            "{line}"
        );
        assert!(summary_line(Duration::ZERO, None, &names, &[]).contains("not answering"));
    }
}
