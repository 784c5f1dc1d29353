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
    /// What the validator would answer for a checkpoint directory, however it was made: every
    /// gate that runs locally (file policy, size cap, config lock against the current king,
    /// exact tensor set, weights sanity, trainability probe when the competition runs it) with
    /// the validator's codes and sentences, then the local duel with the competition's rule on
    /// the held-out windows. Exits 0 when the local duel crowns, 1 on a gate refusal, 3 when
    /// the king would be kept.
    Check(CheckArgs),
}

#[derive(Args)]
pub struct CheckArgs {
    /// The checkpoint directory (config.json, safetensors files, tokenizer files).
    dir: PathBuf,
    /// The miner's config file (competition, chain, data, device).
    #[arg(long)]
    config: PathBuf,
    /// The result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// `koth miner check`'s exit status when a gate refuses.
pub const CHECK_REFUSED: u8 = 1;
/// `koth miner check`'s exit status when the gates pass but the local duel keeps the king.
pub const CHECK_KEPT_KING: u8 = 3;

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
        AttemptStatus::Refused => match &r.refusal {
            Some(f) => format!(
                "not submitted: the validator would reject it [{}] at gate {}: {} ({})",
                f.code,
                f.gate,
                f.message,
                f.sentence()
            ),
            None => "not submitted: a gate refused it".to_string(),
        },
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

/// `koth miner check`: prints the validator's would-be answer; the exit status says it too.
fn check(a: &CheckArgs) -> Result<()> {
    let miner = open(&a.config)?;
    let king = miner.follower().king()?;
    let king_dir = miner.fetch_king(&king)?;
    // With --json the events go to stderr as JSON lines; otherwise only the summary below.
    let mut renderer: Box<dyn koth_miner::Observer> = if a.json {
        Box::new(Renderer::new(Display::Json))
    } else {
        Box::new(koth_miner::Quiet)
    };
    let (report, local) = miner
        .check(&king, &king_dir, &a.dir, renderer.as_mut())
        .with_context(|| format!("checking {}", a.dir.display()))?;
    drop(renderer);
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "king": king.digest, "gates": report, "local": local })
        );
    } else {
        println!("king {}", king.digest);
        println!("{}", koth_miner::check::report_text(&report));
        if let Some(l) = &local {
            println!(
                "local duel: {} (king {:.4}, challenger {:.4} nats, μ̂ = {:.5} over {} windows)",
                l.verdict, l.king_nll, l.challenger_nll, l.mu_hat, l.windows
            );
        }
    }
    let code = match (&report.refusal, &local) {
        (Some(_), _) => CHECK_REFUSED,
        (None, Some(l)) if l.crown => 0,
        _ => CHECK_KEPT_KING,
    };
    if code != 0 {
        std::process::exit(i32::from(code));
    }
    Ok(())
}

pub fn run(cmd: MinerCommand) -> Result<()> {
    match cmd {
        MinerCommand::Check(a) => check(&a),
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
                if miner.config().trainer.is_some() {
                    anyhow::bail!(
                        "interrupted: the trainer's process group was ended; `koth miner once \
                         --config {}` starts it again",
                        a.config.display()
                    );
                }
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
