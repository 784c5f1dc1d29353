//! `koth validator …`: run the validator from its config file, or inspect its event log.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum ValidatorCommand {
    /// Run the validator: poll the chain, gate and duel submissions, crown, set weights, and
    /// serve the dashboard (/, /hotkey/<ss58>), /api/state, /api/events, /dashboard.json and
    /// /metrics. Stops on SIGINT/SIGTERM;
    /// after any stop (even SIGKILL) a restart resumes from the event log.
    Run {
        /// The validator's config file (see docs/VALIDATOR.md).
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the king, the queue and recent history from an event log (read-only; works while
    /// the validator runs).
    Status {
        /// The event log (`<work_dir>/validator.db`).
        #[arg(long, conflicts_with = "config")]
        log: Option<PathBuf>,
        /// Or the validator's config file, whose work_dir holds the log.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the whole /api/state JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: ValidatorCommand) -> Result<()> {
    match cmd {
        ValidatorCommand::Run { config } => {
            let cfg = koth_validator::ValidatorConfig::load(&config)?;
            // The dashboard (koth-web) is served next to the feeds, on the same listener.
            let reader_cfg = cfg.clone();
            koth_validator::shell::run_validator_with(cfg, move |feed| {
                koth_web::router(koth_web::WebConfig {
                    competition: reader_cfg.competition.clone(),
                    reader: std::sync::Arc::new(koth_validator::ValidatorReader::of_validator(
                        &reader_cfg,
                        feed,
                    )),
                })
            })
            .with_context(|| format!("validator ({})", config.display()))?;
            Ok(())
        }
        ValidatorCommand::Status { log, config, json } => {
            let log = match (log, config) {
                (Some(l), _) => l,
                (None, Some(c)) => koth_validator::ValidatorConfig::load(&c)?.log_path(),
                (None, None) => {
                    anyhow::bail!("give --log <validator.db> or --config <validator.toml>")
                }
            };
            let state = koth_validator::log::open_read_only(&log)
                .and_then(|l| l.load_state())
                .with_context(|| format!("reading event log {}", log.display()))?;
            let feed = koth_validator::feed::api_state(&state);
            if json {
                println!("{}", serde_json::to_string_pretty(&feed)?);
                return Ok(());
            }
            print_summary(&state);
            Ok(())
        }
    }
}

fn print_summary(state: &koth_validator::ValidatorState) {
    println!("block {}", state.block);
    if let Some(k) = state.king() {
        println!(
            "king: reign {} {} hotkey {} (crowned at block {})",
            k.number,
            k.digest,
            k.hotkey.as_deref().unwrap_or("(genesis)"),
            k.block
        );
    }
    match state.active_entry() {
        Some((e, phase)) => println!(
            "active: entry {} {} {} — {}",
            e.id,
            e.hotkey,
            e.digest,
            serde_json::to_string(phase).unwrap_or_default()
        ),
        None => println!("active: none"),
    }
    println!("queue: {} entries", state.queue.len());
    for (i, e) in state.queue_in_order().enumerate().take(20) {
        println!(
            "  {i:>3}. entry {} {} {} (revealed at {}, retries {})",
            e.id, e.hotkey, e.digest, e.reveal_block, e.retries
        );
    }
    println!("history (newest first):");
    for f in state.history.iter().rev().take(20) {
        println!(
            "  entry {} {} → {}",
            f.id,
            f.hotkey,
            serde_json::to_string(&f.outcome).unwrap_or_default()
        );
    }
    let c = &state.counters;
    println!(
        "counters: answered {} crowns {} infra faults {} recoveries {}",
        c.answered, c.crowns, c.infra_faults, c.recoveries
    );
}

/// `koth duel serve`: the remote eval worker.
#[derive(clap::Args)]
pub struct DuelServeArgs {
    /// Address to listen on, e.g. 0.0.0.0:8091.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Bearer token clients must send (prefer --token-env to keep it out of `ps`).
    #[arg(long, conflicts_with = "token_env")]
    token: Option<String>,
    /// Environment variable holding the bearer token.
    #[arg(long)]
    token_env: Option<String>,
    /// The competition file (the worker refuses requests made for another one).
    #[arg(long)]
    competition: PathBuf,
    /// Cache directory for fetched checkpoints.
    #[arg(long)]
    cache: PathBuf,
    /// Bytes of unpinned checkpoints the cache may keep.
    #[arg(long, default_value_t = 64 << 30)]
    cache_budget_bytes: u64,
    /// cpu, cuda, cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, bf16, f16
    #[arg(long, default_value = "f32")]
    dtype: String,
}

pub fn duel_serve(a: DuelServeArgs) -> Result<()> {
    let token = match (a.token, a.token_env) {
        (Some(t), _) => t,
        (None, Some(var)) => std::env::var(&var)
            .with_context(|| format!("--token-env: environment variable {var} is not set"))?,
        (None, None) => {
            anyhow::bail!("give --token or --token-env: the worker never serves without a token")
        }
    };
    let bytes = std::fs::read(&a.competition)
        .with_context(|| format!("--competition {}", a.competition.display()))?;
    let competition = koth_core::competition::Competition::from_toml_bytes(&bytes)
        .with_context(|| format!("--competition {}", a.competition.display()))?;
    let dir = a
        .competition
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let bundle_path = dir.join(&competition.data.bundle);
    let cfg = koth_validator::worker::WorkerConfig {
        token,
        competition,
        bundle_path,
        cache_dir: a.cache,
        cache_budget_bytes: a.cache_budget_bytes,
        s3: koth_store::S3Options::from_env(),
        device: a.device,
        dtype: a.dtype,
    };
    koth_validator::worker::serve(a.listen, cfg).map_err(|e| anyhow::anyhow!(e))
}
