//! One attempt, from king to verdict, and the loop of attempts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use koth_chain::{Keypair, Keystore};
use koth_core::competition::Competition;
use koth_core::{CommitmentPayload, Digest};
use koth_model::{DType, Device, Model};
use koth_store::{BlockingStore, CheckpointCache, GetOptions, Location, S3Options};
use serde::Serialize;

use crate::check::{check_gates, GateReport, GateSetup};
use crate::config::{MinerConfig, TrainerCommand};
use crate::data::MinerData;
use crate::error::{MinerError, Result};
use crate::events::{MinerEvent, Observer};
use crate::external::{run_trainer, write_train_tokens, TrainerEnd, TrainerInputs, Watch};
use crate::follow::{FeedClient, Follower, KingRef, ValidatorVerdict};
use crate::judge::{judge, JudgeSetup, LocalVerdict};
use crate::train::{train, CheckpointDir, Flow, RunKey};

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    /// Submitted and answered (or the answer did not come in time: see `validator`).
    Submitted,
    /// The local verdict did not crown and `--force` was not given.
    NotSubmitted,
    /// The king changed while training; nothing was submitted.
    KingChanged,
    /// Stopped by a signal; the checkpoint resumes it (not written to attempts.jsonl).
    Interrupted,
    /// A validator gate, run locally, refused the challenger; nothing was submitted.
    Refused,
}

/// One line of `<work_dir>/attempts.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    pub attempt: u64,
    pub status: AttemptStatus,
    pub king: Digest,
    pub challenger: Option<Digest>,
    pub train_loss: Option<f32>,
    pub steps: u64,
    pub local: Option<LocalVerdict>,
    pub submitted: bool,
    pub validator: Option<ValidatorVerdict>,
    /// The validator's gates, run locally, refused the challenger with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<crate::check::Refusal>,
    /// When the submitted challenger was committed and published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishRecord>,
}

/// How a submission went out: committed first, put into the store once the commitment was in a
/// sealed block, and (normally) before the commitment was revealed (PROTOCOL §3: nobody can
/// list the bytes and commit them before the commitment that owns them is on chain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishRecord {
    /// The block that included the commitment.
    pub commit_block: u64,
    /// The block it is revealed at: the commit block + the chain's reveal delay (on subtensor,
    /// when its drand round arrives, about then).
    pub reveal_block: u64,
    /// The chain's head when the upload finished; `None` when nothing was uploaded or the head
    /// could not be read.
    pub published_block: Option<u64>,
    /// What went wrong: the upload finished at or after the reveal block, failed, or never
    /// started (the commitment was not seen sealed). The validator answers whatever it finds
    /// at the location when it reads the reveal (`manifest_unreachable` if nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl AttemptRecord {
    /// An attempt that ended with no challenger and nothing submitted.
    fn without_challenger(attempt: u64, status: AttemptStatus, king: Digest) -> Self {
        AttemptRecord {
            attempt,
            status,
            king,
            challenger: None,
            train_loss: None,
            steps: 0,
            local: None,
            submitted: false,
            validator: None,
            refusal: None,
            publish: None,
        }
    }

    /// An attempt that ended during training (`status`: the king changed, or a signal), with
    /// no challenger and nothing submitted.
    fn stopped_training(
        attempt: u64,
        status: AttemptStatus,
        king: Digest,
        result: &crate::train::TrainResult,
    ) -> Self {
        AttemptRecord {
            train_loss: result.losses.last().copied(),
            steps: result.steps_done,
            ..Self::without_challenger(attempt, status, king)
        }
    }
}

/// Everything a miner holds open between attempts.
pub struct Miner {
    config: MinerConfig,
    competition: Competition,
    follower: Follower,
    key: Keypair,
    hotkey: String,
    data: MinerData,
    cache: CheckpointCache,
    publish: BlockingStore,
}

fn store_err(location: &str, e: impl std::fmt::Display) -> MinerError {
    MinerError::Store {
        location: location.to_string(),
        message: e.to_string(),
    }
}

/// Copy every file of the king that is not weights (config.json verbatim, tokenizer and
/// generation files) over the challenger's: the validator compares the config key by key with
/// the king's, and the trained model has exactly the king's architecture.
fn copy_king_metadata(king_dir: &Path, out: &Path) -> Result<()> {
    let entries = std::fs::read_dir(king_dir).map_err(|e| MinerError::io(king_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| MinerError::io(king_dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let weights = name.ends_with(".safetensors") || name == "model.safetensors.index.json";
        if weights || !entry.path().is_file() {
            continue;
        }
        if koth_core::checkpoint::ALLOWED_NAMES.contains(&name.as_ref()) {
            let to = out.join(name.as_ref());
            std::fs::copy(entry.path(), &to).map_err(|e| MinerError::io(&to, e))?;
        }
    }
    Ok(())
}

/// The dtype the king's weights are stored in (the challenger is saved in it).
fn stored_dtype(king_dir: &Path) -> Result<DType> {
    let files = koth_model::CheckpointFiles::open(king_dir)?;
    let dtypes = files.dtypes();
    match dtypes.first().map(|s| s.to_ascii_lowercase()) {
        Some(d) if d == "bf16" => Ok(DType::BF16),
        Some(d) if d == "f16" => Ok(DType::F16),
        _ => Ok(DType::F32),
    }
}

/// The miner's data must be tokenized like the validator's: when the competition's bundle is
/// readable here, its tokenizer must be the miner bundle's (a miner without it cannot check).
fn check_tokenizer(
    config: &MinerConfig,
    competition: &Competition,
    data: &MinerData,
) -> Result<()> {
    let dir = config
        .competition
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = dir.join(&competition.data.bundle);
    let Ok(theirs) = koth_data::Bundle::read(&path) else {
        tracing::debug!(bundle = %path.display(), "competition bundle not readable here");
        return Ok(());
    };
    let ours = &data.dataset().bundle().tokenizer;
    if !ours.same_tokenizer(&theirs.tokenizer) {
        return Err(MinerError::Data(format!(
            "data.bundle {} is tokenized with {} ({}), the competition's bundle {} with {} ({}): \
             the validator would score other tokens",
            config.bundle.display(),
            ours.name,
            ours.sha256,
            path.display(),
            theirs.tokenizer.name,
            theirs.tokenizer.sha256
        )));
    }
    Ok(())
}

impl Miner {
    /// Open everything the config names and check the miner can play: the competition file,
    /// the chain, the hotkey (registered), the data (held-out split), the stores.
    pub fn open(config: MinerConfig) -> Result<Self> {
        let comp_bytes =
            std::fs::read(&config.competition).map_err(|e| MinerError::Competition {
                path: config.competition.clone(),
                message: e.to_string(),
            })?;
        let competition =
            Competition::from_toml_bytes(&comp_bytes).map_err(|e| MinerError::Competition {
                path: config.competition.clone(),
                message: e.to_string(),
            })?;
        let chain = config.chain.open().map_err(|e| MinerError::Chain {
            chain: config.chain.describe(),
            message: e.to_string(),
        })?;
        let key = Keystore::new(&config.keystore)
            .load(&config.key_name)
            .map_err(|e| MinerError::Key {
                keystore: config.keystore.clone(),
                name: config.key_name.clone(),
                message: e.to_string(),
            })?;
        let hotkey = key.account().to_ss58();
        let metagraph = chain.metagraph().map_err(|e| MinerError::Chain {
            chain: config.chain.describe(),
            message: e.to_string(),
        })?;
        if metagraph.by_hotkey(&key.account()).is_none() {
            return Err(MinerError::Key {
                keystore: config.keystore.clone(),
                name: config.key_name.clone(),
                message: format!(
                    "hotkey {hotkey} is not registered on the chain (koth chain register)"
                ),
            });
        }
        let seq_len = u32::try_from(config.train.seq_len)
            .map_err(|_| MinerError::Data("train.seq_len does not fit in u32".into()))?;
        let data = MinerData::open(
            &config.bundle,
            config.seed,
            config.holdout_windows,
            competition.data.seq_len,
            seq_len,
        )?;
        check_tokenizer(&config, &competition, &data)?;
        let feed = match &config.feed {
            Some(url) => Some(FeedClient::new(url, Duration::from_secs(10))?),
            None => None,
        };
        let delay = chain.params().reveal_delay;
        if delay > competition.intake.reveal_delay_blocks {
            tracing::warn!(
                "the chain reveals a commitment {delay} blocks after its block; the competition \
                 accepts at most {} (intake.reveal_delay_blocks): the validator will refuse our \
                 commitments reveal_too_late",
                competition.intake.reveal_delay_blocks
            );
        }
        let follower = Follower::new(competition.clone(), chain, config.chain.describe(), feed);
        let models = config.work_dir.join("models");
        let cache =
            CheckpointCache::open(&models, 64 << 30).map_err(|e| MinerError::io(&models, e))?;
        let loc: Location = config
            .store_location
            .parse()
            .map_err(|e| store_err(&config.store_location, e))?;
        let publish = BlockingStore::open(&loc, &S3Options::from_env())
            .map_err(|e| store_err(&config.store_location, e))?;
        Ok(Self {
            config,
            competition,
            follower,
            key,
            hotkey,
            data,
            cache,
            publish,
        })
    }

    pub fn config(&self) -> &MinerConfig {
        &self.config
    }
    pub fn competition(&self) -> &Competition {
        &self.competition
    }
    pub fn data(&self) -> &MinerData {
        &self.data
    }
    pub fn hotkey(&self) -> &str {
        &self.hotkey
    }
    pub fn follower(&self) -> &Follower {
        &self.follower
    }

    /// The king's checkpoint directory, fetched by digest from where it was committed (or the
    /// competition's genesis location; failing that, the miner's own store) and verified.
    pub fn fetch_king(&self, king: &KingRef) -> Result<PathBuf> {
        let location = king
            .location
            .clone()
            .unwrap_or_else(|| self.config.store_location.clone());
        let loc: Location = location.parse().map_err(|e| store_err(&location, e))?;
        let store = BlockingStore::open(&loc, &S3Options::from_env())
            .map_err(|e| store_err(&location, e))?;
        let opts = GetOptions {
            max_total_bytes: self.competition.intake.size_cap_bytes,
            ..GetOptions::default()
        };
        let path = self
            .cache
            .fetch(&store, &king.digest, &opts)
            .map_err(|e| store_err(&location, format!("fetching king {}: {e}", king.digest)))?;
        self.cache
            .pin(&king.digest)
            .map_err(|e| store_err(&location, e))?;
        Ok(path)
    }

    fn attempts_path(&self) -> PathBuf {
        self.config.work_dir.join("attempts.jsonl")
    }

    /// The number the next attempt gets: one more than the attempts recorded.
    fn next_attempt_number(&self) -> Result<u64> {
        let path = self.attempts_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text.lines().filter(|l| !l.trim().is_empty()).count() as u64 + 1),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(1),
            Err(e) => Err(MinerError::io(&path, e)),
        }
    }

    fn record(&self, record: &AttemptRecord) -> Result<()> {
        let path = self.attempts_path();
        let mut line = serde_json::to_vec(record).map_err(|e| MinerError::io(&path, e))?;
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| MinerError::io(&path, e))?;
        f.write_all(&line).map_err(|e| MinerError::io(&path, e))?;
        f.sync_all().map_err(|e| MinerError::io(&path, e))
    }

    /// Save `model` as a challenger: weights in the king's stored dtype plus the king's
    /// config.json and other metadata files. Returns its digest and directory.
    fn save_challenger(&self, model: &Model, king_dir: &Path) -> Result<(Digest, PathBuf)> {
        let root = self.config.work_dir.join("challengers");
        std::fs::create_dir_all(&root).map_err(|e| MinerError::io(&root, e))?;
        let staging = root.join(".staging");
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| MinerError::io(&staging, e))?;
        }
        let dtype = stored_dtype(king_dir)?;
        model.to(dtype, &Device::Cpu)?.save(&staging)?;
        copy_king_metadata(king_dir, &staging)?;
        let manifest =
            koth_store::manifest_of_dir(&staging, 2).map_err(|e| MinerError::io(&staging, e))?;
        let digest = manifest.digest();
        let dir = root.join(digest.hex());
        if dir.exists() {
            // The same bytes again (a repeated attempt): keep the one already there.
            std::fs::remove_dir_all(&staging).map_err(|e| MinerError::io(&staging, e))?;
        } else {
            std::fs::rename(&staging, &dir).map_err(|e| MinerError::io(&dir, e))?;
        }
        Ok((digest, dir))
    }

    fn judge_setup(&self) -> JudgeSetup<'_> {
        JudgeSetup {
            competition: &self.competition,
            data: &self.data,
            seed: self.config.seed,
            device: &self.config.train.device,
            dtype: if self.config.train.device == "cpu" {
                "f32"
            } else {
                &self.config.train.dtype
            },
        }
    }

    /// The validator's gates on `dir` against the king (`koth miner check`, and the loop before
    /// it publishes).
    pub fn check_gates(&self, king: (&Digest, &Path), dir: &Path) -> Result<GateReport> {
        let setup = self.judge_setup();
        check_gates(
            &GateSetup {
                competition: &self.competition,
                probe_dir: self.config.work_dir.join("check"),
                device: setup.device,
                dtype: setup.dtype,
            },
            king,
            dir,
        )
    }

    /// `koth miner check`: the gates, then (when they pass) the local duel against `king`.
    pub fn check(
        &self,
        king: &KingRef,
        king_dir: &Path,
        dir: &Path,
        observer: &mut dyn Observer,
    ) -> Result<(GateReport, Option<LocalVerdict>)> {
        let report = self.check_gates((&king.digest, king_dir), dir)?;
        observer.event(&MinerEvent::Checked(report.clone()));
        if report.refusal.is_some() {
            return Ok((report, None));
        }
        let digest = koth_store::manifest_of_dir(dir, 2)
            .map_err(|e| MinerError::io(dir, e))?
            .digest();
        let local = self.judge_against(king, king_dir, &digest, dir, observer)?;
        Ok((report, Some(local)))
    }

    fn judge_against(
        &self,
        king: &KingRef,
        king_dir: &Path,
        challenger: &Digest,
        challenger_dir: &Path,
        observer: &mut dyn Observer,
    ) -> Result<LocalVerdict> {
        let (local, _record) = judge(
            &self.judge_setup(),
            (&king.digest, king_dir),
            (challenger, challenger_dir),
            &mut |windows, king_nll, challenger_nll| {
                observer.event(&MinerEvent::Judging {
                    windows,
                    king_nll,
                    challenger_nll,
                })
            },
        )?;
        observer.event(&MinerEvent::Judged(local.clone()));
        Ok(local)
    }

    /// Commit the challenger, wait until the commitment is in a sealed block, then put it into
    /// the store, before the commitment is revealed. The commitment binds the digest to our
    /// hotkey before anyone can list the bytes, so a copier's commitment of them can only come
    /// in a later block and never owns the digest (PROTOCOL §3). The digest committed is the
    /// one the store gives these bytes (`koth_store::manifest_of_dir`, the store's own manifest
    /// code); the put checks it again. Errors before the commitment is sent are errors of the
    /// attempt; what goes wrong after it is in the returned record (the commitment is on chain
    /// either way, and the validator will answer it).
    fn submit(
        &self,
        digest: &Digest,
        dir: &Path,
        observer: &mut dyn Observer,
    ) -> Result<PublishRecord> {
        let location = &self.config.store_location;
        let local = koth_store::manifest_of_dir(dir, 2)
            .map_err(|e| MinerError::io(dir, e))?
            .digest();
        if local != *digest {
            return Err(MinerError::Checkpoint {
                path: dir.to_path_buf(),
                message: format!("hashes to {local} now, saved as {digest}; nothing committed"),
            });
        }
        let payload = CommitmentPayload {
            location: location.clone(),
            digest: *digest,
            hotkey: self.hotkey.clone(),
        }
        .to_string();
        let chain = self.follower.chain();
        let receipt = chain
            .commit(&self.key, &payload)
            .map_err(|e| MinerError::Chain {
                chain: self.config.chain.describe(),
                message: format!("committing {payload}: {e}"),
            })?;
        let reveal_block = receipt.block.saturating_add(chain.params().reveal_delay);
        observer.event(&MinerEvent::Committed {
            block: receipt.block,
            reveal_block,
            payload,
        });
        let mut record = PublishRecord {
            commit_block: receipt.block,
            reveal_block,
            published_block: None,
            problem: None,
        };
        if let Err(e) = self.wait_until_sealed(receipt.block) {
            publish_failed(
                &mut record,
                observer,
                (digest, location),
                format!("not published: {e}"),
            );
            return Ok(record);
        }
        let put = self.publish.put(dir);
        let head = chain.block().ok().map(|b| b.number);
        record.published_block = head;
        let problem = match put {
            Err(e) => Some(format!("the upload to {location} failed: {e}")),
            Ok(report) if report.digest != *digest => Some(format!(
                "the upload to {location} stored {}, the commitment names {digest}",
                report.digest
            )),
            Ok(_) => None,
        };
        if let Some(problem) = problem {
            publish_failed(&mut record, observer, (digest, location), problem);
            return Ok(record);
        }
        observer.event(&MinerEvent::Published {
            digest: *digest,
            location: location.clone(),
            block: head,
            reveal_block,
        });
        if let Some(head) = head.filter(|&h| h >= reveal_block) {
            let problem = format!(
                "published at block {head}, at or after the commitment's reveal at block \
                 {reveal_block}: the validator may have looked before the checkpoint was there"
            );
            tracing::warn!("{problem}");
            record.problem = Some(problem);
        }
        Ok(record)
    }

    /// Wait until the chain's sealed head reaches `block` (the commitment's block). Bounded:
    /// the commitment's reveal delay in block times, plus a minute for a slow node; chain
    /// errors meanwhile are retried; past the bound, an error of the chain that names the block,
    /// the bound and the last chain error.
    fn wait_until_sealed(&self, block: u64) -> Result<u64> {
        let chain = self.follower.chain();
        let params = chain.params();
        let block_time = params.block_time_ms.max(1);
        let poll = Duration::from_millis((block_time / 4).clamp(10, 1000));
        let limit =
            Duration::from_millis(block_time.saturating_mul(params.reveal_delay.saturating_add(2)))
                + Duration::from_secs(60);
        let deadline = Instant::now() + limit;
        let mut last_error = None;
        loop {
            match chain.block() {
                Ok(head) if head.number >= block => return Ok(head.number),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("reading the chain head while waiting for block {block}: {e}");
                    last_error = Some(e.to_string());
                }
            }
            if Instant::now() >= deadline {
                return Err(self.follower.chain_err(format!(
                    "the commitment's block {block} was not seen sealed within {} s{}",
                    limit.as_secs(),
                    last_error.map_or(String::new(), |e| format!(" (last error: {e})"))
                )));
            }
            std::thread::sleep(poll);
        }
    }

    /// Wait for the validator's verdict on `digest` (until `verdict_timeout_s` or `stop`).
    fn wait_for_verdict(
        &self,
        digest: &Digest,
        stop: &AtomicBool,
        observer: &mut dyn Observer,
    ) -> Result<ValidatorVerdict> {
        observer.event(&MinerEvent::WaitingForVerdict { digest: *digest });
        let deadline = Instant::now() + Duration::from_secs(self.config.verdict_timeout_s);
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        loop {
            if let Some(v) = self.follower.verdict(digest, &self.hotkey)? {
                observer.event(&MinerEvent::Verdict(v.clone()));
                return Ok(v);
            }
            if Instant::now() >= deadline || stop.load(Ordering::SeqCst) {
                let v = ValidatorVerdict {
                    outcome: "unknown".into(),
                    code: None,
                    message: Some(if stop.load(Ordering::SeqCst) {
                        "stopped before the validator answered".into()
                    } else if self.follower.has_feed() {
                        format!(
                            "no verdict within {} s (validator.verdict_timeout_s)",
                            self.config.verdict_timeout_s
                        )
                    } else {
                        format!(
                            "not crowned within {} s; without [validator] feed only a crown is \
                             visible (on the chain's weights)",
                            self.config.verdict_timeout_s
                        )
                    }),
                    mu_hat: None,
                    n: None,
                };
                observer.event(&MinerEvent::Verdict(v.clone()));
                return Ok(v);
            }
            std::thread::sleep(poll);
        }
    }

    /// One attempt: follow the king, train from it, judge, submit when the local verdict
    /// crowns (or `force`), wait for the validator's verdict. `stop` (a signal) interrupts
    /// training with a checkpoint.
    pub fn attempt(
        &self,
        force: bool,
        stop: &AtomicBool,
        observer: &mut dyn Observer,
    ) -> Result<AttemptRecord> {
        if let Some(command) = &self.config.trainer {
            return self.attempt_external(command, force, stop, observer);
        }
        let king = self.follower.king()?;
        let checkpoint = CheckpointDir::new(self.config.work_dir.join("train"));
        let fingerprint = self.config.train.fingerprint();
        // Resume the interrupted attempt of this king, if there is one.
        let attempt = match checkpoint.peek() {
            Some((key, _)) if key.king == king.digest && key.fingerprint == fingerprint => {
                key.attempt
            }
            Some(_) => {
                checkpoint.clear()?;
                self.next_attempt_number()?
            }
            None => self.next_attempt_number()?,
        };
        observer.event(&MinerEvent::King {
            attempt,
            king: king.clone(),
        });
        let king_dir = self.fetch_king(&king)?;
        observer.event(&MinerEvent::Fetched {
            digest: king.digest,
            path: king_dir.display().to_string(),
        });
        let device = koth_model::parse_device(&self.config.train.device)?;
        let dtype = koth_model::parse_dtype(&self.config.train.dtype)?;
        let start = Model::load(&king_dir, dtype, &device)?;
        let key = RunKey {
            king: king.digest,
            attempt,
            fingerprint,
        };
        let resumed_at = checkpoint.peek().map(|(_, s)| s).unwrap_or(0);
        observer.event(&MinerEvent::TrainStart {
            attempt,
            king: king.digest,
            start_step: resumed_at,
            steps: self.config.train.schedule.steps,
            tokens_per_step: self.config.train.tokens_per_step(),
        });
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        let mut last_check = Instant::now();
        let mut changed: Option<Result<KingRef>> = None;
        let result = train(
            &start,
            &self.config.train,
            &self.data,
            &key,
            &checkpoint,
            &mut |info| {
                observer.event(&MinerEvent::Step(*info));
                if stop.load(Ordering::SeqCst) {
                    return Flow::Stop { checkpoint: true };
                }
                if last_check.elapsed() >= poll {
                    last_check = Instant::now();
                    match self.follower.king() {
                        Ok(now) if now.digest != king.digest => {
                            changed = Some(Ok(now));
                            return Flow::Stop { checkpoint: false };
                        }
                        Ok(_) => {}
                        Err(e) => {
                            changed = Some(Err(e));
                            return Flow::Stop { checkpoint: true };
                        }
                    }
                }
                Flow::Continue
            },
        )?;
        match changed {
            Some(Err(e)) => return Err(e),
            Some(Ok(new)) => {
                observer.event(&MinerEvent::KingChanged {
                    old: king.digest,
                    new: new.digest,
                });
                checkpoint.clear()?;
                let record = AttemptRecord::stopped_training(
                    attempt,
                    AttemptStatus::KingChanged,
                    king.digest,
                    &result,
                );
                self.record(&record)?;
                return Ok(record);
            }
            None => {}
        }
        if result.stopped {
            observer.event(&MinerEvent::Interrupted {
                step: result.steps_done,
            });
            return Ok(AttemptRecord::stopped_training(
                attempt,
                AttemptStatus::Interrupted,
                king.digest,
                &result,
            ));
        }
        let train_loss = tail_mean(&result.losses, 10);
        observer.event(&MinerEvent::TrainDone {
            steps: result.steps_done,
            loss: train_loss,
        });
        let (digest, chal_dir) = self.save_challenger(&result.model, &king_dir)?;
        observer.event(&MinerEvent::ChallengerSaved {
            digest,
            path: chal_dir.display().to_string(),
        });
        checkpoint.clear()?;
        self.judge_and_submit(
            Trained {
                attempt,
                king: &king,
                king_dir: &king_dir,
                digest,
                dir: &chal_dir,
                train_loss: Some(train_loss),
                steps: result.steps_done,
                gates_passed: false,
            },
            force,
            stop,
            observer,
        )
    }

    /// An attempt with `[train] command`: the trainer gets the king, an empty output directory
    /// and the training windows; its output, once it exits 0, is checked like any challenger.
    fn attempt_external(
        &self,
        command: &TrainerCommand,
        force: bool,
        stop: &AtomicBool,
        observer: &mut dyn Observer,
    ) -> Result<AttemptRecord> {
        let king = self.follower.king()?;
        let attempt = self.next_attempt_number()?;
        observer.event(&MinerEvent::King {
            attempt,
            king: king.clone(),
        });
        let king_dir = self.fetch_king(&king)?;
        observer.event(&MinerEvent::Fetched {
            digest: king.digest,
            path: king_dir.display().to_string(),
        });
        let run_dir = self.config.work_dir.join("external");
        if run_dir.exists() {
            std::fs::remove_dir_all(&run_dir).map_err(|e| MinerError::io(&run_dir, e))?;
        }
        let output_dir = run_dir.join("output");
        std::fs::create_dir_all(&output_dir).map_err(|e| MinerError::io(&output_dir, e))?;
        let train_tokens = run_dir.join("train-tokens.u32");
        let train_windows =
            write_train_tokens(&self.data, &self.config.train, attempt, &train_tokens)?;
        let inputs = TrainerInputs {
            king_dir: king_dir.clone(),
            king_digest: king.digest,
            output_dir: output_dir.clone(),
            bundle: self.config.bundle.clone(),
            train_tokens,
            train_windows,
            seq_len: self.config.train.seq_len,
            seed: self.config.seed,
            attempt,
            work_dir: self.config.work_dir.clone(),
            time_limit: command.time_limit,
            settings: self.config.train.clone(),
        };
        observer.event(&MinerEvent::TrainerStart {
            attempt,
            king: king.digest,
            command: command.line.clone(),
            time_limit_s: command.time_limit.as_secs(),
        });
        let started = Instant::now();
        let log = self.config.work_dir.join("trainer.log");
        // The king is polled while the trainer runs, as the built-in trainer polls it: a new
        // king ends the attempt. A failed poll does not: an external run cannot be resumed.
        let mut changed: Option<KingRef> = None;
        let mut should_end = || match self.follower.king() {
            Ok(now) if now.digest == king.digest => false,
            Ok(now) => {
                changed = Some(now);
                true
            }
            Err(e) => {
                tracing::warn!("following the king while the trainer runs: {e}");
                false
            }
        };
        let watch = Watch {
            stop,
            should_end: &mut should_end,
            every: Duration::from_millis(self.config.poll_interval_ms),
        };
        let end = run_trainer(command, &inputs, &log, watch, &mut |line| {
            observer.event(&MinerEvent::TrainerOutput {
                line: line.to_string(),
            })
        })?;
        if let Some(new) = changed {
            observer.event(&MinerEvent::KingChanged {
                old: king.digest,
                new: new.digest,
            });
            let record =
                AttemptRecord::without_challenger(attempt, AttemptStatus::KingChanged, king.digest);
            self.record(&record)?;
            return Ok(record);
        }
        if end == TrainerEnd::Stopped {
            observer.event(&MinerEvent::NotSubmitted {
                reason: "stopped by a signal: the trainer's process group was ended (an \
                         external trainer is not resumed; the next attempt starts it again)"
                    .into(),
            });
            return Ok(AttemptRecord::without_challenger(
                attempt,
                AttemptStatus::Interrupted,
                king.digest,
            ));
        }
        observer.event(&MinerEvent::TrainerDone {
            seconds: started.elapsed().as_secs_f64(),
        });
        // The gates first, on the trainer's directory as it is: a file the store would not
        // even take (a `.py`) gets the validator's answer, not a store error.
        let report = self.check_gates((&king.digest, &king_dir), &output_dir)?;
        observer.event(&MinerEvent::Checked(report.clone()));
        if let Some(refusal) = report.refusal {
            observer.event(&MinerEvent::NotSubmitted {
                reason: format!(
                    "the validator's gate {} would refuse it [{}]: {} (the trainer's output is \
                     kept in {})",
                    refusal.gate,
                    refusal.code,
                    refusal.message,
                    output_dir.display()
                ),
            });
            let record = AttemptRecord {
                steps: self.config.train.schedule.steps,
                refusal: Some(refusal),
                ..AttemptRecord::without_challenger(attempt, AttemptStatus::Refused, king.digest)
            };
            self.record(&record)?;
            return Ok(record);
        }
        let (digest, chal_dir) = self.take_challenger(&output_dir)?;
        observer.event(&MinerEvent::ChallengerSaved {
            digest,
            path: chal_dir.display().to_string(),
        });
        self.judge_and_submit(
            Trained {
                attempt,
                king: &king,
                king_dir: &king_dir,
                digest,
                dir: &chal_dir,
                train_loss: None,
                steps: self.config.train.schedule.steps,
                gates_passed: true,
            },
            force,
            stop,
            observer,
        )
    }

    /// Move a finished checkpoint directory to `challengers/<digest>`; its digest and place.
    fn take_challenger(&self, from: &Path) -> Result<(Digest, PathBuf)> {
        let root = self.config.work_dir.join("challengers");
        std::fs::create_dir_all(&root).map_err(|e| MinerError::io(&root, e))?;
        let manifest = koth_store::manifest_of_dir(from, 2).map_err(|e| MinerError::io(from, e))?;
        let digest = manifest.digest();
        let dir = root.join(digest.hex());
        if dir.exists() {
            std::fs::remove_dir_all(from).map_err(|e| MinerError::io(from, e))?;
        } else {
            std::fs::rename(from, &dir).map_err(|e| MinerError::io(&dir, e))?;
        }
        Ok((digest, dir))
    }

    /// The common end of an attempt, whichever trainer made the challenger: the validator's
    /// gates, the local duel (again against a new king if it changed), then commit and publish
    /// when the local duel crowns (or `force`), and the validator's verdict.
    fn judge_and_submit(
        &self,
        trained: Trained<'_>,
        force: bool,
        stop: &AtomicBool,
        observer: &mut dyn Observer,
    ) -> Result<AttemptRecord> {
        let Trained {
            attempt,
            king,
            king_dir,
            digest,
            dir: chal_dir,
            train_loss,
            steps,
            gates_passed,
        } = trained;
        let chal_dir = chal_dir.to_path_buf();
        let mut record = AttemptRecord {
            attempt,
            status: AttemptStatus::NotSubmitted,
            king: king.digest,
            challenger: Some(digest),
            train_loss,
            steps,
            local: None,
            submitted: false,
            validator: None,
            refusal: None,
            publish: None,
        };
        let refusal = if gates_passed {
            None
        } else {
            let report = self.check_gates((&king.digest, king_dir), &chal_dir)?;
            observer.event(&MinerEvent::Checked(report.clone()));
            report.refusal
        };
        if let Some(refusal) = refusal {
            observer.event(&MinerEvent::NotSubmitted {
                reason: format!(
                    "the validator's gate {} would refuse it [{}]: {}",
                    refusal.gate, refusal.code, refusal.message
                ),
            });
            record.status = AttemptStatus::Refused;
            record.refusal = Some(refusal);
            self.record(&record)?;
            return Ok(record);
        }
        let mut local = self.judge_against(king, king_dir, &digest, &chal_dir, observer)?;
        // The king may have changed while we judged: the challenger then competes against the
        // new king, so judge it again against that one.
        let now = self.follower.king()?;
        if now.digest != king.digest {
            observer.event(&MinerEvent::KingChanged {
                old: king.digest,
                new: now.digest,
            });
            let now_dir = self.fetch_king(&now)?;
            local = self.judge_against(&now, &now_dir, &digest, &chal_dir, observer)?;
        }
        record.local = Some(local.clone());
        if !local.crown && !force {
            observer.event(&MinerEvent::NotSubmitted {
                reason: format!(
                    "the local duel did not crown ({}; μ̂ = {:.5} nats over {} windows); \
                     --force submits anyway",
                    local.verdict, local.mu_hat, local.windows
                ),
            });
            self.record(&record)?;
            return Ok(record);
        }
        record.publish = Some(self.submit(&digest, &chal_dir, observer)?);
        record.submitted = true;
        record.status = AttemptStatus::Submitted;
        let verdict = self.wait_for_verdict(&digest, stop, observer)?;
        record.validator = Some(verdict);
        self.record(&record)?;
        Ok(record)
    }

    /// Attempts until `stop` is set. An attempt that fails is logged and retried after the
    /// poll interval (a validator or store that is briefly away is not fatal to a miner).
    pub fn run(&self, force: bool, stop: &AtomicBool, observer: &mut dyn Observer) -> Result<()> {
        while !stop.load(Ordering::SeqCst) {
            match self.attempt(force, stop, observer) {
                Ok(r) if r.status == AttemptStatus::Interrupted => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!("attempt failed: {e}");
                    let until = Instant::now()
                        + Duration::from_millis(self.config.poll_interval_ms.max(1000));
                    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A challenger on disk and how it was made.
struct Trained<'a> {
    attempt: u64,
    king: &'a KingRef,
    king_dir: &'a Path,
    digest: Digest,
    dir: &'a Path,
    train_loss: Option<f32>,
    steps: u64,
    /// The gates already passed on this very directory (they are not run twice).
    gates_passed: bool,
}

/// Mean of the last `n` values (the end-of-training loss, less noisy than the last step's).
pub fn tail_mean(values: &[f32], n: usize) -> f32 {
    let tail = &values[values.len().saturating_sub(n)..];
    if tail.is_empty() {
        return f32::NAN;
    }
    (tail.iter().map(|&x| f64::from(x)).sum::<f64>() / tail.len() as f64) as f32
}

/// A flag that SIGINT or SIGTERM sets (a background thread waits for them). A second signal
/// does nothing more: the miner stops at the next step boundary, checkpointing first.
pub fn stop_on_signals() -> std::sync::Arc<AtomicBool> {
    let flag = std::sync::Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            tracing::warn!("cannot watch for signals: no runtime");
            return;
        };
        rt.block_on(async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => {},
                            _ = term.recv() => {},
                        }
                    }
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
        });
        tracing::info!("stopping: finishing the current step and writing a checkpoint");
        set.store(true, Ordering::SeqCst);
    });
    flag
}

/// A publication that did not happen: warned, reported to the observer, kept in the record.
fn publish_failed(
    record: &mut PublishRecord,
    observer: &mut dyn Observer,
    (digest, location): (&Digest, &str),
    problem: String,
) {
    tracing::warn!("{problem}");
    observer.event(&MinerEvent::PublishFailed {
        digest: *digest,
        location: location.to_string(),
        reason: problem.clone(),
    });
    record.problem = Some(problem);
}
