//! koth's validator.
//!
//! A pure core and a shell (DESIGN §10). This crate holds the core: [`apply`] maps the current
//! [`ValidatorState`] and one [`Event`] to the [`Effect`]s the shell must carry out, with no I/O,
//! clock or randomness, so every rule is testable without a network and replaying the
//! append-only [`EventLog`] rebuilds the state exactly. Around it: the pure gate checks that
//! need no network ([`gates`]), the reward policy ([`rules`]), and the JSON feeds ([`feed`]).

pub mod config;
pub mod core;
pub mod devkit;
pub mod duel_run;
pub mod event;
pub mod feed;
pub mod fingerprint;
pub mod gate_run;
pub mod gates;
pub mod http;
pub mod journal;
pub mod log;
pub mod rules;
pub mod shell;
pub mod state;
pub mod worker;

pub use crate::core::{apply, check, ApplyError};
pub use config::{ConfigError, ResolvedConfig, ValidatorConfig, WorkerSpec};
pub use event::{
    Effect, EntryId, Event, Gate, Outcome, Reveal, Rules, SeedMaterial, VerdictSummary, Weight,
    EVENT_VERSION,
};
pub use http::{api_router, FeedHub, SharedFeed};
pub use journal::{Journal, JournalError};
pub use log::{EventLog, LogError};
pub use shell::{run_validator, Shell, ShellError};
pub use state::ValidatorState;
