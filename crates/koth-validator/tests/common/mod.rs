//! Helpers shared by the integration tests: rules, payloads, and a harness that applies events
//! and keeps the log of everything it applied.

#![allow(dead_code)]

use koth_core::competition::RewardPolicy;
use koth_core::Digest;
use koth_validator::{apply, Effect, EntryId, Event, Outcome, Reveal, Rules, ValidatorState};

pub const START: u64 = 100;

pub fn rules() -> Rules {
    Rules {
        competition_sha256: Digest::of(b"competition"),
        genesis_king: Digest::of(b"genesis"),
        genesis_location: Some("file:///kings/genesis".into()),
        start_block: START,
        weights_interval_blocks: 10,
        reward: RewardPolicy::WinnerTakeAll,
        max_infra_retries: 3,
        history_len: 64,
        near_copy: false,
        trainability_probe: false,
        reveal_delay_blocks: Some(3),
        near_copy_history: 16,
        king_pool_batches: 0,
    }
}

pub fn digest(n: u64) -> Digest {
    Digest::of(format!("checkpoint-{n}").as_bytes())
}

pub fn payload(d: Digest, hotkey: &str) -> String {
    format!("v4|s3://bucket/{hotkey}|{d}|{hotkey}")
}

pub fn reveal(hotkey: &str, uid: Option<u16>, payload: String, commit: u64) -> Reveal {
    Reveal {
        hotkey: hotkey.into(),
        uid,
        payload,
        commit_block: commit,
        reveal_block: commit + 3,
        block_hash: format!("0x{:064x}", commit + 3),
    }
}

/// Applies events, panicking on refusal, and keeps every applied event (the log).
pub struct Harness {
    pub state: ValidatorState,
    pub log: Vec<Event>,
}

impl Harness {
    pub fn new(rules: Rules) -> Self {
        let mut h = Self {
            state: ValidatorState::new(),
            log: Vec::new(),
        };
        h.feed(Event::Started { rules });
        h
    }

    pub fn feed(&mut self, event: Event) -> Vec<Effect> {
        match apply(&mut self.state, &event) {
            Ok(effects) => {
                self.log.push(event);
                effects
            }
            Err(e) => panic!("event {event:?} refused: {e}"),
        }
    }

    /// Apply an event that must be refused, and check it changed nothing.
    pub fn refuse(&mut self, event: Event) -> koth_validator::ApplyError {
        let before = self.state.clone();
        let err = apply(&mut self.state, &event).expect_err("event must be refused");
        assert_eq!(self.state, before, "a refused event changed the state");
        err
    }

    pub fn replayed(&self) -> ValidatorState {
        let mut s = ValidatorState::new();
        for e in &self.log {
            apply(&mut s, e).expect("replay of an applied event must apply");
        }
        s
    }

    pub fn reveal(&mut self, reveals: Vec<Reveal>) -> Vec<Effect> {
        let block = reveals
            .iter()
            .map(|r| r.reveal_block)
            .max()
            .unwrap_or(self.state.block)
            .max(self.state.block);
        self.feed(Event::Revealed { block, reveals })
    }

    pub fn tick(&mut self, block: u64) -> Vec<Effect> {
        self.feed(Event::Tick { block })
    }
}

pub fn answers(effects: &[Effect]) -> Vec<(EntryId, Outcome)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Answer { entry, outcome, .. } => Some((*entry, outcome.clone())),
            _ => None,
        })
        .collect()
}

/// The gate or duel the core asks for now, if any.
pub fn command(effects: &[Effect]) -> Option<Effect> {
    effects
        .iter()
        .find(|e| {
            matches!(
                e,
                Effect::RunGate { .. } | Effect::StartDuel { .. } | Effect::Crown { .. }
            )
        })
        .cloned()
}

/// Pass every gate the core asks for, starting from `fx`; returns the next command (the
/// `StartDuel`).
pub fn pass_until_duel(h: &mut Harness, mut fx: Vec<Effect>) -> Effect {
    loop {
        match command(&fx).expect("a command") {
            Effect::RunGate { entry, gate, .. } => {
                h.feed(Event::GateStarted { entry, gate });
                fx = h.feed(Event::GatePassed { entry, gate });
            }
            other => return other,
        }
    }
}

/// Step the shell until `hotkey` has an answer (or fail after `secs`).
pub fn answer_of(
    shell: &mut koth_validator::Shell,
    hotkey: &koth_chain::Keypair,
    secs: u64,
) -> koth_validator::state::Finished {
    let hotkey = hotkey.account().to_ss58();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        shell.step().unwrap();
        if let Some(f) = shell
            .journal()
            .state()
            .history
            .iter()
            .find(|f| f.hotkey == hotkey)
        {
            return f.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no answer for {hotkey}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
