//! The miner's errors. Each names the thing it is about (a config key, a file, the feed, the
//! store, the chain) and what was expected.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum MinerError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("competition file {path}: {message}")]
    Competition { path: PathBuf, message: String },
    #[error("data: {0}")]
    Data(String),
    #[error("model: {0}")]
    Model(#[from] koth_model::ModelError),
    #[error("store {location}: {message}")]
    Store { location: String, message: String },
    /// `chain` is the chain file, or the subtensor node and netuid.
    #[error("chain {chain}: {message}")]
    Chain { chain: String, message: String },
    #[error("key {name} in keystore {keystore}: {message}")]
    Key {
        keystore: PathBuf,
        name: String,
        message: String,
    },
    #[error("validator feed {url}: {message}")]
    Feed { url: String, message: String },
    #[error("local duel: {0}")]
    Duel(String),
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("training: {0}")]
    Training(String),
    /// `koth miner check` could not decide on our side (the king's files, the disk): never a
    /// pass, and not the checkpoint's fault.
    #[error("check: {0}")]
    Check(String),
    /// `[train] command` failed; nothing was published.
    #[error(
        "trainer `{command}` {reason}; nothing was published{}",
        quote_lines(last_lines)
    )]
    Trainer {
        command: String,
        reason: String,
        /// Its last output lines (stdout and stderr, in order of arrival).
        last_lines: Vec<String>,
    },
}

fn quote_lines(lines: &[String]) -> String {
    if lines.is_empty() {
        return "; it printed nothing".to_string();
    }
    let mut out = format!("; its last {} output lines:", lines.len());
    for l in lines {
        out.push_str("\n  | ");
        out.push_str(l);
    }
    out
}

impl MinerError {
    pub(crate) fn io(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        MinerError::Io {
            path: path.into(),
            message: e.to_string(),
        }
    }
}

pub type Result<T, E = MinerError> = std::result::Result<T, E>;
