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
use koth_hill::feed::{ResultView, StateFeed};
use serde::Serialize;

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

/// A validator feed that plays another competition than this miner's file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the validator plays competition {validator}, this miner's competition file is {ours}")]
pub struct OtherCompetition {
    pub validator: Digest,
    pub ours: Digest,
}

/// The king in the validator's `/api/state` (the genesis king before the game has started).
pub fn king_from_feed(
    competition: &Competition,
    state: &StateFeed,
) -> std::result::Result<KingRef, OtherCompetition> {
    if let Some(sha) = state.competition_sha256 {
        if sha != competition.sha256() {
            return Err(OtherCompetition {
                validator: sha,
                ours: competition.sha256(),
            });
        }
    }
    let Some(k) = &state.king else {
        return Ok(KingRef::genesis(competition));
    };
    let location = k.location.clone().or_else(|| {
        (k.digest == competition.genesis_king)
            .then(|| competition.genesis_location.clone())
            .flatten()
    });
    Ok(KingRef {
        digest: k.digest,
        location,
        source: KingSource::Feed,
        reign: Some(k.number),
    })
}

/// The validator's answer to `digest` from `hotkey` in its `/api/state`, if it has one.
pub fn verdict_from_feed(
    state: &StateFeed,
    digest: &Digest,
    hotkey: &str,
) -> Option<ValidatorVerdict> {
    let f = state.finished(digest, hotkey)?;
    let (code, message) = match &f.result {
        ResultView::Rejected { code, message, .. } => {
            (Some(code.code().to_string()), Some(message.clone()))
        }
        ResultView::Superseded { explain, .. } => (None, Some(explain.clone())),
        ResultView::Crowned { .. } | ResultView::KeptKing { .. } => (None, None),
    };
    let verdict = f.result.verdict();
    Some(ValidatorVerdict {
        outcome: f.result.name().to_string(),
        code,
        message,
        mu_hat: verdict.map(|v| v.mu_hat),
        n: verdict.map(|v| v.n),
    })
}

/// The one blocking client of the validator's `/api/state`, for the miner and the devnet: it
/// reads the feed into the type the validator writes it from ([`StateFeed`]).
pub struct FeedClient {
    base: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    /// Whether the last request failed (a fallback is announced once, not on every poll).
    failing: std::sync::atomic::AtomicBool,
}

impl FeedClient {
    /// A client of the validator serving at `base`, each request given at most `timeout`.
    pub fn new(base: &str, timeout: Duration) -> Result<Self> {
        let feed_err = |m: String| MinerError::Feed {
            url: base.to_string(),
            message: m,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| feed_err(format!("starting the HTTP runtime: {e}")))?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
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

    /// `GET /api/state`, logging (once per outage) when it fails and when it is back: for a
    /// miner, which follows the chain meanwhile.
    pub fn state(&self) -> Result<StateFeed> {
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

    /// `GET /api/state`, without logging.
    pub fn fetch_state(&self) -> Result<StateFeed> {
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
            resp.json::<StateFeed>()
                .await
                .map_err(|e| err(format!("not the validator's state feed: {e}")))
        })
    }
}

/// Follows the king through the feed (when configured) or the chain.
pub struct Follower {
    competition: Competition,
    chain: Box<dyn Chain>,
    /// The chain, for messages: its file, or the node and netuid.
    chain_name: String,
    feed: Option<FeedClient>,
}

impl Follower {
    pub fn new(
        competition: Competition,
        chain: Box<dyn Chain>,
        chain_name: String,
        feed: Option<FeedClient>,
    ) -> Self {
        Self {
            competition,
            chain,
            chain_name,
            feed,
        }
    }

    pub fn chain(&self) -> &dyn Chain {
        self.chain.as_ref()
    }

    pub fn has_feed(&self) -> bool {
        self.feed.is_some()
    }

    /// `e` as an error of the chain this follower reads.
    pub(crate) fn chain_err(&self, e: impl std::fmt::Display) -> MinerError {
        MinerError::Chain {
            chain: self.chain_name.clone(),
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
                return king_from_feed(&self.competition, &state).map_err(|e| MinerError::Feed {
                    url: feed.base().to_string(),
                    message: e.to_string(),
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

    /// A feed as the validator writes it, from a state the core built: `5Me`'s checkpoint
    /// crowned as reign 1, `5Other`'s copy of it refused.
    fn feed_with_a_crown(c: &Competition, d: Digest) -> StateFeed {
        use koth_hill::{apply, Effect, Event, Reveal as Revealed, Rules, ValidatorState};
        let mut state = ValidatorState::new();
        let mut rules = Rules::from_competition(c);
        rules.start_block = 0;
        let mut step = |e: Event| apply(&mut state, &e).unwrap();
        step(Event::Started { rules });
        let reveal = |hotkey: &str, commit: u64| Revealed {
            hotkey: hotkey.into(),
            uid: Some(1),
            payload: format!("v4|file:///x|{d}|{hotkey}"),
            commit_block: commit,
            reveal_block: commit + 2,
            block_hash: format!("0x{commit}"),
        };
        let mut fx = step(Event::Revealed {
            block: 3,
            reveals: vec![reveal("5Me", 1)],
        });
        loop {
            match fx
                .iter()
                .find(|e| !matches!(e, Effect::Answer { .. }))
                .cloned()
            {
                Some(Effect::RunGate { entry, gate, .. }) => {
                    step(Event::GateStarted { entry, gate });
                    fx = step(Event::GatePassed { entry, gate });
                }
                Some(Effect::StartDuel {
                    entry, king, seed, ..
                }) => {
                    step(Event::DuelStarted { entry, king, seed });
                    fx = step(Event::DuelFinished {
                        entry,
                        verdict: koth_hill::VerdictSummary {
                            accepted: true,
                            n: 64,
                            mu_hat: 0.5,
                            lower: Some(0.1),
                            // As a bootstrap crown: the rule computed no upper bound.
                            upper: None,
                            verdict_digest: Digest::of(b"v"),
                            verdict_path: "/v.json".into(),
                        },
                    });
                }
                Some(Effect::Crown {
                    entry,
                    digest,
                    hotkey,
                    reign,
                    ..
                }) => {
                    fx = step(Event::Crowned {
                        entry,
                        digest,
                        hotkey,
                        reign,
                        block: 3,
                        block_hash: "0xc".into(),
                        location: None,
                    });
                }
                _ => break,
            }
        }
        step(Event::Revealed {
            block: 6,
            reveals: vec![reveal("5Other", 4)],
        });
        // The feed travels as JSON: read it back as a client does.
        let json = serde_json::to_string(&koth_hill::feed::api_state(&state)).unwrap();
        serde_json::from_str(&json).unwrap()
    }

    #[test]
    fn the_feed_names_the_king_and_the_verdict() {
        let c = competition();
        let d = Digest::of(b"challenger");
        let state = feed_with_a_crown(&c, d);
        let k = king_from_feed(&c, &state).unwrap();
        assert_eq!(
            (k.digest, k.reign, k.source),
            (d, Some(1), KingSource::Feed)
        );
        assert_eq!(k.location.as_deref(), Some("file:///x"));
        let v = verdict_from_feed(&state, &d, "5Me").unwrap();
        assert!(v.crowned());
        assert_eq!((v.mu_hat, v.n), (Some(0.5), Some(64)));
        // The bound the rule did not compute came through the JSON as none, not as a number.
        let crowned = state.finished(&d, "5Me").unwrap().result.verdict().unwrap();
        assert_eq!((crowned.lower, crowned.upper), (Some(0.1), None));
        let other = verdict_from_feed(&state, &d, "5Other").unwrap();
        assert_eq!(other.outcome, "rejected");
        assert_eq!(other.code.as_deref(), Some("digest_owned"));
        assert!(verdict_from_feed(&state, &Digest::of(b"nope"), "5Me").is_none());
        // Not started yet: the genesis king, with the competition's location.
        let fresh = koth_hill::feed::api_state(&koth_hill::ValidatorState::new());
        assert_eq!(king_from_feed(&c, &fresh).unwrap(), KingRef::genesis(&c));
        // Another competition's feed is refused, naming both.
        let mut wrong = fresh.clone();
        wrong.competition_sha256 = Some(Digest::of(b"x"));
        let e = king_from_feed(&c, &wrong).unwrap_err().to_string();
        assert!(e.contains(&c.sha256().to_string()), "{e}");
    }
}
