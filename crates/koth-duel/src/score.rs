//! Scoring windows: the one abstraction both models of a duel go through.

use koth_model::{Model, TokenIds};

/// Errors from scoring a batch.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("scoring failed: {0}")]
    Model(#[from] koth_model::ModelError),
    #[error("the scorer returned {got} losses for a batch of {expected} windows")]
    Count { expected: usize, got: usize },
}

/// Turns a batch of token windows into per-window mean next-token NLL (nats/token).
///
/// A duel calls the same implementation, with the same dtype, device and batch layout, for king
/// and challenger.
pub trait WindowScorer {
    /// `tokens` is row-major `[rows, seq_len]`; returns `rows` losses, each the mean over the
    /// window's `seq_len − 1` next-token positions, accumulated in f32.
    fn score(
        &mut self,
        tokens: &[u32],
        rows: usize,
        seq_len: usize,
    ) -> Result<Vec<f32>, ScoreError>;
}

/// A [`koth_model::Model`] through its scoring path (fused inference kernels; per-token NLL in
/// f32, averaged per window in f32).
pub struct ModelScorer {
    model: Model,
}

impl ModelScorer {
    pub fn new(model: Model) -> Self {
        Self { model }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The name of the scoring code path, for the verdict.
    pub const PATH: &'static str =
        "koth-model scoring path (fused ops), per-token NLL f32, per-window mean f32";
}

impl WindowScorer for ModelScorer {
    fn score(
        &mut self,
        tokens: &[u32],
        rows: usize,
        seq_len: usize,
    ) -> Result<Vec<f32>, ScoreError> {
        let ids = TokenIds::new(tokens.to_vec(), rows, seq_len)?;
        ids.check_vocab(self.model.config().vocab_size)?;
        let losses = self.model.sequence_losses(&ids)?;
        if losses.len() != rows {
            return Err(ScoreError::Count {
                expected: rows,
                got: losses.len(),
            });
        }
        Ok(losses)
    }
}
