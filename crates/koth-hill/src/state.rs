//! The validator's state: what [`crate::apply`] builds from the event log.
//!
//! Every collection is ordered (`BTreeMap`, `BTreeSet`, `Vec`) so that two replays of one log
//! produce equal values, and the state is serialisable so feeds and tests can look at all of it.
//! Memory is bounded by the live entries (one per hotkey, plus at most one waiting per hotkey),
//! `history_len` finished entries, one mark per hotkey ever seen, one record per digest ever
//! revealed, one per reign, and the reveals held for at most W blocks after their commit block.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use koth_core::Digest;

use crate::event::{EntryId, Gate, Outcome, Reveal, Rules, SeedMaterial, VerdictSummary, Weight};

/// An admitted submission that has not finished yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: EntryId,
    pub hotkey: String,
    pub uid: u16,
    pub location: String,
    pub digest: Digest,
    pub commit_block: u64,
    pub reveal_block: u64,
    pub block_hash: String,
    /// Times our infrastructure (a fault or a restart) interrupted this entry.
    pub retries: u32,
    /// Gate results of the current attempt, in pipeline order.
    pub gates: Vec<GateRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateRecord {
    pub gate: Gate,
    pub result: GateResult,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateResult {
    Passed,
    Failed,
    /// The competition does not run this gate. Recorded so that a skipped check never looks
    /// like a passed one.
    NotEnabled,
}

/// Where an entry waits in the queue. Ordered by field order: class first, then reveal block,
/// then hotkey; the id only breaks ties that cannot occur (one entry per hotkey).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QueueKey {
    pub class: QueueClass,
    pub reveal_block: u64,
    pub hotkey: String,
    pub id: EntryId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueClass {
    /// Interrupted by our infrastructure: goes first.
    Retry,
    /// In order of reveal.
    Normal,
    /// Interrupted by us more than `max_infra_retries` times: still never consumed, but no
    /// longer allowed to block everyone else.
    Demoted,
}

/// The one entry being gated, dueled or crowned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Active {
    pub entry: EntryId,
    pub phase: Phase,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// `RunGate(gate)` was requested; `started` once `GateStarted` is logged.
    Gate { gate: Gate, started: bool },
    /// `StartDuel` was requested; `running` once `DuelStarted` is logged.
    Duel {
        king: Digest,
        seed: SeedMaterial,
        running: bool,
        progress: Option<DuelBounds>,
    },
    /// The duel accepted the challenger. `requested` once the `Crown` effect was emitted (it is
    /// emitted again after a restart or a failed attempt).
    Crowning {
        verdict: VerdictSummary,
        reign: u64,
        requested: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DuelBounds {
    pub n: u64,
    pub mu_hat: f64,
    /// `None` (absent from the JSON) until the rule has computed the bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<f64>,
}

/// One holder of the crown. Reign 0 is the genesis king.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reign {
    /// Serialised as `reign` (the feeds' name for it).
    #[serde(rename = "reign", alias = "number")]
    pub number: u64,
    pub digest: Digest,
    /// `None` for the genesis king, which belongs to nobody and is paid nothing.
    pub hotkey: Option<String>,
    /// The hotkey's uid when it was admitted.
    pub uid: Option<u16>,
    pub entry: Option<EntryId>,
    pub location: Option<String>,
    /// Block at which the crown was carried out (the start block for genesis).
    pub block: u64,
    pub block_hash: Option<String>,
}

/// Who owns a digest and whether it was ever dueled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestRecord {
    /// The hotkey of its earliest commitment (by commit block, then hotkey: PROTOCOL §3);
    /// `None` for the genesis king.
    pub owner: Option<String>,
    /// The entry that first committed it.
    pub first_entry: Option<EntryId>,
    /// The block that included the owner's commitment; `None` for the genesis king.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_block: Option<u64>,
    /// A duel verdict exists for it (or it is the genesis king): never dueled again.
    pub dueled: bool,
    /// The unfinished entry that carries it, if any.
    pub live: Option<EntryId>,
}

/// The last commitment of a hotkey the core has processed, so a poll that sees it again is
/// recognised as nothing new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevealMark {
    pub commit_block: u64,
    pub payload_sha256: Digest,
}

/// A finished submission, as the feeds show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    pub id: EntryId,
    pub hotkey: String,
    pub uid: Option<u16>,
    pub digest: Option<Digest>,
    pub location: Option<String>,
    pub commit_block: u64,
    pub reveal_block: u64,
    pub retries: u32,
    pub gates: Vec<GateRecord>,
    pub outcome: Outcome,
    /// The chain block known to the core when it finished.
    pub finished_block: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WeightsState {
    pub last_set_block: Option<u64>,
    pub last: Vec<Weight>,
    /// A crown happened since weights were last set.
    pub dirty: bool,
}

/// Running totals for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub reveals_processed: u64,
    pub reveals_ignored: u64,
    pub admitted: u64,
    pub answered: u64,
    pub rejected: BTreeMap<String, u64>,
    pub superseded: u64,
    pub duels_started: u64,
    pub duels_finished: u64,
    pub crowns: u64,
    pub infra_faults: u64,
    pub recoveries: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ValidatorState {
    /// `None` until `Started`.
    pub rules: Option<Rules>,
    /// Highest chain block the core has been told about.
    pub block: u64,
    pub next_entry: EntryId,
    /// Every reign, genesis first; the last one is the king.
    pub reigns: Vec<Reign>,
    /// Unfinished entries: queued, waiting, or active.
    pub entries: BTreeMap<EntryId, Entry>,
    pub queue: BTreeSet<QueueKey>,
    /// hotkey → its queued or active entry (at most one).
    pub slots: BTreeMap<String, EntryId>,
    /// hotkey → a newer entry waiting for the hotkey's active one to finish.
    pub waiting: BTreeMap<String, EntryId>,
    pub active: Option<Active>,
    /// After an infrastructure fault the queue waits until this block.
    pub paused_until: Option<u64>,
    pub digests: BTreeMap<Digest, DigestRecord>,
    pub last_reveal: BTreeMap<String, RevealMark>,
    /// Revealed commitments not decided yet, in the order they will be taken: (commit block,
    /// hotkey, payload). Each waits until the chain's reveals up to its commit block + W have
    /// been read (PROTOCOL §3), so that an earlier commitment revealed later still comes first.
    #[serde(default)]
    pub held: Vec<Reveal>,
    /// The last `history_len` finished entries, oldest first.
    pub history: VecDeque<Finished>,
    pub weights: WeightsState,
    pub counters: Counters,
}

impl ValidatorState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current king, once started.
    pub fn king(&self) -> Option<&Reign> {
        self.reigns.last()
    }

    /// Whether a revealed commitment is news to the core. The shell appends only these in a
    /// `Revealed` event, so polling the chain every block does not grow the log; `apply`
    /// ignores the others anyway.
    pub fn needs_intake(&self, reveal: &Reveal) -> bool {
        match self.last_reveal.get(&reveal.hotkey) {
            None => true,
            Some(mark) => {
                reveal.commit_block > mark.commit_block
                    || (reveal.commit_block == mark.commit_block
                        && mark.payload_sha256 != Digest::of(reveal.payload.as_bytes()))
            }
        }
    }

    /// The block from which `reveal`, held, may be decided: its commit block + W. Every
    /// commitment that could come before it (an earlier commit block, revealed within W) has
    /// been revealed by then.
    pub fn release_block(&self, reveal: &Reveal) -> u64 {
        let w = self
            .rules
            .as_ref()
            .and_then(|r| r.reveal_delay_blocks)
            .unwrap_or(0);
        reveal.commit_block.saturating_add(w)
    }

    /// Whether a held reveal may be decided once the chain's reveals up to `head` are read: the
    /// shell then appends a `Revealed` event at `head` even when nothing new was revealed.
    pub fn held_due(&self, head: u64) -> bool {
        self.held.iter().any(|r| self.release_block(r) <= head)
    }

    /// Queued entries in the order they will be evaluated.
    pub fn queue_in_order(&self) -> impl Iterator<Item = &Entry> {
        self.queue.iter().filter_map(|k| self.entries.get(&k.id))
    }

    /// The entry being gated, dueled or crowned, with its phase.
    pub fn active_entry(&self) -> Option<(&Entry, &Phase)> {
        let a = self.active.as_ref()?;
        Some((self.entries.get(&a.entry)?, &a.phase))
    }

    /// Whether the queue is paused after an infrastructure fault at the current block.
    pub fn is_paused(&self) -> bool {
        self.paused_until.is_some_and(|until| self.block < until)
    }
}
