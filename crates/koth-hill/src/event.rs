//! The validator's vocabulary: events in (each one written to the log before it is acted on),
//! effects out (what the shell must now do), and the rules a competition fixes for the core.
//!
//! Events are the only input of the core. They carry everything the core needs — blocks, block
//! hashes, registration, gate results, duel statistics — so that replaying the log through
//! [`crate::apply`] rebuilds the state exactly, on any machine, at any later time.

use serde::{Deserialize, Serialize};

use koth_core::competition::{Competition, RewardPolicy};
use koth_core::{Digest, RejectCode};

/// Version of the event JSON written to the log. Bumped on any change that an older reader could
/// misread; the log refuses rows of a version it does not know.
pub const EVENT_VERSION: u32 = 1;

/// Longest free-text field (gate message, fault reason) an event may carry.
pub const MAX_TEXT_BYTES: usize = 4096;

/// `text` cut to at most [`MAX_TEXT_BYTES`] at a character boundary, for the shell to put into
/// a gate message or fault reason (longer text makes the event refused).
pub fn clip_text(text: &str) -> String {
    truncate(text, MAX_TEXT_BYTES).to_string()
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Most blocks the queue pauses after an infrastructure fault (the pause doubles per retry).
pub const MAX_BACKOFF_BLOCKS: u64 = 32;

/// A submission's number, assigned by the core in intake order, never reused.
pub type EntryId = u64;

/// The parts of the competition file the core's decisions depend on. Carried by
/// [`Event::Started`] so that the log alone determines the state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    pub competition_sha256: Digest,
    pub genesis_king: Digest,
    pub genesis_location: Option<String>,
    pub start_block: u64,
    pub weights_interval_blocks: u64,
    pub reward: RewardPolicy,
    pub max_infra_retries: u32,
    pub history_len: u32,
    pub near_copy: bool,
    pub trainability_probe: bool,
    /// W, the competition's `intake.reveal_delay_blocks`: the longest reveal lag (reveal block
    /// − commit block) accepted. A revealed commitment is held until the reveals up to its
    /// commit block + W have been read, and reveals are then taken in commit-block order, so
    /// the earliest commitment of a digest owns it whoever revealed first (PROTOCOL §3). `None`
    /// (absent from the JSON): a log started before this rule, which keeps its old order
    /// (reveal block first, nothing held, no lag refused) so that it replays as it was run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reveal_delay_blocks: Option<u64>,
    /// The competition's `gates.near_copy_history`: how many earlier kings and fingerprinted
    /// submissions a challenger's fingerprint is compared with. Absent from logs started before
    /// the rules carried it: the competition file's default.
    #[serde(default = "default_near_copy_history")]
    pub near_copy_history: u32,
    /// The competition's `duel.king_pool_batches` (0: every duel scores the king live).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub king_pool_batches: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A reign pool to duel on (king-loss reuse): the king is scored once on `batches` batches of
/// windows drawn from `seed_material`, which names the reign (its crowning block's hash), so
/// every validator and every duel of the reign draws the same pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    pub seed_material: String,
    pub batches: u32,
}

fn default_near_copy_history() -> u32 {
    koth_core::competition::GateSwitches::default().near_copy_history
}

impl Rules {
    pub fn from_competition(c: &Competition) -> Self {
        Self {
            competition_sha256: c.sha256(),
            genesis_king: c.genesis_king,
            genesis_location: c.genesis_location.clone(),
            start_block: c.start_block,
            weights_interval_blocks: c.weights.interval_blocks,
            reward: c.reward.clone(),
            max_infra_retries: c.intake.max_infra_retries,
            history_len: c.intake.history_len,
            near_copy: c.gates.near_copy,
            trainability_probe: c.gates.trainability_probe,
            reveal_delay_blocks: Some(c.intake.reveal_delay_blocks),
            near_copy_history: c.gates.near_copy_history,
            king_pool_batches: c.duel.king_pool_batches,
        }
    }
}

/// One revealed commitment as the chain reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reveal {
    /// The chain's signer: the submitter, whatever the payload says.
    pub hotkey: String,
    /// The signer's uid when the chain was read; `None`: not registered.
    pub uid: Option<u16>,
    /// The payload exactly as revealed (parsed by the core, refused if malformed).
    pub payload: String,
    pub commit_block: u64,
    pub reveal_block: u64,
    /// Hash of the reveal block: public randomness for the duel's sample.
    pub block_hash: String,
}

/// The checks between intake and the duel, cheapest first (PROTOCOL §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// Fetch the manifest and files, verify hashes, allowed files, size cap.
    Fetch,
    /// `config.json` against the architecture lock.
    Config,
    /// safetensors headers: exact tensor names, shapes, dtypes, offsets.
    Tensors,
    /// NaN/Inf, norm and projection scales against the king's.
    Weights,
    /// One backward step on probe tokens (optional).
    Trainability,
    /// Behavioural fingerprint against recent submissions and kings (optional).
    Fingerprint,
    /// The duel itself. Not a gate of the pipeline: it names where a challenger that passed
    /// every gate was refused for its own failure while being scored (it does not load, or its
    /// losses are not finite where the king's are).
    Duel,
}

impl Gate {
    /// The order in which gates run.
    pub const PIPELINE: [Gate; 6] = [
        Gate::Fetch,
        Gate::Config,
        Gate::Tensors,
        Gate::Weights,
        Gate::Trainability,
        Gate::Fingerprint,
    ];

    /// The codes with which this gate may refuse a submission.
    pub fn codes(self) -> &'static [RejectCode] {
        match self {
            Gate::Fetch => &[
                RejectCode::ManifestUnreachable,
                RejectCode::FileRefused,
                RejectCode::TooLarge,
            ],
            Gate::Config => &[RejectCode::ConfigMismatch],
            Gate::Tensors => &[RejectCode::TensorsMismatch],
            Gate::Weights | Gate::Trainability | Gate::Duel => &[RejectCode::WeightsInvalid],
            // Fingerprinting runs the model: one whose outputs overflow is `weights_invalid`.
            Gate::Fingerprint => &[RejectCode::NearCopy, RejectCode::WeightsInvalid],
        }
    }

    /// Whether the competition runs this gate. A gate that is off is recorded as not enabled.
    pub fn enabled(self, rules: &Rules) -> bool {
        match self {
            Gate::Trainability => rules.trainability_probe,
            Gate::Fingerprint => rules.near_copy,
            _ => true,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Gate::Fetch => "fetch",
            Gate::Config => "config",
            Gate::Tensors => "tensors",
            Gate::Weights => "weights",
            Gate::Trainability => "trainability",
            Gate::Fingerprint => "fingerprint",
            Gate::Duel => "duel",
        }
    }
}

/// Everything a duel's sample seed is derived from (PROTOCOL §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedMaterial {
    pub competition_sha256: Digest,
    pub reveal_block_hash: String,
    pub hotkey: String,
}

/// What the core keeps of a finished duel; the full record lives at `verdict_path`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerdictSummary {
    pub accepted: bool,
    /// Windows scored.
    pub n: u64,
    pub mu_hat: f64,
    /// The rule's final lower confidence bound (of the tested quantity). `None` where the rule
    /// computed none (the bootstrap rule computes no upper bound, and no lower bound when the
    /// resamples decide without it; the sequential rule none below two windows): absent from
    /// the JSON, never a stand-in number. A log written before the bounds were optional carries
    /// numbers, which read back as `Some`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<f64>,
    /// The rule's final upper confidence bound; `None` (absent) where the rule computed none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<f64>,
    /// sha256 of the verdict record.
    pub verdict_digest: Digest,
    /// Where the verdict record is stored.
    pub verdict_path: String,
}

/// A hotkey's share of the weights; shares sum to 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weight {
    pub hotkey: String,
    pub weight: f64,
}

/// Something that happened. Appended to the log before it is acted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// The first event of every log: the game and its rules.
    Started {
        rules: Rules,
    },
    /// The shell restarted and replayed the log. Whatever was in flight was interrupted by us:
    /// an entry in its gates or duel goes back to the head of the queue; a crown is redone.
    Recovered,
    /// The chain head advanced.
    Tick {
        block: u64,
    },
    /// Commitments revealed since the last poll (those [`crate::ValidatorState::needs_intake`]
    /// reports as new), read at chain block `block`.
    Revealed {
        block: u64,
        reveals: Vec<Reveal>,
    },
    GateStarted {
        entry: EntryId,
        gate: Gate,
    },
    GatePassed {
        entry: EntryId,
        gate: Gate,
    },
    GateFailed {
        entry: EntryId,
        gate: Gate,
        code: RejectCode,
        message: String,
    },
    /// Our fault (lost worker, timeout, our out-of-memory, a gate that could not decide): never
    /// charged to the submission.
    InfraFault {
        entry: EntryId,
        reason: String,
    },
    DuelStarted {
        entry: EntryId,
        king: Digest,
        seed: SeedMaterial,
    },
    /// The running duel's statistics after a batch: windows scored, μ̂, and the confidence
    /// bounds the rule has computed so far (`None` until it has: the first batches, or a rule
    /// that reports no bounds before it decides).
    DuelProgress {
        entry: EntryId,
        n: u64,
        mu_hat: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lower: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upper: Option<f64>,
    },
    DuelFinished {
        entry: EntryId,
        verdict: VerdictSummary,
    },
    /// The duel could not be completed because of the challenger itself (it does not load, or
    /// it gives a non-finite loss on a window where the king's is finite): the submission is
    /// refused with `code` (one of [`Gate::Duel`]'s) and the digest is final, as after a verdict.
    /// A failure of the king or of our machinery is an [`Event::InfraFault`] instead.
    DuelRefused {
        entry: EntryId,
        code: RejectCode,
        message: String,
    },
    /// The shell carried out a crown; `block`/`block_hash` are the chain's at that moment (they
    /// seed the reign's pool of windows).
    Crowned {
        entry: EntryId,
        digest: Digest,
        hotkey: String,
        reign: u64,
        block: u64,
        block_hash: String,
        /// Where the validator keeps its own verified copy of the king (its `[store]
        /// king_location`), written before this event was logged: the reign's location, which
        /// workers and the feeds are given from now on, so that the owner deleting their copy
        /// changes nothing. `None` (absent from the JSON; a log written before the validator
        /// copied kings): the reign keeps the location the winner committed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        location: Option<String>,
    },
    /// Weights were accepted by the chain.
    WeightsSet {
        block: u64,
        weights: Vec<Weight>,
    },
}

/// One row of the validator's event log: its sequence number (from 1, gapless), when it was
/// appended, and the event.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    pub seq: i64,
    pub at_unix_ms: i64,
    pub event: Event,
}

impl Event {
    /// The stable name of the event kind (the log's `kind` column and the SSE event name).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Started { .. } => "started",
            Event::Recovered => "recovered",
            Event::Tick { .. } => "tick",
            Event::Revealed { .. } => "revealed",
            Event::GateStarted { .. } => "gate_started",
            Event::GatePassed { .. } => "gate_passed",
            Event::GateFailed { .. } => "gate_failed",
            Event::InfraFault { .. } => "infra_fault",
            Event::DuelStarted { .. } => "duel_started",
            Event::DuelProgress { .. } => "duel_progress",
            Event::DuelFinished { .. } => "duel_finished",
            Event::DuelRefused { .. } => "duel_refused",
            Event::Crowned { .. } => "crowned",
            Event::WeightsSet { .. } => "weights_set",
        }
    }
}

/// How a submission ended. Every admitted or refused submission gets exactly one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// Refused at intake (`gate` is `None`) or by a gate, with the stable code and a sentence.
    Rejected {
        code: RejectCode,
        gate: Option<Gate>,
        message: String,
    },
    /// Dueled; `crowned` is the reign number it started, if it won.
    Dueled {
        verdict: VerdictSummary,
        crowned: Option<u64>,
    },
    /// The same hotkey revealed a newer commitment before this one was evaluated.
    Superseded { by: EntryId },
}

/// What the shell must do now. The shell decides nothing: it carries these out and reports what
/// happened as events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Run one gate on the entry (append `GateStarted` first, then `GatePassed`, `GateFailed`
    /// or `InfraFault`).
    RunGate {
        entry: EntryId,
        gate: Gate,
        challenger: Digest,
        /// Where the challenger is stored (from its commitment).
        location: String,
        king: Digest,
        /// Where the king is stored (its reign's location; the competition's genesis location
        /// for the genesis king). `None`: nowhere is known, so the king can be used only if it
        /// is already cached.
        king_location: Option<String>,
        /// For the fingerprint gate: the checkpoints the challenger is compared with, with the
        /// words that name them ([`crate::fingerprint::earlier_checkpoints`]); empty for the
        /// other gates.
        references: Vec<(Digest, String)>,
    },
    /// Duel the entry against the king (append `DuelStarted` first).
    StartDuel {
        entry: EntryId,
        challenger: Digest,
        /// Where the challenger is stored (from its commitment).
        location: String,
        king: Digest,
        /// Where the king is stored, as for [`Effect::RunGate`].
        king_location: Option<String>,
        seed: SeedMaterial,
        /// The reign pool to take the king's losses from; `None`: score the king live.
        king_pool: Option<PoolSpec>,
    },
    /// Make the entry king (copy its checkpoint into the validator's own store and verify the
    /// copy, pin it, read the chain head), then append `Crowned` with the copy's location.
    /// Carried out again after a restart or a failed attempt, so the copy must be idempotent.
    Crown {
        entry: EntryId,
        digest: Digest,
        hotkey: String,
        reign: u64,
        /// Where the winner committed it (to fetch it from when the shell's cache lost it).
        location: String,
        /// The king it replaces (the shell may release it from its cache once the crown is
        /// logged).
        previous: Option<Digest>,
    },
    /// Set these weights on chain, then append `WeightsSet`.
    SetWeights { weights: Vec<Weight> },
    /// Tell the miner (feeds, SSE) how their submission ended.
    Answer {
        entry: EntryId,
        hotkey: String,
        outcome: Outcome,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_not_computed_yet_is_absent_and_reads_back_as_none() {
        let early = Event::DuelProgress {
            entry: 1,
            n: 32,
            mu_hat: 0.25,
            lower: None,
            upper: None,
        };
        let json = serde_json::to_string(&early).unwrap();
        assert!(!json.contains("lower") && !json.contains("upper"), "{json}");
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), early);
        // A log written before bounds were optional carries numbers: they read back as Some.
        let old =
            r#"{"kind":"duel_progress","entry":1,"n":64,"mu_hat":0.25,"lower":0.1,"upper":0.4}"#;
        match serde_json::from_str::<Event>(old).unwrap() {
            Event::DuelProgress { lower, upper, .. } => {
                assert_eq!((lower, upper), (Some(0.1), Some(0.4)))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_old_duel_finished_line_with_numeric_bounds_still_parses() {
        // A `duel_finished` row as logs written before the bounds were optional hold it: both
        // bounds are plain numbers (where the rule computed none, the tested mean stood in).
        let digest = koth_core::Digest::of(b"verdict");
        let old = format!(
            r#"{{"kind":"duel_finished","entry":7,"verdict":{{"accepted":true,"n":512,"mu_hat":0.02,"lower":0.01,"upper":0.02,"verdict_digest":"{digest}","verdict_path":"/v/7.json"}}}}"#
        );
        match serde_json::from_str::<Event>(&old).unwrap() {
            Event::DuelFinished { entry, verdict } => {
                assert_eq!(entry, 7);
                assert_eq!(
                    verdict,
                    VerdictSummary {
                        accepted: true,
                        n: 512,
                        mu_hat: 0.02,
                        lower: Some(0.01),
                        upper: Some(0.02),
                        verdict_digest: digest,
                        verdict_path: "/v/7.json".into(),
                    }
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_verdict_bound_not_computed_is_absent_and_round_trips_as_none() {
        let finished = Event::DuelFinished {
            entry: 3,
            verdict: VerdictSummary {
                accepted: true,
                n: 96,
                mu_hat: 0.05,
                lower: None,
                upper: None,
                verdict_digest: koth_core::Digest::of(b"v"),
                verdict_path: "/v/3.json".into(),
            },
        };
        let json = serde_json::to_string(&finished).unwrap();
        assert!(!json.contains("lower") && !json.contains("upper"), "{json}");
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), finished);
        // One bound present, the other not.
        let Event::DuelFinished { mut verdict, .. } = finished else {
            unreachable!()
        };
        verdict.lower = Some(0.03);
        let json = serde_json::to_string(&verdict).unwrap();
        assert!(
            json.contains(r#""lower":0.03"#) && !json.contains("upper"),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<VerdictSummary>(&json).unwrap(),
            verdict
        );
        // An explicit null (not what koth writes) reads as None too.
        let null = json.replace(r#""lower":0.03"#, r#""lower":null,"upper":null"#);
        let read: VerdictSummary = serde_json::from_str(&null).unwrap();
        assert_eq!((read.lower, read.upper), (None, None));
    }
}
