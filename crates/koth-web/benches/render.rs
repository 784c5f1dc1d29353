//! How long the dashboard takes to render a busy hill (pure rendering, no I/O): `cargo bench -p
//! koth-web`. The state is built by driving the validator's core: `reigns` crowns, a full
//! history (256 finished entries), `queued` entries waiting and a duel 300 batches in.

use std::collections::BTreeMap;
use std::time::Instant;

use koth_core::competition::Competition;
use koth_core::{Digest, RejectCode};
use koth_validator::log::LoggedEvent;
use koth_validator::{apply, Effect, Event, Gate, Reveal, Rules, ValidatorState, VerdictSummary};
use koth_web::facts::LogFacts;
use koth_web::render::{self, EmissionRow, EmissionView, PageData};
use koth_web::verdicts::{BatchBounds, VerdictFacts};

fn competition() -> Competition {
    Competition::from_toml_str(&format!(
        r#"name = "bench"
netuid = 7
genesis_king = "{}"
start_block = 0
[architecture]
family = "llama"
locked_keys = ["hidden_size"]
free_keys = []
allowed_dtypes = ["F32"]
[data]
bundle = "b.json"
bundle_sha256 = "{}"
seq_len = 2048
[duel]
test = "sequential"
alpha = 0.001
delta = {{ relative = 0.001 }}
n_max = 20000
batch_size = 64
[intake]
reveal_delay_blocks = 3
size_cap_bytes = 100000000000
[reward]
policy = "split_last_k"
k = 3
shares = [0.6, 0.3, 0.1]
[weights]
interval_blocks = 100
"#,
        Digest::of(b"genesis"),
        Digest::of(b"bundle")
    ))
    .expect("bench competition")
}

struct Game {
    state: ValidatorState,
    facts: LogFacts,
    seq: i64,
}

impl Game {
    fn feed(&mut self, e: Event) -> Vec<Effect> {
        let fx = apply(&mut self.state, &e).expect("bench event applies");
        self.seq += 1;
        self.facts.fold(&LoggedEvent {
            seq: self.seq,
            at_unix_ms: 1_795_000_000_000 + self.seq * 1000,
            event: e,
        });
        fx
    }
}

fn hotkey(i: u64) -> String {
    koth_validator::devkit::key((i % 250) as u8 + 3)
        .account()
        .to_ss58()
        + &format!("{i}")
}

fn main() {
    let comp = competition();
    let mut g = Game {
        state: ValidatorState::new(),
        facts: LogFacts::default(),
        seq: 0,
    };
    g.feed(Event::Started {
        rules: Rules::from_competition(&comp),
    });
    let (finished, queued) = (400u64, 300u64);
    let reveals: Vec<Reveal> = (0..finished + queued)
        .map(|i| Reveal {
            hotkey: hotkey(i),
            uid: Some((i % 60000) as u16),
            payload: format!(
                "v4|s3://bucket/m{i}|{}|{}",
                Digest::of(format!("m{i}").as_bytes()),
                hotkey(i)
            ),
            commit_block: 10 + i,
            reveal_block: 13 + i,
            block_hash: format!("0x{:064x}", i),
        })
        .collect();
    let mut pending: std::collections::VecDeque<Effect> = g
        .feed(Event::Revealed {
            block: 13 + finished + queued,
            reveals,
        })
        .into();
    let mut verdicts = BTreeMap::new();
    let mut done = 0u64;
    while let Some(fx) = pending.pop_front() {
        let more = match fx {
            Effect::RunGate { entry, gate, .. } => {
                g.feed(Event::GateStarted { entry, gate });
                if entry % 3 == 1 && gate == Gate::Config {
                    g.feed(Event::GateFailed {
                        entry,
                        gate,
                        code: RejectCode::ConfigMismatch,
                        message: "key `hidden_size`: king has 1024, challenger has 2048".into(),
                    })
                } else {
                    g.feed(Event::GatePassed { entry, gate })
                }
            }
            Effect::StartDuel {
                entry, king, seed, ..
            } => {
                g.feed(Event::DuelStarted { entry, king, seed });
                let last = done + 1 >= finished;
                let batches = if last { 300 } else { 5 };
                for b in 1..=batches {
                    g.feed(Event::DuelProgress {
                        entry,
                        n: 64 * b,
                        mu_hat: 0.01,
                        lower: Some(0.01 - 0.1 / b as f64),
                        upper: Some(0.01 + 0.1 / b as f64),
                    });
                }
                if last {
                    break;
                }
                done += 1;
                let digest = Digest::of(format!("verdict{entry}").as_bytes());
                verdicts.insert(
                    digest,
                    Ok(VerdictFacts {
                        king_mean_loss: 3.0 - entry as f64 * 1e-3,
                        challenger_mean_loss: 2.99 - entry as f64 * 1e-3,
                        n_used: 320,
                        n_max: 20000,
                        threshold: 0.0,
                        rule: "sequential",
                        decision: "crown",
                        bounds: (1..=5)
                            .map(|b| BatchBounds {
                                n: 64 * b,
                                mu_hat: 0.01,
                                lower: Some(0.0),
                                upper: Some(0.02),
                            })
                            .collect(),
                        per_source: Vec::new(),
                    }),
                );
                g.feed(Event::DuelFinished {
                    entry,
                    verdict: VerdictSummary {
                        accepted: entry % 6 == 0,
                        n: 320,
                        mu_hat: 0.01,
                        lower: Some(0.001),
                        upper: Some(0.02),
                        verdict_digest: digest,
                        verdict_path: format!("/v/{entry}.json"),
                    },
                })
            }
            Effect::Crown {
                entry,
                digest,
                hotkey,
                reign,
                ..
            } => {
                let block = g.state.block + 1;
                g.feed(Event::Crowned {
                    entry,
                    digest,
                    hotkey,
                    reign,
                    block,
                    block_hash: format!("0x{block:064x}"),
                    location: None,
                })
            }
            Effect::SetWeights { weights } => {
                let block = g.state.block + 1;
                g.feed(Event::WeightsSet { block, weights })
            }
            Effect::Answer { .. } => Vec::new(),
        };
        pending.extend(more);
    }
    let emission = EmissionView::Rows(
        (0..1000u64)
            .map(|i| EmissionRow {
                uid: i as u16,
                hotkey: hotkey(i),
                rao: i * 1_000_000,
            })
            .collect(),
    );
    let data = PageData {
        state: &g.state,
        competition: &comp,
        facts: &g.facts,
        verdicts: &verdicts,
        emission: &emission,
        now_unix_ms: 1_796_000_000_000,
    };
    let rounds = 30;
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let page = render::overview_page(&data);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        bytes = page.len();
    }
    times.sort_by(f64::total_cmp);
    let hk = hotkey(4);
    let t = Instant::now();
    let hk_page = render::hotkey_page(&data, &hk).map_or(0, |p| p.len());
    let hk_ms = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "overview: {} reigns, {} in history, {} queued, {} batches in the live duel, {} emission rows",
        g.state.reigns.len(),
        g.state.history.len(),
        g.state.queue.len(),
        g.facts.duel.as_ref().map_or(0, |d| d.points.len()),
        1000
    );
    println!(
        "render /: median {:.2} ms, min {:.2} ms, max {:.2} ms over {rounds} rounds; {} KiB of HTML",
        times[rounds / 2],
        times[0],
        times[rounds - 1],
        bytes / 1024
    );
    println!("render /hotkey/…: {hk_ms:.2} ms; {} KiB", hk_page / 1024);
}
