//! The statistics of a duel, free of I/O: pure state machines fed batches of per-window values.
//!
//! Both rules test the mean of a per-window quantity xᵢ against a threshold: xᵢ = dᵢ with
//! threshold δ for an absolute floor, or xᵢ = dᵢ − r·ℓᵢ(king) with threshold 0 for a relative
//! floor (see [`crate::rule`]). See docs/STATISTICS.md for the method and its assumptions.

pub mod bootstrap;
pub mod mixture;
pub mod running;
pub mod sequential;

pub use bootstrap::{BootstrapParams, BootstrapTest};
pub use sequential::{SequentialParams, SequentialTest};

/// Errors from feeding a rule.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StatsError {
    #[error("invalid rule parameter: {0}")]
    Param(String),
    #[error("window {index} has a non-finite value {value}; losses must be finite")]
    NonFinite { index: u64, value: f64 },
    #[error("the duel is already decided ({0:?}); no more windows may be fed")]
    AlreadyDecided(koth_core::verdict::Decision),
    #[error("batch of {batch} windows would take the duel to {would_be} windows, past its limit of {limit}")]
    PastLimit {
        batch: usize,
        would_be: u64,
        limit: u64,
    },
    #[error("an empty batch was fed")]
    EmptyBatch,
}

/// Check that every value is finite; `first_index` is the global index of `values[0]`.
pub(crate) fn check_finite(values: &[f64], first_index: u64) -> Result<(), StatsError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(StatsError::NonFinite {
            index: first_index + i as u64,
            value: values[i],
        }),
        None => Ok(()),
    }
}

pub(crate) fn check_probability(name: &str, p: f64) -> Result<(), StatsError> {
    if p.is_finite() && p > 0.0 && p < 1.0 {
        Ok(())
    } else {
        Err(StatsError::Param(format!(
            "{name} must lie strictly between 0 and 1, got {p}"
        )))
    }
}
