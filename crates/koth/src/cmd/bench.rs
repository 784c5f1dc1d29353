//! `koth bench …`: throughput of the model's two hot paths on random weights and random tokens,
//! measured the way docs/BENCHMARKS.md reports them (warm-up, device synchronised around each
//! timed region, median of the timed iterations).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use koth_model::placement::{duel_placement, CHALLENGER, KING};
use koth_model::{
    parse_devices, parse_dtype, AdamWConfig, Checkpointing, Device, Model, ModelConfig, OpPath,
    Pipeline, Placement, Schedule, ScoreOptions, StepReport, TokenIds, Trainer,
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
    Train(TrainArgs),
}

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Activation checkpointing of the models candle's autograd trains (mixtures of experts,
    /// Qwen3.5 hybrids): `auto` (by layer on CUDA), `layers` or `off`. Dense models on the GPU
    /// kernels take the hand-written backward, which needs none.
    #[arg(long, default_value = "auto")]
    checkpoint: String,
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
    /// cpu, cuda or cuda:N. `score` also takes a comma-separated list (cuda:0,cuda:1): king
    /// and challenger placed across it by the planner, as a duel places them.
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
    /// The op path: `auto` (koth's GPU kernels on CUDA, else candle's fused ops for scoring and
    /// the composites for training), `fused`, `composite` or `kernels`.
    #[arg(long, default_value = "auto")]
    path: String,
    /// Also run the PyTorch reference (scripts/bench/torch_*.py, carried inside this binary) on
    /// the same config and shapes in the same call, and print both with their ratio and peak
    /// memory. Needs `python3` with torch and transformers (`--python` to choose another).
    #[arg(long)]
    torch: bool,
    /// The Python interpreter for `--torch`.
    #[arg(long, default_value = "python3")]
    python: String,
}

#[derive(Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Bytes of logits the chunked head may hold at once, in MiB (f32 logits on the fused and
    /// composite paths, model-dtype logits on the kernel path).
    #[arg(long, default_value_t = 512)]
    logits_chunk_mib: usize,
    /// Rows per lm_head chunk in the PyTorch reference (`--torch`).
    #[arg(long, default_value_t = 512)]
    torch_chunk: usize,
    /// King-loss reuse (a pooled duel): the king is scored once before timing and each timed
    /// iteration scores only the challenger; reports challenger tokens/s, the rate at which a
    /// pooled duel consumes windows. `--torch` still measures PyTorch's paired scoring.
    #[arg(long)]
    reuse_king: bool,
    /// Split each model into this many stages of about equal layers on the one `--device`
    /// ("virtual" stages: the multi-device path on one device), scored through the micro-batch
    /// pipeline; the report says whether the losses are bit-identical to the one-stage model's.
    #[arg(long, default_value_t = 1)]
    stages: usize,
    /// Sequences per micro-batch of the pipeline (models of several stages); default: about
    /// 8192 tokens.
    #[arg(long)]
    micro_batch: Option<usize>,
    /// How the stages are driven: `auto` (one thread per stage when the stages are on distinct
    /// CUDA devices, else one thread), `sequential` or `threads` (forced, also for virtual
    /// stages sharing one GPU).
    #[arg(long, default_value = "auto")]
    schedule: String,
}

#[derive(Serialize)]
struct Report {
    bench: &'static str,
    /// The git commit this binary was built from (crates/koth/build.rs).
    koth_commit: &'static str,
    config: String,
    parameters: u64,
    device: String,
    dtype: String,
    batch: usize,
    seq: usize,
    iters: usize,
    path: String,
    median_s: f64,
    min_s: f64,
    tokens_per_s: f64,
    /// High-water mark of device memory allocated during the timed run (CUDA only; the largest
    /// over the devices).
    peak_mem_gib: Option<f64>,
    /// Each device's high-water mark, in `--device` order (CUDA only, several devices).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    peak_per_device_gib: Vec<f64>,
    /// Pipeline stages per model (the king's).
    stages: usize,
    /// Sequences per micro-batch, when the models have several stages.
    #[serde(skip_serializing_if = "Option::is_none")]
    micro_batch: Option<usize>,
    /// The schedule that drove the stages (`sequential` or `threads`), when there are several.
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<String>,
    /// `--stages` > 1: the placed model's per-sequence losses equal, bit for bit, the one-stage
    /// model's on the same micro-batches (the first batch, both models).
    #[serde(skip_serializing_if = "Option::is_none")]
    bit_identical_to_one_stage: Option<bool>,
    /// `--stages` > 1: they also equal the one-stage model's losses on the whole batch at once
    /// (whether the micro-batch size changes the kernels' results).
    #[serde(skip_serializing_if = "Option::is_none")]
    equal_to_whole_batch: Option<bool>,
    /// `--stages` > 1 on one device: the same models (the same tensors) as one stage each,
    /// timed and their peak read in the same run, so that one draw of the weights gives both
    /// rows (drawing a 30B pair takes minutes).
    #[serde(skip_serializing_if = "Option::is_none")]
    one_stage: Option<OneStageReport>,
    /// Seconds spent drawing and placing the random-weight models, before any timing.
    #[serde(skip_serializing_if = "Option::is_none")]
    init_s: Option<f64>,
    /// `bench train`: whether each layer was recomputed in the backward (activation
    /// checkpointing) rather than the whole forward graph kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpointed_layers: Option<bool>,
    /// `bench train`: every step's loss and gradient norm (warm-up included), in order. The same
    /// config, seed and batches on two devices should give the same sequence, up to rounding.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    losses: Vec<f32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    grad_norms: Vec<f32>,
    /// The PyTorch reference's own report (`--torch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    torch: Option<serde_json::Value>,
    /// koth tokens/s over PyTorch tokens/s (`--torch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    speedup_vs_torch: Option<f64>,
}

pub fn run(c: BenchCommand) -> Result<()> {
    match c {
        BenchCommand::Score(a) => score(a),
        BenchCommand::Train(a) => train(a),
    }
}

fn setup(a: &CommonArgs) -> Result<(ModelConfig, Vec<Device>, koth_model::DType)> {
    anyhow::ensure!(
        a.batch > 0 && a.seq > 1,
        "--batch must be ≥ 1 and --seq ≥ 2"
    );
    anyhow::ensure!(a.iters > 0, "--iters must be ≥ 1");
    let config = ModelConfig::from_file(&a.config)
        .with_context(|| format!("reading --config {}", a.config.display()))?;
    let devices = parse_devices(&a.device).context("--device")?;
    let dtype = parse_dtype(&a.dtype).context("--dtype")?;
    Ok((config, devices, dtype))
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
    devices: &[Device],
    mut f: impl FnMut(usize) -> Result<()>,
) -> Result<Vec<f64>> {
    let sync = || -> Result<()> {
        for d in devices {
            d.synchronize()?;
        }
        Ok(())
    };
    let mut times = Vec::with_capacity(a.iters);
    for i in 0..a.warmup + a.iters {
        sync()?;
        let t0 = Instant::now();
        f(i)?;
        sync()?;
        if i >= a.warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

/// The PyTorch reference scripts, carried in the binary so `--torch` works wherever koth runs.
const TORCH_SCORE: &str = include_str!("../../../../scripts/bench/torch_paired_score.py");
const TORCH_TRAIN: &str = include_str!("../../../../scripts/bench/torch_train_step.py");

/// Runs a reference script with `args` and returns the JSON object it prints last.
fn run_torch(a: &CommonArgs, script: &str, args: &[String]) -> Result<serde_json::Value> {
    let dir = tempfile::tempdir().context("temporary directory for the PyTorch reference")?;
    let path = dir.path().join("reference.py");
    std::fs::write(&path, script)?;
    let out = std::process::Command::new(&a.python)
        .arg(&path)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("--torch: running {}", a.python))?;
    anyhow::ensure!(
        out.status.success(),
        "--torch: the PyTorch reference failed ({})",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("--torch: the PyTorch reference printed no JSON")?;
    serde_json::from_str(line).context("--torch: the PyTorch reference's JSON")
}

fn torch_args(a: &CommonArgs) -> Vec<String> {
    vec![
        "--config".into(),
        a.config.display().to_string(),
        "--batch".into(),
        a.batch.to_string(),
        "--seq".into(),
        a.seq.to_string(),
        "--iters".into(),
        a.iters.to_string(),
        "--warmup".into(),
        a.warmup.to_string(),
    ]
}

/// The one-stage models' timing beside a placed run's (`--stages` > 1 on one device).
#[derive(Serialize)]
struct OneStageReport {
    median_s: f64,
    tokens_per_s: f64,
    peak_mem_gib: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    speedup_vs_torch: Option<f64>,
}

/// What a scoring run adds to the report.
#[derive(Default)]
struct Staging {
    peaks: Vec<u64>,
    stages: usize,
    micro_batch: Option<usize>,
    schedule: Option<String>,
    bit_identical_to_one_stage: Option<bool>,
    equal_to_whole_batch: Option<bool>,
    /// The one-stage pair's sorted iteration times and peaks.
    one_stage: Option<(Vec<f64>, Vec<u64>)>,
    init_s: Option<f64>,
    checkpointed_layers: Option<bool>,
    steps: Vec<StepReport>,
}

fn report(
    a: &CommonArgs,
    bench: &'static str,
    config: &ModelConfig,
    path: OpPath,
    times: &[f64],
    staging: Staging,
    torch: Option<serde_json::Value>,
) -> Result<()> {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let peak = staging.peaks.iter().copied().max();
    let (median, tokens_per_s) = median_rate(times, a.batch * a.seq);
    let torch_tps = torch.as_ref().and_then(|t| {
        t.get("paired_tokens_per_s")
            .or_else(|| t.get("tokens_per_s"))
            .and_then(|v| v.as_f64())
    });
    let one_stage = staging.one_stage.map(|(times, peaks)| {
        let (median, tps) = median_rate(&times, a.batch * a.seq);
        OneStageReport {
            median_s: median,
            tokens_per_s: tps,
            peak_mem_gib: peaks.iter().copied().max().map(gib),
            speedup_vs_torch: torch_tps.map(|t| tps / t),
        }
    });
    let r = Report {
        bench,
        koth_commit: env!("KOTH_BUILD_COMMIT"),
        config: a.config.display().to_string(),
        parameters: config.parameter_count(),
        device: a.device.clone(),
        dtype: a.dtype.clone(),
        batch: a.batch,
        seq: a.seq,
        iters: a.iters,
        path: format!("{path:?}").to_lowercase(),
        median_s: median,
        min_s: times[0],
        tokens_per_s,
        peak_mem_gib: peak.map(gib),
        peak_per_device_gib: if staging.peaks.len() > 1 {
            staging.peaks.iter().map(|&b| gib(b)).collect()
        } else {
            Vec::new()
        },
        stages: staging.stages,
        micro_batch: staging.micro_batch,
        schedule: staging.schedule,
        bit_identical_to_one_stage: staging.bit_identical_to_one_stage,
        equal_to_whole_batch: staging.equal_to_whole_batch,
        one_stage,
        init_s: staging.init_s,
        checkpointed_layers: staging.checkpointed_layers,
        losses: staging.steps.iter().map(|s| s.loss).collect(),
        grad_norms: staging.steps.iter().map(|s| s.grad_norm).collect(),
        speedup_vs_torch: torch_tps.map(|t| tokens_per_s / t),
        torch,
    };
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        let peak_text =
            |g: Option<f64>| g.map(|g| format!(", peak {g:.2} GiB")).unwrap_or_default();
        let peak = peak_text(r.peak_mem_gib);
        println!(
            "{bench} koth ({} path): {} params, {} {}, B={} T={}: median {:.4} s/iter over {} iters, {:.0} tokens/s{peak}",
            r.path, r.parameters, r.device, r.dtype, r.batch, r.seq, r.median_s, r.iters, r.tokens_per_s
        );
        if r.stages > 1 {
            let yes_no = |b: Option<bool>| match b {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            };
            println!(
                "{bench} stages {} per model, micro-batch {} sequences, {} schedule; bit-identical to one stage: {}; equal to the whole batch at once: {}",
                r.stages,
                r.micro_batch.unwrap_or(0),
                r.schedule.as_deref().unwrap_or("-"),
                yes_no(r.bit_identical_to_one_stage),
                yes_no(r.equal_to_whole_batch)
            );
            if let Some(o) = &r.one_stage {
                let peak = peak_text(o.peak_mem_gib);
                println!(
                    "{bench} the same models as one stage: median {:.4} s/iter, {:.0} tokens/s{peak}",
                    o.median_s, o.tokens_per_s
                );
            }
        }
        if !r.peak_per_device_gib.is_empty() {
            let each: Vec<String> = r
                .peak_per_device_gib
                .iter()
                .map(|g| format!("{g:.2}"))
                .collect();
            println!("{bench} peak per device (GiB): {}", each.join(", "));
        }
        if let (Some(t), Some(tps)) = (&r.torch, torch_tps) {
            let peak = peak_text(t.get("peak_mem_gib").and_then(|v| v.as_f64()));
            println!(
                "{bench} PyTorch (same shapes, same call): {tps:.0} tokens/s{peak}; koth/PyTorch = {:.2}x",
                tokens_per_s / tps
            );
        }
    }
    Ok(())
}

/// The median of sorted iteration times, and the tokens per second it gives for `tokens` per
/// iteration.
fn median_rate(sorted_times: &[f64], tokens: usize) -> (f64, f64) {
    let median = sorted_times[sorted_times.len() / 2];
    (median, tokens as f64 / median)
}

/// Peak device memory of the timed run: each CUDA device's memory pool's high-water mark,
/// reset before. A device named twice in `--device` is one device.
fn reset_peak(devices: &[Device]) -> Result<()> {
    for d in distinct(devices) {
        if d.is_cuda() {
            koth_model::memory_peak(d, true)?;
        }
    }
    Ok(())
}

/// After koth's models are dropped: the memory pools' cached blocks go back to the driver, so
/// that the PyTorch reference (another process) has the whole GPU, as it would alone.
fn release_memory(devices: &[Device]) -> Result<()> {
    for d in distinct(devices) {
        if d.is_cuda() {
            koth_model::memory_release(d)?;
        }
    }
    Ok(())
}

fn read_peak(devices: &[Device]) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for d in distinct(devices) {
        if d.is_cuda() {
            out.push(koth_model::memory_peak(d, false)?);
        }
    }
    Ok(out)
}

fn distinct(devices: &[Device]) -> Vec<&Device> {
    let mut out: Vec<&Device> = Vec::new();
    for d in devices {
        if !out.iter().any(|o| o.same_device(d)) {
            out.push(d);
        }
    }
    out
}

/// King and challenger (random weights, seeds 1 and 2) as `--device` and `--stages` place
/// them, and for `--stages` > 1 on one device the one-stage king and challenger sharing the
/// same weights.
fn score_models(
    a: &ScoreArgs,
    config: &ModelConfig,
    devices: &[Device],
    dtype: koth_model::DType,
    pipeline: &Pipeline,
) -> Result<(Model, Model, Option<[Model; 2]>)> {
    anyhow::ensure!(a.stages >= 1, "--stages must be at least 1");
    if let [device] = devices {
        let king = Model::init(config, 1, dtype, device)?;
        let challenger = Model::init(config, 2, dtype, device)?;
        if a.stages == 1 {
            return Ok((king, challenger, None));
        }
        let layers = config.num_hidden_layers;
        let placement =
            Placement::even(layers, &vec![device.clone(); a.stages]).context("--stages")?;
        // On one device the stages share the one-stage model's tensors: no second copy.
        let placed_king = king.place(placement.clone())?.with_pipeline(*pipeline);
        let placed_challenger = challenger.place(placement)?.with_pipeline(*pipeline);
        return Ok((placed_king, placed_challenger, Some([king, challenger])));
    }
    anyhow::ensure!(
        a.stages == 1,
        "--stages is for one --device; a device list is placed by the planner"
    );
    let place = |side: usize| -> Result<Placement> {
        let (p, _) = duel_placement(config, side, devices, dtype, a.common.seq, pipeline)?;
        Ok(p)
    };
    let king = Model::init_placed(config, 1, dtype, place(KING)?)?.with_pipeline(*pipeline);
    let challenger =
        Model::init_placed(config, 2, dtype, place(CHALLENGER)?)?.with_pipeline(*pipeline);
    Ok((king, challenger, None))
}

/// Per-window mean losses of `m` on `ids`: one pass through a one-stage model, the micro-batch
/// pipeline through a model of several stages.
fn window_losses(
    m: &Model,
    ids: &TokenIds,
    path: OpPath,
    opts: ScoreOptions,
    pipeline: &Pipeline,
) -> Result<Vec<f32>> {
    if m.placement().len() > 1 {
        return Ok(m.sequence_losses_with(ids, path, opts, pipeline)?);
    }
    let nll = m.nll_with(ids, path, opts)?;
    Ok(nll
        .mean_keepdim(1)?
        .squeeze(1)?
        .to_device(&Device::Cpu)?
        .to_vec1()?)
}

fn score(a: ScoreArgs) -> Result<()> {
    let c = &a.common;
    let (config, devices, dtype) = setup(c)?;
    let schedule = match a.schedule.as_str() {
        "auto" => Schedule::Auto,
        "sequential" => Schedule::Sequential,
        "threads" => Schedule::Threads,
        other => anyhow::bail!("--schedule `{other}` is not one of auto, sequential, threads"),
    };
    let pipeline = Pipeline {
        micro_batch_rows: a.micro_batch,
        schedule,
    };
    let drawn = Instant::now();
    let (king, challenger, one_stage) = score_models(&a, &config, &devices, dtype, &pipeline)?;
    for d in &devices {
        d.synchronize()?;
    }
    let init_s = drawn.elapsed().as_secs_f64();
    let batches = random_batches(c, config.vocab_size, 4)?;
    let opts = ScoreOptions {
        logits_chunk_bytes: a.logits_chunk_mib << 20,
    };
    let path = super::model::parse_path(&c.path, king.scoring_path())?;
    // What an iteration scores: both models, or with king-loss reuse only the challenger.
    let scored_pair = |king, challenger| -> Vec<&Model> {
        if a.reuse_king {
            vec![challenger]
        } else {
            vec![king, challenger]
        }
    };
    let scored = scored_pair(&king, &challenger);
    let time_scoring = |scored: &[&Model]| -> Result<(Vec<f64>, Vec<u64>)> {
        reset_peak(&devices)?;
        let times = timed(c, &devices, |i| {
            let ids = &batches[i % batches.len()];
            for &m in scored {
                // Per-window means, as a duel uses them; reading them back also waits for the GPU.
                let _means = window_losses(m, ids, path, opts, &pipeline)?;
            }
            Ok(())
        })?;
        Ok((times, read_peak(&devices)?))
    };
    let (times, peaks) = time_scoring(&scored)?;
    // The same weights as one stage each, scored the same way: the row a one-GPU validator
    // would run, from the same draw.
    let one_stage_timing = match &one_stage {
        Some([king1, challenger1]) => Some(time_scoring(&scored_pair(king1, challenger1))?),
        None => None,
    };
    let stages = king.placement().len();
    let mut staging = Staging {
        peaks,
        one_stage: one_stage_timing,
        init_s: Some(init_s),
        stages,
        micro_batch: (stages > 1).then(|| pipeline.rows_for(c.seq).min(c.batch)),
        schedule: (stages > 1)
            .then(|| format!("{:?}", pipeline.schedule_for(&king)).to_lowercase()),
        ..Staging::default()
    };
    if let Some([one, _]) = &one_stage {
        // The acceptance check: the placed model against the one-stage model on the same
        // weights, the same micro-batches (and the whole batch at once).
        let ids = &batches[0];
        let placed = king.sequence_losses_with(ids, path, opts, &pipeline)?;
        let same_micro = one.sequence_losses_with(ids, path, opts, &pipeline)?;
        let whole = window_losses(one, ids, path, opts, &pipeline)?;
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        staging.bit_identical_to_one_stage = Some(bits(&placed) == bits(&same_micro));
        staging.equal_to_whole_batch = Some(bits(&placed) == bits(&whole));
    }
    drop(scored);
    drop((king, challenger, one_stage));
    let torch = if c.torch {
        let mut args = torch_args(c);
        args.extend(["--chunk".into(), a.torch_chunk.to_string()]);
        release_memory(&devices)?;
        Some(run_torch(c, TORCH_SCORE, &args)?)
    } else {
        None
    };
    let bench = if a.reuse_king {
        "challenger-score"
    } else {
        "paired-score"
    };
    report(c, bench, &config, path, &times, staging, torch)
}

fn train(t: TrainArgs) -> Result<()> {
    let a = t.common;
    let checkpointing = Checkpointing::parse(&t.checkpoint).context("--checkpoint")?;
    let (config, devices, dtype) = setup(&a)?;
    let [device] = devices.as_slice() else {
        anyhow::bail!("--device: koth bench train runs on one device");
    };
    let devices = std::slice::from_ref(device);
    let model = Model::init(&config, 1, dtype, device)?;
    let mut trainer = Trainer::new(
        &model,
        AdamWConfig {
            max_grad_norm: Some(1.0),
            ..AdamWConfig::default()
        },
    )?;
    trainer.set_checkpointing(checkpointing);
    let checkpointed_layers = Some(trainer.checkpoints_layers());
    let path = super::model::parse_path(&a.path, model.training_path())?;
    anyhow::ensure!(
        path == model.training_path(),
        "koth bench train runs the trainer's own path ({:?} here); --path {} is for scoring",
        model.training_path(),
        a.path
    );
    drop(model);
    let batches = random_batches(&a, config.vocab_size, 4)?;
    reset_peak(devices)?;
    let mut steps = Vec::with_capacity(a.warmup + a.iters);
    let times = timed(&a, devices, |i| {
        steps.push(trainer.step(&batches[i % batches.len()], 1e-4)?);
        Ok(())
    })?;
    let staging = Staging {
        peaks: read_peak(devices)?,
        stages: 1,
        checkpointed_layers,
        steps,
        ..Staging::default()
    };
    drop(trainer);
    let torch = if a.torch {
        release_memory(devices)?;
        Some(run_torch(&a, TORCH_TRAIN, &torch_args(&a))?)
    } else {
        None
    };
    report(&a, "train-step", &config, path, &times, staging, torch)
}
