//! What a reader of the hill (the dashboard) reads from a running validator, as a trait: the
//! validator implements it over its published state, its event log (read-only) and its chain,
//! so a reader depends on these types and not on the validator's shell (its SQLite log, its
//! chain client, its async runtime).

use std::sync::Arc;

use crate::event::LoggedEvent;
use crate::state::ValidatorState;

/// Accrued emission of one registered hotkey, as the chain reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmissionRow {
    pub uid: u16,
    /// SS58 address.
    pub hotkey: String,
    pub rao: u64,
}

/// A read the validator could not serve: what was being read and why it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reading {what}: {detail}")]
pub struct ReadError {
    /// `"the event log"`, `"the chain"`, …
    pub what: &'static str,
    pub detail: String,
}

/// Why a piece of text is not a hotkey.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HotkeyError(pub String);

/// The validator as a reader sees it. Every method may block (file and chain reads): call it
/// off an async runtime's worker threads.
pub trait HillReader: Send + Sync {
    /// The state after the last logged event.
    fn state(&self) -> Arc<ValidatorState>;
    /// Up to `limit` logged events with `seq >= from`, in order.
    fn events_from(&self, from: i64, limit: usize) -> Result<Vec<LoggedEvent>, ReadError>;
    /// The chain's accrued emission per registered hotkey; `Ok(None)` when no chain is
    /// configured.
    fn emission(&self) -> Result<Option<Vec<EmissionRow>>, ReadError>;
    /// `text` as a hotkey (an SS58 address) in its canonical spelling.
    fn canonical_hotkey(&self, text: &str) -> Result<String, HotkeyError>;
}
