//! The miner's training throughput on CPU: its whole loop (`koth_miner::train::train`: batches
//! read from the devnet-mini shards, micro-batch gradients, accumulation, clipping, AdamW) for
//! the mini devnet model and a Qwen3-0.6B-shaped model, compared in the same run with bare
//! `Trainer::step` on the same batches (the model crate's own training step).
//!
//!   cargo bench -p koth-miner --bench miner
//!
//! Environment: KOTH_BENCH_SKIP_06B=1 skips the 0.6B model; KOTH_BENCH_06B_STEPS (default 3).

use std::time::Instant;

use koth_miner::config::TrainSettings;
use koth_miner::data::MinerData;
use koth_miner::devkit::{fixture_dir, mini_config};
use koth_miner::train::{adamw_config, train, CheckpointDir, Flow, RunKey};
use koth_miner::Schedule;
use koth_model::{DType, Device, Model, ModelConfig, TokenIds, Trainer};

fn settings(steps: u64, batch: usize, seq_len: usize, grad_accum: usize) -> TrainSettings {
    TrainSettings {
        device: "cpu".into(),
        dtype: "f32".into(),
        schedule: Schedule {
            lr: 1e-3,
            min_lr: 1e-4,
            warmup_steps: 1,
            steps,
        },
        batch_size: batch,
        grad_accum,
        seq_len,
        clip: 1.0,
        weight_decay: 0.1,
        checkpoint_every: 0,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Tokens/s of the miner's loop (median over steps after the first) and of bare
/// `Trainer::step` on the same micro-batches.
fn measure(name: &str, config: &ModelConfig, s: &TrainSettings) {
    let seq = s.seq_len as u32;
    let data = MinerData::open(&fixture_dir().join("train-bundle.json"), 1, 8, seq, seq)
        .expect("fixture data");
    let t0 = Instant::now();
    let model = Model::init(config, 1, DType::F32, &Device::Cpu).expect("init");
    let init_s = t0.elapsed().as_secs_f64();
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = RunKey {
        king: koth_core::Digest::of(name.as_bytes()),
        attempt: 1,
        fingerprint: s.fingerprint(),
    };
    let mut per_step = Vec::new();
    let result = train(
        &model,
        s,
        &data,
        &key,
        &CheckpointDir::new(tmp.path()),
        &mut |i| {
            if i.step > 1 {
                per_step.push(i.tokens_per_s);
            }
            Flow::Continue
        },
    )
    .expect("train");
    let loop_tps = median(per_step);

    let mut trainer = Trainer::new(&model, adamw_config(s)).expect("trainer");
    let mut bare = Vec::new();
    let tokens = (s.batch_size * s.seq_len) as f64;
    for i in 0..s.schedule.steps.min(4) {
        let ids = TokenIds::new(
            data.micro_batch(1, i, s.batch_size).expect("batch"),
            s.batch_size,
            s.seq_len,
        )
        .expect("ids");
        let t = Instant::now();
        trainer.step(&ids, 1e-3).expect("step");
        if i > 0 {
            bare.push(tokens / t.elapsed().as_secs_f64());
        }
    }
    let bare_tps = median(bare);
    println!(
        "{name}: {} parameters, batch [{}x{}] x accum {}: miner loop {loop_tps:.0} tokens/s \
         (median of {} steps after the first; losses {:?}); bare Trainer::step {bare_tps:.0} \
         tokens/s; init {init_s:.1} s",
        config.parameter_count(),
        s.batch_size,
        s.seq_len,
        s.grad_accum,
        s.schedule.steps - 1,
        result
            .losses
            .iter()
            .map(|l| (l * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>()
    );
}

fn main() {
    let mini = mini_config().expect("mini config");
    measure(
        "mini (vocab 4096, hidden 64, 2 layers)",
        &mini,
        &settings(30, 8, 64, 1),
    );
    measure("mini, grad_accum 2", &mini, &settings(30, 4, 64, 2));
    if std::env::var_os("KOTH_BENCH_SKIP_06B").is_none() {
        let steps: u64 = std::env::var("KOTH_BENCH_06B_STEPS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3);
        let path = fixture_dir().join("../bench/qwen3-0.6b.json");
        let q = ModelConfig::from_file(&path).expect("qwen3-0.6b config");
        measure("qwen3-0.6b shape", &q, &settings(steps, 1, 128, 1));
    }
}
