//! The one error type of this crate. Every variant that comes from a file names the file, and
//! where a tensor or a config field is at fault, names that too: these messages are what a miner
//! reads when a submission is refused.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A config.json that is not valid JSON, lacks a field, or holds a value koth refuses.
    #[error("{source_name}: field `{field}`: {reason}")]
    Config {
        source_name: String,
        field: String,
        reason: String,
    },

    /// A safetensors file (or its index) that cannot be trusted: bounds, dtype, byte counts.
    #[error("{}: {}{reason}", path.display(), tensor.as_ref().map(|t| format!("tensor `{t}`: ")).unwrap_or_default())]
    Safetensors {
        path: PathBuf,
        tensor: Option<String>,
        reason: String,
    },

    /// The tensors a checkpoint holds are not exactly those its config implies.
    #[error("{}: tensor set does not match config.json: {}", path.display(), problems.join("; "))]
    TensorSet {
        path: PathBuf,
        problems: Vec<String>,
    },

    /// A token id outside the vocabulary. Checked before any tensor op so that no kernel ever
    /// indexes out of bounds.
    #[error(
        "token id {id} at row {row}, position {position} is not below vocab_size {vocab_size}"
    )]
    TokenOutOfRange {
        id: u32,
        row: usize,
        position: usize,
        vocab_size: usize,
    },

    /// Token ids of an unusable shape (empty, ragged, fewer than two per row).
    #[error("token ids: {0}")]
    TokenShape(String),

    /// A loss or gradient that is NaN or infinite: applying it would corrupt the weights.
    #[error("non-finite {what}: {value}")]
    NonFinite { what: String, value: f64 },

    /// A request the model cannot serve (unsupported dtype, bad option).
    #[error("{0}")]
    Invalid(String),

    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn safetensors(
        path: impl Into<PathBuf>,
        tensor: Option<&str>,
        reason: impl Into<String>,
    ) -> Self {
        ModelError::Safetensors {
            path: path.into(),
            tensor: tensor.map(str::to_owned),
            reason: reason.into(),
        }
    }
}
