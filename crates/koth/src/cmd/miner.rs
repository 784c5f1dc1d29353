//! `koth miner …`: follow the king, train a challenger from it, judge it locally with the
//! validator's rule, publish and commit it, and report the validator's verdict.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use koth_miner::progress::{Display, Renderer};
use koth_miner::{AttemptRecord, AttemptStatus, Miner, MinerConfig};

#[derive(Subcommand)]
pub enum MinerCommand {
    /// Loop until SIGINT/SIGTERM: follow the king, train from it, judge locally, submit when
    /// the local duel crowns (or --force), wait for the validator's verdict, start again from
    /// the (possibly new) king. A king change mid-training abandons the attempt; a signal stops
    /// at the next step with a checkpoint that the next start resumes.
    Run(MinerArgs),
    /// One attempt; prints the outcome (crowned / kept king / rejected with code and sentence /
    /// not submitted) and exits 0; non-zero on errors or when interrupted.
    Once(MinerArgs),
}

#[derive(Args)]
pub struct MinerArgs {
    /// The miner's config file (see docs/MINING.md).
    #[arg(long)]
    config: PathBuf,
    /// Submit even when the local duel does not crown.
    #[arg(long)]
    force: bool,
    /// Events as JSON lines on stderr, and the attempt record as JSON on stdout.
    #[arg(long)]
    log_json: bool,
}

fn open(config: &Path) -> Result<Miner> {
    let cfg = MinerConfig::load(config)?;
    Miner::open(cfg).with_context(|| format!("miner ({})", config.display()))
}

/// One sentence for an attempt's outcome.
fn outcome_sentence(r: &AttemptRecord) -> String {
    let challenger = r
        .challenger
        .map(|d| d.to_string())
        .unwrap_or_else(|| "none".into());
    match r.status {
        AttemptStatus::KingChanged => format!(
            "abandoned: the king changed while training from {} (attempt {})",
            r.king, r.attempt
        ),
        AttemptStatus::Interrupted => format!("interrupted at step {}", r.steps),
        AttemptStatus::NotSubmitted => {
            let local = r
                .local
                .as_ref()
                .map(|l| {
                    format!(
                        "{} (king {:.4}, challenger {:.4}, μ̂ {:.5} over {} windows)",
                        l.verdict, l.king_nll, l.challenger_nll, l.mu_hat, l.windows
                    )
                })
                .unwrap_or_default();
            format!("not submitted: challenger {challenger}: local duel {local}")
        }
        AttemptStatus::Submitted => match &r.validator {
            Some(v) => format!(
                "{}: challenger {challenger}",
                koth_miner::progress::verdict_text(v)
            ),
            None => format!("submitted: challenger {challenger}"),
        },
    }
}

pub fn run(cmd: MinerCommand) -> Result<()> {
    match cmd {
        MinerCommand::Run(a) => {
            let miner = open(&a.config)?;
            let stop = koth_miner::stop_on_signals();
            let mut renderer = Renderer::new(Display::choose(a.log_json));
            miner
                .run(a.force, &stop, &mut renderer)
                .with_context(|| format!("miner ({})", a.config.display()))
        }
        MinerCommand::Once(a) => {
            let miner = open(&a.config)?;
            let stop = koth_miner::stop_on_signals();
            let mut renderer = Renderer::new(Display::choose(a.log_json));
            let record = miner
                .attempt(a.force, &stop, &mut renderer)
                .with_context(|| format!("miner ({})", a.config.display()))?;
            drop(renderer);
            if a.log_json {
                println!("{}", serde_json::to_string(&record)?);
            } else {
                println!("{}", outcome_sentence(&record));
            }
            if record.status == AttemptStatus::Interrupted {
                anyhow::bail!(
                    "interrupted at step {}; `koth miner once --config {}` resumes it",
                    record.steps,
                    a.config.display()
                );
            }
            Ok(())
        }
    }
}
