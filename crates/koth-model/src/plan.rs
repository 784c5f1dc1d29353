//! Placement of a duel's two models across the GPUs of one host, by memory.
//!
//! A duel scores king and challenger on the same batches. For a model too large for one GPU
//! (Teutonic-LXXX: 82.3B parameters, 153 GiB in bf16) each model is cut into pipeline stages of
//! consecutive decoder layers; the embedding goes with the first stage, the final norm and the
//! head with the last (a tied head keeps its own copy of the embedding matrix there). Two
//! layouts:
//! - [`Layout::Disjoint`]: the king on the first half of the GPUs, the challenger on the other
//!   half (Teutonic's choice); the two pipelines run side by side.
//! - [`Layout::Interleaved`]: both models cut into as many stages as there are GPUs, stage `i`
//!   of each on GPU `i`; each GPU holds half of its weights from each model.
//!
//! The planner is pure arithmetic over the config's exact tensor set ([`ModelConfig::tensor_specs`])
//! and a stated activation model; the prediction is what `koth model plan` prints and what the
//! engine's peak memory is checked against.

use std::ops::Range;

use crate::config::ModelConfig;

/// Where the two models of a duel go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// King on GPUs `0..n/2`, challenger on `n/2..n` (one GPU: both on it).
    Disjoint,
    /// Stage `i` of both models on GPU `i`.
    Interleaved,
}

/// What is being placed.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRequest {
    pub gpus: usize,
    /// Usable bytes per GPU.
    pub gpu_mem_bytes: u64,
    /// Bytes per parameter (2 for bf16).
    pub dtype_bytes: u64,
    /// Sequences per micro-batch and tokens per sequence (activations scale with their product).
    pub batch: usize,
    pub seq: usize,
    /// Bytes of logits the chunked head holds at once.
    pub logits_chunk_bytes: u64,
    /// Bytes per GPU that the runtime takes before any tensor (CUDA context, cuBLAS and cuDNN
    /// workspaces, allocator slack).
    pub reserve_bytes: u64,
    pub layout: Layout,
}

/// One pipeline stage of one model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stage {
    /// 0 = king, 1 = challenger.
    pub model: usize,
    pub gpu: usize,
    pub layers: Range<usize>,
    pub embed: bool,
    pub head: bool,
    pub weight_bytes: u64,
    /// Peak activation bytes while this stage scores one micro-batch.
    pub activation_bytes: u64,
}

/// A placement and its predicted memory.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Plan {
    pub layout: Layout,
    pub stages: Vec<Stage>,
    /// Predicted peak bytes per GPU: reserve + weights + the largest activation any of its
    /// stages holds (a GPU's stages of the same model run one after another; stages of the two
    /// models on one GPU may run at the same time, so their activations add).
    pub peak_bytes: Vec<u64>,
    pub gpu_mem_bytes: u64,
    pub fits: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the plan needs at least one GPU")]
    NoGpus,
    #[error("{layers} decoder layers cannot be cut into {stages} stages")]
    TooManyStages { layers: usize, stages: usize },
    #[error("batch and sequence length must be at least 1")]
    EmptyBatch,
}

/// Bytes of each decoder layer's weights, of the embedding, and of the final norm plus head.
pub struct WeightBytes {
    pub layers: Vec<u64>,
    pub embed: u64,
    /// Final norm and, when untied, `lm_head`.
    pub head: u64,
}

/// Weight bytes from the exact tensor set.
pub fn weight_bytes(config: &ModelConfig, dtype_bytes: u64) -> WeightBytes {
    let mut layers = vec![0u64; config.num_hidden_layers];
    let (mut embed, mut head) = (0u64, 0u64);
    for spec in config.tensor_specs() {
        let bytes = spec.shape.iter().map(|&d| d as u64).product::<u64>() * dtype_bytes;
        if let Some(rest) = spec.name.strip_prefix("model.layers.") {
            if let Some(i) = rest.split('.').next().and_then(|s| s.parse::<usize>().ok()) {
                if i < layers.len() {
                    layers[i] += bytes;
                    continue;
                }
            }
        }
        if spec.name == "model.embed_tokens.weight" {
            embed += bytes;
        } else {
            head += bytes;
        }
    }
    if config.tie_word_embeddings {
        // The last stage multiplies by the embedding matrix: it holds its own copy unless the
        // first and last stage share a GPU (accounted for in `plan`).
        head += embed;
    }
    WeightBytes {
        layers,
        embed,
        head,
    }
}

/// Peak activation bytes of one decoder layer scoring `tokens` tokens (fused attention: no
/// [T, T] term). Live at the layer's widest point: the residual stream and its normalised copy,
/// q/k/v and the attention output, then the feed-forward's gate, up and product (for a sparse
/// layer: the routed copies of the tokens, `top_k` per token, and the router's f32
/// probabilities).
pub fn layer_activation_bytes(
    config: &ModelConfig,
    layer: usize,
    tokens: u64,
    dtype_bytes: u64,
) -> u64 {
    let h = config.hidden_size as u64;
    let q = (config.num_attention_heads * config.head_dim) as u64;
    let kv = (config.num_key_value_heads * config.head_dim) as u64;
    let attention = tokens * (2 * h + q + 2 * kv + q) * dtype_bytes;
    let ff = match &config.moe {
        Some(m) if config.is_sparse_layer(layer) => {
            let routed = tokens * m.num_experts_per_tok as u64;
            routed * (h + 3 * m.moe_intermediate_size as u64) * dtype_bytes
                + tokens * m.num_experts as u64 * 4
                + tokens * h * dtype_bytes
        }
        _ => tokens * (2 * h + 3 * config.intermediate_size as u64) * dtype_bytes,
    };
    attention.max(ff)
}

/// Cut `bytes` (per layer, in order) into `stages` contiguous ranges of about equal sums, the
/// first stage lightened by `first_extra` and the last by `last_extra` (embedding and head).
fn cut(bytes: &[u64], stages: usize, first_extra: u64, last_extra: u64) -> Vec<Range<usize>> {
    let total: u64 = bytes.iter().sum::<u64>() + first_extra + last_extra;
    let mut ranges = Vec::with_capacity(stages);
    let mut start = 0usize;
    let mut acc = first_extra;
    for s in 0..stages {
        let remaining_stages = stages - s;
        let end = if remaining_stages == 1 {
            bytes.len()
        } else {
            let target = total * (s as u64 + 1) / stages as u64;
            let mut end = start;
            // Every stage gets at least one layer; leave one for each later stage.
            let max_end = bytes.len() - (remaining_stages - 1);
            while end < max_end && (end == start || acc + bytes[end] / 2 <= target) {
                acc += bytes[end];
                end += 1;
            }
            end
        };
        if remaining_stages == 1 {
            acc += bytes[start..end].iter().sum::<u64>();
        }
        ranges.push(start..end);
        start = end;
    }
    ranges
}

/// Place king and challenger of `config` on `req.gpus` GPUs.
pub fn plan(config: &ModelConfig, req: &PlanRequest) -> Result<Plan, PlanError> {
    if req.gpus == 0 {
        return Err(PlanError::NoGpus);
    }
    if req.batch == 0 || req.seq == 0 {
        return Err(PlanError::EmptyBatch);
    }
    let w = weight_bytes(config, req.dtype_bytes);
    let layers = config.num_hidden_layers;
    // GPUs per model and the GPU of each model's stage s.
    let (stages_per_model, gpu_of): (usize, Box<dyn Fn(usize, usize) -> usize>) = match req.layout {
        Layout::Disjoint if req.gpus >= 2 => {
            let half = req.gpus / 2;
            (half, Box::new(move |model, s| model * half + s))
        }
        Layout::Disjoint => (1, Box::new(|_, _| 0)),
        Layout::Interleaved => (req.gpus, Box::new(|_, s| s)),
    };
    if stages_per_model > layers {
        return Err(PlanError::TooManyStages {
            layers,
            stages: stages_per_model,
        });
    }
    let tokens = (req.batch * req.seq) as u64;
    let head_activation =
        req.logits_chunk_bytes + tokens * config.hidden_size as u64 * req.dtype_bytes + tokens * 4;
    let ranges = cut(&w.layers, stages_per_model, w.embed, w.head);
    let mut stages = Vec::new();
    for model in 0..2 {
        for (s, r) in ranges.iter().enumerate() {
            let first = s == 0;
            let last = s + 1 == ranges.len();
            let mut weight = w.layers[r.clone()].iter().sum::<u64>();
            if first {
                weight += w.embed;
            }
            if last {
                weight += w.head;
                // A tied head on the embedding's own stage needs no second copy.
                if first && config.tie_word_embeddings {
                    weight -= w.embed;
                }
            }
            let mut activation = r
                .clone()
                .map(|l| layer_activation_bytes(config, l, tokens, req.dtype_bytes))
                .max()
                .unwrap_or(0);
            // The residual stream handed between stages (and kept by the first for the next
            // micro-batch) is part of the layer term; the head's chunked logits are not.
            if last {
                activation = activation.max(head_activation);
            }
            stages.push(Stage {
                model,
                gpu: gpu_of(model, s),
                layers: r.clone(),
                embed: first,
                head: last,
                weight_bytes: weight,
                activation_bytes: activation,
            });
        }
    }
    let mut peak = vec![req.reserve_bytes; req.gpus];
    for (g, peak) in peak.iter_mut().enumerate() {
        let on: Vec<&Stage> = stages.iter().filter(|st| st.gpu == g).collect();
        let weights: u64 = on.iter().map(|st| st.weight_bytes).sum();
        let activations: u64 = (0..2)
            .map(|m| {
                on.iter()
                    .filter(|st| st.model == m)
                    .map(|st| st.activation_bytes)
                    .max()
                    .unwrap_or(0)
            })
            .sum();
        if !on.is_empty() {
            *peak += weights + activations;
        }
    }
    let fits = peak.iter().all(|&p| p <= req.gpu_mem_bytes);
    Ok(Plan {
        layout: req.layout,
        stages,
        peak_bytes: peak,
        gpu_mem_bytes: req.gpu_mem_bytes,
        fits,
    })
}

/// The router's choice: for each row of `probs` ([rows, experts], row-major), the indices of its
/// `k` largest probabilities, largest first, the lower index first among equal ones (f32
/// `total_cmp` order, so even a NaN is placed the same way every time). `k` beyond `experts`
/// is taken as `experts` (and no experts as none chosen). The GPU's `router_top_k` kernel makes
/// exactly this choice.
///
/// One pass per row keeps the best `k` so far in order (O(experts * k) at worst, but a candidate
/// below the k-th is rejected with one comparison); rows are split across threads when there
/// are many, each row chosen from its own values alone.
pub fn top_k_experts(probs: &[f32], experts: usize, k: usize) -> Vec<u32> {
    let k = k.min(experts);
    if k == 0 {
        return Vec::new();
    }
    let rows = probs.len() / experts;
    let mut chosen = vec![0u32; rows * k];
    let choose = |row: &[f32], out: &mut [u32]| {
        let mut n = 0usize; // filled so far
        for (e, &v) in row.iter().enumerate() {
            // The first place whose value is strictly smaller: equal values keep index order.
            let better = |j: usize| v.total_cmp(&row[out[j] as usize]).is_gt();
            if n == k && !better(k - 1) {
                continue;
            }
            let mut at = n.min(k - 1);
            while at > 0 && better(at - 1) {
                at -= 1;
            }
            let end = if n == k { k - 1 } else { n };
            out.copy_within(at..end, at + 1);
            out[at] = e as u32;
            n = (n + 1).min(k);
        }
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(16);
    let rows_per = rows.div_ceil(threads).max(1);
    if threads == 1 || rows * experts < 1 << 20 {
        for (row, out) in probs.chunks(experts).zip(chosen.chunks_mut(k)) {
            choose(row, out);
        }
        return chosen;
    }
    std::thread::scope(|scope| {
        for (p, c) in probs
            .chunks(rows_per * experts)
            .zip(chosen.chunks_mut(rows_per * k))
        {
            scope.spawn(move || {
                for (row, out) in p.chunks(experts).zip(c.chunks_mut(k)) {
                    choose(row, out);
                }
            });
        }
    });
    chosen
}

/// Deterministic grouping of routed tokens by expert, for a grouped expert GEMM: `chosen` holds
/// each token's `k` experts row by row (`chosen[t * k + j]`). Returns the slots (`t * k + j`)
/// sorted by expert, stably (within an expert, in token order), and each expert's range in
/// that list (`offsets[e]..offsets[e + 1]`). A counting sort: no atomics, the same order on
/// every device and every run.
pub fn group_by_expert(chosen: &[u32], num_experts: usize) -> (Vec<u32>, Vec<usize>) {
    let mut counts = vec![0usize; num_experts + 1];
    for &e in chosen {
        counts[e as usize + 1] += 1;
    }
    for e in 0..num_experts {
        counts[e + 1] += counts[e];
    }
    let offsets = counts.clone();
    let mut next = counts;
    let mut slots = vec![0u32; chosen.len()];
    for (slot, &e) in chosen.iter().enumerate() {
        slots[next[e as usize]] = slot as u32;
        next[e as usize] += 1;
    }
    (slots, offsets)
}

/// For each token, the positions in the grouped list of its `k` routed rows, ascending (the
/// order an index_add over the grouped list adds them): `slots[g]` is the slot `t * k + j` at
/// grouped position g.
pub fn token_rows(slots: &[u32], tokens: usize, k: usize) -> Vec<u32> {
    let mut pos = vec![0u32; tokens * k];
    for (g, &s) in slots.iter().enumerate() {
        pos[s as usize] = g as u32;
    }
    for row in pos.chunks_mut(k.max(1)) {
        row.sort_unstable();
    }
    pos
}

/// The grouped rows laid out for one batched GEMM over all experts: each expert's rows padded to
/// the largest group's count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaddedGroups {
    /// Rows per expert in the padded layout (the largest group's count, at least 1).
    pub width: usize,
    /// `experts * width` row ids: expert e's rows at `e * width ..`, in their grouped order, then
    /// the padding row id.
    pub rows: Vec<u32>,
    /// For each grouped row, in the grouped order, its position in `rows`.
    pub valid: Vec<u32>,
}

/// Pads the groups of [`group_by_expert`] (`rows[offsets[e]..offsets[e + 1]]` are expert e's
/// token rows) to one width, with `pad_row` for the empty places. `None` when the padded layout
/// would hold more than `max_padding` times the routed rows (a skewed router: the per-expert
/// loop then does less work) or there are no rows.
pub fn pad_groups(
    rows: &[u32],
    offsets: &[usize],
    pad_row: u32,
    max_padding: usize,
) -> Option<PaddedGroups> {
    let experts = offsets.len().checked_sub(1)?;
    if rows.is_empty() || experts == 0 {
        return None;
    }
    let width = (0..experts)
        .map(|e| offsets[e + 1] - offsets[e])
        .max()?
        .max(1);
    if experts * width > max_padding.saturating_mul(rows.len()) {
        return None;
    }
    let mut padded = vec![pad_row; experts * width];
    let mut valid = Vec::with_capacity(rows.len());
    for e in 0..experts {
        for (i, &row) in rows[offsets[e]..offsets[e + 1]].iter().enumerate() {
            padded[e * width + i] = row;
            valid.push((e * width + i) as u32);
        }
    }
    Some(PaddedGroups {
        width,
        rows: padded,
        valid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token's grouped rows come out ascending, one per slot, whatever order the token chose
    /// its experts in.
    #[test]
    fn token_rows_lists_each_tokens_grouped_positions_ascending() {
        // 3 tokens, top-2: token 0 chose experts (2, 0), token 1 (1, 2), token 2 (0, 1).
        let chosen = [2u32, 0, 1, 2, 0, 1];
        let (slots, _) = group_by_expert(&chosen, 3);
        // Grouped by expert: e0 <- slots 1, 4; e1 <- 2, 5; e2 <- 0, 3.
        assert_eq!(slots, vec![1, 4, 2, 5, 0, 3]);
        assert_eq!(token_rows(&slots, 3, 2), vec![0, 4, 2, 5, 1, 3]);
    }

    /// The selection against a full sort (value descending by total_cmp, index ascending), on
    /// rows with many ties, a NaN, infinities, k = 1, k = experts, and enough rows to split
    /// across threads.
    #[test]
    fn top_k_experts_is_the_sorted_prefix() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for (experts, k, rows) in [
            (8usize, 2usize, 50usize),
            (128, 8, 9000),
            (5, 5, 7),
            (64, 1, 30),
        ] {
            let probs: Vec<f32> = (0..rows * experts)
                .map(|i| match i % 97 {
                    0 => f32::NAN,
                    1 => f32::INFINITY,
                    2 => f32::NEG_INFINITY,
                    _ => (rng.random_range(0..16) as f32) / 16.0, // many exact ties
                })
                .collect();
            let got = top_k_experts(&probs, experts, k);
            for (r, row) in probs.chunks(experts).enumerate() {
                let mut order: Vec<usize> = (0..experts).collect();
                order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                let want: Vec<u32> = order.iter().take(k).map(|&e| e as u32).collect();
                assert_eq!(
                    &got[r * k..(r + 1) * k],
                    &want[..],
                    "row {r} of {experts} experts, k={k}"
                );
            }
        }
    }

    /// Every grouped row lands once, in its expert's block, in order; gathering the padded rows
    /// at `valid` gives the grouped rows back; the rest is padding; too much padding is refused.
    #[test]
    fn padded_groups_hold_every_row_once_in_order() {
        // 5 tokens, top-2 of 4 experts.
        let chosen = [0, 2, 2, 1, 0, 2, 3, 2, 2, 0];
        let (slots, offsets) = group_by_expert(&chosen, 4);
        let rows: Vec<u32> = slots.iter().map(|&s| s / 2).collect();
        let p = pad_groups(&rows, &offsets, 99, 2).unwrap();
        assert_eq!(p.width, 5); // expert 2 has five rows
        assert_eq!(p.rows.len(), 4 * 5);
        let back: Vec<u32> = p.valid.iter().map(|&i| p.rows[i as usize]).collect();
        assert_eq!(back, rows);
        assert_eq!(p.rows.iter().filter(|&&r| r == 99).count(), 20 - rows.len());
        for e in 0..4 {
            let block = &p.rows[e * 5..(e + 1) * 5];
            let own = &rows[offsets[e]..offsets[e + 1]];
            assert_eq!(&block[..own.len()], own, "expert {e}");
            assert!(block[own.len()..].iter().all(|&r| r == 99));
        }
        // 4 experts x 5 > 1 x 10 routed rows: refused at a padding bound of 1.
        assert_eq!(pad_groups(&rows, &offsets, 99, 1), None);
        assert_eq!(pad_groups(&[], &[0, 0], 99, 2), None);
    }

    fn teutonic() -> ModelConfig {
        let text = include_str!("../../../fixtures/bench/teutonic-lxxx.json");
        ModelConfig::from_json(text, "teutonic-lxxx.json").unwrap()
    }

    fn request(gpus: usize, layout: Layout) -> PlanRequest {
        PlanRequest {
            gpus,
            gpu_mem_bytes: 141 << 30,
            dtype_bytes: 2,
            batch: 4,
            seq: 2048,
            logits_chunk_bytes: 512 << 20,
            reserve_bytes: 2 << 30,
            layout,
        }
    }

    #[test]
    fn weights_add_up_to_the_parameter_count() {
        let c = teutonic();
        let w = weight_bytes(&c, 2);
        let counted: u64 = w.layers.iter().sum::<u64>() + w.embed + w.head - w.embed; // tied copy
        assert_eq!(counted, 2 * c.parameter_count());
        // Teutonic-LXXX is documented as 82.3B parameters in total.
        let p = c.parameter_count();
        assert!((82_250_000_000..82_350_000_000).contains(&p), "{p}");
    }

    #[test]
    fn every_layer_of_both_models_is_placed_once_and_stages_are_contiguous() {
        let c = teutonic();
        for (gpus, layout) in [
            (8, Layout::Disjoint),
            (8, Layout::Interleaved),
            (4, Layout::Disjoint),
            (4, Layout::Interleaved),
            (2, Layout::Disjoint),
            (1, Layout::Interleaved),
        ] {
            let p = plan(&c, &request(gpus, layout)).unwrap();
            for model in 0..2 {
                let mut next = 0;
                for st in p.stages.iter().filter(|s| s.model == model) {
                    assert_eq!(st.layers.start, next, "{gpus} {layout:?}");
                    assert!(!st.layers.is_empty());
                    assert!(st.gpu < gpus);
                    next = st.layers.end;
                }
                assert_eq!(next, c.num_hidden_layers);
                let firsts = p
                    .stages
                    .iter()
                    .filter(|s| s.model == model && s.embed)
                    .count();
                let lasts = p
                    .stages
                    .iter()
                    .filter(|s| s.model == model && s.head)
                    .count();
                assert_eq!((firsts, lasts), (1, 1));
            }
        }
    }

    #[test]
    fn teutonic_lxxx_fits_eight_and_four_h200s_but_not_two() {
        let c = teutonic();
        for layout in [Layout::Disjoint, Layout::Interleaved] {
            let p8 = plan(&c, &request(8, layout)).unwrap();
            assert!(p8.fits, "{layout:?} on 8: {:?}", p8.peak_bytes);
            // 2 × 153 GiB of weights over 8 GPUs: about 38–45 GiB each.
            for &b in &p8.peak_bytes {
                let gib = b as f64 / (1u64 << 30) as f64;
                assert!((35.0..60.0).contains(&gib), "{layout:?}: {gib}");
            }
            let p4 = plan(&c, &request(4, layout)).unwrap();
            assert!(p4.fits, "{layout:?} on 4: {:?}", p4.peak_bytes);
            let p2 = plan(&c, &request(2, layout)).unwrap();
            assert!(!p2.fits, "two models of 153 GiB do not fit on 2 × 141 GiB");
        }
    }

    #[test]
    fn stages_are_balanced_within_one_layer() {
        let c = teutonic();
        let p = plan(&c, &request(8, Layout::Interleaved)).unwrap();
        let layer = weight_bytes(&c, 2).layers[0];
        let per_gpu: Vec<u64> = (0..8)
            .map(|g| {
                p.stages
                    .iter()
                    .filter(|s| s.gpu == g)
                    .map(|s| s.weight_bytes)
                    .sum()
            })
            .collect();
        let (lo, hi) = (per_gpu.iter().min().unwrap(), per_gpu.iter().max().unwrap());
        // Each GPU holds two stages; embed/head copies make the ends heavier by at most them.
        let w = weight_bytes(&c, 2);
        assert!(hi - lo <= 2 * (layer + w.head), "{per_gpu:?}");
    }

    #[test]
    fn a_plan_refuses_impossible_requests() {
        let c = teutonic();
        assert_eq!(
            plan(&c, &request(0, Layout::Disjoint)),
            Err(PlanError::NoGpus)
        );
        assert!(matches!(
            plan(&c, &request(80, Layout::Interleaved)),
            Err(PlanError::TooManyStages { .. })
        ));
        let mut r = request(8, Layout::Disjoint);
        r.batch = 0;
        assert_eq!(plan(&c, &r), Err(PlanError::EmptyBatch));
    }

    #[test]
    fn grouping_by_expert_is_a_stable_counting_sort() {
        // 5 tokens, top-2 of 4 experts.
        let chosen = [2u32, 0, 1, 2, 0, 3, 2, 1, 0, 2];
        let (slots, offsets) = group_by_expert(&chosen, 4);
        assert_eq!(offsets, vec![0, 3, 5, 9, 10]);
        // expert 0: slots 1, 4, 8; expert 1: 2, 7; expert 2: 0, 3, 6, 9; expert 3: 5.
        assert_eq!(slots, vec![1, 4, 8, 2, 7, 0, 3, 6, 9, 5]);
        for e in 0..4 {
            for &s in &slots[offsets[e]..offsets[e + 1]] {
                assert_eq!(chosen[s as usize] as usize, e);
            }
            assert!(slots[offsets[e]..offsets[e + 1]]
                .windows(2)
                .all(|w| w[0] < w[1]));
        }
        let (none, empty) = group_by_expert(&[], 3);
        assert!(none.is_empty());
        assert_eq!(empty, vec![0, 0, 0, 0]);
    }
}
