//! Play a tiny game through the core (two miners, one crown, one copy, one gate refusal) and
//! print the resulting `/dashboard.json` and `/api/state`. Run:
//! `cargo run -p koth-validator --example feed`.

use koth_core::competition::RewardPolicy;
use koth_core::{Digest, RejectCode};
use koth_validator::feed::{api_state, dashboard_json};
use koth_validator::{apply, Effect, Event, Reveal, Rules, ValidatorState, VerdictSummary};

fn feed(state: &mut ValidatorState, event: Event) -> Vec<Effect> {
    apply(state, &event).unwrap_or_else(|e| panic!("{} refused: {e}", event.kind()))
}

fn reveal(hotkey: &str, uid: u16, digest: Digest, commit: u64) -> Reveal {
    Reveal {
        hotkey: hotkey.into(),
        uid: Some(uid),
        payload: format!("v4|s3://models/{hotkey}|{digest}|{hotkey}"),
        commit_block: commit,
        reveal_block: commit + 3,
        block_hash: format!("0x{:064x}", commit + 3),
    }
}

fn main() {
    let mut s = ValidatorState::new();
    feed(
        &mut s,
        Event::Started {
            rules: Rules {
                competition_sha256: Digest::of(b"competition.toml bytes"),
                genesis_king: Digest::of(b"genesis"),
                genesis_location: Some("s3://models/genesis".into()),
                start_block: 100,
                weights_interval_blocks: 100,
                reward: RewardPolicy::WinnerTakeAll,
                max_infra_retries: 5,
                history_len: 256,
                near_copy: false,
                trainability_probe: false,
                reveal_delay_blocks: Some(3),
                near_copy_history: 16,
                king_pool_batches: 0,
            },
        },
    );
    let alice = Digest::of(b"alice-1");
    let bob = Digest::of(b"bob-1");
    let mut fx = feed(
        &mut s,
        Event::Revealed {
            block: 106,
            reveals: vec![
                reveal("5Alice", 1, alice, 101),
                reveal("5Bob", 2, bob, 102),
                reveal("5Mallory", 3, alice, 103),
            ],
        },
    );
    // Alice passes every gate, wins her duel and is crowned; bob fails config.
    loop {
        let cmd = fx
            .iter()
            .find(|e| !matches!(e, Effect::Answer { .. } | Effect::SetWeights { .. }))
            .cloned();
        fx = match cmd {
            Some(Effect::RunGate { entry, gate, .. }) => {
                feed(&mut s, Event::GateStarted { entry, gate });
                if entry == 1 && gate == koth_validator::Gate::Config {
                    feed(
                        &mut s,
                        Event::GateFailed {
                            entry,
                            gate,
                            code: RejectCode::ConfigMismatch,
                            message: "key `num_hidden_layers`: king has 28, challenger has 30"
                                .into(),
                        },
                    )
                } else {
                    feed(&mut s, Event::GatePassed { entry, gate })
                }
            }
            Some(Effect::StartDuel {
                entry, king, seed, ..
            }) => {
                feed(&mut s, Event::DuelStarted { entry, king, seed });
                feed(
                    &mut s,
                    Event::DuelFinished {
                        entry,
                        verdict: VerdictSummary {
                            accepted: true,
                            n: 384,
                            mu_hat: 0.0123,
                            lower: Some(0.0031),
                            upper: Some(0.0215),
                            verdict_digest: Digest::of(b"verdict-0"),
                            verdict_path: "verdicts/0.json".into(),
                        },
                    },
                )
            }
            Some(Effect::Crown {
                entry,
                digest,
                hotkey,
                reign,
                ..
            }) => feed(
                &mut s,
                Event::Crowned {
                    entry,
                    digest,
                    hotkey,
                    reign,
                    block: 112,
                    block_hash: "0x70".into(),
                    location: None,
                },
            ),
            _ => break,
        };
    }
    let out = serde_json::json!({
        "dashboard.json": dashboard_json(&s),
        "api/state": api_state(&s),
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
}
