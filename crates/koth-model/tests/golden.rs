//! The port against Hugging Face transformers: per-token NLL within 2e-5 and gradients within
//! 1e-3 relative per tensor, for every family of the golden set.

mod common;

use common::*;
use koth_model::{DType, Device, Model, OpPath, ScoreOptions};

#[test]
fn nll_matches_transformers_on_both_paths() {
    for name in FAMILIES {
        let model = Model::load(&golden_dir(name), DType::F32, &Device::Cpu).unwrap();
        let exp = expected(name);
        for path in [OpPath::Fused, OpPath::Composite] {
            let nll = model
                .nll_with(&exp.ids, path, ScoreOptions::default())
                .unwrap();
            assert_eq!(nll.dims(), [exp.ids.rows(), exp.ids.cols() - 1]);
            let got = flat_f32(&nll);
            let worst = got
                .iter()
                .zip(&exp.nll)
                .map(|(g, e)| (*g as f64 - e).abs())
                .fold(0.0, f64::max);
            assert!(
                worst <= 2e-5,
                "{name} {path:?}: max |nll - golden| = {worst:e}"
            );
        }
    }
}

#[test]
fn nll_does_not_depend_on_the_head_chunk_size_beyond_rounding() {
    let name = "qwen2-tiny";
    let model = Model::load(&golden_dir(name), DType::F32, &Device::Cpu).unwrap();
    let exp = expected(name);
    let whole = flat_f32(&model.nll(&exp.ids).unwrap());
    // 4 * 384 bytes per row: chunks of one row, then of 7 rows (not dividing 3 * 47).
    for bytes in [1, 7 * 4 * 384] {
        let opts = ScoreOptions {
            logits_chunk_bytes: bytes,
        };
        let chunked = flat_f32(&model.nll_with(&exp.ids, OpPath::Fused, opts).unwrap());
        // Equal up to f32 rounding: the matmul kernel blocks differently for other row counts.
        let worst = whole
            .iter()
            .zip(&chunked)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 2e-6, "chunk bytes {bytes}: differs by {worst:e}");
    }
}

#[test]
fn sequence_losses_match_transformers() {
    for name in FAMILIES {
        assert_sequence_losses_match(name);
    }
}

#[test]
fn fused_and_composite_paths_agree() {
    for name in FAMILIES {
        let model = Model::load(&golden_dir(name), DType::F32, &Device::Cpu).unwrap();
        let exp = expected(name);
        let fused = flat_f32(
            &model
                .nll_with(&exp.ids, OpPath::Fused, ScoreOptions::default())
                .unwrap(),
        );
        let comp = flat_f32(
            &model
                .nll_with(&exp.ids, OpPath::Composite, ScoreOptions::default())
                .unwrap(),
        );
        let worst = fused
            .iter()
            .zip(&comp)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 1e-5,
            "{name}: fused vs composite differ by {worst:e}"
        );
    }
}

#[test]
fn gradients_match_transformers_and_every_parameter_gets_one() {
    for name in FAMILIES {
        let dir = golden_dir(name);
        let model = Model::load(&dir, DType::F32, &Device::Cpu).unwrap();
        let exp = expected(name);
        let golden = koth_model::weights::read_safetensors(&dir.join("grads.safetensors")).unwrap();
        let (loss, grads) = model.loss_and_grads(&exp.ids).unwrap();
        assert!(
            (loss as f64 - exp.loss).abs() < 2e-5,
            "{name}: loss {loss} vs {}",
            exp.loss
        );
        assert_eq!(grads.len(), golden.len(), "{name}: one gradient per tensor");
        for (tensor, g) in &grads {
            let ours = flat_f32(g);
            assert!(
                ours.iter().all(|x| x.is_finite()) && ours.iter().any(|x| *x != 0.0),
                "{name}: `{tensor}` got no finite non-zero gradient"
            );
            let reference = flat_f32(&golden[tensor]);
            let err = rel_err(&ours, &reference);
            assert!(
                err <= 1e-3,
                "{name}: `{tensor}` relative gradient error {err:e}"
            );
        }
    }
}

#[test]
fn bf16_scoring_stays_close_to_f32() {
    for name in FAMILIES {
        let exp = expected(name);
        let f32_model = Model::load(&golden_dir(name), DType::F32, &Device::Cpu).unwrap();
        let bf16_model = f32_model.to(DType::BF16, &Device::Cpu).unwrap();
        let a = flat_f32(&f32_model.nll(&exp.ids).unwrap());
        let b = flat_f32(&bf16_model.nll(&exp.ids).unwrap());
        let mean_a = a.iter().sum::<f32>() / a.len() as f32;
        let mean_b = b.iter().sum::<f32>() / b.len() as f32;
        assert!(b.iter().all(|x| x.is_finite()));
        assert!(
            (mean_a - mean_b).abs() < 2e-2,
            "{name}: bf16 mean {mean_b} vs f32 {mean_a}"
        );
    }
}

/// The hand-written backward (the GPU kernels' training path; on the CPU it runs the training
/// composites differentiated op by op) gives autograd's gradients on every dense family, a tied
/// head included, and matches transformers.
#[test]
fn explicit_backward_matches_autograd_and_transformers() {
    for name in FAMILIES {
        let dir = golden_dir(name);
        let model = Model::load(&dir, DType::F32, &Device::Cpu).unwrap();
        let exp = expected(name);
        if !model.has_explicit_backward() {
            let err = model
                .loss_and_grads_explicit(&exp.ids)
                .unwrap_err()
                .to_string();
            assert!(err.contains("mixture of experts"), "{name}: {err}");
            continue;
        }
        let golden = koth_model::weights::read_safetensors(&dir.join("grads.safetensors")).unwrap();
        let (loss, grads) = model.loss_and_grads_explicit(&exp.ids).unwrap();
        let (auto_loss, auto) = model.loss_and_grads(&exp.ids).unwrap();
        assert!(
            (loss - auto_loss).abs() < 1e-6 && (loss as f64 - exp.loss).abs() < 2e-5,
            "{name}: loss {loss} vs autograd {auto_loss} vs transformers {}",
            exp.loss
        );
        assert_eq!(grads.len(), auto.len(), "{name}: one gradient per tensor");
        for ((tensor, g), (auto_name, a)) in grads.iter().zip(&auto) {
            assert_eq!(tensor, auto_name, "{name}: gradient order");
            let ours = flat_f32(g);
            let err = rel_err(&ours, &flat_f32(a));
            assert!(
                err <= 1e-5,
                "{name}: `{tensor}` differs from autograd by {err:e}"
            );
            let err = rel_err(&ours, &flat_f32(&golden[tensor]));
            assert!(
                err <= 1e-3,
                "{name}: `{tensor}` differs from transformers by {err:e}"
            );
        }
    }
    // A tied head (qwen3-tiny's config with tie_word_embeddings): the embedding matrix gets the
    // gather's and the head's gradients summed.
    let dir = golden_dir("qwen3-tiny");
    let mut config = koth_model::ModelConfig::from_file(&dir.join("config.json")).unwrap();
    config.tie_word_embeddings = true;
    let model = Model::init(&config, 3, DType::F32, &Device::Cpu).unwrap();
    let ids = expected("qwen3-tiny").ids;
    let (loss, grads) = model.loss_and_grads_explicit(&ids).unwrap();
    let (auto_loss, auto) = model.loss_and_grads(&ids).unwrap();
    assert!((loss - auto_loss).abs() < 1e-6);
    for ((tensor, g), (_, a)) in grads.iter().zip(&auto) {
        let err = rel_err(&flat_f32(g), &flat_f32(a));
        assert!(
            err <= 1e-5,
            "tied: `{tensor}` differs from autograd by {err:e}"
        );
    }
}
