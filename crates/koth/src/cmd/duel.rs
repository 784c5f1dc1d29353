//! `koth duel …`: run a duel, replay a verdict, decide on given differences, simulate the rules.
//! Parses arguments, calls `koth_duel`, prints. Results go to stdout; progress to stderr.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use koth_core::npy::NpyArray;
use koth_core::verdict::{Decision, DuelModel, EffectFloor, RuleSpec, ScoringSetup, Verdict};
use koth_core::Digest;
use koth_data::Dataset;
use koth_duel::duel::{
    check_verdict, compare, run_duel, run_duel_pooled, setup_of, DuelSetup, Progress, ProgressFn,
};
use koth_duel::pool::KingPool;
use koth_duel::rule::{bootstrap_seed, decide};
use koth_duel::score::ModelScorer;
use koth_duel::simulate::{self, Distribution, PresetParams};
use koth_duel::stats::bootstrap::TEUTONIC_FUTILITY;
use koth_duel::stats::SequentialParams;
use koth_model::placement::{load_for_duel, CHALLENGER, KING};
use koth_model::{parse_devices, parse_dtype, Model};
use serde::Serialize;

#[derive(Subcommand)]
pub enum DuelCommand {
    /// Score king and challenger on the same windows of a bundle and decide; write the verdict.
    Run(RunArgs),
    /// Recompute a verdict from its record and the data; exit non-zero if anything differs.
    Replay(ReplayArgs),
    /// The decision on given per-window differences (f64 .npy, in order), as JSON.
    Decide(DecideArgs),
    /// False-crown rate, power and mean windows used per rule, by simulation.
    Simulate(SimulateArgs),
    /// Serve duels to a validator over HTTP (bearer token; one duel at a time; progress
    /// streamed; cancellable). See docs/VALIDATOR.md.
    Serve(super::validator::DuelServeArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuleName {
    Sequential,
    Bootstrap,
}

/// The statistical rule and its parameters (shared by `run` and `decide`).
#[derive(Args)]
pub struct RuleArgs {
    /// The test: the anytime-valid sequential rule, or Teutonic's fixed-N bootstrap.
    #[arg(long, value_enum, default_value = "sequential")]
    rule: RuleName,
    /// Probability of crowning a challenger that is not better by the floor.
    #[arg(long, default_value_t = 0.001)]
    alpha: f64,
    /// Absolute effect floor δ in nats/token.
    #[arg(
        long,
        conflicts_with = "relative_delta",
        required_unless_present = "relative_delta"
    )]
    delta: Option<f64>,
    /// Relative effect floor: a fraction of the king's mean loss (e.g. 0.001).
    #[arg(long)]
    relative_delta: Option<f64>,
    /// Bootstrap resamples B.
    #[arg(long, default_value_t = 10_000)]
    resamples: u32,
    /// Bootstrap: disable Teutonic's futility stop.
    #[arg(long)]
    no_futility: bool,
    /// Sequential: no decision before this many windows (default min(256, N)).
    #[arg(long)]
    min_n: Option<u64>,
    /// Sequential: sample size at which the boundary is tightest (default N/4).
    #[arg(long)]
    target_n: Option<u64>,
    /// Sequential: level of the futility upper bound.
    #[arg(long, default_value_t = 0.01)]
    futility_alpha: f64,
}

impl RuleArgs {
    fn floor(&self) -> Result<EffectFloor> {
        match (self.delta, self.relative_delta) {
            (Some(nats), None) => Ok(EffectFloor::Absolute { nats }),
            (None, Some(fraction)) => Ok(EffectFloor::Relative { fraction }),
            _ => bail!("give exactly one of --delta and --relative-delta"),
        }
    }

    fn spec(&self, n_max: u64) -> RuleSpec {
        match self.rule {
            RuleName::Sequential => {
                let mut p = SequentialParams::with_defaults(self.alpha, 0.0, n_max);
                p.futility_alpha = self.futility_alpha;
                p.min_n = self.min_n.unwrap_or(p.min_n);
                p.target_n = self.target_n.unwrap_or(p.target_n);
                p.spec()
            }
            RuleName::Bootstrap => RuleSpec::Bootstrap {
                alpha: self.alpha,
                n: n_max,
                resamples: self.resamples,
                futility: (!self.no_futility).then_some(TEUTONIC_FUTILITY),
            },
        }
    }
}

#[derive(Args)]
pub struct RunArgs {
    /// The king's checkpoint directory (Hugging Face layout).
    #[arg(long)]
    king: PathBuf,
    /// The challenger's checkpoint directory.
    #[arg(long)]
    challenger: PathBuf,
    /// The data bundle (bundle.json).
    #[arg(long)]
    bundle: PathBuf,
    /// Seed material for the sample and the bootstrap resampler.
    #[arg(long)]
    seed_material: String,
    /// Tokens per window.
    #[arg(long)]
    seq_len: u32,
    /// Most windows scored (the bootstrap's fixed N).
    #[arg(long)]
    n_max: u64,
    #[command(flatten)]
    rule: RuleArgs,
    /// Windows per scoring batch (one look of the rule per batch).
    #[arg(long, default_value_t = 16)]
    batch_size: u32,
    /// cpu, cuda or cuda:N, or a comma-separated list of them (cuda:0,cuda:1): both models
    /// placed across the list as the validator does.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Weights dtype for both models: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// The competition file's sha256 (sha256:<hex>), recorded in the verdict.
    #[arg(long)]
    competition_sha256: Option<Digest>,
    /// File holding the validator secret (needed when the bundle has private sources).
    #[arg(long)]
    validator_secret_file: Option<PathBuf>,
    /// Where to write the verdict JSON (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// King-loss reuse: first score the king once on a reign pool of this many batches (of
    /// --batch-size windows, drawn from --king-pool-seed), then score only the challenger, on
    /// whole pool batches drawn by --seed-material. The verdict records the pool.
    #[arg(long, requires = "king_pool_seed")]
    king_pool_batches: Option<u32>,
    /// Seed material of the reign pool (a validator uses the crowning block's hash).
    #[arg(long, requires = "king_pool_batches")]
    king_pool_seed: Option<String>,
}

#[derive(Args)]
pub struct ReplayArgs {
    /// The verdict to replay.
    verdict: PathBuf,
    /// The king's checkpoint (default: the path recorded in the verdict).
    #[arg(long)]
    king: Option<PathBuf>,
    /// The challenger's checkpoint (default: the path recorded in the verdict).
    #[arg(long)]
    challenger: Option<PathBuf>,
    /// The bundle (default: the path recorded in the verdict).
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Device to score on (default: the recorded one). Bit-for-bit equality is only expected
    /// on the same kind of device.
    #[arg(long)]
    device: Option<String>,
    /// File holding the validator secret (for verdicts on private sources).
    #[arg(long)]
    validator_secret_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct DecideArgs {
    /// Per-window differences ℓ(king) − ℓ(challenger), 1-D .npy (<f8, or <f4), in order.
    #[arg(long)]
    diffs: PathBuf,
    /// Per-window king losses (1-D .npy), needed with --relative-delta.
    #[arg(long)]
    king_losses: Option<PathBuf>,
    #[command(flatten)]
    rule: RuleArgs,
    /// Windows per look.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Most windows used (default: all given).
    #[arg(long)]
    n_max: Option<u64>,
    /// Seed material of the bootstrap resampler.
    #[arg(long, default_value = "koth-duel-decide")]
    seed_material: String,
    /// Include the bounds after every look.
    #[arg(long)]
    trace: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// μ = δ under every distribution: the false-crown rate.
    FalseCrown,
    /// A realistic mix of challengers: windows used and power.
    Mix,
}

#[derive(Args)]
pub struct SimulateArgs {
    #[arg(long, value_enum, default_value = "false-crown")]
    preset: Preset,
    /// Difference distribution for the mix: gaussian, student-t3, skew-left, skew-right.
    #[arg(long, default_value = "skew-left")]
    distribution: String,
    /// Duels per rule and scenario.
    #[arg(long, default_value_t = 10_000)]
    reps: u64,
    #[arg(long, default_value_t = 0.001)]
    alpha: f64,
    /// Effect floor δ (nats/token).
    #[arg(long, default_value_t = 0.0025)]
    delta: f64,
    /// Standard deviation of the per-window difference (nats/token).
    #[arg(long, default_value_t = 0.02)]
    sigma: f64,
    /// Windows per look.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// The sequential rule's N_max.
    #[arg(long, default_value_t = 10_000)]
    n_max: u64,
    /// The bootstrap rule's fixed N.
    #[arg(long, default_value_t = 5_000)]
    n: u64,
    #[arg(long, default_value_t = 10_000)]
    resamples: u32,
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value = "koth-simulate")]
    seed: String,
    /// Print the full report as JSON instead of markdown tables.
    #[arg(long)]
    json: bool,
}

pub fn run(c: DuelCommand) -> Result<()> {
    match c {
        DuelCommand::Run(a) => run_cmd(a),
        DuelCommand::Replay(a) => replay_cmd(a),
        DuelCommand::Decide(a) => decide_cmd(a),
        DuelCommand::Simulate(a) => simulate_cmd(a),
        DuelCommand::Serve(a) => super::validator::duel_serve(a),
    }
}

fn checkpoint_digest(dir: &Path) -> Result<Digest> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(koth_store::manifest_of_dir(dir, threads)
        .with_context(|| format!("hashing checkpoint {}", dir.display()))?
        .digest())
}

/// One side of a duel (`side`: `KING` or `CHALLENGER`) on `device` (one device or a list).
fn load_model(dir: &Path, dtype: &str, device: &str, side: usize, seq_len: u32) -> Result<Model> {
    let dt = parse_dtype(dtype).with_context(|| format!("--dtype {dtype}"))?;
    let devices = parse_devices(device).with_context(|| format!("--device {device}"))?;
    load_for_duel(dir, dt, &devices, side, seq_len as usize)
        .with_context(|| format!("loading model {}", dir.display()))
}

fn read_secret(path: &Option<PathBuf>) -> Result<Option<Vec<u8>>> {
    path.as_ref()
        .map(|p| {
            std::fs::read(p).with_context(|| format!("reading validator secret {}", p.display()))
        })
        .transpose()
}

fn print_progress(p: &Progress) -> bool {
    let b = &p.bounds;
    let fmt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:+.6}"));
    eprintln!(
        "batch {:>4}: n = {:>6}/{} | μ̂ = {:+.6} | lower {} | upper {} | king {:.4} challenger {:.4} | {} | {:.1} s",
        p.batch,
        b.n,
        p.n_max,
        b.mu_hat,
        fmt(b.lower),
        fmt(b.upper),
        p.king_mean_loss,
        p.challenger_mean_loss,
        decision_word(b.decision),
        p.elapsed_s
    );
    true
}

fn decision_word(d: Decision) -> &'static str {
    match d {
        Decision::Continue => "continue",
        Decision::Crown => "CROWN",
        Decision::KeepKing(koth_core::verdict::KeepReason::Futility) => "keep king (futility)",
        Decision::KeepKing(koth_core::verdict::KeepReason::NMax) => "keep king (N_max)",
    }
}

/// Write `bytes` to a new file at `path`; an existing file is never overwritten.
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist)", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn run_cmd(a: RunArgs) -> Result<()> {
    ensure!(
        !a.out.exists(),
        "--out {}: the file exists; refusing to overwrite it",
        a.out.display()
    );
    let floor = a.rule.floor()?;
    let spec = a.rule.spec(a.n_max);
    let king_digest = checkpoint_digest(&a.king)?;
    let challenger_digest = checkpoint_digest(&a.challenger)?;
    let dataset = Dataset::open(&a.bundle)
        .with_context(|| format!("opening bundle {}", a.bundle.display()))?;
    let king = load_model(&a.king, &a.dtype, &a.device, KING, a.seq_len)?;
    let challenger = load_model(&a.challenger, &a.dtype, &a.device, CHALLENGER, a.seq_len)?;
    let secret = read_secret(&a.validator_secret_file)?;
    let setup = DuelSetup {
        competition_sha256: a.competition_sha256,
        king: DuelModel {
            digest: king_digest,
            path: Some(a.king.display().to_string()),
        },
        challenger: DuelModel {
            digest: challenger_digest,
            path: Some(a.challenger.display().to_string()),
        },
        seed_material: a.seed_material,
        seq_len: a.seq_len,
        rule: spec,
        effect_floor: floor,
        batch_size: a.batch_size,
        scoring: ScoringSetup {
            dtype: a.dtype.clone(),
            device: a.device.clone(),
            batch_size: a.batch_size,
            path: ModelScorer::PATH.into(),
        },
        bundle_path: Some(a.bundle.display().to_string()),
    };
    let pool = match (a.king_pool_batches, &a.king_pool_seed) {
        (Some(batches), Some(seed)) => Some(PoolSpec {
            seed,
            batches,
            batch_size: a.batch_size,
            recorded: None,
        }),
        _ => None,
    };
    let verdict = score_duel(
        &dataset,
        &setup,
        (king, challenger),
        secret.as_deref(),
        pool,
    )?;
    let mut json = serde_json::to_vec_pretty(&verdict).context("encoding the verdict")?;
    json.push(b'\n');
    write_new(&a.out, &json)?;
    println!("{}", summary_json(&verdict)?);
    Ok(())
}

/// A reign pool to score the king on before the duel (king-loss reuse).
struct PoolSpec<'a> {
    seed: &'a str,
    batches: u32,
    batch_size: u32,
    /// The pool a verdict recorded: the rebuilt pool must match it.
    recorded: Option<&'a koth_core::verdict::KingPoolRecord>,
}

/// Score a duel: both sides live, or the king once on a reign pool and then the challenger.
fn score_duel(
    dataset: &Dataset,
    setup: &DuelSetup,
    (king, challenger): (koth_model::Model, koth_model::Model),
    secret: Option<&[u8]>,
    pool: Option<PoolSpec<'_>>,
) -> Result<Verdict> {
    let Some(spec) = pool else {
        return run_duel(
            dataset,
            setup,
            &mut ModelScorer::new(king),
            &mut ModelScorer::new(challenger),
            secret,
            &mut ProgressFn(print_progress),
        )
        .context("running the duel");
    };
    let pool = KingPool::score(
        dataset,
        spec.seed,
        secret,
        setup.king.digest,
        &mut ModelScorer::new(king),
        spec.batches,
        spec.batch_size,
        setup.seq_len,
    )
    .context("scoring the king on the reign pool")?;
    if let Some(record) = spec.recorded {
        pool.matches(record).context("the king pool")?;
    }
    eprintln!(
        "king pool: {} windows in {} batches, digest {}",
        pool.windows.len(),
        pool.batches(),
        pool.digest
    );
    run_duel_pooled(
        dataset,
        setup,
        &pool,
        &mut ModelScorer::new(challenger),
        &mut ProgressFn(print_progress),
    )
    .context("running the duel on the king pool")
}

fn summary_json(v: &Verdict) -> Result<String> {
    #[derive(Serialize)]
    struct Summary<'a> {
        accepted: bool,
        decision: Decision,
        n_used: u64,
        mu_hat: f64,
        tested_mean: f64,
        lower: Option<f64>,
        upper: Option<f64>,
        threshold: f64,
        king_mean_loss: f64,
        challenger_mean_loss: f64,
        sample_digest: &'a Digest,
        wall_time_s: f64,
    }
    Ok(serde_json::to_string_pretty(&Summary {
        accepted: v.outcome.decision.is_crown(),
        decision: v.outcome.decision,
        n_used: v.outcome.n_used,
        mu_hat: v.outcome.mu_hat,
        tested_mean: v.outcome.tested_mean,
        lower: v.outcome.lower,
        upper: v.outcome.upper,
        threshold: v.outcome.threshold,
        king_mean_loss: v.outcome.king_mean_loss,
        challenger_mean_loss: v.outcome.challenger_mean_loss,
        sample_digest: &v.sample.sample_digest,
        wall_time_s: v.wall_time_s,
    })?)
}

fn replay_cmd(a: ReplayArgs) -> Result<()> {
    let bytes = std::fs::read(&a.verdict)
        .with_context(|| format!("reading verdict {}", a.verdict.display()))?;
    let recorded: Verdict = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a koth verdict", a.verdict.display()))?;
    check_verdict(&recorded).map_err(|e| anyhow::anyhow!("{}: {e}", a.verdict.display()))?;
    let path_of =
        |given: &Option<PathBuf>, recorded: &Option<String>, what: &str| -> Result<PathBuf> {
            given
                .clone()
                .or_else(|| recorded.as_ref().map(PathBuf::from))
                .with_context(|| format!("the verdict records no {what} path: pass --{what}"))
        };
    let king_dir = path_of(&a.king, &recorded.king.path, "king")?;
    let challenger_dir = path_of(&a.challenger, &recorded.challenger.path, "challenger")?;
    let bundle = path_of(&a.bundle, &recorded.sample.bundle_path, "bundle")?;
    for (what, dir, expected) in [
        ("king", &king_dir, recorded.king.digest),
        ("challenger", &challenger_dir, recorded.challenger.digest),
    ] {
        let actual = checkpoint_digest(dir)?;
        ensure!(
            actual == expected,
            "{what} checkpoint {} hashes to {actual}, but the verdict was scored on {expected}",
            dir.display()
        );
    }
    let dataset =
        Dataset::open(&bundle).with_context(|| format!("opening bundle {}", bundle.display()))?;
    ensure!(
        dataset.bundle_sha256() == recorded.sample.bundle_sha256,
        "bundle {} hashes to {}, but the verdict was scored on {}",
        bundle.display(),
        dataset.bundle_sha256(),
        recorded.sample.bundle_sha256
    );
    let device = a
        .device
        .clone()
        .unwrap_or_else(|| recorded.scoring.device.clone());
    let dtype = &recorded.scoring.dtype;
    let seq_len = recorded.sample.seq_len;
    let king = load_model(&king_dir, dtype, &device, KING, seq_len)?;
    let challenger = load_model(&challenger_dir, dtype, &device, CHALLENGER, seq_len)?;
    let secret = read_secret(&a.validator_secret_file)?;
    let mut setup = setup_of(&recorded);
    setup.scoring.device = device;
    // A pooled verdict: the pool is rebuilt (the king scored again on every pool batch) and
    // must be the recorded one before the challenger's side is re-run on it.
    let pool = match &recorded.king_pool {
        Some(record) => Some(PoolSpec {
            seed: &record.seed_material,
            batches: u32::try_from(record.windows / u64::from(record.batch_size.max(1)))
                .context("the verdict's king pool is too large")?,
            batch_size: record.batch_size,
            recorded: Some(record),
        }),
        None => None,
    };
    let again = score_duel(
        &dataset,
        &setup,
        (king, challenger),
        secret.as_deref(),
        pool,
    )
    .context("re-running the duel")?;
    let differences = compare(&recorded, &again);
    if differences.is_empty() {
        println!(
            "replayed {}: identical ({} after {} windows, {} batches, per-window losses bit for bit)",
            a.verdict.display(),
            decision_word(again.outcome.decision),
            again.outcome.n_used,
            again.bounds.len()
        );
        Ok(())
    } else {
        for d in &differences {
            eprintln!("differs: {d}");
        }
        bail!(
            "replay of {} differs from the record in {} way(s)",
            a.verdict.display(),
            differences.len()
        )
    }
}

fn read_vector(path: &Path, flag: &str) -> Result<Vec<f64>> {
    let file = File::open(path).with_context(|| format!("{flag} {}: opening", path.display()))?;
    let array = NpyArray::read(std::io::BufReader::new(file))
        .with_context(|| format!("{flag} {}", path.display()))?;
    ensure!(
        array.shape.len() == 1,
        "{flag} {}: expected a 1-D array, got shape {:?}",
        path.display(),
        array.shape
    );
    array
        .into_f64()
        .with_context(|| format!("{flag} {}", path.display()))
}

fn decide_cmd(a: DecideArgs) -> Result<()> {
    let floor = a.rule.floor()?;
    let diffs = read_vector(&a.diffs, "--diffs")?;
    ensure!(
        !diffs.is_empty(),
        "--diffs {}: holds no values",
        a.diffs.display()
    );
    let king = a
        .king_losses
        .as_ref()
        .map(|p| read_vector(p, "--king-losses"))
        .transpose()?;
    let n_max = a.n_max.unwrap_or(diffs.len() as u64);
    ensure!(n_max >= 2, "--n-max must be at least 2");
    if matches!(a.rule.rule, RuleName::Bootstrap) {
        ensure!(
            n_max <= diffs.len() as u64,
            "--n-max {n_max}: the bootstrap rule needs its fixed N windows, but {} holds {}",
            a.diffs.display(),
            diffs.len()
        );
    }
    let spec = a.rule.spec(n_max);
    let report = decide(
        &spec,
        floor,
        &diffs,
        king.as_deref(),
        a.batch,
        bootstrap_seed(&a.seed_material),
    )
    .context("deciding")?;
    let mut value = serde_json::to_value(&report)?;
    if !a.trace {
        if let Some(obj) = value.as_object_mut() {
            obj.remove("bounds");
        }
    }
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

fn simulate_cmd(a: SimulateArgs) -> Result<()> {
    let distribution = Distribution::parse(&a.distribution).with_context(|| {
        format!(
            "--distribution {:?}: expected one of gaussian, student-t3, skew-left, skew-right",
            a.distribution
        )
    })?;
    let p = PresetParams {
        alpha: a.alpha,
        delta: a.delta,
        sigma: a.sigma,
        batch: a.batch,
        reps: a.reps,
        seed: a.seed,
        threads: a
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        sequential_n_max: a.n_max,
        bootstrap_n: a.n,
        resamples: a.resamples,
    };
    let config = match a.preset {
        Preset::FalseCrown => p.false_crown(),
        Preset::Mix => p.mix(distribution),
    };
    let report = simulate::run(&config).context("simulating")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_markdown());
    }
    Ok(())
}
