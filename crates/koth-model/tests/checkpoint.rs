//! Activation checkpointing by layer (`model/checkpoint.rs`): the same loss and gradients as the
//! whole-graph autograd, on every family of the golden set, and the same training trajectory.

mod common;

use common::*;
use koth_model::model::HEAD_SEGMENT_BYTES;
use koth_model::{AdamWConfig, Checkpointing, DType, Device, Model, OpPath, Trainer};

const ALL: [&str; 6] = [
    "llama-tiny",
    "qwen2-tiny",
    "qwen3-tiny",
    "qwen3moe-tiny",
    "qwen35-tiny",
    "qwen35moe-tiny",
];

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
    for name in ALL {
        let model = Model::load(&golden_dir(name), DType::F32, &Device::Cpu).unwrap();
        let exp = expected(name);
        let (loss, whole) = model
            .loss_and_grads_with(&exp.ids, OpPath::Composite)
            .unwrap();
        let (ck_loss, layered) = model
            .loss_and_grads_checkpointed(&exp.ids, OpPath::Composite, HEAD_SEGMENT_BYTES)
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

/// The head runs a few sequences at a time: with more sequences than one head segment holds,
/// a tied embedding's gradient sums the head's segments and the embedding's.
#[test]
fn checkpointing_splits_the_head_and_sums_a_tied_embeddings_gradient() {
    let name = "qwen2-tiny"; // tied embeddings
    let model = Model::load(&golden_dir(name), DType::F32, &Device::Cpu).unwrap();
    assert!(model.config().tie_word_embeddings);
    let vocab = model.config().vocab_size as u32;
    // Enough rows that some token ids repeat across sequences.
    let (rows, cols) = (9, 33);
    let ids: Vec<u32> = (0..rows * cols)
        .map(|i| (i as u32 * 7919 + 13) % vocab)
        .collect();
    let ids = koth_model::TokenIds::new(ids, rows, cols).unwrap();
    let (loss, whole) = model.loss_and_grads_with(&ids, OpPath::Composite).unwrap();
    // Head segments of two sequences (f32 logits of 32 positions): 2, 2, 2, 2 and 1.
    let vocab_bytes = 4 * vocab as usize * (cols - 1);
    let (ck_loss, layered) = model
        .loss_and_grads_checkpointed(&ids, OpPath::Composite, 2 * vocab_bytes + 1)
        .unwrap();
    assert!((loss - ck_loss).abs() <= 1e-6 * loss.abs());
    let final_norm = |g: &[(String, koth_model::Tensor)]| {
        flat_f32(&g.iter().find(|(n, _)| n == "model.norm.weight").unwrap().1)
    };
    let e = max_rel(&final_norm(&layered), &final_norm(&whole));
    assert!(e <= 1e-5, "final norm gradient differs by {e:e}");
    let embed = |g: &[(String, koth_model::Tensor)]| {
        flat_f32(
            &g.iter()
                .find(|(n, _)| n == "model.embed_tokens.weight")
                .unwrap()
                .1,
        )
    };
    let e = max_rel(&embed(&layered), &embed(&whole));
    assert!(e <= 1e-5, "tied embedding gradient differs by {e:e}");
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
