//! The training loop on the devnet-mini corpus with the mini model: resume equals an
//! uninterrupted run bit for bit (CPU), and gradient accumulation over k micro-batches equals
//! one batch of k× rows.

use koth_miner::config::TrainSettings;
use koth_miner::data::MinerData;
use koth_miner::devkit::{fixture_dir, mini_config};
use koth_miner::train::{accumulated_gradients, adamw_config, train, CheckpointDir, Flow, RunKey};
use koth_miner::Schedule;
use koth_model::{DType, Device, Model, TokenIds, Trainer};

fn settings(steps: u64, grad_accum: usize, batch: usize) -> TrainSettings {
    TrainSettings {
        device: "cpu".into(),
        dtype: "f32".into(),
        schedule: Schedule {
            lr: 3e-3,
            min_lr: 3e-4,
            warmup_steps: 2,
            steps,
        },
        batch_size: batch,
        grad_accum,
        seq_len: 32,
        clip: 1.0,
        weight_decay: 0.1,
        checkpoint_every: 0,
    }
}

fn data() -> MinerData {
    MinerData::open(&fixture_dir().join("train-bundle.json"), 7, 32, 64, 32).unwrap()
}

fn king() -> Model {
    Model::init(&mini_config().unwrap(), 3, DType::F32, &Device::Cpu).unwrap()
}

fn weights(m: &Model) -> Vec<(String, Vec<f32>)> {
    m.named_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

#[test]
fn resume_from_a_checkpoint_continues_the_same_run_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data();
    let king = king();
    let s = settings(6, 2, 4);
    let key = RunKey {
        king: koth_core::Digest::of(b"king"),
        attempt: 1,
        fingerprint: s.fingerprint(),
    };
    // Uninterrupted.
    let straight_dir = CheckpointDir::new(tmp.path().join("a"));
    let straight = train(&king, &s, &data, &key, &straight_dir, &mut |_| {
        Flow::Continue
    })
    .unwrap();
    assert_eq!(straight.steps_done, 6);
    assert_eq!(straight.losses.len(), 6);
    assert!(!straight.stopped);

    // Stopped after step 3 with a checkpoint, then resumed by a fresh call.
    let dir = CheckpointDir::new(tmp.path().join("b"));
    let first = train(&king, &s, &data, &key, &dir, &mut |i| {
        if i.step == 3 {
            Flow::Stop { checkpoint: true }
        } else {
            Flow::Continue
        }
    })
    .unwrap();
    assert!(first.stopped);
    assert_eq!(first.steps_done, 3);
    assert_eq!(dir.peek(), Some((key.clone(), 3)));
    let mut seen = Vec::new();
    let resumed = train(&king, &s, &data, &key, &dir, &mut |i| {
        seen.push(i.step);
        Flow::Continue
    })
    .unwrap();
    assert_eq!(resumed.resumed_from, 3);
    assert_eq!(
        seen,
        vec![4, 5, 6],
        "the resumed run continues the step count"
    );
    assert_eq!(resumed.steps_done, 6);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&resumed.losses),
        bits(&straight.losses),
        "loss trajectory differs: {:?} vs {:?}",
        resumed.losses,
        straight.losses
    );
    assert_eq!(weights(&resumed.model), weights(&straight.model));
    // And the loss went down.
    assert!(
        straight.losses[5] < straight.losses[0],
        "{:?}",
        straight.losses
    );

    // A checkpoint of another run (other settings) is not resumed.
    let other = RunKey {
        fingerprint: settings(6, 1, 8).fingerprint(),
        ..key.clone()
    };
    let fresh = train(&king, &settings(6, 1, 8), &data, &other, &dir, &mut |_| {
        Flow::Continue
    })
    .unwrap();
    assert_eq!(fresh.resumed_from, 0);
}

#[test]
fn accumulating_k_micro_batches_equals_one_batch_of_k_times_the_rows() {
    let data = data();
    let king = king();
    let trainer = Trainer::new(&king, adamw_config(&settings(1, 1, 1))).unwrap();
    let rows = 3;
    let k = 4u64;
    let micro: Vec<TokenIds> = (0..k)
        .map(|i| TokenIds::new(data.micro_batch(9, i, rows).unwrap(), rows, 32).unwrap())
        .collect();
    let mut all = Vec::new();
    for m in &micro {
        all.extend_from_slice(m.as_slice());
    }
    let big = TokenIds::new(all, rows * k as usize, 32).unwrap();
    let (loss_acc, grads_acc) = accumulated_gradients(&trainer, &micro).unwrap();
    let (loss_big, grads_big) = trainer.gradients(&big).unwrap();
    assert!(
        (loss_acc - loss_big).abs() < 1e-5,
        "loss {loss_acc} vs {loss_big}"
    );
    assert_eq!(grads_acc.len(), grads_big.len());
    let mut max_rel = 0f32;
    for ((na, a), (nb, b)) in grads_acc.iter().zip(&grads_big) {
        assert_eq!(na, nb);
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-8);
        let diff = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        max_rel = max_rel.max(diff / scale);
        assert!(diff / scale < 1e-4, "{na}: max |Δ| {diff} vs scale {scale}");
    }
    // Not trivially equal: the micro-batches differ from each other.
    assert_ne!(micro[0], micro[1]);
    eprintln!("largest relative gradient difference: {max_rel:e}");
}
