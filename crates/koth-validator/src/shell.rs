//! The shell: reads the world (chain, store, eval worker, clock), reports it to the core as
//! events, and carries out the effects the core returns. It decides nothing: which events a
//! chain poll, a crown or weights carried out call for (none when nothing is new) and at which
//! block is koth-hill's [`observe::events`]; the shell reads the state only to hand it to the
//! rules and to publish it.
//!
//! Every outcome is recorded in the event log *before* it is acted on ([`Journal::record`]).
//! Failures are classified: the submission's own fault (bad files, a gate refusal, a verdict)
//! is a gate failure or a verdict; anything on our side (our store cache, the king's files, the
//! duel machinery, a timeout, the chain) is an `InfraFault`, which the core answers by putting
//! the entry back at the head of the queue. Nothing here passes a gate by default.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use koth_chain::{AccountId, Chain, Keypair, Keystore};
use koth_core::{Digest, RejectCode};
use koth_data::Dataset;
use koth_store::{BlockingStore, CheckpointCache, GetOptions, Location, StoreError};

use crate::config::{ResolvedConfig, WorkerSpec};
use crate::duel_run::{finite, run_duel, summary_of, DuelFailure, DuelRunError, DuelSetup};
use crate::event::{clip_text, Effect, EntryId, Event, Gate, Reveal, SeedMaterial, Weight};
use crate::gate_run;
use crate::gates::{self, GateError, TensorInfo, TensorStats, DEFAULT_MAX_SCALE_RATIO};
use crate::http::{FeedHub, SharedFeed};
use crate::journal::{Journal, JournalError};
use crate::log::LoggedEvent;
use crate::observe::{self, Observation};
use koth_core::verdict::BoundsAfterBatch;
use koth_duel::duel::{DuelError, DuelSink, Progress, Stop};
use std::ops::ControlFlow;

#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("chain {chain}: {source}")]
    Chain {
        /// The chain file, or the node and netuid.
        chain: String,
        #[source]
        source: koth_chain::ChainError,
    },
    #[error("validator config {config}: key `key.name`: {message}")]
    Key { config: PathBuf, message: String },
    #[error("validator config {config}: {message}")]
    Setup { config: PathBuf, message: String },
    #[error("{0}")]
    Http(String),
}

/// How a gate ended.
enum GateVerdict {
    Pass,
    Fail(RejectCode, String),
    Infra(String),
}

impl From<GateError> for GateVerdict {
    fn from(e: GateError) -> Self {
        match e {
            GateError::Refused { code, message } => GateVerdict::Fail(code, message),
            GateError::Undecidable(m) => GateVerdict::Infra(format!("gate cannot decide: {m}")),
        }
    }
}

/// What the gates need of the current king, computed once per king.
struct KingFacts {
    digest: Digest,
    dir: PathBuf,
    config: serde_json::Value,
    tensors: std::collections::BTreeMap<String, TensorInfo>,
    stats: Option<Vec<TensorStats>>,
}

/// The running validator.
pub struct Shell {
    cfg: ResolvedConfig,
    journal: Journal,
    chain: Box<dyn Chain>,
    key: Keypair,
    cache: CheckpointCache,
    dataset: Option<Dataset>,
    hub: SharedFeed,
    pending: VecDeque<Effect>,
    king: Option<KingFacts>,
    /// The reign pool of the king, scored once per reign (in-process duels).
    pools: crate::duel_run::PoolCache,
    /// The trainability probe and the fingerprint gate (secret, stored fingerprints).
    optional: gate_run::OptionalGates,
    stop: Arc<AtomicBool>,
    /// Fault injection for the crash test (`KOTH_FAULT_CROWN_DELAY_MS`): a pause between the
    /// king's copy into the validator's store and the logged crown, so that a SIGKILL can land
    /// mid-crown. Zero in production.
    crown_delay: std::time::Duration,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Shell {
    /// Start-up: open the chain, load and check the key (registered, validator permit), open
    /// the data bundle, replay the event log. Any failure stops the validator with a message
    /// naming what is wrong.
    pub fn open(cfg: ResolvedConfig) -> Result<Self, ShellError> {
        let setup = |message: String| ShellError::Setup {
            config: cfg.config_path.clone(),
            message,
        };
        // The duel rule must be one the validator can run: refuse it now, not on every duel.
        let (spec, floor) = crate::duel_run::rule_of(&cfg.competition);
        koth_duel::rule::threshold(floor)
            .map_err(|e| e.to_string())
            .and_then(|thr| {
                koth_duel::rule::RuleTest::new(&spec, thr, Digest::of(b"start-up check"))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| {
                setup(format!(
                    "competition {}: the duel rule cannot run: {e}",
                    cfg.competition_path.display()
                ))
            })?;
        for scope in &cfg.allowed_locations {
            if scope != "s3://" && scope != "file://" {
                scope.parse::<Location>().map_err(|e| {
                    setup(format!(
                        "key `store.allowed_locations`: {scope:?} is not a location: {e}"
                    ))
                })?;
            }
        }
        let chain = cfg.chain.open().map_err(|source| ShellError::Chain {
            chain: cfg.chain.describe(),
            source,
        })?;
        if chain.params().netuid != cfg.competition.netuid {
            return Err(setup(format!(
                "the chain {} is netuid {}, the competition is netuid {}",
                cfg.chain.describe(),
                chain.params().netuid,
                cfg.competition.netuid
            )));
        }
        let key = Keystore::new(&cfg.keystore)
            .load(&cfg.key_name)
            .map_err(|e| ShellError::Key {
                config: cfg.config_path.clone(),
                message: e.to_string(),
            })?;
        let meta = chain.metagraph().map_err(|source| ShellError::Chain {
            chain: cfg.chain.describe(),
            source,
        })?;
        match meta.by_hotkey(&key.account()) {
            None => {
                return Err(ShellError::Key {
                    config: cfg.config_path.clone(),
                    message: format!(
                        "key {:?} ({}) is not registered on the chain {}",
                        cfg.key_name,
                        key.account(),
                        cfg.chain.describe()
                    ),
                })
            }
            Some(n) if !n.validator_permit => {
                return Err(ShellError::Key {
                    config: cfg.config_path.clone(),
                    message: format!(
                    "key {:?} ({}, uid {}) has no validator permit (the subnet owner grants it)",
                    cfg.key_name,
                    key.account(),
                    n.uid
                ),
                })
            }
            Some(_) => {}
        }
        let dataset = match cfg.worker {
            WorkerSpec::InProcess => {
                let ds = Dataset::open(&cfg.bundle_path).map_err(|e| {
                    setup(format!("data bundle {}: {e}", cfg.bundle_path.display()))
                })?;
                if ds.bundle_sha256() != cfg.competition.data.bundle_sha256 {
                    return Err(setup(format!(
                        "data bundle {} hashes to {}, but the competition pins data.bundle_sha256 = {}",
                        cfg.bundle_path.display(),
                        ds.bundle_sha256(),
                        cfg.competition.data.bundle_sha256
                    )));
                }
                Some(ds)
            }
            WorkerSpec::Remote { .. } => None,
        };
        std::fs::create_dir_all(&cfg.work_dir)
            .and_then(|_| std::fs::create_dir_all(cfg.verdict_dir()))
            .map_err(|e| setup(format!("work_dir {}: {e}", cfg.work_dir.display())))?;
        let cache = CheckpointCache::open(&cfg.cache_dir(), cfg.cache_budget_bytes)
            .map_err(|e| setup(format!("cache: {e}")))?;
        let optional =
            gate_run::OptionalGates::open(&cfg.work_dir, &cfg.competition, &cfg.device, &cfg.dtype)
                .map_err(|e| setup(format!("gates: {e}")))?;
        let (journal, effects) = Journal::open(&cfg.log_path(), &cfg.competition)?;
        let hub = FeedHub::new(journal.state().clone(), cfg.log_path());
        Ok(Shell {
            cfg,
            journal,
            chain,
            key,
            cache,
            dataset,
            hub,
            pending: effects.into(),
            king: None,
            pools: Default::default(),
            optional,
            stop: Arc::new(AtomicBool::new(false)),
            crown_delay: std::time::Duration::from_millis(
                std::env::var("KOTH_FAULT_CROWN_DELAY_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            ),
        })
    }

    pub fn feed(&self) -> SharedFeed {
        self.hub.clone()
    }

    /// Set to stop the loop after the current step.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Log an event, publish it to the feeds, and queue the effects it causes.
    fn record(&mut self, event: Event) -> Result<(), ShellError> {
        let effects = self.journal.record(event.clone())?;
        let logged = LoggedEvent {
            seq: self.journal.log().len() as i64,
            at_unix_ms: now_ms(),
            event,
        };
        self.hub.publish(self.journal.state().clone(), logged);
        self.pending.extend(effects);
        Ok(())
    }

    /// Run until the stop flag is set. Returns only on a log error (the validator must stop:
    /// it can no longer record before acting).
    pub fn run(&mut self) -> Result<(), ShellError> {
        while !self.stop.load(Ordering::SeqCst) {
            self.step()?;
            let until = Instant::now() + self.cfg.poll_interval;
            while Instant::now() < until && !self.stop.load(Ordering::SeqCst) {
                std::thread::sleep(
                    self.cfg
                        .poll_interval
                        .min(std::time::Duration::from_millis(50)),
                );
            }
        }
        Ok(())
    }

    /// One round: poll the chain, then carry out every effect (and those they cause).
    pub fn step(&mut self) -> Result<(), ShellError> {
        self.poll_logged()?;
        let mut last_poll = Instant::now();
        while let Some(effect) = self.pending.pop_front() {
            if self.stop.load(Ordering::SeqCst) {
                self.pending.push_front(effect);
                break;
            }
            self.carry_out(effect)?;
            // A long queue is worked through in one step; keep reading the chain meanwhile
            // (new reveals, ticks that end a pause or make weights due).
            if last_poll.elapsed() >= self.cfg.poll_interval {
                self.poll_logged()?;
                last_poll = Instant::now();
            }
        }
        Ok(())
    }

    /// Poll the chain and log what the rules make of it ([`observe::events`]: nothing when
    /// nothing is new).
    fn poll_logged(&mut self) -> Result<(), ShellError> {
        match self.read_chain() {
            Ok(observation) => self.observed(observation)?,
            // The chain being unreachable is nobody's verdict: try again next poll.
            Err(e) => tracing::warn!("chain poll failed (will retry): {e}"),
        }
        Ok(())
    }

    /// Record the events the rules derive from what the shell observed, in order.
    fn observed(&mut self, observation: Observation) -> Result<(), ShellError> {
        for event in observe::events(self.journal.state(), observation) {
            self.record(event)?;
        }
        Ok(())
    }

    /// The chain head and the commitments revealed at or before it (known ones included).
    fn read_chain(&self) -> Result<Observation, koth_chain::ChainError> {
        let head = self.chain.block()?;
        let revealed = self.chain.revealed_commitments()?;
        let meta = self.chain.metagraph()?;
        let mut reveals = Vec::new();
        for r in revealed {
            if r.reveal_block > head.number {
                continue;
            }
            let Some(hash) = self.chain.block_hash(r.reveal_block)? else {
                continue;
            };
            // The signer is the submitter; its uid is what the metagraph says now.
            let uid = meta
                .by_hotkey(&r.hotkey)
                .filter(|n| n.uid == r.uid)
                .map(|n| n.uid);
            reveals.push(Reveal {
                hotkey: r.hotkey.to_ss58(),
                uid,
                payload: r.payload,
                commit_block: r.commit_block,
                reveal_block: r.reveal_block,
                block_hash: hash.to_string(),
            });
        }
        Ok(Observation::Chain {
            head: head.number,
            reveals,
        })
    }

    fn carry_out(&mut self, effect: Effect) -> Result<(), ShellError> {
        match effect {
            Effect::RunGate {
                entry,
                gate,
                challenger,
                location,
                king,
                king_location,
                references,
            } => {
                self.record(Event::GateStarted { entry, gate })?;
                let verdict = self.run_gate(
                    gate,
                    &challenger,
                    &location,
                    (&king, king_location.as_deref()),
                    &references,
                );
                let event = match verdict {
                    GateVerdict::Pass => Event::GatePassed { entry, gate },
                    GateVerdict::Fail(code, message) => Event::GateFailed {
                        entry,
                        gate,
                        code,
                        message: clip_text(&message),
                    },
                    GateVerdict::Infra(reason) => {
                        tracing::warn!(entry, gate = gate.name(), "infra fault: {reason}");
                        Event::InfraFault {
                            entry,
                            reason: clip_text(&reason),
                        }
                    }
                };
                self.record(event)
            }
            Effect::StartDuel {
                entry,
                challenger,
                location,
                king,
                king_location,
                seed,
                king_pool,
            } => self.duel(
                entry,
                (challenger, location),
                (king, king_location),
                seed,
                king_pool,
            ),
            Effect::Crown {
                entry,
                digest,
                hotkey,
                reign,
                location,
                previous,
            } => self.crown(entry, (digest, location), hotkey, reign, previous),
            Effect::SetWeights { weights } => self.set_weights(weights),
            Effect::Answer { entry, hotkey, .. } => {
                tracing::info!(entry, hotkey, "answered");
                Ok(())
            }
        }
    }

    /// The king's directory in the cache, fetched from `location` (which the core's effect
    /// carries) if needed.
    fn king_dir(
        &mut self,
        king: &Digest,
        location: Option<&str>,
    ) -> Result<PathBuf, KingUnavailable> {
        if let Some(k) = &self.king {
            if &k.digest == king && k.dir.is_dir() {
                return Ok(k.dir.clone());
            }
        }
        let unavailable = |reason: String| KingUnavailable {
            king: *king,
            reason,
        };
        let location = location.ok_or_else(|| unavailable("no location is known for it".into()))?;
        // The king gets twice a challenger's deadline (the genesis king is not held to the size
        // cap); a store that trickles bytes cannot hold the loop.
        let king_deadline = koth_store::fetch_deadline(
            self.cfg.competition.intake.size_cap_bytes.saturating_mul(2),
        );
        let store = open_store(location, &self.cfg.s3)
            .map_err(|e| unavailable(format!("opening the store {location}: {e}")))?
            .with_deadline(king_deadline);
        let dir = self
            .cache
            .fetch(
                &store,
                king,
                &GetOptions {
                    max_total_bytes: koth_store::DEFAULT_MAX_TOTAL_BYTES,
                    max_bytes_per_sec: None,
                },
            )
            .map_err(|e| unavailable(format!("fetching it from {location}: {e}")))?;
        let _ = self.cache.pin(king);
        let config = gate_run::read_king_config(&dir)
            .map_err(|e| unavailable(format!("its config: {e}")))?;
        let files =
            gate_run::parse_headers(&dir).map_err(|e| unavailable(format!("its tensors: {e}")))?;
        let tensors =
            gate_run::index_of(&files).map_err(|e| unavailable(format!("its tensors: {e}")))?;
        self.king = Some(KingFacts {
            digest: *king,
            dir: dir.clone(),
            config,
            tensors,
            stats: None,
        });
        Ok(dir)
    }

    fn run_gate(
        &mut self,
        gate: Gate,
        challenger: &Digest,
        location: &str,
        (king, king_location): (&Digest, Option<&str>),
        references: &[(Digest, String)],
    ) -> GateVerdict {
        if let Err(e) = self.king_dir(king, king_location) {
            return GateVerdict::Infra(e.to_string());
        }
        let chal_dir = self.cache.path_of(challenger);
        if gate != Gate::Fetch && !chal_dir.is_dir() {
            return GateVerdict::Infra(format!(
                "the fetched challenger {challenger} is no longer in the cache"
            ));
        }
        let Some(k) = self.king.as_ref() else {
            return GateVerdict::Infra("the king's facts are missing".into());
        };
        match gate {
            Gate::Fetch => self.fetch(challenger, location),
            Gate::Config => match gate_run::read_challenger_config(&chal_dir) {
                Ok(c) => gates::check_config(&k.config, &c, &self.cfg.competition.architecture)
                    .map_or_else(GateVerdict::from, |_| GateVerdict::Pass),
                Err(e) => e.into(),
            },
            Gate::Tensors => {
                let result = gate_run::parse_headers(&chal_dir)
                    .and_then(|files| gate_run::index_of(&files))
                    .and_then(|index| {
                        gates::check_tensors(
                            &k.tensors,
                            &index,
                            &self.cfg.competition.architecture.allowed_dtypes,
                        )
                    });
                result.map_or_else(GateVerdict::from, |_| GateVerdict::Pass)
            }
            Gate::Weights => {
                if k.stats.is_none() {
                    let stats = gate_run::parse_headers(&k.dir)
                        .and_then(|f| gate_run::tensor_stats(&f))
                        .map_err(|e| format!("the king's weights: {e}"));
                    match stats {
                        Ok(s) => {
                            if let Some(k) = self.king.as_mut() {
                                k.stats = Some(s);
                            }
                        }
                        Err(e) => return GateVerdict::Infra(e),
                    }
                }
                let Some(king_stats) = self.king.as_ref().and_then(|k| k.stats.as_ref()) else {
                    return GateVerdict::Infra("the king's statistics are missing".into());
                };
                let result = gate_run::parse_headers(&chal_dir)
                    .and_then(|f| gate_run::tensor_stats(&f))
                    .and_then(|c| gates::check_weights(king_stats, &c, DEFAULT_MAX_SCALE_RATIO));
                result.map_or_else(GateVerdict::from, |_| GateVerdict::Pass)
            }
            Gate::Trainability => {
                let king = (k.digest, k.dir.clone(), k.config.clone());
                self.optional
                    .trainability(&king.2, (&king.0, &king.1), &chal_dir)
                    .map_or_else(GateVerdict::from, |_| GateVerdict::Pass)
            }
            Gate::Fingerprint => {
                let king = (k.digest, k.dir.clone(), k.config.clone());
                let result = self.optional.fingerprint(
                    references,
                    &king.2,
                    (&king.0, &king.1),
                    (challenger, &chal_dir),
                    &self.cache,
                );
                result.map_or_else(GateVerdict::from, |_| GateVerdict::Pass)
            }
            // Not a gate of the pipeline: the core never asks for it.
            Gate::Duel => GateVerdict::Infra("the duel is not run as a gate".into()),
        }
    }

    /// Gate 2: the location is allowed, the manifest hashes to the digest, passes the file
    /// policy and the size cap, and every file downloads and verifies (cap enforced again
    /// while streaming).
    fn fetch(&mut self, digest: &Digest, location: &str) -> GateVerdict {
        let unreachable = |m: String| GateVerdict::Fail(RejectCode::ManifestUnreachable, m);
        let parsed: Location = match location.parse() {
            Ok(l) => l,
            Err(e) => return unreachable(e.to_string()),
        };
        if !location_allowed(&parsed, &self.cfg.allowed_locations) {
            return unreachable(format!(
                "location {location:?} is not one this validator fetches from (allowed: {:?})",
                self.cfg.allowed_locations
            ));
        }
        // A wall-clock limit for the whole fetch (a store that trickles bytes is a timeout:
        // ours, retried, resumed, bounded by `infra_exhausted`).
        let deadline = koth_store::fetch_deadline(self.cfg.competition.intake.size_cap_bytes);
        let store = match BlockingStore::open(&parsed, &self.cfg.s3) {
            Ok(s) => s.with_deadline(deadline),
            Err(e @ StoreError::BadLocation { .. }) => return unreachable(e.to_string()),
            Err(e) => return GateVerdict::Infra(format!("opening store {location}: {e}")),
        };
        let cap = self.cfg.competition.intake.size_cap_bytes;
        let manifest = match store.fetch_manifest(digest, u64::MAX) {
            Ok(m) => m,
            Err(e) => return classify_store_error(e, location),
        };
        let files = manifest.files();
        if let Err(e) = gates::check_files(files.iter().map(|f| f.path.as_str())) {
            return e.into();
        }
        if let Err(e) = gates::check_size(files.iter().map(|f| f.size), cap) {
            return e.into();
        }
        let opts = GetOptions {
            max_total_bytes: cap,
            max_bytes_per_sec: None,
        };
        match self.cache.fetch(&store, digest, &opts) {
            Ok(_) => GateVerdict::Pass,
            Err(e) => classify_store_error(e, location),
        }
    }

    fn duel(
        &mut self,
        entry: EntryId,
        (challenger, challenger_location): (Digest, String),
        (king, king_location): (Digest, Option<String>),
        seed: SeedMaterial,
        king_pool: Option<crate::event::PoolSpec>,
    ) -> Result<(), ShellError> {
        self.record(Event::DuelStarted {
            entry,
            king,
            seed: seed.clone(),
        })?;
        let king_dir = match self.king_dir(&king, king_location.as_deref()) {
            Ok(d) => d,
            Err(e) => {
                return self.record(Event::InfraFault {
                    entry,
                    reason: clip_text(&e.to_string()),
                })
            }
        };
        let chal_dir = self.cache.path_of(&challenger);
        let worker = self.cfg.worker.clone();
        let result = match &worker {
            WorkerSpec::InProcess => self.duel_in_process(
                entry,
                (&king, &king_dir),
                (&challenger, &chal_dir),
                &seed,
                king_pool.as_ref(),
            ),
            WorkerSpec::Remote { url, token } => {
                let (url, token) = (url.clone(), token.clone());
                match king_location {
                    // The worker fetches both models itself: it needs to know where the king is.
                    None => Ok(DuelEnd::Failed(DuelFailure::Infra(format!(
                        "no location is known for the king {king}; a remote worker cannot fetch it"
                    )))),
                    Some(king_location) => {
                        let request = crate::worker::DuelRequest {
                            competition_sha256: self.cfg.competition.sha256(),
                            king,
                            king_location,
                            challenger,
                            challenger_location,
                            seed: seed.clone(),
                            king_pool,
                        };
                        self.duel_remote(entry, &url, &token, &request)
                    }
                }
            }
        };
        match result {
            Ok(DuelEnd::Failed(DuelFailure::Challenger(message))) => {
                tracing::info!(entry, "the challenger failed in the duel: {message}");
                self.record(Event::DuelRefused {
                    entry,
                    code: RejectCode::WeightsInvalid,
                    message: clip_text(&message),
                })
            }
            Ok(DuelEnd::Verdict(verdict)) => {
                let holdout = match &worker {
                    WorkerSpec::InProcess => self.cfg.holdout_secret.as_ref(),
                    WorkerSpec::Remote { .. } => None,
                };
                let bytes = match crate::duel_run::verdict_bytes(&verdict, holdout) {
                    Ok(b) => b,
                    Err(e) => {
                        return self.record(Event::InfraFault {
                            entry,
                            reason: clip_text(&format!("encoding the verdict: {e}")),
                        })
                    }
                };
                let digest = Digest::of(&bytes);
                let path = self
                    .cfg
                    .verdict_dir()
                    .join(format!("{}-{entry}.json", challenger.hex()));
                if let Err(e) = koth_core::fsutil::write_atomic(&path, &bytes) {
                    return self.record(Event::InfraFault {
                        entry,
                        reason: clip_text(&e.to_string()),
                    });
                }
                let summary = summary_of(&verdict.outcome, digest, path.display().to_string());
                self.record(Event::DuelFinished {
                    entry,
                    verdict: summary,
                })
            }
            Ok(DuelEnd::Failed(DuelFailure::Infra(reason))) => {
                tracing::warn!(entry, "infra fault in the duel: {reason}");
                self.record(Event::InfraFault {
                    entry,
                    reason: clip_text(&reason),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// How the duel ended, or `Err` when logging its progress failed.
    fn duel_in_process(
        &mut self,
        entry: EntryId,
        (king, king_dir): (&Digest, &Path),
        (challenger, chal_dir): (&Digest, &Path),
        seed: &SeedMaterial,
        king_pool: Option<&crate::event::PoolSpec>,
    ) -> Result<DuelEnd, ShellError> {
        let Some(dataset) = self.dataset.take() else {
            return Ok(DuelEnd::Failed(DuelFailure::Infra(
                "no data bundle is open for in-process duels".into(),
            )));
        };
        let competition = self.cfg.competition.clone();
        let bundle_path = self.cfg.bundle_path.clone();
        let device = self.cfg.device.clone();
        let dtype = self.cfg.dtype.clone();
        let holdout_secret = self.cfg.holdout_secret.as_ref().map(|h| h.bytes().to_vec());
        // The pool cache leaves the shell while the sink borrows it (as the dataset does).
        let pools = std::mem::take(&mut self.pools);
        let result = {
            let setup = DuelSetup {
                competition: &competition,
                dataset: &dataset,
                bundle_path: &bundle_path,
                device: &device,
                dtype: &dtype,
                holdout_secret: holdout_secret.as_deref(),
                king_pool: king_pool.map(|spec| (spec, &pools)),
            };
            let mut sink = DuelProgressSink::new(self, entry);
            run_duel(
                &setup,
                (king, king_dir),
                (challenger, chal_dir),
                seed,
                &mut sink,
            )
        };
        self.dataset = Some(dataset);
        self.pools = pools;
        match result {
            Ok(verdict) => Ok(DuelEnd::Verdict(Box::new(verdict))),
            // Logging the progress failed: that is the shell's own error, not the duel's.
            Err(DuelRunError::Duel(DuelError::Sink(e))) => Err(e),
            Err(e) => Ok(DuelEnd::Failed(DuelFailure::from(e))),
        }
    }

    fn duel_remote(
        &mut self,
        entry: EntryId,
        url: &str,
        token: &str,
        request: &crate::worker::DuelRequest,
    ) -> Result<DuelEnd, ShellError> {
        let timeout = self.cfg.duel_timeout;
        let mut log_error = None;
        let mut sink = DuelProgressSink::new(self, entry);
        let result = crate::worker::remote_duel(url, token, request, timeout, &mut |b| match sink
            .report(b)
        {
            Ok(flow) => flow.is_continue(),
            Err(e) => {
                log_error = Some(e);
                false
            }
        });
        if let Some(e) = log_error {
            return Err(e);
        }
        // The worker is ours but not trusted blindly: a verdict for another request (other
        // digests, seed, competition) or one whose decision does not follow from its own
        // window losses is our fault, never logged as the miner's verdict.
        let checked = result.and_then(|verdict| {
            crate::worker::check_worker_verdict(request, &self.cfg.competition, &verdict)
                .map(|()| verdict)
                .map_err(|e| {
                    DuelFailure::Infra(format!(
                        "worker {url} returned a verdict that does not answer the request: {e}"
                    ))
                })
        });
        Ok(match checked {
            Ok(verdict) => DuelEnd::Verdict(Box::new(verdict)),
            Err(failure) => DuelEnd::Failed(failure),
        })
    }

    /// Copy the new king into the validator's own store and verify the copy (idempotent: a
    /// crown carried out again after a restart copies nothing twice), pin it, read the chain
    /// head, record the crown with the copy's location. `committed` is where the winner
    /// committed it (fetched from only when the cache has lost it).
    fn crown(
        &mut self,
        entry: EntryId,
        (digest, committed): (Digest, String),
        hotkey: String,
        reign: u64,
        previous: Option<Digest>,
    ) -> Result<(), ShellError> {
        let kings = crate::king_store::KingStore {
            location: &self.cfg.king_location,
            s3: &self.cfg.s3,
            size_cap_bytes: self.cfg.competition.intake.size_cap_bytes,
        };
        let copy = match kings.keep(&self.cache, &digest, &committed) {
            Ok(location) => location,
            Err(e) => {
                tracing::warn!(entry, "crowning: {e}");
                return self.record(Event::InfraFault {
                    entry,
                    reason: clip_text(&format!("crowning: {e}")),
                });
            }
        };
        // Fault injection: after the copy, before the crown is logged (a SIGKILL here makes
        // the restarted validator copy again).
        if !self.crown_delay.is_zero() {
            std::thread::sleep(self.crown_delay);
        }
        let head = match self
            .cache
            .pin(&digest)
            .map_err(|e| e.to_string())
            .and_then(|_| self.chain.block().map_err(|e| e.to_string()))
        {
            Ok(h) => h,
            Err(reason) => {
                return self.record(Event::InfraFault {
                    entry,
                    reason: clip_text(&format!("crowning: {reason}")),
                })
            }
        };
        self.observed(Observation::Crowned {
            entry,
            digest,
            hotkey,
            reign,
            head: head.number,
            head_hash: head.hash.to_string(),
            location: copy,
        })?;
        if let Some(old) = previous.filter(|o| o != &digest) {
            let _ = self.cache.unpin(&old);
        }
        Ok(())
    }

    /// Set weights on chain, then record them. A failure is retried on the next tick (the
    /// core asks again until `WeightsSet` arrives).
    fn set_weights(&mut self, weights: Vec<Weight>) -> Result<(), ShellError> {
        let result = (|| -> Result<u64, WeightsNotSet> {
            let meta = self.chain.metagraph()?;
            let mut by_uid = Vec::new();
            for w in &weights {
                let account =
                    AccountId::parse_any(&w.hotkey).map_err(|source| WeightsNotSet::Hotkey {
                        hotkey: w.hotkey.clone(),
                        source,
                    })?;
                if let Some(n) = meta.by_hotkey(&account) {
                    by_uid.push((n.uid, w.weight));
                }
            }
            if by_uid.is_empty() {
                return Err(WeightsNotSet::NoneRegistered);
            }
            self.chain.set_weights(&self.key, &by_uid)?;
            let head = self.chain.block()?;
            Ok(head.number)
        })();
        match result {
            Ok(head) => self.observed(Observation::WeightsSet { head, weights }),
            Err(e) => {
                tracing::warn!("setting weights failed (retried next tick): {e}");
                Ok(())
            }
        }
    }
}

/// The king could not be made ready for a gate or a duel (always our side: an infra fault).
#[derive(Debug, thiserror::Error)]
#[error("the king {king}: {reason}")]
struct KingUnavailable {
    king: Digest,
    reason: String,
}

/// Why weights were not set this time (retried on the next tick).
#[derive(Debug, thiserror::Error)]
enum WeightsNotSet {
    #[error(transparent)]
    Chain(#[from] koth_chain::ChainError),
    #[error("hotkey {hotkey}: {source}")]
    Hotkey {
        hotkey: String,
        #[source]
        source: koth_chain::AddressError,
    },
    #[error("no rewarded hotkey is registered now")]
    NoneRegistered,
}

/// How a duel ended for the shell: a verdict to record, or a failure classified as the
/// challenger's or ours.
enum DuelEnd {
    Verdict(Box<koth_core::verdict::Verdict>),
    Failed(DuelFailure),
}

/// The shell's view of a running duel (in process, or on a remote worker): every batch's bounds
/// are logged and published before the next batch runs; a stop request ends the duel, and so
/// does its deadline (`duel_timeout` from the start).
struct DuelProgressSink<'s> {
    shell: &'s mut Shell,
    entry: EntryId,
    deadline: Instant,
}

impl<'s> DuelProgressSink<'s> {
    fn new(shell: &'s mut Shell, entry: EntryId) -> Self {
        let deadline = Instant::now() + shell.cfg.duel_timeout;
        DuelProgressSink {
            shell,
            entry,
            deadline,
        }
    }

    /// Log the bounds after one batch; then go on unless the shell is stopping.
    fn report(&mut self, bounds: &BoundsAfterBatch) -> Result<ControlFlow<Stop>, ShellError> {
        self.shell.record(progress_event(self.entry, bounds))?;
        Ok(if self.shell.stop.load(Ordering::SeqCst) {
            ControlFlow::Break(Stop::Cancelled)
        } else {
            ControlFlow::Continue(())
        })
    }
}

impl DuelSink for DuelProgressSink<'_> {
    type Error = ShellError;

    fn before_batch(&mut self, _batch: u64) -> Result<ControlFlow<Stop>, ShellError> {
        Ok(if Instant::now() > self.deadline {
            ControlFlow::Break(Stop::DeadlinePassed)
        } else {
            ControlFlow::Continue(())
        })
    }

    fn on_batch(&mut self, progress: &Progress) -> Result<ControlFlow<Stop>, ShellError> {
        self.report(&progress.bounds)
    }
}

/// The `duel_progress` event for the bounds after one batch. A bound the rule has not computed
/// yet stays `None`.
fn progress_event(entry: EntryId, b: &BoundsAfterBatch) -> Event {
    Event::DuelProgress {
        entry,
        n: b.n,
        mu_hat: finite(b.mu_hat),
        lower: b.lower.map(finite),
        upper: b.upper.map(finite),
    }
}

fn open_store(location: &str, s3: &koth_store::S3Options) -> Result<BlockingStore, StoreError> {
    let loc: Location = location.parse()?;
    BlockingStore::open(&loc, s3)
}

/// Whether `location` lies inside one of the validator's `allowed_locations`, compared parsed
/// (scheme, bucket, whole path segments: `file:///ws/store` does not admit
/// `file:///ws/store-evil`). An entry that is only a scheme (`s3://`, `file://`) admits every
/// location of that scheme; an entry that does not parse admits nothing (start-up refuses it).
pub fn location_allowed(location: &Location, allowed: &[String]) -> bool {
    allowed.iter().any(|scope| match scope.as_str() {
        "s3://" => matches!(location, Location::S3 { .. }),
        "file://" => matches!(location, Location::Local(_)),
        scope => scope
            .parse::<Location>()
            .is_ok_and(|scope| location.is_within(&scope)),
    })
}

/// The miner's fault or ours, by the store's own classification ([`StoreError::reject_code`]):
/// everything that follows from the submission's bytes or its chosen location (nothing there,
/// a manifest or blob of the wrong hash or size, refused files, a FIFO or symlink where a file
/// should be, a location that refuses us) is the miner's; a stream cut short while the stored
/// size is right, a network or disk error, a busy cache are ours, retried.
fn classify_store_error(e: StoreError, location: &str) -> GateVerdict {
    let msg = e.to_string();
    match e.reject_code() {
        Some(RejectCode::ManifestUnreachable) => GateVerdict::Fail(
            RejectCode::ManifestUnreachable,
            format!("{msg} (location {location})"),
        ),
        Some(code) => GateVerdict::Fail(code, msg),
        None if matches!(e, StoreError::BadLocation { .. }) => GateVerdict::Fail(
            RejectCode::ManifestUnreachable,
            format!("{msg} (location {location})"),
        ),
        None => GateVerdict::Infra(format!("fetching from {location}: {msg}")),
    }
}

/// `koth validator run`: start-up checks, the HTTP feeds on `cfg.listen`, then the loop until
/// SIGINT/SIGTERM.
pub fn run_validator(cfg: ResolvedConfig) -> Result<(), ShellError> {
    run_validator_with(cfg, |_| axum::Router::new())
}

/// [`run_validator`], serving the routes `extra` builds from the feed (a dashboard's pages)
/// next to the feeds.
pub fn run_validator_with(
    cfg: ResolvedConfig,
    extra: impl FnOnce(SharedFeed) -> axum::Router,
) -> Result<(), ShellError> {
    let listen = cfg.listen;
    let mut shell = Shell::open(cfg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ShellError::Http(format!("starting the HTTP runtime: {e}")))?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(listen))
        .map_err(|e| {
            ShellError::Http(format!(
                "validator config: key `listen`: cannot listen on {listen}: {e}"
            ))
        })?;
    let router = crate::http::api_router(shell.feed()).merge(extra(shell.feed()));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving HTTP");
    }
    runtime.spawn(async move {
        let listener = crate::http::CappedListener::new(listener, crate::http::MAX_CONNECTIONS)
            .with_quiet_limit(crate::http::FEED_QUIET_LIMIT);
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("HTTP server stopped: {e}");
        }
    });
    let stop = shell.stop_flag();
    runtime.spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        stop.store(true, Ordering::SeqCst);
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        stop.store(true, Ordering::SeqCst);
    });
    tracing::info!(%listen, "validator running");
    let result = shell.run();
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}
