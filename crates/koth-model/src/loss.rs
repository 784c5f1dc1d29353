//! Next-token negative log-likelihood without ever holding [B, T, V] logits.
//!
//! The positions that predict a next token ([B, T-1] of them) are flattened to rows and pushed
//! through the head a chunk of rows at a time; each chunk's logits are cast to f32 and reduced
//! to one NLL per row by a log-sum-exp with a detached row maximum. The result is the same
//! whatever the chunk size (rows are independent), and every op is differentiable.

use candle_core::{DType, Tensor, D};

use crate::error::Result;

/// The positions that predict a next token, flattened to rows [B*(T-1), H], and their targets
/// [B*(T-1)]; also B and T-1.
pub(crate) fn predicting_rows(
    hidden: &Tensor,
    ids: &Tensor,
) -> Result<(usize, usize, Tensor, Tensor)> {
    let (b, t, h) = hidden.dims3()?;
    let positions = t - 1;
    let inputs = hidden
        .narrow(1, 0, positions)?
        .reshape((b * positions, h))?;
    let targets = ids.narrow(1, 1, positions)?.flatten_all()?;
    Ok((b, positions, inputs, targets))
}

/// `rows` cut into consecutive `(start, len)` pieces of `step` rows (the last may be shorter).
pub(crate) fn row_chunks(rows: usize, step: usize) -> impl Iterator<Item = (usize, usize)> {
    let step = step.max(1);
    (0..rows)
        .step_by(step)
        .map(move |s| (s, step.min(rows - s)))
}

/// Rows of logits per chunk so that one chunk of f32 logits stays under `chunk_bytes`.
pub fn chunk_rows(vocab_size: usize, chunk_bytes: usize) -> usize {
    (chunk_bytes / (4 * vocab_size.max(1))).max(1)
}

/// `hidden` [B, T, H] (final, normalised), `ids` [B, T] u32, `head` [V, H]: NLL f32 [B, T-1]
/// where entry (b, t) is -log p(ids[b, t+1] | ids[b, ..=t]).
pub fn chunked_nll(
    hidden: &Tensor,
    ids: &Tensor,
    head: &Tensor,
    chunk_bytes: usize,
) -> Result<Tensor> {
    let (b, positions, inputs, targets) = predicting_rows(hidden, ids)?;
    Ok(rows_nll(&inputs, &targets, head, chunk_bytes)?.reshape((b, positions))?)
}

/// [`chunked_nll`] on rows already flattened: `inputs` [R, H] (final, normalised), `targets`
/// [R] u32: NLL f32 [R]. Chunks of [`chunk_rows`] rows from the first.
pub fn rows_nll(
    inputs: &Tensor,
    targets: &Tensor,
    head: &Tensor,
    chunk_bytes: usize,
) -> Result<Tensor> {
    let rows = inputs.dim(0)?;
    let head_t = head.t()?;
    let step = chunk_rows(head.dim(0)?, chunk_bytes);
    let mut parts = Vec::with_capacity(rows.div_ceil(step));
    for (start, len) in row_chunks(rows, step) {
        // Logits in the model dtype (as transformers computes them), reduced in f32.
        let logits = inputs
            .narrow(0, start, len)?
            .matmul(&head_t)?
            .to_dtype(DType::F32)?;
        let max = logits.max_keepdim(D::Minus1)?.detach();
        let shifted = logits.broadcast_sub(&max)?;
        let log_sum = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
        let target = targets.narrow(0, start, len)?.unsqueeze(1)?.contiguous()?;
        let picked = shifted.gather(&target, 1)?;
        parts.push((log_sum - picked)?.squeeze(1)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Rows per chunk of [`chunked_nll_kernels`]: model-dtype logits within `chunk_bytes`.
pub fn kernel_chunk_rows(vocab_size: usize, dtype: DType, chunk_bytes: usize) -> usize {
    (chunk_bytes / (dtype.size_in_bytes() * vocab_size.max(1))).max(1)
}

/// [`chunked_nll`] on koth's GPU kernels: each chunk's logits stay in the model dtype (no f32
/// copy) and one kernel per chunk reduces each row to its NLL in f32; when training, the
/// kernel's backward writes softmax − one-hot straight into the logits' gradient. `chunk_bytes`
/// bounds the model-dtype logits held at once.
pub fn chunked_nll_kernels(
    hidden: &Tensor,
    ids: &Tensor,
    head: &Tensor,
    chunk_bytes: usize,
) -> Result<Tensor> {
    let (b, positions, inputs, targets) = predicting_rows(hidden, ids)?;
    Ok(rows_nll_kernels(&inputs, &targets, head, chunk_bytes)?.reshape((b, positions))?)
}

/// [`chunked_nll_kernels`] on rows already flattened: `inputs` [R, H], `targets` [R] u32: NLL
/// f32 [R]. Chunks of [`kernel_chunk_rows`] rows from the first.
pub fn rows_nll_kernels(
    inputs: &Tensor,
    targets: &Tensor,
    head: &Tensor,
    chunk_bytes: usize,
) -> Result<Tensor> {
    let rows = inputs.dim(0)?;
    let targets = targets.contiguous()?;
    let head_t = head.t()?;
    let step = kernel_chunk_rows(head.dim(0)?, inputs.dtype(), chunk_bytes);
    let training = inputs.track_op() || head.track_op();
    let mut parts = Vec::with_capacity(rows.div_ceil(step));
    for (start, len) in row_chunks(rows, step) {
        let logits = inputs.narrow(0, start, len)?.matmul(&head_t)?;
        let target = targets.narrow(0, start, len)?;
        parts.push(if training {
            koth_kernels::cross_entropy_trainable(&logits, &target)?
        } else {
            koth_kernels::cross_entropy(&logits, &target)?
        });
    }
    Ok(Tensor::cat(&parts, 0)?)
}
