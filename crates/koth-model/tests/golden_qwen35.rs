//! The Qwen3.5 hybrid families (gated DeltaNet + gated attention) against Hugging Face
//! transformers' torch path: per-token NLL within 2e-5 and every gradient within 1e-3 relative,
//! in f32 on the CPU. Fixtures: fixtures/hf-golden/qwen35*-tiny, made by
//! scripts/fixtures/make_qwen35_golden.py.

mod common;

use common::*;
use koth_model::{DType, Device, Model, OpPath, ScoreOptions};

fn max_abs_diff(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, e)| (*g as f64 - e).abs())
        .fold(0.0, f64::max)
}

#[test]
fn hybrid_nll_matches_transformers_on_both_paths() {
    for name in HYBRIDS {
        let model = Model::load(&golden_dir(name), DType::F32, &Device::Cpu).unwrap();
        let exp = expected(name);
        for path in [OpPath::Fused, OpPath::Composite] {
            let nll = model
                .nll_with(&exp.ids, path, ScoreOptions::default())
                .unwrap();
            assert_eq!(nll.dims(), [exp.ids.rows(), exp.ids.cols() - 1]);
            let worst = max_abs_diff(&flat_f32(&nll), &exp.nll);
            eprintln!("{name} {path:?}: max |nll - transformers| = {worst:e}");
            assert!(
                worst <= 2e-5,
                "{name} {path:?}: max |nll - golden| = {worst:e}"
            );
        }
    }
}

#[test]
fn hybrid_sequence_losses_match_transformers() {
    for name in HYBRIDS {
        assert_sequence_losses_match(name);
    }
}

#[test]
fn hybrid_gradients_match_transformers_and_every_parameter_gets_one() {
    for name in HYBRIDS {
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
        let mut worst = (0.0f64, String::new());
        for (tensor, g) in &grads {
            let ours = flat_f32(g);
            assert!(
                ours.iter().all(|x| x.is_finite()) && ours.iter().any(|x| *x != 0.0),
                "{name}: `{tensor}` got no finite non-zero gradient"
            );
            let reference = flat_f32(&golden[tensor]);
            let err = rel_err(&ours, &reference);
            if err > worst.0 {
                worst = (err, tensor.clone());
            }
            assert!(
                err <= 1e-3,
                "{name}: `{tensor}` relative gradient error {err:e}"
            );
        }
        eprintln!(
            "{name}: {} gradients, max relative error {:e} (`{}`)",
            grads.len(),
            worst.0,
            worst.1
        );
    }
}

#[test]
fn hybrid_bf16_scoring_stays_close_to_f32() {
    for name in HYBRIDS {
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
