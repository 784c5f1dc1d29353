//! The orchestration of one devnet run: corpus → workspace → validator → miners → live
//! summary → stop → score every king → the table of reigns.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::corpus::{self, BuildOptions, Corpus};
use super::reigns;
use super::schedule::{self, TrainBase};
use super::status;
use super::supervise::{self, ChildSpec, Supervised};
use super::workspace::{self, DuelSpec, ModelShape, NetworkSpec, Workspace};
use koth_miner::follow::FeedClient;

/// Everything a run needs (the CLI fills it).
#[derive(Debug, Clone)]
pub struct DevnetOptions {
    pub workspace: PathBuf,
    pub fresh: bool,
    pub corpus: PathBuf,
    pub vocab: u32,
    pub miners: u32,
    pub duration: Duration,
    pub port: u16,
    pub model: ModelShape,
    pub seq_len: u32,
    pub train: TrainBase,
    pub duel: DuelSpec,
    pub block_time_ms: u64,
    pub reveal_delay_blocks: u64,
    /// Compute threads per child process.
    pub threads: usize,
    /// Seconds between summary lines.
    pub summary_every: Duration,
    /// Windows of the private holdout every king is scored on at the end.
    pub score_windows: u64,
}

/// What a run leaves.
#[derive(Debug)]
pub struct DevnetReport {
    pub workspace: PathBuf,
    /// Crowns that happened during this run.
    pub crowns_this_run: usize,
}

/// The network spec for `opts` and the corpus.
pub fn network_spec(opts: &DevnetOptions, corpus: &Corpus) -> NetworkSpec {
    NetworkSpec {
        miners: opts.miners,
        model: opts.model.clone(),
        vocab: corpus.tokenizer.vocab_size,
        seq_len: opts.seq_len,
        block_time_ms: opts.block_time_ms,
        reveal_delay_blocks: opts.reveal_delay_blocks,
        duel: opts.duel.clone(),
        train_bundle_sha256: corpus.train_sha256,
        holdout_bundle_sha256: corpus.holdout_sha256,
        holdout_root: corpus.holdout_root,
    }
}

/// ss58 → key name, from the workspace's keystore.
fn key_names(ws: &Workspace) -> BTreeMap<String, String> {
    koth_chain::Keystore::new(ws.keystore())
        .list()
        .map(|keys| keys.into_iter().map(|k| (k.ss58, k.name)).collect())
        .unwrap_or_default()
}

fn reigns_in_log(path: &Path) -> Result<usize> {
    if !path.is_file() {
        return Ok(0);
    }
    let state = koth_validator::log::open_read_only(path)
        .and_then(|l| l.load_state())
        .with_context(|| format!("reading the event log {}", path.display()))?;
    Ok(state.reigns.len())
}

/// Run the devnet; prints as it goes (stdout: the dashboard address, the summary, the table).
pub fn run(opts: &DevnetOptions) -> Result<DevnetReport> {
    supervise::install_signal_handlers().context("installing signal handlers")?;
    let started = Instant::now();
    println!("devnet: corpus {}", opts.corpus.display());
    let corpus = corpus::ensure(
        &opts.corpus,
        &BuildOptions {
            vocab: opts.vocab,
            ..BuildOptions::default()
        },
    )
    .with_context(|| format!("the devnet corpus (--corpus {})", opts.corpus.display()))?;
    println!(
        "devnet: corpus ready: vocabulary {}, {} training tokens, {} private holdout tokens, holdout root {}",
        corpus.tokenizer.vocab_size, corpus.train_tokens, corpus.holdout_tokens, corpus.holdout_root
    );
    let spec = network_spec(opts, &corpus);
    let ws = workspace::prepare(&opts.workspace, &spec, &corpus, opts.fresh)
        .with_context(|| format!("--workspace {}", opts.workspace.display()))?;
    println!(
        "devnet: workspace {} ({}), genesis king {}",
        ws.root.display(),
        if ws.created { "new" } else { "reused" },
        ws.record.genesis_king
    );
    let plans = schedule::plans(&opts.train, opts.miners);
    ws.write_run_configs(opts.port, &plans)
        .context("writing the run's config files")?;
    let reigns_before = reigns_in_log(&ws.event_log())?;

    let exe = std::env::current_exe().context("locating the koth binary")?;
    let child = |name: &str, args: Vec<OsString>| ChildSpec {
        name: name.to_string(),
        program: exe.clone(),
        args,
        cwd: ws.root.clone(),
        log: ws.logs().join(format!("{name}.log")),
        threads: opts.threads,
    };
    let feed_base = format!("http://127.0.0.1:{}", opts.port);
    let feed = FeedClient::new(&feed_base, Duration::from_secs(3))?;
    if feed.fetch_state().is_ok() {
        bail!(
            "something already answers on port {} ({feed_base}/api/state): another devnet or \
             validator? Stop it or pass --port",
            opts.port
        );
    }
    let mut validator = supervise::spawn(&child(
        "validator",
        vec![
            "validator".into(),
            "run".into(),
            "--config".into(),
            ws.validator_config().into(),
        ],
    ))
    .context("starting the validator")?;
    println!("devnet: validator started (pid {})", validator.pid());
    wait_for_validator(&mut validator, &feed)?;
    println!("devnet: dashboard {feed_base}/  (feeds: {feed_base}/api/state)");
    let mut miners: Vec<Supervised> = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let name = workspace::miner_name(i as u32);
        println!(
            "devnet: starting {name}: lr {:.1e}, {} steps of {}×{} tokens, seed {}",
            plan.lr, plan.steps, plan.batch_size, plan.seq_len, plan.seed
        );
        let m = supervise::spawn(&child(
            &name,
            vec![
                "miner".into(),
                "run".into(),
                "--config".into(),
                ws.miner_config(i as u32).into(),
            ],
        ))
        .with_context(|| format!("starting {name}"))?;
        println!("devnet: {name} started (pid {})", m.pid());
        miners.push(m);
    }
    println!(
        "devnet: running for {}s (Ctrl-C stops early); logs in {}",
        opts.duration.as_secs(),
        ws.logs().display()
    );

    let names = key_names(&ws);
    let run_start = Instant::now();
    let mut next_summary = Instant::now();
    let mut reported_exit = vec![false; miners.len()];
    let mut stop_reason = format!("--duration {}s reached", opts.duration.as_secs());
    loop {
        if supervise::stop_requested() {
            stop_reason = format!("{} received", supervise::stop_signal_name());
            break;
        }
        if run_start.elapsed() >= opts.duration {
            break;
        }
        if let Some(status) = validator.poll() {
            eprintln!(
                "devnet: the validator exited ({status}); last lines of {}:\n{}",
                validator.log.display(),
                supervise::tail(&validator.log, 20)
            );
            stop_reason = "the validator exited".into();
            break;
        }
        for (i, m) in miners.iter_mut().enumerate() {
            if let Some(status) = m.poll() {
                if !reported_exit[i] {
                    reported_exit[i] = true;
                    eprintln!(
                        "devnet: {} exited ({status}); last lines of {}:\n{}",
                        m.name,
                        m.log.display(),
                        supervise::tail(&m.log, 15)
                    );
                }
            }
        }
        if Instant::now() >= next_summary {
            next_summary = Instant::now() + opts.summary_every;
            let state = feed.fetch_state().ok();
            let progress: Vec<_> = miners
                .iter_mut()
                .enumerate()
                .map(|(i, m)| {
                    let alive = m.poll().is_none();
                    (
                        m.name.clone(),
                        status::miner_progress(&ws.miner_dir(i as u32).join("attempts.jsonl")),
                        alive,
                    )
                })
                .collect();
            println!(
                "{}",
                status::summary_line(run_start.elapsed(), state.as_ref(), &names, &progress)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("devnet: stopping ({stop_reason})");
    for m in miners.iter_mut() {
        m.stop(Duration::from_secs(15));
    }
    validator.stop(Duration::from_secs(20));
    drop(miners);
    drop(validator);

    // The table of reigns, from the event log.
    let state = koth_validator::log::open_read_only(&ws.event_log())
        .and_then(|l| l.load_state())
        .with_context(|| format!("reading the event log {}", ws.event_log().display()))?;
    let mut rows = reigns::rows_of(&state, &names);
    let crowns_this_run = rows.len().saturating_sub(reigns_before.max(1));
    println!(
        "devnet: scoring {} king(s) on {} fixed private holdout windows…",
        rows.len(),
        opts.score_windows
    );
    let secret = std::fs::read(ws.holdout_secret())
        .with_context(|| format!("reading {}", ws.holdout_secret().display()))?;
    let scored = reigns::score_kings(
        &mut rows,
        &workspace::store_url(&ws.root),
        &ws.holdout_bundle(),
        &secret,
        opts.seq_len,
        opts.score_windows,
        &ws.root.join("kings"),
    )
    .context("scoring the kings")?;
    let table = reigns::format_table(&rows, scored);
    let decreasing = reigns::strictly_decreasing(&rows);
    std::fs::write(ws.root.join("reigns.txt"), &table)
        .with_context(|| format!("writing {}", ws.root.join("reigns.txt").display()))?;
    let json = serde_json::json!({
        "scored_windows": scored,
        "score_seed": String::from_utf8_lossy(reigns::SCORE_SEED),
        "crowns_this_run": crowns_this_run,
        "decreasing": decreasing,
        "reigns": rows,
    });
    std::fs::write(
        ws.root.join("reigns.json"),
        serde_json::to_vec_pretty(&json).context("encoding reigns.json")?,
    )
    .with_context(|| format!("writing {}", ws.root.join("reigns.json").display()))?;
    println!("\n{table}");
    println!(
        "devnet: {crowns_this_run} crown(s) in this run ({}s in all); the workspace is kept in {} \
         (reigns.txt, logs/, validator/verdicts/; `koth validator status --config {}`)",
        started.elapsed().as_secs(),
        ws.root.display(),
        ws.validator_config().display()
    );
    Ok(DevnetReport {
        workspace: ws.root.clone(),
        crowns_this_run,
    })
}

/// Wait until the validator answers `/api/state`, or fail with its log if it exits first.
fn wait_for_validator(validator: &mut Supervised, feed: &FeedClient) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = validator.poll() {
            bail!(
                "the validator exited at start ({status}); last lines of {}:\n{}",
                validator.log.display(),
                supervise::tail(&validator.log, 20)
            );
        }
        if feed.fetch_state().is_ok() {
            return Ok(());
        }
        if supervise::stop_requested() {
            bail!("stopped before the validator was up");
        }
        if Instant::now() > deadline {
            bail!(
                "the validator did not answer within 120 s; see {}",
                validator.log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
