//! Following the king, and watching for the validator's verdict on a submission.
//!
//! - With `[validator] feed`: the validator's `/api/state` is authoritative: `king.digest` and
//!   `king.location` (before the validator has started: the competition's genesis king), and
//!   the `history` entry of a submitted digest (`result`: crowned / kept_king / rejected with
//!   `code` and `message` / superseded). A feed for another competition (its
//!   `competition_sha256` differs from ours) is an error. If the feed cannot be reached, the
//!   miner falls back to the chain for that poll and says so in a warning.
//! - From the chain alone ([`king_from_chain`]): the genesis king, replaced by the inferred
//!   current king: the validator (with a permit) that set weights most recently, the uid it
//!   weights most (lowest uid on a tie), and that hotkey's newest commitment revealed at or
//!   before those weights were set (after the competition's start block). Winner-take-all pays
//!   exactly the king, so this is the king as of the last weight setting; it can lag a crown by
//!   the time the validator takes to set weights, and under a split reward it assumes the
//!   current king holds the largest share.

use std::time::Duration;

use koth_chain::{Chain, Metagraph, Reveal, ValidatorWeights};
use koth_core::competition::Competition;
use koth_core::{CommitmentPayload, Digest};
use serde::Serialize;
use serde_json::Value;

use crate::error::{MinerError, Result};

/// Where the king's identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KingSource {
    Feed,
    Chain,
    Genesis,
}

/// The current king as the miner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KingRef {
    pub digest: Digest,
    /// Where it can be fetched (`None`: the competition names no genesis location).
    pub location: Option<String>,
    pub source: KingSource,
    /// Reign number, when the feed gives it.
    pub reign: Option<u64>,
}

impl KingRef {
    pub fn genesis(competition: &Competition) -> Self {
        KingRef {
            digest: competition.genesis_king,
            location: competition.genesis_location.clone(),
            source: KingSource::Genesis,
            reign: None,
        }
    }
}

/// The king inferred from the chain (see the module docs).
pub fn king_from_chain(
    competition: &Competition,
    weights: &[ValidatorWeights],
    metagraph: &Metagraph,
    reveals: &[Reveal],
) -> KingRef {
    let latest = weights
        .iter()
        .filter(|w| {
            metagraph
                .by_hotkey(&w.validator_hotkey)
                .is_some_and(|n| n.validator_permit)
        })
        .max_by(|a, b| {
            a.set_block
                .cmp(&b.set_block)
                .then(b.validator_uid.cmp(&a.validator_uid))
        });
    let Some(w) = latest else {
        return KingRef::genesis(competition);
    };
    let top = w
        .weights
        .iter()
        .filter(|(_, v)| *v > 0)
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)));
    let Some(&(uid, _)) = top else {
        return KingRef::genesis(competition);
    };
    let Some(neuron) = metagraph.by_uid(uid) else {
        return KingRef::genesis(competition);
    };
    let newest = reveals
        .iter()
        .filter(|r| {
            r.hotkey == neuron.hotkey
                && r.commit_block > competition.start_block
                && r.reveal_block <= w.set_block
        })
        .filter_map(|r| {
            r.payload
                .parse::<CommitmentPayload>()
                .ok()
                .map(|p| (r.reveal_block, r.commit_block, p))
        })
        .max_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    match newest {
        Some((_, _, p)) => KingRef {
            digest: p.digest,
            location: Some(p.location),
            source: KingSource::Chain,
            reign: None,
        },
        None => KingRef::genesis(competition),
    }
}

/// The validator's answer to a submission.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidatorVerdict {
    /// `crowned`, `kept_king`, `rejected`, `superseded`, or `unknown` (no answer in time).
    pub outcome: String,
    /// The reject code (`config_mismatch`, …) for a rejection.
    pub code: Option<String>,
    pub message: Option<String>,
    pub mu_hat: Option<f64>,
    pub n: Option<u64>,
}

impl ValidatorVerdict {
    pub fn crowned(&self) -> bool {
        self.outcome == "crowned"
    }
}

/// Parse the king out of an `/api/state` document.
pub fn king_from_feed(
    competition: &Competition,
    state: &Value,
) -> std::result::Result<KingRef, String> {
    if let Some(sha) = state.get("competition_sha256").and_then(Value::as_str) {
        let ours = competition.sha256().to_string();
        if sha != ours {
            return Err(format!(
                "the validator plays competition {sha}, this miner's competition file is {ours}"
            ));
        }
    }
    match state.get("king") {
        None | Some(Value::Null) => Ok(KingRef::genesis(competition)),
        Some(k) => {
            let digest = k
                .get("digest")
                .and_then(Value::as_str)
                .ok_or("`king.digest` is missing")?
                .parse::<Digest>()
                .map_err(|e| format!("`king.digest`: {e}"))?;
            let location = k
                .get("location")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| {
                    (digest == competition.genesis_king)
                        .then(|| competition.genesis_location.clone())
                        .flatten()
                });
            Ok(KingRef {
                digest,
                location,
                source: KingSource::Feed,
                reign: k.get("reign").and_then(Value::as_u64),
            })
        }
    }
}

/// The finished entry of `digest` submitted by `hotkey` in an `/api/state` document, if any.
pub fn verdict_from_feed(state: &Value, digest: &Digest, hotkey: &str) -> Option<ValidatorVerdict> {
    let wanted = digest.to_string();
    let entry = state.get("history")?.as_array()?.iter().find(|e| {
        e.get("digest").and_then(Value::as_str) == Some(wanted.as_str())
            && e.get("hotkey").and_then(Value::as_str) == Some(hotkey)
    })?;
    let s = |k: &str| entry.get(k).and_then(Value::as_str).map(str::to_string);
    Some(ValidatorVerdict {
        outcome: s("result").unwrap_or_else(|| "unknown".into()),
        code: s("code"),
        message: s("message").or_else(|| s("explain")),
        mu_hat: entry.get("mu_hat").and_then(Value::as_f64),
        n: entry.get("n").and_then(Value::as_u64),
    })
}

/// A blocking client for the validator's `/api/state`.
pub struct FeedClient {
    base: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    /// Whether the last request failed (a fallback is announced once, not on every poll).
    failing: std::sync::atomic::AtomicBool,
}

impl FeedClient {
    pub fn new(base: &str) -> Result<Self> {
        let feed_err = |m: String| MinerError::Feed {
            url: base.to_string(),
            message: m,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| feed_err(format!("starting the HTTP runtime: {e}")))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| feed_err(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            client,
            runtime,
            failing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// GET `/api/state` as JSON, logging (once per outage) when it fails and when it is back.
    pub fn state(&self) -> Result<Value> {
        use std::sync::atomic::Ordering;
        let result = self.fetch_state();
        let was_failing = self.failing.swap(result.is_err(), Ordering::SeqCst);
        match (&result, was_failing) {
            (Err(e), false) => tracing::warn!("{e}; following the chain until it answers"),
            (Ok(_), true) => tracing::info!("validator feed {} answers again", self.base),
            _ => {}
        }
        result
    }

    fn fetch_state(&self) -> Result<Value> {
        let url = format!("{}/api/state", self.base);
        let err = |m: String| MinerError::Feed {
            url: url.clone(),
            message: m,
        };
        self.runtime.block_on(async {
            let resp = self
                .client
                .get(&url)
                .send()
                .await
                .map_err(|e| err(e.to_string()))?;
            if !resp.status().is_success() {
                return Err(err(format!("HTTP {}", resp.status())));
            }
            resp.json::<Value>()
                .await
                .map_err(|e| err(format!("not JSON: {e}")))
        })
    }
}

/// Follows the king through the feed (when configured) or the chain.
pub struct Follower {
    competition: Competition,
    chain: Box<dyn Chain>,
    chain_path: std::path::PathBuf,
    feed: Option<FeedClient>,
}

impl Follower {
    pub fn new(
        competition: Competition,
        chain: Box<dyn Chain>,
        chain_path: std::path::PathBuf,
        feed: Option<FeedClient>,
    ) -> Self {
        Self {
            competition,
            chain,
            chain_path,
            feed,
        }
    }

    pub fn chain(&self) -> &dyn Chain {
        self.chain.as_ref()
    }

    pub fn has_feed(&self) -> bool {
        self.feed.is_some()
    }

    fn chain_err(&self, e: impl std::fmt::Display) -> MinerError {
        MinerError::Chain {
            path: self.chain_path.clone(),
            message: e.to_string(),
        }
    }

    /// The king as the chain says.
    pub fn king_from_chain(&self) -> Result<KingRef> {
        let weights = self.chain.weights().map_err(|e| self.chain_err(e))?;
        let metagraph = self.chain.metagraph().map_err(|e| self.chain_err(e))?;
        let reveals = self
            .chain
            .revealed_since(self.competition.start_block)
            .map_err(|e| self.chain_err(e))?;
        Ok(king_from_chain(
            &self.competition,
            &weights,
            &metagraph,
            &reveals,
        ))
    }

    /// The current king: the feed's, or the chain's when there is no feed or it is unreachable.
    /// A feed for another competition is an error.
    pub fn king(&self) -> Result<KingRef> {
        if let Some(feed) = &self.feed {
            // A failure is announced by FeedClient::state; the chain answers instead.
            if let Ok(state) = feed.state() {
                return king_from_feed(&self.competition, &state).map_err(|m| MinerError::Feed {
                    url: feed.base().to_string(),
                    message: m,
                });
            }
        }
        self.king_from_chain()
    }

    /// The validator's verdict on `digest` from `hotkey`, if it has one yet. Without a feed the
    /// chain can only tell a crown (the king is now `digest`).
    pub fn verdict(&self, digest: &Digest, hotkey: &str) -> Result<Option<ValidatorVerdict>> {
        if let Some(feed) = &self.feed {
            if let Ok(state) = feed.state() {
                return Ok(verdict_from_feed(&state, digest, hotkey));
            }
        }
        let king = self.king_from_chain()?;
        Ok((king.digest == *digest).then(|| ValidatorVerdict {
            outcome: "crowned".into(),
            code: None,
            message: Some("the chain's weights now pay this submission's hotkey".into()),
            mu_hat: None,
            n: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use koth_chain::{BlockRef, Keypair, Neuron};
    use serde_json::json;

    fn competition() -> Competition {
        let text = format!(
            r#"name = "t"
netuid = 7
genesis_king = "{}"
genesis_location = "file:///genesis"
start_block = 5
[architecture]
family = "llama"
locked_keys = ["hidden_size"]
[data]
bundle = "b.json"
bundle_sha256 = "{}"
seq_len = 16
[duel]
test = "sequential"
alpha = 0.01
delta = {{ absolute = 0.0 }}
n_max = 64
batch_size = 8
[intake]
reveal_delay_blocks = 2
size_cap_bytes = 1000000
[reward]
policy = "winner_take_all"
[weights]
interval_blocks = 10
"#,
            Digest::of(b"genesis"),
            Digest::of(b"bundle")
        );
        Competition::from_toml_str(&text).unwrap()
    }

    fn neuron(uid: u16, key: &Keypair, permit: bool) -> Neuron {
        Neuron {
            uid,
            hotkey: key.account(),
            coldkey: key.account(),
            validator_permit: permit,
            registered_block: 1,
        }
    }

    fn reveal(key: &Keypair, uid: u16, digest: &Digest, commit: u64) -> Reveal {
        Reveal {
            hotkey: key.account(),
            uid,
            payload: format!("v4|file:///s|{digest}|{}", key.account().to_ss58()),
            commit_block: commit,
            reveal_block: commit + 2,
        }
    }

    #[test]
    fn the_chain_king_is_the_top_weighted_hotkeys_commitment_revealed_before_the_weights() {
        let c = competition();
        let (v, a, b) = (
            Keypair::from_seed([1; 32]),
            Keypair::from_seed([2; 32]),
            Keypair::from_seed([3; 32]),
        );
        let mg = Metagraph {
            netuid: 7,
            block: BlockRef {
                number: 100,
                hash: Digest::of(b"h"),
            },
            neurons: vec![
                neuron(0, &v, true),
                neuron(1, &a, false),
                neuron(2, &b, false),
            ],
        };
        let (d1, d2, d3) = (Digest::of(b"1"), Digest::of(b"2"), Digest::of(b"3"));
        let reveals = vec![
            reveal(&a, 1, &d1, 10),
            reveal(&a, 1, &d2, 20),
            // Revealed after the weights were set: not what the weights pay for.
            reveal(&a, 1, &d3, 40),
            reveal(&b, 2, &Digest::of(b"b"), 12),
        ];
        // No weights: genesis.
        let k = king_from_chain(&c, &[], &mg, &reveals);
        assert_eq!(k, KingRef::genesis(&c));
        assert_eq!(k.location.as_deref(), Some("file:///genesis"));
        let w = ValidatorWeights {
            validator_uid: 0,
            validator_hotkey: v.account(),
            set_block: 30,
            weights: vec![(1, 65535), (2, 100)],
        };
        let k = king_from_chain(&c, std::slice::from_ref(&w), &mg, &reveals);
        assert_eq!((k.digest, k.source), (d2, KingSource::Chain));
        assert_eq!(k.location.as_deref(), Some("file:///s"));
        // Weights from a hotkey without a permit are ignored.
        let fake = ValidatorWeights {
            validator_uid: 2,
            validator_hotkey: b.account(),
            set_block: 50,
            weights: vec![(2, 65535)],
        };
        let k = king_from_chain(&c, &[w.clone(), fake], &mg, &reveals);
        assert_eq!(k.digest, d2);
        // Commitments at or before the start block do not count.
        let early = vec![reveal(&a, 1, &d1, 3)];
        assert_eq!(king_from_chain(&c, &[w], &mg, &early), KingRef::genesis(&c));
    }

    #[test]
    fn the_feed_names_the_king_and_the_verdict() {
        let c = competition();
        let d = Digest::of(b"challenger");
        let state = json!({
            "competition_sha256": c.sha256().to_string(),
            "king": {"digest": d.to_string(), "location": "file:///x", "reign": 3},
            "history": [
                {"digest": d.to_string(), "hotkey": "5Other", "result": "rejected", "code": "digest_owned", "message": "copy"},
                {"digest": d.to_string(), "hotkey": "5Me", "result": "crowned", "mu_hat": 0.5, "n": 64},
            ],
        });
        let k = king_from_feed(&c, &state).unwrap();
        assert_eq!(
            (k.digest, k.reign, k.source),
            (d, Some(3), KingSource::Feed)
        );
        let v = verdict_from_feed(&state, &d, "5Me").unwrap();
        assert!(v.crowned());
        assert_eq!((v.mu_hat, v.n), (Some(0.5), Some(64)));
        let other = verdict_from_feed(&state, &d, "5Other").unwrap();
        assert_eq!(other.code.as_deref(), Some("digest_owned"));
        assert!(verdict_from_feed(&state, &Digest::of(b"nope"), "5Me").is_none());
        // Not started yet: the genesis king, with the competition's location.
        let fresh = json!({"competition_sha256": null, "king": null, "history": []});
        assert_eq!(king_from_feed(&c, &fresh).unwrap(), KingRef::genesis(&c));
        // Another competition's feed is refused, naming both.
        let wrong = json!({"competition_sha256": Digest::of(b"x").to_string(), "king": null});
        let e = king_from_feed(&c, &wrong).unwrap_err();
        assert!(e.contains(&c.sha256().to_string()), "{e}");
        // A malformed king is an error naming the field.
        let bad = json!({"king": {"digest": "sha256:zz"}});
        assert!(king_from_feed(&c, &bad)
            .unwrap_err()
            .contains("king.digest"));
    }
}
