//! The duel driver — the one every duel in koth runs through: the validator's (in process and
//! on a remote eval worker), the miner's local judgement and `koth duel run`/`replay`. It draws
//! the windows, streams them in batches through both scorers, feeds the differences to the
//! rule, stops when it decides, and writes everything into a [`Verdict`]. [`replay`] re-runs a
//! verdict and lists every difference.
//!
//! The caller sees the duel through a [`DuelSink`] (in the manner of ripgrep's `Sink`): before
//! each batch (to stop at a deadline) and after it (progress, and stop on request). Errors are
//! typed and say which side failed: [`DuelError::blames`] names the model whose own output
//! ended the duel.

use std::convert::Infallible;
use std::ops::ControlFlow;
use std::time::Instant;

use koth_core::competition::Competition;
use koth_core::verdict::{
    window_losses_digest, BoundsAfterBatch, Decision, DuelModel, EffectFloor, KingPoolRecord,
    Outcome, RuleSpec, SampleRecord, ScoringSetup, ShardHash, SourceScore, Verdict, WindowLosses,
    VERDICT_FORMAT,
};
use koth_core::Digest;
use koth_data::Dataset;

use crate::pool::KingPool;
use crate::rule::{self, FloorError, RuleTest};
use crate::score::{ModelScorer, ScoreError, WindowScorer};
use crate::stats::StatsError;

/// Everything a duel depends on besides the data and the two scorers.
#[derive(Debug, Clone)]
pub struct DuelSetup {
    pub competition_sha256: Option<Digest>,
    pub king: DuelModel,
    pub challenger: DuelModel,
    /// Seed material for the sampler and the bootstrap resampler (docs/PROTOCOL.md: a hash of
    /// the competition, the reveal block hash and the hotkey; any string for a standalone duel).
    pub seed_material: String,
    pub seq_len: u32,
    pub rule: RuleSpec,
    pub effect_floor: EffectFloor,
    /// Windows per scoring batch (and per look of the rule).
    pub batch_size: u32,
    /// dtype, device and code path of the scorers, for the record.
    pub scoring: ScoringSetup,
    /// Where the bundle was read from (informational).
    pub bundle_path: Option<String>,
}

/// Where the scorers run, for the record.
#[derive(Debug, Clone, Copy)]
pub struct Scoring<'a> {
    pub device: &'a str,
    pub dtype: &'a str,
}

impl DuelSetup {
    /// The duel a competition file fixes: its rule with at most `n_max` windows (the
    /// competition's own `n_max` for a validator; a miner judging on its held-out windows passes
    /// how many it has), its sequence length and batch size, scored through
    /// [`ModelScorer`] on `scoring`'s device and dtype, on windows drawn with `seed_material`.
    pub fn from_competition(
        competition: &Competition,
        n_max: u64,
        king: DuelModel,
        challenger: DuelModel,
        seed_material: String,
        scoring: Scoring<'_>,
        bundle_path: Option<String>,
    ) -> Self {
        let (rule, effect_floor) = rule::competition_rule(competition, n_max);
        let batch_size = competition.duel.batch_size.max(1);
        DuelSetup {
            competition_sha256: Some(competition.sha256()),
            king,
            challenger,
            seed_material,
            seq_len: competition.data.seq_len,
            rule,
            effect_floor,
            batch_size,
            scoring: ScoringSetup {
                dtype: scoring.dtype.to_string(),
                device: scoring.device.to_string(),
                batch_size,
                path: ModelScorer::PATH.into(),
            },
            bundle_path,
        }
    }
}

/// What the driver reports after each batch.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// 1-based batch number.
    pub batch: u64,
    pub bounds: BoundsAfterBatch,
    /// Most windows the rule may use.
    pub n_max: u64,
    pub king_mean_loss: f64,
    pub challenger_mean_loss: f64,
    pub elapsed_s: f64,
}

/// Why a sink stopped a duel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Asked to stop (a shutdown, a client gone, a cancel request).
    Cancelled,
    /// The duel's time ran out.
    DeadlinePassed,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stop::Cancelled => "cancelled",
            Stop::DeadlinePassed => "its deadline passed",
        })
    }
}

/// The caller's view of a running duel. `Err` from a method ends the duel with
/// [`DuelError::Sink`] (the validator's sink fails when it cannot log progress).
pub trait DuelSink {
    type Error;

    /// Before batch `batch` (1-based) is scored: `Break` stops the duel there.
    fn before_batch(&mut self, batch: u64) -> Result<ControlFlow<Stop>, Self::Error> {
        let _ = batch;
        Ok(ControlFlow::Continue(()))
    }

    /// After each batch, with the rule's state. `Break` stops the duel, unless the rule has just
    /// decided: a decided duel returns its verdict.
    fn on_batch(&mut self, progress: &Progress) -> Result<ControlFlow<Stop>, Self::Error>;
}

/// A closure as a sink: it sees every batch and returns `false` to cancel.
pub struct ProgressFn<F>(pub F);

impl<F: FnMut(&Progress) -> bool> DuelSink for ProgressFn<F> {
    type Error = Infallible;

    fn on_batch(&mut self, progress: &Progress) -> Result<ControlFlow<Stop>, Infallible> {
        Ok(if (self.0)(progress) {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(Stop::Cancelled)
        })
    }
}

/// One of the two models of a duel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    King,
    Challenger,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::King => "king",
            Side::Challenger => "challenger",
        })
    }
}

/// The end of a sentence about a challenger's non-finite loss: the king's loss on that window.
fn where_the_king(side: &Side, king_loss: &f32) -> String {
    match side {
        Side::Challenger => format!(", where the king's loss is {king_loss:.4}"),
        Side::King => String::new(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DuelError<E = Infallible> {
    /// The sink failed (its own error, passed through).
    #[error("the duel's sink failed: {0}")]
    Sink(E),
    #[error("drawing the sample: {0}")]
    Data(#[from] koth_data::DataError),
    #[error("scoring the {side}: {source}")]
    Score {
        side: Side,
        #[source]
        source: ScoreError,
    },
    /// A loss that is not finite. The king's is checked first: when both are non-finite on a
    /// batch, the king (known to be good) is named, so the challenger is never blamed for what
    /// the machinery or the data did.
    #[error(
        "the {side} produced a non-finite loss ({value}) on window {window} of the duel{}",
        where_the_king(.side, .king_loss)
    )]
    NonFiniteLoss {
        side: Side,
        window: u64,
        value: f32,
        /// The king's loss on that window (finite when `side` is the challenger).
        king_loss: f32,
    },
    #[error(transparent)]
    Stats(#[from] StatsError),
    #[error(transparent)]
    Floor(#[from] FloorError),
    #[error("invalid duel setting: {0}")]
    Setup(String),
    #[error("the duel does not fit the king pool: {0}")]
    Pool(#[from] crate::pool::PoolMismatch),
    #[error("the duel was stopped ({stop}) after {windows} windows")]
    Stopped { stop: Stop, windows: u64 },
}

impl<E> DuelError<E> {
    /// The model whose own output ended the duel: the challenger when its loss is not finite
    /// where the king's is. Everything else (the king, the data, the device, a stop, the sink)
    /// is the caller's machinery, not a model's fault.
    pub fn blames(&self) -> Option<Side> {
        match self {
            DuelError::NonFiniteLoss {
                side: Side::Challenger,
                ..
            } => Some(Side::Challenger),
            _ => None,
        }
    }
}

/// Check one batch's losses (`first` is the duel index of the batch's first window): as many as
/// windows, and finite — the king's first.
fn check_losses<E>(
    first: usize,
    take: usize,
    king: &[f32],
    challenger: &[f32],
) -> Result<(), DuelError<E>> {
    for (side, losses) in [(Side::King, king), (Side::Challenger, challenger)] {
        if losses.len() != take {
            return Err(DuelError::Score {
                side,
                source: ScoreError::Count {
                    expected: take,
                    got: losses.len(),
                },
            });
        }
    }
    for (side, losses) in [(Side::King, king), (Side::Challenger, challenger)] {
        if let Some(i) = losses.iter().position(|v| !v.is_finite()) {
            return Err(DuelError::NonFiniteLoss {
                side,
                window: (first + i) as u64,
                value: losses[i],
                king_loss: king[i],
            });
        }
    }
    Ok(())
}

/// Run a duel. King and challenger are scored on the same batches, in the same layout, one
/// batch at a time: memory for tokens is one batch regardless of N. `sink` is asked before
/// every batch and told after it.
pub fn run_duel<S: DuelSink>(
    dataset: &Dataset,
    setup: &DuelSetup,
    king: &mut dyn WindowScorer,
    challenger: &mut dyn WindowScorer,
    validator_secret: Option<&[u8]>,
    sink: &mut S,
) -> Result<Verdict, DuelError<S::Error>> {
    drive(
        dataset,
        setup,
        KingSide::Live(king),
        challenger,
        validator_secret,
        sink,
    )
}

/// Run a duel against a reign pool (king-loss reuse): only the challenger is scored, on whole
/// pool batches drawn by the duel's own seed; the king's losses are the pool's. Each pool batch
/// is scored by the challenger exactly as the king's was (same windows, same order, same batch
/// size), so a window's king loss is what scoring the king now would give: no kernel has to be
/// batch-invariant. The verdict records the pool ([`KingPoolRecord`]).
pub fn run_duel_pooled<S: DuelSink>(
    dataset: &Dataset,
    setup: &DuelSetup,
    pool: &KingPool,
    challenger: &mut dyn WindowScorer,
    sink: &mut S,
) -> Result<Verdict, DuelError<S::Error>> {
    pool.check_fits(setup)?;
    drive(dataset, setup, KingSide::Pool(pool), challenger, None, sink)
}

/// Where a duel's king losses come from.
enum KingSide<'a> {
    /// Scored in this duel, batch by batch.
    Live(&'a mut dyn WindowScorer),
    /// Scored once per reign, in whole batches ([`KingPool`]).
    Pool(&'a KingPool),
}

fn drive<S: DuelSink>(
    dataset: &Dataset,
    setup: &DuelSetup,
    mut king: KingSide<'_>,
    challenger: &mut dyn WindowScorer,
    validator_secret: Option<&[u8]>,
    sink: &mut S,
) -> Result<Verdict, DuelError<S::Error>> {
    let started = Instant::now();
    if setup.batch_size == 0 {
        return Err(DuelError::Setup("batch size must be at least 1".into()));
    }
    if setup.seq_len < 2 {
        return Err(DuelError::Setup(format!(
            "seq_len must be at least 2 (a next-token loss needs a next token), got {}",
            setup.seq_len
        )));
    }
    let threshold = rule::threshold(setup.effect_floor)?;
    let bootstrap_seed = rule::bootstrap_seed(&setup.seed_material);
    let mut test = RuleTest::new(&setup.rule, threshold, bootstrap_seed)?;
    let n_max = setup.rule.n_max();
    // The windows, in scoring order: a fresh sample, or the pool's batches in the duel's order.
    let (sample_digest, batch_order) = match &king {
        KingSide::Live(_) => (None, Vec::new()),
        KingSide::Pool(pool) => (
            Some(pool.sample_digest),
            pool.batch_order(&setup.seed_material, n_max),
        ),
    };
    let sample = match &king {
        KingSide::Live(_) => dataset.sample(
            setup.seed_material.as_bytes(),
            validator_secret,
            n_max,
            setup.seq_len,
        )?,
        KingSide::Pool(pool) => koth_data::Sample {
            windows: batch_order
                .iter()
                .flat_map(|&b| pool.batch_windows(b).iter().cloned())
                .collect(),
            per_source: Vec::new(),
            digest: koth_data::SampleDigest(pool.sample_digest),
        },
    };
    let sample_digest = sample_digest.unwrap_or(sample.digest.0);
    let seq_len = setup.seq_len as usize;

    let mut king_losses: Vec<f32> = Vec::new();
    let mut challenger_losses: Vec<f32> = Vec::new();
    let mut sources: Vec<u32> = Vec::new();
    let mut bounds = Vec::new();
    let mut tested_sum = 0.0f64;
    let mut batch_no = 0u64;
    let mut used = 0usize;
    while test.remaining() > 0 {
        if let ControlFlow::Break(stop) =
            sink.before_batch(batch_no + 1).map_err(DuelError::Sink)?
        {
            return Err(DuelError::Stopped {
                stop,
                windows: used as u64,
            });
        }
        let take = (setup.batch_size as u64).min(test.remaining()) as usize;
        // A pooled duel scores its challenger on the whole pool batch (the layout the king was
        // scored in) and uses the first `take` windows of it.
        let scored = match &king {
            KingSide::Live(_) => take,
            KingSide::Pool(_) => setup.batch_size as usize,
        };
        let windows = sample.windows.get(used..used + scored).ok_or_else(|| {
            DuelError::Setup("the sample has fewer windows than the rule needs".into())
        })?;
        let tokens = dataset.read_windows(windows)?;
        let k = match &mut king {
            KingSide::Live(scorer) => {
                scorer
                    .score(&tokens, take, seq_len)
                    .map_err(|source| DuelError::Score {
                        side: Side::King,
                        source,
                    })?
            }
            KingSide::Pool(pool) => {
                pool.batch_losses(batch_order[batch_no as usize])[..take].to_vec()
            }
        };
        let mut c = challenger
            .score(&tokens, scored, seq_len)
            .map_err(|source| DuelError::Score {
                side: Side::Challenger,
                source,
            })?;
        if c.len() == scored {
            c.truncate(take);
        }
        let windows = &windows[..take];
        check_losses(used, take, &k, &c)?;
        let tested: Vec<f64> = k
            .iter()
            .zip(&c)
            .map(|(&kl, &cl)| {
                rule::tested_value(
                    setup.effect_floor,
                    f64::from(kl) - f64::from(cl),
                    f64::from(kl),
                )
            })
            .collect();
        // Summed window by window, in order: the record's numbers are a function of the
        // per-window losses alone.
        for &t in &tested {
            tested_sum += t;
        }
        let look = test.update(&tested)?;
        king_losses.extend_from_slice(&k);
        challenger_losses.extend_from_slice(&c);
        sources.extend(windows.iter().map(|w| w.source));
        used += take;
        batch_no += 1;
        bounds.push(look);
        let flow = sink
            .on_batch(&Progress {
                batch: batch_no,
                bounds: look,
                n_max,
                king_mean_loss: mean_f32(&king_losses),
                challenger_mean_loss: mean_f32(&challenger_losses),
                elapsed_s: started.elapsed().as_secs_f64(),
            })
            .map_err(DuelError::Sink)?;
        if let ControlFlow::Break(stop) = flow {
            if !look.decision.is_final() {
                return Err(DuelError::Stopped {
                    stop,
                    windows: used as u64,
                });
            }
        }
    }

    let source_names: Vec<String> = dataset
        .bundle()
        .sources
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let per_source = per_source_scores(&source_names, &sources, &king_losses, &challenger_losses);
    let shards = dataset
        .manifests()
        .flat_map(|m| {
            m.shards.iter().map(move |s| ShardHash {
                source: m.source.clone(),
                name: s.path.clone(),
                sha256: s.sha256,
                tokens: s.tokens,
            })
        })
        .collect();
    let digest = window_losses_digest(&king_losses, &challenger_losses, &sources)
        .ok_or_else(|| DuelError::Setup("loss vectors differ in length".into()))?;
    let last = bounds.last().copied();
    let n = used.max(1) as f64;
    let outcome = Outcome {
        decision: test.decision(),
        n_used: used as u64,
        // μ̂ = mean king loss − mean challenger loss (each an in-order f64 sum of the f32
        // losses over n).
        mu_hat: mean_f32(&king_losses) - mean_f32(&challenger_losses),
        tested_mean: tested_sum / n,
        threshold,
        lower: last.and_then(|b| b.lower),
        upper: last.and_then(|b| b.upper),
        king_mean_loss: mean_f32(&king_losses),
        challenger_mean_loss: mean_f32(&challenger_losses),
    };
    Ok(Verdict {
        format: VERDICT_FORMAT.into(),
        competition_sha256: setup.competition_sha256,
        king: setup.king.clone(),
        challenger: setup.challenger.clone(),
        sample: SampleRecord {
            seed_material: setup.seed_material.clone(),
            sample_digest,
            bundle_sha256: dataset.bundle_sha256(),
            bundle_path: setup.bundle_path.clone(),
            seq_len: setup.seq_len,
            shards,
        },
        rule: setup.rule,
        effect_floor: setup.effect_floor,
        bootstrap_seed: matches!(setup.rule, RuleSpec::Bootstrap { .. }).then_some(bootstrap_seed),
        scoring: setup.scoring.clone(),
        outcome,
        bounds,
        per_source,
        windows: WindowLosses {
            king: king_losses,
            challenger: challenger_losses,
            source: sources,
            sources: source_names,
            digest,
        },
        king_pool: match &king {
            KingSide::Live(_) => None,
            KingSide::Pool(pool) => Some(KingPoolRecord {
                seed_material: pool.seed_material.clone(),
                sample_digest: pool.sample_digest,
                windows: pool.windows.len() as u64,
                batch_size: pool.batch_size,
                digest: pool.digest,
                batch_order: batch_order[..batch_no as usize].to_vec(),
            }),
        },
        code_version: crate::CODE_VERSION.into(),
        wall_time_s: started.elapsed().as_secs_f64(),
    })
}

fn mean_f32(v: &[f32]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64
}

fn per_source_scores(names: &[String], source: &[u32], k: &[f32], c: &[f32]) -> Vec<SourceScore> {
    names
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let idx: Vec<usize> = (0..source.len())
                .filter(|&j| source[j] == i as u32)
                .collect();
            if idx.is_empty() {
                return None;
            }
            let ks: Vec<f32> = idx.iter().map(|&j| k[j]).collect();
            let cs: Vec<f32> = idx.iter().map(|&j| c[j]).collect();
            let (km, cm) = (mean_f32(&ks), mean_f32(&cs));
            Some(SourceScore {
                source: name.clone(),
                n: idx.len() as u64,
                king_mean_loss: km,
                challenger_mean_loss: cm,
                mean_diff: km - cm,
            })
        })
        .collect()
}

/// The setup a verdict was produced with (for replay).
pub fn setup_of(verdict: &Verdict) -> DuelSetup {
    DuelSetup {
        competition_sha256: verdict.competition_sha256,
        king: verdict.king.clone(),
        challenger: verdict.challenger.clone(),
        seed_material: verdict.sample.seed_material.clone(),
        seq_len: verdict.sample.seq_len,
        rule: verdict.rule,
        effect_floor: verdict.effect_floor,
        batch_size: verdict.scoring.batch_size,
        scoring: verdict.scoring.clone(),
        bundle_path: verdict.sample.bundle_path.clone(),
    }
}

/// Every way `again` differs from `recorded`, as sentences; empty when the replay reproduces
/// the verdict bit for bit (wall time and code version aside).
pub fn compare(recorded: &Verdict, again: &Verdict) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |what: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{what}: recorded {a}, replayed {b}"));
        }
    };
    check("format", recorded.format.clone(), again.format.clone());
    check(
        "bundle sha256",
        recorded.sample.bundle_sha256.to_string(),
        again.sample.bundle_sha256.to_string(),
    );
    check(
        "sample digest",
        recorded.sample.sample_digest.to_string(),
        again.sample.sample_digest.to_string(),
    );
    check(
        "shard hashes",
        format!("{:?}", recorded.sample.shards),
        format!("{:?}", again.sample.shards),
    );
    check(
        "decision",
        format!("{:?}", recorded.outcome.decision),
        format!("{:?}", again.outcome.decision),
    );
    check(
        "windows used",
        recorded.outcome.n_used.to_string(),
        again.outcome.n_used.to_string(),
    );
    check(
        "bootstrap seed",
        format!("{:?}", recorded.bootstrap_seed),
        format!("{:?}", again.bootstrap_seed),
    );
    check(
        "window-loss digest",
        recorded.windows.digest.to_string(),
        again.windows.digest.to_string(),
    );
    let (rw, aw) = (&recorded.windows, &again.windows);
    for (name, a, b) in [
        ("king", &rw.king, &aw.king),
        ("challenger", &rw.challenger, &aw.challenger),
    ] {
        if a.len() != b.len() {
            out.push(format!(
                "{name} losses: recorded {} windows, replayed {}",
                a.len(),
                b.len()
            ));
        } else if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits()) {
            let count = (0..a.len())
                .filter(|&i| a[i].to_bits() != b[i].to_bits())
                .count();
            out.push(format!(
                "{name} losses differ on {count} windows, first window {i}: recorded {:e}, replayed {:e}",
                a[i], b[i]
            ));
        }
    }
    if rw.source != aw.source {
        out.push("window sources differ".into());
    }
    if recorded.king_pool != again.king_pool {
        out.push(format!(
            "king pool: recorded {:?}, replayed {:?}",
            recorded.king_pool, again.king_pool
        ));
    }
    let bits = |x: Option<f64>| x.map(f64::to_bits);
    if recorded.bounds.len() != again.bounds.len() {
        out.push(format!(
            "bounds: recorded {} batches, replayed {}",
            recorded.bounds.len(),
            again.bounds.len()
        ));
    } else if let Some((i, (a, b))) =
        recorded
            .bounds
            .iter()
            .zip(&again.bounds)
            .enumerate()
            .find(|(_, (a, b))| {
                a.n != b.n
                    || a.mu_hat.to_bits() != b.mu_hat.to_bits()
                    || bits(a.lower) != bits(b.lower)
                    || bits(a.upper) != bits(b.upper)
                    || a.decision != b.decision
            })
    {
        out.push(format!(
            "bounds after batch {}: recorded {a:?}, replayed {b:?}",
            i + 1
        ));
    }
    let o = |v: &Verdict| {
        let x = &v.outcome;
        [
            x.mu_hat.to_bits(),
            x.tested_mean.to_bits(),
            x.threshold.to_bits(),
            x.king_mean_loss.to_bits(),
            x.challenger_mean_loss.to_bits(),
        ]
    };
    if o(recorded) != o(again)
        || bits(recorded.outcome.lower) != bits(again.outcome.lower)
        || bits(recorded.outcome.upper) != bits(again.outcome.upper)
    {
        out.push(format!(
            "outcome numbers: recorded {:?}, replayed {:?}",
            recorded.outcome, again.outcome
        ));
    }
    if recorded.per_source != again.per_source {
        out.push(format!(
            "per-source scores: recorded {:?}, replayed {:?}",
            recorded.per_source, again.per_source
        ));
    }
    out
}

/// A verdict record that is not one this koth can replay: which field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("verdict {field}: {problem}")]
pub struct InvalidVerdict {
    /// The field of the record, e.g. `outcome.n_used`.
    pub field: &'static str,
    pub problem: String,
}

impl InvalidVerdict {
    fn new(field: &'static str, problem: String) -> Self {
        InvalidVerdict { field, problem }
    }
}

/// Structural checks on a verdict read from a file, before it is replayed.
pub fn check_verdict(v: &Verdict) -> Result<(), InvalidVerdict> {
    if v.format != VERDICT_FORMAT {
        return Err(InvalidVerdict::new(
            "format",
            format!(
                "format is {:?}, this koth reads {VERDICT_FORMAT:?}",
                v.format
            ),
        ));
    }
    let w = &v.windows;
    if w.king.len() != w.challenger.len() || w.king.len() != w.source.len() {
        return Err(InvalidVerdict::new(
            "windows",
            format!(
                "window vectors differ in length (king {}, challenger {}, source {})",
                w.king.len(),
                w.challenger.len(),
                w.source.len()
            ),
        ));
    }
    if window_losses_digest(&w.king, &w.challenger, &w.source) != Some(w.digest) {
        return Err(InvalidVerdict::new(
            "windows.digest",
            "the window losses do not hash to the recorded digest".to_string(),
        ));
    }
    if w.king.len() as u64 != v.outcome.n_used {
        return Err(InvalidVerdict::new(
            "outcome.n_used",
            format!(
                "{} windows recorded but the outcome says {} were used",
                w.king.len(),
                v.outcome.n_used
            ),
        ));
    }
    if v.scoring.batch_size == 0 {
        return Err(InvalidVerdict::new(
            "scoring.batch_size",
            "scoring batch size is 0".to_string(),
        ));
    }
    check_rule_bounds(&v.rule)?;
    if v.outcome.n_used > v.rule.n_max() {
        return Err(InvalidVerdict::new(
            "outcome.n_used",
            format!(
                "the outcome says {} windows were used, but the rule allows at most {}",
                v.outcome.n_used,
                v.rule.n_max()
            ),
        ));
    }
    if v.sample.seq_len < 2 {
        return Err(InvalidVerdict::new(
            "sample.seq_len",
            format!(
                "sample seq_len is {}; a next-token loss needs at least 2",
                v.sample.seq_len
            ),
        ));
    }
    if !matches!(v.outcome.decision, Decision::Crown | Decision::KeepKing(_)) {
        return Err(InvalidVerdict::new(
            "outcome.decision",
            "the recorded duel was never decided".to_string(),
        ));
    }
    if let Some(pool) = &v.king_pool {
        check_pool_record(pool, v)?;
    }
    Ok(())
}

/// A pooled verdict's pool within what a replay may rebuild: a whole number of batches of the
/// duel's batch size, at most [`crate::pool::MAX_POOL_WINDOWS`] windows, and a batch order that
/// names real pool batches, one per look.
fn check_pool_record(pool: &KingPoolRecord, v: &Verdict) -> Result<(), InvalidVerdict> {
    let bs = u64::from(pool.batch_size);
    if pool.batch_size != v.scoring.batch_size {
        return Err(InvalidVerdict::new(
            "king_pool.batch_size",
            format!(
                "the pool's batches hold {} windows, the duel's {}",
                pool.batch_size, v.scoring.batch_size
            ),
        ));
    }
    if pool.windows == 0
        || pool.windows > crate::pool::MAX_POOL_WINDOWS
        || !pool.windows.is_multiple_of(bs)
    {
        return Err(InvalidVerdict::new(
            "king_pool.windows",
            format!(
                "a pool of {} windows is not a whole number of batches of {bs} within 1..={}",
                pool.windows,
                crate::pool::MAX_POOL_WINDOWS
            ),
        ));
    }
    let batches = pool.windows / bs;
    if pool.batch_order.len() != v.bounds.len()
        || pool.batch_order.iter().any(|&b| u64::from(b) >= batches)
    {
        return Err(InvalidVerdict::new(
            "king_pool.batch_order",
            format!(
                "the batch order must name one of the pool's {batches} batches per look ({} looks)",
                v.bounds.len()
            ),
        ));
    }
    Ok(())
}

/// The rule's sizes within what a competition file may set: a replay allocates the sample
/// (n_max windows) and the bootstrap's resample means before it scores anything, so a record
/// with a crafted size is refused here rather than by the allocator.
pub fn check_rule_bounds(rule: &RuleSpec) -> Result<(), InvalidVerdict> {
    use koth_core::competition::{MAX_BOOTSTRAP_RESAMPLES, MAX_N_MAX};
    let n_max = rule.n_max();
    if n_max == 0 || n_max > u64::from(MAX_N_MAX) {
        return Err(InvalidVerdict::new(
            "rule.n_max",
            format!("rule n_max is {n_max}; a duel scores between 1 and {MAX_N_MAX} windows"),
        ));
    }
    match *rule {
        RuleSpec::Sequential {
            min_n, target_n, ..
        } => {
            if min_n < 2 || min_n > n_max {
                return Err(InvalidVerdict::new(
                    "rule.min_n",
                    format!("sequential rule min_n is {min_n}; it must lie in 2..=n_max ({n_max})"),
                ));
            }
            if target_n == 0 || target_n > u64::from(MAX_N_MAX) {
                return Err(InvalidVerdict::new(
                    "rule.target_n",
                    format!(
                        "sequential rule target_n is {target_n}; it must lie in 1..={MAX_N_MAX}"
                    ),
                ));
            }
        }
        RuleSpec::Bootstrap { resamples, .. } => {
            if !(2..=MAX_BOOTSTRAP_RESAMPLES).contains(&resamples) {
                return Err(InvalidVerdict::new(
                    "rule.resamples",
                    format!(
                "bootstrap resamples is {resamples}; it must lie in 2..={MAX_BOOTSTRAP_RESAMPLES}"
                ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_finite_loss_blames_the_challenger_only_where_the_king_is_finite() {
        assert!(check_losses::<Infallible>(0, 2, &[1.0, 2.0], &[1.5, 2.5]).is_ok());
        let e =
            check_losses::<Infallible>(64, 3, &[1.0, 2.0, 3.0], &[1.0, f32::NAN, 3.0]).unwrap_err();
        assert_eq!(e.blames(), Some(Side::Challenger));
        let m = e.to_string();
        assert!(m.contains("challenger") && m.contains("window 65"), "{m}");
        assert!(m.contains("NaN") && m.contains("2.0000"), "{m}");
        let e = check_losses::<Infallible>(0, 2, &[1.0, f32::INFINITY], &[1.0, 2.0]).unwrap_err();
        assert_eq!(
            e.blames(),
            None,
            "the king's failure is the caller's machinery"
        );
        assert!(e.to_string().contains("the king produced"), "{e}");
        // Both non-finite: the king is named, never the challenger.
        let e = check_losses::<Infallible>(0, 1, &[f32::NAN], &[f32::NAN]).unwrap_err();
        assert!(matches!(
            e,
            DuelError::NonFiniteLoss {
                side: Side::King,
                ..
            }
        ));
        let e = check_losses::<Infallible>(0, 1, &[1.0], &[]).unwrap_err();
        assert!(matches!(
            e,
            DuelError::Score {
                side: Side::Challenger,
                source: ScoreError::Count { .. }
            }
        ));
        assert_eq!(e.blames(), None);
    }
}
