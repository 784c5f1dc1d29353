//! `cargo bench -p koth-model --bench routing`: the MoE router's top-k choice for one layer of a
//! Qwen3-30B-A3B-shaped batch (8 x 2048 tokens, 128 experts, top 8) on the host, the way koth chose
//! it before 2026-12-05 (a full sort of every token's experts) beside `plan::top_k_experts` (one
//! selection pass per row, rows split over threads). On a GPU the choice is a kernel and only the
//! [N, k] result crosses to the host; this measures the CPU path, and what the GPU path replaced.

use rand::{Rng, SeedableRng};

mod common;
use common::time;

/// The former choice: every row's experts fully sorted (largest first, lower index on ties).
fn full_sort(probs: &[f32], experts: usize, k: usize) -> Vec<u32> {
    let mut chosen = Vec::with_capacity(probs.len() / experts * k);
    let mut order: Vec<usize> = (0..experts).collect();
    for p in probs.chunks(experts) {
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        chosen.extend(order.iter().take(k).map(|&e| e as u32));
    }
    chosen
}

fn main() {
    let (tokens, experts, k) = (8 * 2048usize, 128usize, 8usize);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let probs: Vec<f32> = (0..tokens * experts)
        .map(|_| rng.random_range(0.0f32..1.0))
        .collect();
    let want = full_sort(&probs, experts, k);
    assert_eq!(koth_model::plan::top_k_experts(&probs, experts, k), want);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let before = time(5, || {
        std::hint::black_box(full_sort(&probs, experts, k));
    });
    let after = time(5, || {
        std::hint::black_box(koth_model::plan::top_k_experts(&probs, experts, k));
    });
    println!(
        "router top-{k} of {experts} experts, {tokens} tokens ({threads} threads): full sort {:.1} ms, \
         top_k_experts {:.1} ms ({:.1}x); per 48-layer forward of king and challenger: {:.2} s vs {:.2} s",
        before * 1e3,
        after * 1e3,
        before / after,
        before * 96.0,
        after * 96.0
    );
}
