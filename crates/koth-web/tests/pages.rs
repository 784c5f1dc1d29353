//! The dashboard's pages, rendered without a browser from a real event log (driven through the
//! validator's core the way the shell drives it), real verdict records and a real embedded
//! chain: what `/` shows without JavaScript, the hotkey pages, 404s and hostile paths.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt as _;

use koth_chain::{Chain, EmbeddedChain, InitParams};
use koth_core::competition::Competition;
use koth_core::{Digest, RejectCode};
use koth_validator::devkit::key;
use koth_validator::{
    apply, Effect, Event, EventLog, FeedHub, Gate, Reveal, Rules, ValidatorState, VerdictSummary,
};
use koth_validator::{ChainSource, ValidatorReader};
use koth_web::{router, WebConfig, CONTENT_SECURITY_POLICY};

const GENESIS: &str = "genesis-king";

fn competition() -> Competition {
    let text = format!(
        r#"name = "koth-pages"
netuid = 7
genesis_king = "{king}"
genesis_location = "file:///store"
start_block = 0

[architecture]
family = "llama"
locked_keys = ["hidden_size"]
free_keys = []
allowed_dtypes = ["F32"]

[data]
bundle = "bundle.json"
bundle_sha256 = "{bundle}"
seq_len = 32

[duel]
test = "sequential"
alpha = 0.01
delta = {{ absolute = 0.002 }}
n_max = 512
batch_size = 64

[intake]
reveal_delay_blocks = 2
size_cap_bytes = 1048576

[reward]
policy = "winner_take_all"

[weights]
interval_blocks = 100
"#,
        king = Digest::of(GENESIS.as_bytes()),
        bundle = Digest::of(b"bundle"),
    );
    Competition::from_toml_str(&text).unwrap()
}

fn hotkey(seed: u8) -> String {
    key(seed).account().to_ss58()
}

fn checkpoint(name: &str) -> Digest {
    Digest::of(name.as_bytes())
}

/// A complete verdict record (koth_core's `Verdict` shape) with the given numbers; written to
/// `dir`, its summary returned. A kept king's record ends without an upper bound (a rule that
/// computed none at its last batch), so its summary has none.
fn write_verdict(
    dir: &Path,
    entry: u64,
    accepted: bool,
    king_loss: f64,
    chal_loss: f64,
) -> VerdictSummary {
    let mu = king_loss - chal_loss;
    let bounds: Vec<serde_json::Value> = (1..=4u64)
        .map(|b| {
            let w = 0.2 / b as f64;
            let upper = (accepted || b < 4).then_some(mu + w);
            serde_json::json!({"n": 64 * b, "mu_hat": mu, "lower": mu - w, "upper": upper,
                "decision": if b == 4 { if accepted { serde_json::json!("crown") } else { serde_json::json!({"keep_king": "futility"}) } } else { serde_json::json!("continue") }})
        })
        .collect();
    let last = bounds.last().unwrap().clone();
    let v = serde_json::json!({
        "format": "koth-verdict/1",
        "king": {"digest": Digest::of(b"k")},
        "challenger": {"digest": Digest::of(b"c")},
        "sample": {"seed_material": "s", "sample_digest": Digest::of(b"s"),
            "bundle_sha256": Digest::of(b"bundle"), "seq_len": 32, "shards": []},
        "rule": {"rule": "sequential", "alpha": 0.01, "futility_alpha": 0.01, "n_max": 512,
            "min_n": 64, "target_n": 256},
        "effect_floor": {"kind": "absolute", "nats": 0.002},
        "scoring": {"dtype": "f32", "device": "cpu", "batch_size": 64, "path": "scoring"},
        "outcome": {"decision": last["decision"], "n_used": 256, "mu_hat": mu, "tested_mean": mu,
            "threshold": 0.002, "lower": last["lower"], "upper": last["upper"],
            "king_mean_loss": king_loss, "challenger_mean_loss": chal_loss},
        "bounds": bounds,
        "per_source": [{"source": "synthetic", "n": 256, "king_mean_loss": king_loss,
            "challenger_mean_loss": chal_loss, "mean_diff": mu}],
        "windows": {"king": [], "challenger": [], "source": [], "sources": [],
            "digest": Digest::of(b"w")},
        "code_version": "test",
        "wall_time_s": 1.0,
    });
    // The record must parse as koth_core's Verdict, as the validator's would.
    let bytes = serde_json::to_vec_pretty(&v).unwrap();
    let _: koth_core::verdict::Verdict = serde_json::from_slice(&bytes).unwrap();
    let path = dir.join(format!("verdict-{entry}.json"));
    std::fs::write(&path, &bytes).unwrap();
    VerdictSummary {
        accepted,
        n: 256,
        mu_hat: mu,
        lower: last["lower"].as_f64(),
        upper: last["upper"].as_f64(),
        verdict_digest: Digest::of(&bytes),
        verdict_path: path.display().to_string(),
    }
}

/// Appends to a real event log and applies to the state, as the shell's journal does.
struct Driver {
    log: EventLog,
    state: ValidatorState,
    pending: VecDeque<Effect>,
    block: u64,
}

impl Driver {
    fn feed(&mut self, e: Event) {
        koth_validator::check(&self.state, &e).unwrap_or_else(|err| panic!("{e:?}: {err}"));
        self.log.append(&e).unwrap();
        let fx = apply(&mut self.state, &e).unwrap();
        self.pending.extend(fx);
    }
}

struct Game {
    _dir: tempfile::TempDir,
    log_path: PathBuf,
    state: ValidatorState,
    chain: Arc<dyn Chain>,
    alice: String,
    bob: String,
    carol: String,
    dave: String,
    eve: String,
    crowned_digest: Digest,
}

/// alice is crowned, bob is refused at the config gate, mallory copies alice (digest_owned),
/// carol loses her duel, dave is mid-duel when the page is rendered and eve waits in the queue.
fn game() -> Game {
    let dir = tempfile::tempdir().unwrap();
    let comp = competition();
    let log_path = dir.path().join("validator.db");
    let mut d = Driver {
        log: EventLog::create(&log_path).unwrap(),
        state: ValidatorState::new(),
        pending: VecDeque::new(),
        block: 5,
    };
    d.feed(Event::Started {
        rules: Rules::from_competition(&comp),
    });
    d.feed(Event::Tick { block: 5 });
    let (alice, bob, carol, mallory, dave, eve) = (
        hotkey(30),
        hotkey(31),
        hotkey(32),
        hotkey(33),
        hotkey(34),
        hotkey(35),
    );
    let reveal = |h: &str, uid: u16, digest: Digest, commit: u64| Reveal {
        hotkey: h.to_string(),
        uid: Some(uid),
        payload: format!("v4|file:///store/<b>{uid}</b>|{digest}|{h}"),
        commit_block: commit,
        reveal_block: commit + 2,
        block_hash: format!("0x{:064x}", commit + 2),
    };
    d.feed(Event::Revealed {
        block: 12,
        reveals: vec![
            reveal(&alice, 1, checkpoint("alice"), 6),
            reveal(&bob, 2, checkpoint("bob"), 7),
            reveal(&mallory, 3, checkpoint("alice"), 8),
            reveal(&carol, 4, checkpoint("carol"), 9),
        ],
    });
    let verdict_dir = dir.path().join("verdicts");
    std::fs::create_dir_all(&verdict_dir).unwrap();
    let mut dave_started = false;
    let mut round = 0;
    while let Some(fx) = d.pending.pop_front() {
        round += 1;
        assert!(round < 200, "the game does not settle");
        match fx {
            Effect::RunGate { entry, gate, .. } => {
                d.feed(Event::GateStarted { entry, gate });
                let who = d.state.entries[&entry].hotkey.clone();
                if who == bob && gate == Gate::Config {
                    d.feed(Event::GateFailed {
                        entry,
                        gate,
                        code: RejectCode::ConfigMismatch,
                        message: "key `hidden_size`: the king has 32, the challenger has <64>"
                            .into(),
                    });
                } else {
                    d.feed(Event::GatePassed { entry, gate });
                }
            }
            Effect::StartDuel {
                entry, king, seed, ..
            } => {
                let who = d.state.entries[&entry].hotkey.clone();
                d.feed(Event::DuelStarted { entry, king, seed });
                let mu = if who == alice { 0.3 } else { -0.05 };
                for b in 1..=2u64 {
                    d.feed(Event::DuelProgress {
                        entry,
                        n: 64 * b,
                        mu_hat: mu,
                        lower: Some(mu - 0.2 / b as f64),
                        upper: Some(mu + 0.2 / b as f64),
                    });
                }
                if who == dave {
                    dave_started = true;
                    break;
                }
                let accepted = who == alice;
                let (kl, cl) = if accepted { (4.1, 3.8) } else { (3.8, 3.85) };
                let v = write_verdict(&verdict_dir, entry, accepted, kl, cl);
                d.feed(Event::DuelFinished { entry, verdict: v });
            }
            Effect::Crown {
                entry,
                digest,
                hotkey,
                reign,
                ..
            } => {
                d.block += 1;
                d.feed(Event::Crowned {
                    entry,
                    digest,
                    hotkey,
                    reign,
                    block: d.block,
                    block_hash: format!("0x{:064x}", d.block),
                    location: None,
                });
            }
            Effect::SetWeights { weights } => {
                d.block += 1;
                d.feed(Event::WeightsSet {
                    block: d.block,
                    weights,
                });
            }
            Effect::Answer { .. } => {}
        }
        if d.pending.is_empty() && !dave_started && d.state.active.is_none() {
            d.block = 20;
            d.feed(Event::Revealed {
                block: 20,
                reveals: vec![
                    reveal(&dave, 5, checkpoint("dave"), 16),
                    reveal(&eve, 6, checkpoint("eve"), 17),
                ],
            });
        }
    }
    assert!(dave_started);
    // Revealed one block after its commit block (W is 2): held until the reveals up to commit
    // block + 2 are read, so not in the queue yet (PROTOCOL §3).
    let now = d.state.block;
    d.feed(Event::Revealed {
        block: now,
        reveals: vec![Reveal {
            reveal_block: now,
            ..reveal(&hotkey(36), 7, checkpoint("frank"), now - 1)
        }],
    });
    assert_eq!(d.state.held.len(), 1);
    // The state the shell would publish is the log replayed.
    let state = koth_validator::log::open_read_only(&log_path)
        .unwrap()
        .load_state()
        .unwrap();
    assert_eq!(state, d.state);

    // A real chain: the hotkeys registered, alice weighted by the validator, blocks sealed.
    let chain = EmbeddedChain::init(
        &dir.path().join("chain.db"),
        &InitParams {
            netuid: 7,
            block_time_ms: 5,
            reveal_delay: 2,
            emission_per_block_rao: 1_000_000_000,
            max_uids: 64,
            owner: key(1).account(),
        },
    )
    .unwrap();
    let validator = key(2);
    chain.register(&validator, &validator.account()).unwrap();
    chain
        .grant_validator_permit(&key(1), &validator.account())
        .unwrap();
    for s in 30..=35u8 {
        chain.register(&key(s), &key(s).account()).unwrap();
    }
    let uid = chain
        .metagraph()
        .unwrap()
        .by_hotkey(&key(30).account())
        .unwrap()
        .uid;
    chain.set_weights(&validator, &[(uid, 1.0)]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(60));
    let crowned_digest = checkpoint("alice");
    Game {
        _dir: dir,
        log_path,
        state,
        chain: Arc::new(chain),
        alice,
        bob,
        carol,
        dave,
        eve,
        crowned_digest,
    }
}

fn app(g: &Game) -> axum::Router {
    let feed = FeedHub::new(g.state.clone(), g.log_path.clone());
    router(WebConfig {
        competition: competition(),
        reader: Arc::new(ValidatorReader::new(
            feed,
            g.log_path.clone(),
            ChainSource::Handle(g.chain.clone()),
        )),
    })
}

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, String, axum::http::HeaderMap) {
    let resp = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap(), headers)
}

/// The text of the element with `id="…"` up to its closing tag of the same name (good enough
/// for the sections and tables written by the renderer, which do not nest their own kind).
fn element<'a>(html: &'a str, tag: &str, id: &str) -> &'a str {
    let open = format!(r#"<{tag} "#);
    let marker = format!(r#"id="{id}""#);
    let at = html
        .match_indices(&open)
        .map(|(i, _)| i)
        .find(|&i| html[i..].split('>').next().unwrap().contains(&marker))
        .unwrap_or_else(|| panic!("no <{tag} id={id}> in the page"));
    let close = format!("</{tag}>");
    let end = html[at..].find(&close).unwrap() + at + close.len();
    &html[at..end]
}

#[tokio::test]
async fn the_overview_renders_the_hill_without_javascript() {
    let g = game();
    let app = app(&g);
    let (status, page, headers) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["content-security-policy"].to_str().unwrap(),
        CONTENT_SECURITY_POLICY
    );
    assert!(page.starts_with("<!doctype html>"));
    // The king: alice's checkpoint, reign 1, its held-out loss from the crowning verdict.
    let king = element(&page, "section", "king");
    assert!(
        king.contains(&g.crowned_digest.to_string()),
        "king digest missing: {king}"
    );
    assert!(king.contains(r#"<dd id="king-reign">1</dd>"#), "{king}");
    assert!(king.contains("3.8000"), "held-out loss at crowning: {king}");
    assert!(king.contains(&format!("/hotkey/{}", g.alice)));
    // The lineage chart has both reigns' losses (genesis from the first duel against it).
    let lineage = element(&page, "section", "lineage");
    let chart = element(lineage, "svg", "lineage-chart");
    // At crowning: genesis (its loss in alice's duel) and alice; latest duel: genesis (alice's
    // duel) and alice (carol's duel).
    assert!(chart.contains(r#"data-points="4""#), "{chart}");
    assert!(lineage.contains("4.1000") && lineage.contains("3.8000"));
    // The live duel: dave's, two batches, with the bounds and δ.
    let duel = element(&page, "section", "duel");
    assert!(duel.contains("Dueling entry"), "{duel}");
    assert!(duel.contains(&format!("/hotkey/{}", g.dave)));
    assert!(duel.contains(r#"<progress id="duel-progress" value="128" max="512">"#));
    let dchart = element(duel, "svg", "duel-chart");
    assert!(dchart.contains(r#"data-points="6""#), "{dchart}");
    assert!(dchart.contains("δ = 0.002"));
    // The queue: eve at position 1 behind the active entry.
    let queue = element(&page, "section", "queue");
    assert!(queue.contains(&format!("/hotkey/{}", g.eve)), "{queue}");
    assert!(
        queue.contains(r#"<td class="num">1</td><td>normal</td>"#),
        "{queue}"
    );
    // Stranger-written text is escaped.
    assert!(queue.contains("&lt;b&gt;6&lt;/b&gt;") && !queue.contains("<b>6</b>"));
    // A held reveal is shown under the queue with the block it is decided at.
    let held = element(&page, "p", "queue-held");
    let r = &g.state.held[0];
    assert!(
        held.contains(&format!(
            "committed at block {}, decided at block {}",
            r.commit_block,
            r.commit_block + 2
        )),
        "{held}"
    );
    // The history: every outcome with its words.
    let history = element(&page, "section", "history");
    assert!(history.contains("config_mismatch"));
    assert!(history.contains(&koth_web::html::esc(RejectCode::ConfigMismatch.explain())));
    assert!(history.contains("the challenger has &lt;64&gt;"));
    assert!(history.contains("digest_owned"));
    assert!(history.contains(&koth_web::html::esc(RejectCode::DigestOwned.explain())));
    assert!(history.contains("Crowned as reign 1"));
    assert!(
        history.contains("the lower confidence bound +0.25000 exceeded"),
        "{history}"
    );
    // carol's verdict has no upper bound: the row shows none, and nothing stands in for it.
    let at = history
        .find(r#"<tr class="kept_king">"#)
        .expect("carol's row");
    let kept = &history[at..at + history[at..].find("</tr>").unwrap()];
    assert!(kept.contains("The king stays"), "{kept}");
    assert!(!kept.contains("upper bound"), "{kept}");
    assert!(kept.contains(r#"<td class="num">—</td>"#), "{kept}");
    assert!(history.contains(&format!("/hotkey/{}", g.carol)));
    // Rewards: the policy in words, alice's weight and her accrued emission from the chain.
    let rewards = element(&page, "section", "rewards");
    assert!(rewards.contains("Winner-take-all"), "{rewards}");
    assert!(rewards.contains("100.00 %"), "{rewards}");
    assert!(rewards.contains("holds the crown (reign 1)"), "{rewards}");
    let emission = g
        .chain
        .emission()
        .unwrap()
        .into_iter()
        .find(|e| e.hotkey.to_ss58() == g.alice)
        .unwrap();
    assert!(emission.rao > 0, "the chain paid alice nothing");
    assert!(!rewards.contains("could not be read"), "{rewards}");
    // No script inline, no style attribute, nothing from another origin.
    assert!(!page.contains("<script>") && !page.contains(" style="));
    for needle in ["http://", "https://", "//cdn"] {
        let outside: Vec<&str> = page
            .match_indices(needle)
            .map(|(i, _)| &page[i.saturating_sub(30)..(i + 40).min(page.len())])
            .filter(|ctx| !ctx.contains("xmlns=\"http://www.w3.org/2000/svg\""))
            .collect();
        assert!(outside.is_empty(), "external reference: {outside:?}");
    }
    // The partial is the same live part without the document around it.
    let (status, partial, _) = get(&app, "/?partial=1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!partial.contains("<html") && partial.contains(r#"id="king""#));
}

#[tokio::test]
async fn hotkey_pages_and_errors() {
    let g = game();
    let app = app(&g);
    // A known hotkey: its submissions and outcomes.
    let (status, page, _) = get(&app, &format!("/hotkey/{}", g.bob)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&g.bob));
    assert!(page.contains(&koth_web::html::esc(RejectCode::ConfigMismatch.explain())));
    assert!(
        !page.contains("Crowned as reign"),
        "alice's row on bob's page"
    );
    let (_, page, _) = get(&app, &format!("/hotkey/{}", g.alice)).await;
    assert!(page.contains("holds the crown") && page.contains("Crowned as reign 1"));
    let (_, page, _) = get(&app, &format!("/hotkey/{}?partial=1", g.eve)).await;
    assert!(page.contains("queued at position 1") && !page.contains("<html"));
    // A valid SS58 address nobody knows: a clean 404 page.
    let stranger = hotkey(99);
    let (status, page, headers) = get(&app, &format!("/hotkey/{stranger}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("Unknown hotkey") && page.contains(&stranger));
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    // Malformed input: 400 pages, never a panic.
    let hostile = [
        "/hotkey/not-an-address",
        "/hotkey/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "/hotkey/%FF%FE",
        "/hotkey/%00",
        "/hotkey/5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQZ",
    ];
    for uri in hostile {
        let (status, page, _) = get(&app, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {page}");
        assert!(!page.contains("<script>alert"), "{uri}");
    }
    let long = format!("/hotkey/{}", "5".repeat(5000));
    assert_eq!(get(&app, &long).await.0, StatusCode::BAD_REQUEST);
    for uri in ["/nope", "/hotkey/", "/hotkey/a/b", "/static/../Cargo.toml"] {
        let (status, page, _) = get(&app, uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert!(page.contains("Not found"), "{uri}");
    }
    // The assets are served from this origin.
    let (status, js, h) = get(&app, "/static/koth.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(js.contains("EventSource(\"/api/events\")"));
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert_eq!(get(&app, "/static/koth.css").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_missing_or_altered_verdict_record_is_reported_not_trusted() {
    let g = game();
    // Alter alice's crowning record: its loss must no longer be shown as measured.
    let path = g
        .state
        .history
        .iter()
        .find_map(|f| match &f.outcome {
            koth_validator::Outcome::Dueled {
                verdict,
                crowned: Some(_),
            } => Some(PathBuf::from(&verdict.verdict_path)),
            _ => None,
        })
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("3.8", "1.0")).unwrap();
    let app = app(&g);
    let (_, page, _) = get(&app, "/").await;
    let king = element(&page, "section", "king");
    assert!(king.contains("unavailable"), "{king}");
    assert!(king.contains("hashes to"), "the reason is given: {king}");
    assert!(!king.contains("1.0000"));
}

#[tokio::test]
async fn an_unstarted_validator_and_no_chain_render_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("validator.db");
    drop(EventLog::create(&log_path).unwrap());
    let feed = FeedHub::new(ValidatorState::new(), log_path.clone());
    let app = router(WebConfig {
        competition: competition(),
        reader: Arc::new(ValidatorReader::new(
            feed,
            log_path,
            ChainSource::Path(dir.path().join("missing-chain.db")),
        )),
    });
    let (status, page, _) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("has not started a game yet"));
}
