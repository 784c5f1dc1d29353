//! koth's validator: the shell around the hill's rules.
//!
//! The rules themselves are the pure core in koth-hill ([`apply`]: state + event → effects, no
//! I/O); this crate holds everything with I/O around it: the append-only [`EventLog`] the state
//! is rebuilt from, the [`Journal`] (check → append → apply), the [`shell`] that polls the chain
//! and carries out effects (gates over fetched files, duels, crowns — each king copied into the
//! validator's own store first, [`king_store`] — weights), the HTTP feeds, and the remote eval
//! worker.

pub mod config;
pub mod devkit;
pub mod duel_run;
pub mod gate_run;
pub mod http;
pub mod journal;
pub mod king_store;
pub mod log;
pub mod reader;
pub mod shell;
pub mod worker;

// The pure core lives in koth-hill; these paths keep `koth_validator::event` etc. working for
// the shell's modules and the crate's users.
pub use koth_hill::{core, event, feed, fingerprint, gates, observe, reward, state};

pub use config::{ConfigError, ResolvedConfig, ValidatorConfig, WorkerSpec};
pub use event::{
    Effect, EntryId, Event, Gate, Outcome, Reveal, Rules, SeedMaterial, VerdictSummary, Weight,
    EVENT_VERSION,
};
pub use http::{api_router, FeedHub, SharedFeed};
pub use journal::{Journal, JournalError};
pub use koth_hill::core::{apply, check, ApplyError};
pub use log::{EventLog, LogError};
pub use reader::{ChainSource, ValidatorReader};
pub use shell::{run_validator, Shell, ShellError};
pub use state::ValidatorState;
