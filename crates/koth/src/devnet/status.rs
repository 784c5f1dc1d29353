//! The live summary: one line every few seconds, from the validator's `/api/state` and each
//! miner's `attempts.jsonl`. Formatting is pure (tested on recorded shapes); fetching is a
//! small HTTP client on a current-thread runtime.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

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
    state: Option<&Value>,
    names: &BTreeMap<String, String>,
    miners: &[(String, MinerProgress, bool)],
) -> String {
    let mut parts = vec![format!("[{}]", short_elapsed(elapsed))];
    match state {
        None => parts.push("validator: not answering yet".into()),
        Some(s) => {
            parts.push(format!("block {}", s["block"].as_u64().unwrap_or(0)));
            let king = &s["king"];
            let holder = king["hotkey"].as_str().map_or_else(
                || "genesis".to_string(),
                |h| names.get(h).cloned().unwrap_or_else(|| h.to_string()),
            );
            parts.push(format!(
                "king r{} ({holder})",
                king["reign"].as_u64().unwrap_or(0)
            ));
            parts.push(format!(
                "queue {}",
                s["queue"].as_array().map_or(0, Vec::len)
            ));
            let cur = &s["current"];
            let now = match cur["phase"].as_str() {
                Some("duel") => {
                    let who = cur["hotkey"]
                        .as_str()
                        .and_then(|h| names.get(h).cloned())
                        .unwrap_or_else(|| "?".into());
                    match cur["progress"].as_object() {
                        Some(p) => format!(
                            "duel {who}: n {} μ̂ {:+.4} [{:+.4}, {:+.4}]",
                            p.get("n").and_then(Value::as_u64).unwrap_or(0),
                            p.get("mu_hat").and_then(Value::as_f64).unwrap_or(0.0),
                            p.get("lower").and_then(Value::as_f64).unwrap_or(0.0),
                            p.get("upper").and_then(Value::as_f64).unwrap_or(0.0),
                        ),
                        None => format!("duel {who}: loading"),
                    }
                }
                Some("gate") => format!("gate {}", cur["gate"].as_str().unwrap_or("?")),
                Some("crowning") => "crowning".into(),
                _ => "idle".into(),
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

/// A small client of the validator's feeds.
pub struct FeedClient {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

impl FeedClient {
    pub fn new(base: String) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("HTTP runtime: {e}"))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            runtime,
            client,
            base,
        })
    }

    /// `GET /api/state`, or `None` when the validator does not answer.
    pub fn state(&self) -> Option<Value> {
        let url = format!("{}/api/state", self.base);
        self.runtime.block_on(async {
            let resp = self.client.get(&url).send().await.ok()?;
            if !resp.status().is_success() {
                return None;
            }
            resp.json::<Value>().await.ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let state = serde_json::json!({
            "block": 42,
            "king": {"reign": 3, "hotkey": "5Hot"},
            "queue": [{}, {}],
            "current": {"phase": "duel", "hotkey": "5Hot",
                        "progress": {"n": 64, "mu_hat": 0.125, "lower": 0.05, "upper": 0.2}},
        });
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
        let idle = serde_json::json!({"block": 1, "king": {"reign": 0, "hotkey": null}, "queue": [], "current": null});
        let line = summary_line(Duration::ZERO, Some(&idle), &names, &[]);
        assert!(
            line.contains("king r0 (genesis)") && line.contains("idle"),
            "{line}"
        );
        assert!(summary_line(Duration::ZERO, None, &names, &[]).contains("not answering"));
    }
}
