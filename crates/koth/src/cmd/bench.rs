//! `koth bench …`: throughput of the model's two hot paths on random weights and random tokens,
//! measured the way docs/BENCHMARKS.md reports them (warm-up, device synchronised around each
//! timed region, median of the timed iterations).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use koth_model::{
    parse_device, parse_dtype, AdamWConfig, Device, Model, ModelConfig, OpPath, ScoreOptions,
    TokenIds, Trainer,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Paired scoring: a king and a challenger (two random models of one config) score the same
    /// batch through the scoring path; reports paired tokens/s (a token counted once per pair).
    Score(ScoreArgs),
    /// Training: AdamW steps through the differentiable path; reports tokens/s.
    Train(CommonArgs),
}

#[derive(Args)]
pub struct CommonArgs {
    /// A Hugging Face config.json; the weights are random (seeded).
    #[arg(long)]
    config: PathBuf,
    /// Sequences per batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 2048)]
    seq: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Timed iterations (the median is reported).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Untimed iterations first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Bytes of f32 logits the chunked head may hold at once, in MiB.
    #[arg(long, default_value_t = 64)]
    logits_chunk_mib: usize,
}

#[derive(Serialize)]
struct Report {
    bench: &'static str,
    config: String,
    parameters: u64,
    device: String,
    dtype: String,
    batch: usize,
    seq: usize,
    iters: usize,
    median_s: f64,
    min_s: f64,
    tokens_per_s: f64,
}

pub fn run(c: BenchCommand) -> Result<()> {
    match c {
        BenchCommand::Score(a) => score(a),
        BenchCommand::Train(a) => train(a),
    }
}

fn setup(a: &CommonArgs) -> Result<(ModelConfig, Device, koth_model::DType)> {
    anyhow::ensure!(
        a.batch > 0 && a.seq > 1,
        "--batch must be ≥ 1 and --seq ≥ 2"
    );
    anyhow::ensure!(a.iters > 0, "--iters must be ≥ 1");
    let config = ModelConfig::from_file(&a.config)
        .with_context(|| format!("reading --config {}", a.config.display()))?;
    let device = parse_device(&a.device).context("--device")?;
    let dtype = parse_dtype(&a.dtype).context("--dtype")?;
    Ok((config, device, dtype))
}

/// Random token batches (never zeros: constant inputs run faster than real data).
fn random_batches(a: &CommonArgs, vocab: usize, count: usize) -> Result<Vec<TokenIds>> {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    (0..count)
        .map(|_| {
            let ids = (0..a.batch * a.seq)
                .map(|_| rng.random_range(0..vocab as u32))
                .collect();
            Ok(TokenIds::new(ids, a.batch, a.seq)?)
        })
        .collect()
}

fn timed(
    a: &CommonArgs,
    device: &Device,
    mut f: impl FnMut(usize) -> Result<()>,
) -> Result<Vec<f64>> {
    let mut times = Vec::with_capacity(a.iters);
    for i in 0..a.warmup + a.iters {
        device.synchronize()?;
        let t0 = Instant::now();
        f(i)?;
        device.synchronize()?;
        if i >= a.warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

fn report(a: &CommonArgs, bench: &'static str, config: &ModelConfig, times: &[f64]) -> Result<()> {
    let median = times[times.len() / 2];
    let r = Report {
        bench,
        config: a.config.display().to_string(),
        parameters: config.parameter_count(),
        device: a.device.clone(),
        dtype: a.dtype.clone(),
        batch: a.batch,
        seq: a.seq,
        iters: a.iters,
        median_s: median,
        min_s: times[0],
        tokens_per_s: (a.batch * a.seq) as f64 / median,
    };
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{bench}: {} params, {} {}, B={} T={}: median {:.4} s/iter over {} iters, {:.0} tokens/s",
            r.parameters, r.device, r.dtype, r.batch, r.seq, r.median_s, r.iters, r.tokens_per_s
        );
    }
    Ok(())
}

fn score(a: ScoreArgs) -> Result<()> {
    let c = &a.common;
    let (config, device, dtype) = setup(c)?;
    let king = Model::init(&config, 1, dtype, &device)?;
    let challenger = Model::init(&config, 2, dtype, &device)?;
    let batches = random_batches(c, config.vocab_size, 4)?;
    let opts = ScoreOptions {
        logits_chunk_bytes: a.logits_chunk_mib << 20,
    };
    let times = timed(c, &device, |i| {
        let ids = &batches[i % batches.len()];
        for m in [&king, &challenger] {
            // Per-window means, as a duel uses them; reading them back also waits for the GPU.
            let nll = m.nll_with(ids, OpPath::Fused, opts)?;
            let _means: Vec<f32> = nll
                .mean_keepdim(1)?
                .squeeze(1)?
                .to_device(&Device::Cpu)?
                .to_vec1()?;
        }
        Ok(())
    })?;
    report(c, "paired-score", &config, &times)
}

fn train(a: CommonArgs) -> Result<()> {
    let (config, device, dtype) = setup(&a)?;
    let model = Model::init(&config, 1, dtype, &device)?;
    let mut trainer = Trainer::new(
        &model,
        AdamWConfig {
            max_grad_norm: Some(1.0),
            ..AdamWConfig::default()
        },
    )?;
    let batches = random_batches(&a, config.vocab_size, 4)?;
    let times = timed(&a, &device, |i| {
        trainer.step(&batches[i % batches.len()], 1e-4)?;
        Ok(())
    })?;
    report(&a, "train-step", &config, &times)
}
