//! koth's duel: king and challenger scored on the same windows, a statistical rule that decides
//! whether the challenger is better by the effect floor, and the verdict record that lets anyone
//! replay the decision.
//!
//! - [`stats`]: the sequential rule (anytime-valid confidence sequence) and Teutonic's bootstrap
//!   rule, as pure state machines over batches of per-window values;
//! - [`rule`]: either rule behind one type, effect floors (absolute or relative), and
//!   [`rule::decide`] over given differences;
//! - [`simulate`]: false-crown rate, power and windows used per rule, by Monte Carlo;
//! - [`score`] and [`duel`]: the [`score::WindowScorer`] both models go through, the driver that
//!   streams windows from a bundle into the rule and writes the [`verdict::Verdict`], and replay.

pub mod duel;
pub mod pool;
pub mod rule;
pub mod score;
pub mod simulate;
pub mod stats;
pub mod toy;

pub use koth_core::verdict;

/// The version string written into verdicts.
pub const CODE_VERSION: &str = concat!("koth-duel ", env!("CARGO_PKG_VERSION"));
