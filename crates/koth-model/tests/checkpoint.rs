//! Activation checkpointing by layer (`model/checkpoint.rs`): the same loss and gradients as the
//! whole-graph autograd, on every family of the golden set, and the same training trajectory.

mod common;

use common::*;
use koth_model::{
    AdamWConfig, CheckpointOptions, Checkpointing, DType, Device, Model, OpPath, Trainer,
};

/// max |a − b| / max |b| over one tensor.
fn max_rel(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().map(|x| x.abs() as f64).fold(0.0, f64::max);
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max);
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

#[test]
fn checkpointed_gradients_equal_the_whole_graphs() {
    for name in FAMILIES.into_iter().chain(HYBRIDS) {
        let model = Model::load(&golden_dir(name), DType::F32, &Device::Cpu).unwrap();
        let exp = expected(name);
        let (loss, whole) = model
            .loss_and_grads_with(&exp.ids, OpPath::Composite)
            .unwrap();
        let (ck_loss, layered) = model
            .loss_and_grads_checkpointed(&exp.ids, OpPath::Composite, CheckpointOptions::default())
            .unwrap();
        assert_eq!(whole.len(), layered.len(), "{name}: parameter count");
        assert!(
            (loss - ck_loss).abs() <= 1e-6 * loss.abs(),
            "{name}: loss {loss} whole graph vs {ck_loss} checkpointed"
        );
        let mut worst = (0.0f64, String::new());
        for ((n1, g1), (n2, g2)) in whole.iter().zip(&layered) {
            assert_eq!(n1, n2);
            assert_eq!(g1.dims(), g2.dims(), "{name} {n1}");
            assert_eq!(g2.dtype(), DType::F32, "{name} {n1}");
            let e = max_rel(&flat_f32(g2), &flat_f32(g1));
            if e > worst.0 {
                worst = (e, n1.clone());
            }
        }
        eprintln!("{name}: worst gradient {} at {:e}", worst.1, worst.0);
        // Untied, every parameter's gradient comes from one segment, by the same ops in the
        // same order as the whole graph's: bit for bit. A tied embedding sums two segments.
        if !model.config().tie_word_embeddings {
            assert_eq!(worst.0, 0.0, "{name}: {} not bit-identical", worst.1);
        }
        assert!(
            worst.0 <= 1e-5,
            "{name}: {} differs by {:e} (relative to its largest entry)",
            worst.1,
            worst.0
        );
    }
}

/// The head runs a few chunks of its logits at a time: with chunks of 5 rows and segments of
/// two chunks, 9 sequences of 33 tokens (288 predicting rows) make 29 head segments that cut
/// across sequences, and a tied embedding's gradient sums the head's segments and the
/// embedding's.
#[test]
fn checkpointing_cuts_the_head_across_sequences_and_sums_a_tied_embeddings_gradient() {
    let name = "qwen2-tiny"; // tied embeddings
    let model = Model::load(&golden_dir(name), DType::F32, &Device::Cpu).unwrap();
    assert!(model.config().tie_word_embeddings);
    let vocab = model.config().vocab_size;
    let (rows, cols) = (9, 33);
    // Enough rows that some token ids repeat across sequences.
    let ids: Vec<u32> = (0..rows * cols)
        .map(|i| (i as u32 * 7919 + 13) % vocab as u32)
        .collect();
    let ids = koth_model::TokenIds::new(ids, rows, cols).unwrap();
    let (loss, whole) = model.loss_and_grads_with(&ids, OpPath::Composite).unwrap();
    let chunk_bytes = 5 * 4 * vocab; // five rows of f32 logits
    let options = CheckpointOptions {
        logits_chunk_bytes: chunk_bytes,
        head_segment_bytes: 2 * chunk_bytes,
    };
    let (ck_loss, layered) = model
        .loss_and_grads_checkpointed(&ids, OpPath::Composite, options)
        .unwrap();
    assert!(
        (loss - ck_loss).abs() <= 1e-6 * loss.abs(),
        "loss {loss} vs {ck_loss}"
    );
    for tensor in [
        "model.embed_tokens.weight",
        "model.norm.weight",
        "model.layers.0.self_attn.q_proj.weight",
    ] {
        let of = |g: &[(String, koth_model::Tensor)]| {
            flat_f32(&g.iter().find(|(n, _)| n == tensor).unwrap().1)
        };
        let e = max_rel(&of(&layered), &of(&whole));
        assert!(e <= 1e-5, "{tensor}: gradient differs by {e:e}");
    }
}

#[test]
fn a_trainer_follows_the_same_trajectory_with_and_without_checkpointing() {
    for name in ["qwen3moe-tiny", "qwen35-tiny"] {
        let model = Model::load(&golden_dir(name), DType::F32, &Device::Cpu).unwrap();
        let ids = expected(name).ids;
        let mut runs = Vec::new();
        for mode in [Checkpointing::Off, Checkpointing::Layers] {
            let mut trainer = Trainer::new(&model, AdamWConfig::default()).unwrap();
            trainer.set_checkpointing(mode);
            assert_eq!(trainer.checkpoints_layers(), mode == Checkpointing::Layers);
            let losses: Vec<f32> = (0..4)
                .map(|_| trainer.step(&ids, 1e-3).unwrap().loss)
                .collect();
            runs.push(losses);
        }
        for (a, b) in runs[0].iter().zip(&runs[1]) {
            assert!(
                (a - b).abs() <= 1e-5 * a.abs(),
                "{name}: losses {:?} without vs {:?} with checkpointing",
                runs[0],
                runs[1]
            );
        }
        // And the loss falls: the steps did something.
        assert!(runs[1][3] < runs[1][0], "{name}: {:?}", runs[1]);
    }
}

#[test]
fn auto_checkpoints_only_on_cuda_and_never_where_the_explicit_backward_applies() {
    let model = Model::load(&golden_dir("qwen35-tiny"), DType::F32, &Device::Cpu).unwrap();
    let path = model.training_path();
    assert!(!model.checkpoints_layers(path, Checkpointing::Auto));
    assert!(model.checkpoints_layers(path, Checkpointing::Layers));
    assert!(!model.checkpoints_layers(path, Checkpointing::Off));
    assert_eq!(
        Checkpointing::parse("layers").unwrap(),
        Checkpointing::Layers
    );
    let e = Checkpointing::parse("sometimes").unwrap_err().to_string();
    assert!(
        e.contains("`sometimes`") && e.contains("auto, layers or off"),
        "{e}"
    );
}
