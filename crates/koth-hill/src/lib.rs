//! The hill's rules: koth's validator as a pure state machine, with nothing but data around it.
//!
//! [`apply`] maps the current [`ValidatorState`] and one [`Event`] to the [`Effect`]s the shell
//! must carry out, with no I/O, clock or randomness, so every rule is testable without a network
//! and replaying the validator's append-only log rebuilds the state exactly. Around it, equally
//! pure: the gate checks over data the shell has fetched ([`gates`]), the fingerprint maths of
//! the optional gates ([`fingerprint`]), the reward policy ([`reward`]) and the feeds the
//! validator publishes ([`feed`]) and the interface through which a reader such as the dashboard
//! reads a running validator ([`reader`]). What the shell observes (a chain poll, a crown or
//! weights carried out) becomes the events it logs through [`observe::events`], so the shell
//! never reads the state to decide what to log.
//!
//! This crate's `Cargo.toml` is what keeps it pure: it depends on koth-core and plain data
//! crates only (no tokio, axum, rusqlite, reqwest or candle), so the dashboard and any other
//! reader of the hill's state build without the validator's shell.
//!
//! Modules form layers, each using only those before it (a test checks it):
//! `event` → `state` → `reward` → `gates` → `fingerprint` → `core` → `observe` → `feed` →
//! `reader`.

pub mod core;
pub mod event;
pub mod feed;
pub mod fingerprint;
pub mod gates;
pub mod observe;
pub mod reader;
pub mod reward;
pub mod state;

pub use crate::core::{apply, check, ApplyError};
pub use event::{
    Effect, EntryId, Event, Gate, LoggedEvent, Outcome, PoolSpec, Reveal, Rules, SeedMaterial,
    VerdictSummary, Weight, EVENT_VERSION,
};
pub use observe::Observation;
pub use state::ValidatorState;
