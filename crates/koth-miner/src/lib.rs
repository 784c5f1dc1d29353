//! koth's miner: from king to challenger to commitment, by real training.
//!
//! - [`config`]: `miner.toml` (strict; errors name the key).
//! - [`follow`]: the current king, from the validator's feed or inferred from the chain; the
//!   validator's verdict on a submission.
//! - [`data`]: the miner's bundle split into held-out windows (for the local duel) and
//!   training windows that never overlap them; deterministic batches.
//! - [`schedule`] and [`train`]: AdamW with warmup then cosine, gradient accumulation,
//!   clipping, checkpoints that resume bit for bit.
//! - [`external`]: `[train] command`, a miner's own trainer run in place of the built-in one.
//! - [`check`]: the validator's gates run locally on any checkpoint directory.
//! - [`judge`]: the validator's rule (from the competition file's `[duel]`) on held-out data.
//! - [`miner`]: one attempt (king → train → judge → commit, then publish → verdict) and the
//!   loop.
//! - [`progress`]: a progress bar on a terminal, log or JSON lines otherwise.

pub mod check;
pub mod config;
pub mod data;
pub mod devkit;
pub mod error;
pub mod events;
pub mod external;
pub mod follow;
pub mod judge;
pub mod miner;
pub mod progress;
pub mod schedule;
pub mod train;

pub use config::{ConfigError, MinerConfig, TrainSettings};
pub use error::MinerError;
pub use events::{MinerEvent, Observer, Quiet};
pub use follow::{KingRef, KingSource, ValidatorVerdict};
pub use judge::LocalVerdict;
pub use miner::{stop_on_signals, AttemptRecord, AttemptStatus, Miner, PublishRecord};
pub use schedule::Schedule;
