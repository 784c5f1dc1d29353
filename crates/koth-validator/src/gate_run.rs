//! The gates' I/O: reading `config.json`, safetensors headers and tensor values from a fetched
//! checkpoint directory, then calling the pure checks of [`crate::gates`].
//!
//! Reads of the *challenger's* files that fail because the files are bad (unparseable JSON, a
//! header out of bounds) are refusals; reads that fail on *our* side (the king's files, a
//! missing cached directory, an I/O error) are [`GateError::Undecidable`] and become
//! infrastructure faults. Nothing here ever passes by default.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde_json::Value;

use koth_core::RejectCode;

use crate::gates::{
    parse_safetensors_header, tensor_index, GateError, TensorEntry, TensorInfo, TensorStats,
};

fn undecidable(m: String) -> GateError {
    GateError::Undecidable(m)
}

/// The king's `config.json`, or undecidable. Read under the same 1 MiB cap as a challenger's.
pub fn read_king_config(dir: &Path) -> Result<Value, GateError> {
    let path = dir.join("config.json");
    let bytes = koth_model::weights::read_capped_file(&path, koth_model::MAX_CONFIG_BYTES)
        .map_err(|e| undecidable(format!("reading the king's {}: {e:?}", path.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| undecidable(format!("the king's config.json does not parse: {e}")))
}

/// The challenger's `config.json`. Everything wrong with the file itself is the challenger's
/// `config_mismatch`: missing, not a regular file, over [`koth_model::MAX_CONFIG_BYTES`]
/// (checked on its size before a byte is read, so a huge config is never parsed into memory),
/// not UTF-8 JSON. Only an I/O error reading our own cache is undecidable (ours).
pub fn read_challenger_config(dir: &Path) -> Result<Value, GateError> {
    use koth_model::weights::CappedReadError;
    let path = dir.join("config.json");
    let refuse = |message: String| GateError::Refused {
        code: RejectCode::ConfigMismatch,
        message,
    };
    let cap = koth_model::MAX_CONFIG_BYTES;
    let bytes = koth_model::weights::read_capped_file(&path, cap).map_err(|e| match e {
        CappedReadError::Missing => refuse("the checkpoint has no config.json".into()),
        CappedReadError::NotRegular => refuse("config.json is not a regular file".into()),
        CappedReadError::TooLarge(n) => {
            refuse(format!("config.json is {n} bytes, over the cap of {cap}"))
        }
        CappedReadError::Io(e) => {
            undecidable(format!("reading the fetched {}: {e}", path.display()))
        }
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| refuse(format!("config.json is not valid JSON: {e}")))
}

/// The `.safetensors` files of a fetched checkpoint, sorted by name.
pub fn safetensors_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, GateError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| undecidable(format!("listing {}: {e}", dir.display())))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| undecidable(format!("listing {}: {e}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") {
            out.push((name, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// One file's parsed header and the offset of its data section.
pub struct ParsedFile {
    pub name: String,
    pub path: PathBuf,
    pub data_start: u64,
    pub entries: Vec<TensorEntry>,
}

/// Parse every safetensors header of a checkpoint with bounds checks (a bad header is the
/// checkpoint's `tensors_mismatch`; an I/O error is undecidable).
pub fn parse_headers(dir: &Path) -> Result<Vec<ParsedFile>, GateError> {
    let mut out = Vec::new();
    for (name, path) in safetensors_files(dir)? {
        let io = |e: std::io::Error| undecidable(format!("reading {}: {e}", path.display()));
        let mut f = File::open(&path).map_err(io)?;
        let file_len = f.metadata().map_err(io)?.len();
        let mut len8 = [0u8; 8];
        let got = read_up_to(&mut f, &mut len8).map_err(io)?;
        let header_len = if got == 8 {
            u64::from_le_bytes(len8)
        } else {
            0
        };
        // Read what the header claims only when the one parser accepts that length: a length
        // past the file or the cap is refused from the 8 bytes alone, before anything is sized
        // by it.
        let want = koth_core::safetensors::header_read_len(&len8[..got], file_len)
            .saturating_sub(got as u64);
        let mut head = len8[..got].to_vec();
        if want > 0 {
            let mut rest = vec![0u8; want as usize];
            let n = read_up_to(&mut f, &mut rest).map_err(io)?;
            head.extend_from_slice(&rest[..n]);
        }
        let entries = parse_safetensors_header(&name, &head, file_len)?;
        out.push(ParsedFile {
            name,
            path,
            data_start: 8 + header_len,
            entries,
        });
    }
    Ok(out)
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = f.read(&mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Name → (dtype, shape) over all files.
pub fn index_of(files: &[ParsedFile]) -> Result<BTreeMap<String, TensorInfo>, GateError> {
    tensor_index(
        files
            .iter()
            .map(|f| (f.name.as_str(), f.entries.as_slice())),
    )
}

/// What the network adds to each stored tensor before using it, by name, from the checkpoint's
/// config.json and koth-model's tensor kinds: 1 for Qwen3.5's zero-centred RMSNorm gains (the
/// network scales by `1 + w`), nothing for every other tensor. A config koth-model does not
/// accept gives no offsets (the statistics are then of the stored values, as for every
/// non-hybrid family); the model load that follows refuses such a checkpoint anyway.
fn effective_offsets(files: &[ParsedFile]) -> BTreeMap<String, f64> {
    let Some(dir) = files.first().and_then(|f| f.path.parent()) else {
        return BTreeMap::new();
    };
    match koth_model::ModelConfig::from_file(&dir.join("config.json")) {
        Ok(config) => config
            .tensor_specs()
            .into_iter()
            .filter(|s| s.kind.effective_offset() != 0.0)
            .map(|s| (s.name, s.kind.effective_offset()))
            .collect(),
        Err(_) => BTreeMap::new(),
    }
}

/// Per-tensor statistics (count of NaN/Inf, RMS of the finite values) in f64, streamed from
/// disk in bounded chunks. The RMS is of the value that acts in the network: for a zero-centred
/// gain (Qwen3.5's `1 + w` RMSNorms) that is `1 + w`, so the weights gate compares gains — a
/// gain of 1.004 trained to 1.04 is a small change, not the tenfold jump its stored deviation
/// makes, while a reparameterised gain of 1e-3 still shows as a thousandfold one.
pub fn tensor_stats(files: &[ParsedFile]) -> Result<Vec<TensorStats>, GateError> {
    const CHUNK: usize = 1 << 20;
    let offsets = effective_offsets(files);
    let mut out = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    for file in files {
        let io = |e: std::io::Error| undecidable(format!("reading {}: {e}", file.path.display()));
        let mut f = File::open(&file.path).map_err(io)?;
        for e in &file.entries {
            let width: usize = match e.info.dtype.as_str() {
                "F64" | "I64" => 8,
                "F32" | "I32" | "U32" => 4,
                "BF16" | "F16" | "I16" | "U16" => 2,
                "U8" | "I8" | "BOOL" => 1,
                other => {
                    return Err(undecidable(format!(
                        "tensor {:?}: statistics for dtype {other} are not implemented",
                        e.name
                    )))
                }
            };
            f.seek(SeekFrom::Start(file.data_start + e.begin))
                .map_err(io)?;
            let mut remaining = e.end - e.begin;
            let offset = offsets.get(&e.name).copied().unwrap_or(0.0);
            let (mut sum_sq, mut count, mut non_finite) = (0.0f64, 0u64, 0u64);
            let step = CHUNK - CHUNK % width;
            while remaining > 0 {
                let take = remaining.min(step as u64) as usize;
                let chunk = &mut buf[..take];
                f.read_exact(chunk).map_err(io)?;
                for x in chunk.chunks_exact(width) {
                    let v = decode(&e.info.dtype, x) + offset;
                    if v.is_finite() {
                        sum_sq += v * v;
                        count += 1;
                    } else {
                        non_finite += 1;
                    }
                }
                remaining -= take as u64;
            }
            let rms = if count == 0 {
                0.0
            } else {
                (sum_sq / count as f64).sqrt()
            };
            out.push(TensorStats {
                name: e.name.clone(),
                non_finite,
                rms,
            });
        }
    }
    Ok(out)
}

fn decode(dtype: &str, b: &[u8]) -> f64 {
    let arr2 = || [b[0], b[1]];
    let arr4 = || [b[0], b[1], b[2], b[3]];
    let arr8 = || [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
    match dtype {
        "F64" => f64::from_le_bytes(arr8()),
        "I64" => i64::from_le_bytes(arr8()) as f64,
        "F32" => f64::from(f32::from_le_bytes(arr4())),
        "I32" => f64::from(i32::from_le_bytes(arr4())),
        "U32" => f64::from(u32::from_le_bytes(arr4())),
        "BF16" => f64::from(half::bf16::from_le_bytes(arr2())),
        "F16" => f64::from(half::f16::from_le_bytes(arr2())),
        "I16" => f64::from(i16::from_le_bytes(arr2())),
        "U16" => f64::from(u16::from_le_bytes(arr2())),
        "I8" => f64::from(b[0] as i8),
        _ => f64::from(b[0]),
    }
}

// ---------------------------------------------------------------------------------------------
// Gate 5's trainability probe and gate 6's fingerprint: running the models on the secret probes.

/// Most rows scored per forward pass when fingerprinting.
const FINGERPRINT_BATCH_ROWS: usize = 256;
/// Logits (rows × tokens × vocabulary) one fingerprinting forward pass may produce: a large
/// vocabulary gets fewer rows per pass, so memory stays bounded (2^27 f32 = 512 MiB).
const FINGERPRINT_LOGIT_BUDGET: usize = 1 << 27;
/// The validator's fingerprint secret, under `work_dir`.
pub const SECRET_FILE: &str = "fingerprint.secret";
/// Fingerprint records, one `<digest hex>.json` per checkpoint, under `work_dir`.
pub const FINGERPRINT_DIR: &str = "fingerprints";
/// Bytes of a newly created secret.
const SECRET_BYTES: usize = 32;
/// A shorter secret file is refused (it would make the probes guessable).
const MIN_SECRET_BYTES: usize = 16;

/// The validator's fingerprint secret: `work_dir/fingerprint.secret`, created once (32 random
/// bytes, mode 0600) at the first start that needs it and never replaced. A file that exists but
/// cannot be read or is too short stops the validator: silently making a new secret would change
/// the probes and orphan every stored fingerprint.
pub fn load_or_create_secret(work_dir: &Path) -> Result<Vec<u8>, SecretError> {
    use std::io::Write;
    let path = work_dir.join(SECRET_FILE);
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() >= MIN_SECRET_BYTES => return Ok(bytes),
        Ok(bytes) => {
            return Err(SecretError::TooShort {
                path,
                len: bytes.len(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SecretError::Io {
                what: "reading",
                path,
                source,
            })
        }
    }
    // Fingerprints already taken with a secret that is now gone cannot be compared with new
    // ones: refuse rather than silently start over with other probes.
    let records = work_dir.join(FINGERPRINT_DIR);
    let has_records = std::fs::read_dir(&records).is_ok_and(|mut rd| {
        rd.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".json")))
    });
    if has_records {
        return Err(SecretError::Missing { path, records });
    }
    std::fs::create_dir_all(work_dir).map_err(|source| SecretError::Io {
        what: "creating the directory of",
        path: path.clone(),
        source,
    })?;
    let mut secret = vec![0u8; SECRET_BYTES];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let tmp = work_dir.join(format!("{SECRET_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = options.open(&tmp)?;
        f.write_all(&secret)?;
        f.sync_all()?;
        // hard_link refuses to replace an existing file: two starts racing keep one secret.
        std::fs::hard_link(&tmp, &path)?;
        std::fs::remove_file(&tmp)?;
        File::open(work_dir)?.sync_all()
    };
    match write() {
        Ok(()) => Ok(secret),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&tmp);
            load_or_create_secret(work_dir)
        }
        Err(source) => Err(SecretError::Io {
            what: "creating",
            path,
            source,
        }),
    }
}

/// The fingerprint secret cannot be used; the validator does not start.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "the fingerprint secret {} has {len} bytes, at least {MIN_SECRET_BYTES} are needed \
         (it is created by the validator; do not edit it)",
        path.display()
    )]
    TooShort { path: PathBuf, len: usize },
    #[error(
        "the fingerprint secret {} is missing but {} holds fingerprints taken with it; restore \
         the secret from a backup (a new one would make every stored fingerprint incomparable)",
        path.display(),
        records.display()
    )]
    Missing { path: PathBuf, records: PathBuf },
    #[error("{what} the fingerprint secret {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating {}: {source}", path.display())]
    RecordsDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A fingerprint as stored under `work_dir/fingerprints/`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredFingerprint {
    checkpoint: koth_core::Digest,
    fingerprint_digest: koth_core::Digest,
    fingerprint: crate::fingerprint::Fingerprint,
}

fn model_error(what: &str, dir: &Path, e: impl std::fmt::Display) -> GateError {
    undecidable(format!("{what} {}: {e}", dir.display()))
}

/// The optional gates (trainability probe, fingerprint): their settings, the validator's secret
/// probes, the fingerprint records under `work_dir`, and the current king's probe gradients.
pub struct OptionalGates {
    secret: Vec<u8>,
    dir: PathBuf,
    device: String,
    dtype: String,
    competition_sha256: koth_core::Digest,
    seq_len: usize,
    switches: koth_core::competition::GateSwitches,
    probes: Option<crate::fingerprint::ProbeSet>,
    king_gradients: Option<(koth_core::Digest, crate::fingerprint::GradientSummary)>,
}

impl OptionalGates {
    /// Set up for `competition`; reads or creates the secret only when a gate needs it.
    pub fn open(
        work_dir: &Path,
        competition: &koth_core::competition::Competition,
        device: &str,
        dtype: &str,
    ) -> Result<Self, SecretError> {
        let switches = competition.gates.clone();
        let needed = switches.near_copy || switches.trainability_probe;
        let secret = if needed {
            load_or_create_secret(work_dir)?
        } else {
            Vec::new()
        };
        let dir = work_dir.join(FINGERPRINT_DIR);
        if needed {
            std::fs::create_dir_all(&dir).map_err(|source| SecretError::RecordsDir {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(Self {
            secret,
            dir,
            device: device.to_string(),
            dtype: dtype.to_string(),
            competition_sha256: competition.sha256(),
            seq_len: competition.data.seq_len as usize,
            switches,
            probes: None,
            king_gradients: None,
        })
    }

    /// The probe set for a king whose `config.json` is `king_config`.
    fn probes(&mut self, king_config: &Value) -> Result<crate::fingerprint::ProbeSet, GateError> {
        let vocab = king_config
            .get("vocab_size")
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                undecidable("the king's config.json has no integer vocab_size".into())
            })?;
        let vocab = usize::try_from(vocab)
            .map_err(|_| undecidable(format!("the king's vocab_size {vocab} is too large")))?;
        match &self.probes {
            Some(p) if p.vocab_size == vocab => Ok(p.clone()),
            _ => {
                let p = crate::fingerprint::ProbeSet::derive(
                    &self.secret,
                    &self.competition_sha256,
                    vocab,
                    self.seq_len,
                )?;
                self.probes = Some(p.clone());
                Ok(p)
            }
        }
    }

    /// Load a checkpoint. For the challenger (`challenger = true`), a load error that is the
    /// checkpoint's own (its config, safetensors files or tensor set) is its `weights_invalid`;
    /// every other failure — and any failure of the king or an earlier checkpoint — is
    /// undecidable (an infrastructure fault). On a list of devices the model is placed as the
    /// duel places that side.
    fn load_model(&self, dir: &Path, challenger: bool) -> Result<koth_model::Model, GateError> {
        let devices = koth_model::parse_devices(&self.device)
            .map_err(|e| undecidable(format!("device {:?}: {e}", self.device)))?;
        let dtype = koth_model::parse_dtype(&self.dtype)
            .map_err(|e| undecidable(format!("dtype {:?}: {e}", self.dtype)))?;
        let side = if challenger {
            koth_model::placement::CHALLENGER
        } else {
            koth_model::placement::KING
        };
        koth_model::placement::load_for_duel(dir, dtype, &devices, side, self.seq_len).map_err(
            |e| {
                if challenger && crate::duel_run::is_checkpoint_fault(&e) {
                    GateError::Refused {
                        code: RejectCode::WeightsInvalid,
                        message: crate::duel_run::load_failure_sentence(dir, &e),
                    }
                } else {
                    model_error("loading the model in", dir, e)
                }
            },
        )
    }

    /// Gate 5's probe: one backward step on the probe sequences for the king (once per king)
    /// and the challenger; `weights_invalid` for non-finite or exploding gradients.
    pub fn trainability(
        &mut self,
        king_config: &Value,
        king: (&koth_core::Digest, &Path),
        challenger: &Path,
    ) -> Result<(), GateError> {
        let probes = self.probes(king_config)?;
        let king_summary = match &self.king_gradients {
            Some((d, s)) if d == king.0 => s.clone(),
            _ => {
                let model = self.load_model(king.1, false)?;
                let s = probe_gradients(&model, &probes)
                    .map_err(|e| undecidable(format!("the king's probe gradients: {e}")))?;
                self.king_gradients = Some((*king.0, s.clone()));
                s
            }
        };
        let model = self.load_model(challenger, true)?;
        let summary = probe_gradients(&model, &probes)
            .map_err(|e| undecidable(format!("the challenger's probe gradients: {e}")))?;
        tracing::info!(
            king_norm = king_summary.global_norm,
            challenger_norm = summary.global_norm,
            "trainability probe"
        );
        crate::fingerprint::check_trainability(
            &king_summary,
            &summary,
            self.switches.probe_max_grad_ratio,
        )
    }

    /// Gate 6: fingerprint the challenger (stored before the verdict), compare it with the
    /// `references` the rules chose (the king's, earlier kings', and those of the last
    /// `near_copy_history` submissions that reached this gate, with the words naming them).
    /// An earlier fingerprint that is neither stored nor recomputable from a cached checkpoint
    /// makes the gate undecidable. Returns the challenger's fingerprint digest.
    pub fn fingerprint(
        &mut self,
        references: &[(koth_core::Digest, String)],
        king_config: &Value,
        king: (&koth_core::Digest, &Path),
        challenger: (&koth_core::Digest, &Path),
        cache: &koth_store::CheckpointCache,
    ) -> Result<koth_core::Digest, GateError> {
        let probes = self.probes(king_config)?;
        let mine = self.fingerprint_of(&probes, challenger.0, Some(challenger.1), true)?;
        let mut earlier = Vec::new();
        for (digest, label) in references.iter().cloned() {
            let dir = if &digest == king.0 {
                Some(king.1.to_path_buf())
            } else {
                Some(cache.path_of(&digest)).filter(|d| d.is_dir())
            };
            let fingerprint = self
                .fingerprint_of(&probes, &digest, dir.as_deref(), false)
                .map_err(|e| match e {
                    GateError::Undecidable(m) => {
                        undecidable(format!("the fingerprint of {label} {digest}: {m}"))
                    }
                    // An earlier checkpoint's own fault never becomes this challenger's.
                    GateError::Refused { message, .. } => undecidable(format!(
                        "the fingerprint of {label} {digest} cannot be taken: {message}"
                    )),
                })?;
            earlier.push(crate::fingerprint::Earlier {
                digest,
                label,
                fingerprint,
            });
        }
        let digest = mine.digest();
        tracing::info!(challenger = %challenger.0, fingerprint = %digest, compared = earlier.len(), "fingerprint");
        crate::fingerprint::check_near_copy(
            challenger.0,
            &mine,
            &earlier,
            self.switches.near_copy_max_distance,
        )?;
        Ok(digest)
    }

    fn record_path(&self, digest: &koth_core::Digest) -> PathBuf {
        self.dir.join(format!("{}.json", digest.hex()))
    }

    /// The stored fingerprint of `digest` if it is intact and on these probes.
    pub fn stored(
        &self,
        probes: &crate::fingerprint::ProbeSet,
        digest: &koth_core::Digest,
    ) -> Option<crate::fingerprint::Fingerprint> {
        let bytes = std::fs::read(self.record_path(digest)).ok()?;
        let s: StoredFingerprint = serde_json::from_slice(&bytes).ok()?;
        (s.checkpoint == *digest
            && s.fingerprint.digest() == s.fingerprint_digest
            && s.fingerprint.fits(probes))
        .then_some(s.fingerprint)
    }

    /// The stored fingerprint, or one computed from `dir` and stored durably (`challenger`:
    /// whether a load failure may be the checkpoint's own refusal, see `load_model`).
    fn fingerprint_of(
        &self,
        probes: &crate::fingerprint::ProbeSet,
        digest: &koth_core::Digest,
        dir: Option<&Path>,
        challenger: bool,
    ) -> Result<crate::fingerprint::Fingerprint, GateError> {
        if let Some(f) = self.stored(probes, digest) {
            return Ok(f);
        }
        let Some(dir) = dir else {
            return Err(undecidable(
                "no intact fingerprint record and the checkpoint is no longer cached".into(),
            ));
        };
        let model = self.load_model(dir, challenger)?;
        let fingerprint = compute_fingerprint(&model, probes)?;
        let record = StoredFingerprint {
            checkpoint: *digest,
            fingerprint_digest: fingerprint.digest(),
            fingerprint: fingerprint.clone(),
        };
        let bytes = serde_json::to_vec(&record)
            .map_err(|e| undecidable(format!("encoding a fingerprint: {e}")))?;
        koth_core::fsutil::write_atomic(&self.record_path(digest), &bytes)
            .map_err(|e| undecidable(format!("storing a fingerprint: {e}")))?;
        Ok(fingerprint)
    }
}

/// The fingerprint of `model` on `probes`: every scoring row's NLL at its probe position, in
/// batches of one probe's rows, through the model's scoring path. A row is cut after the
/// candidate token at `q + 1`: a causal model's prediction at `q` does not depend on anything
/// later, so the rest would be scored for nothing.
pub fn compute_fingerprint(
    model: &koth_model::Model,
    probes: &crate::fingerprint::ProbeSet,
) -> Result<crate::fingerprint::Fingerprint, GateError> {
    let per = probes.candidates.len();
    let total = probes.scoring_rows();
    let mut nll_at = Vec::with_capacity(total);
    for (i, &q) in probes.positions.iter().enumerate() {
        let len = (q + 2).min(probes.len());
        let batch_rows = (FINGERPRINT_LOGIT_BUDGET / (len * probes.vocab_size).max(1))
            .clamp(1, FINGERPRINT_BATCH_ROWS);
        let rows = i * per..(i + 1) * per;
        let mut start = rows.start;
        while start < rows.end {
            let end = (start + batch_rows).min(rows.end);
            let mut ids = Vec::with_capacity((end - start) * len);
            for row in start..end {
                let seq = probes
                    .scoring_row(row)
                    .ok_or_else(|| undecidable(format!("probe row {row} out of range")))?;
                ids.extend_from_slice(seq.get(..len).ok_or_else(|| {
                    undecidable(format!("probe row {row} is shorter than {len}"))
                })?);
            }
            let batch = koth_model::TokenIds::new(ids, end - start, len)
                .map_err(|e| undecidable(format!("probe batch: {e}")))?;
            let nll = model
                .nll(&batch)
                .and_then(|t| Ok(t.to_device(&koth_model::Device::Cpu)?.to_vec2::<f32>()?))
                .map_err(|e| undecidable(format!("scoring the probes: {e}")))?;
            for (j, row) in (start..end).enumerate() {
                let value = nll
                    .get(j)
                    .and_then(|r| r.get(q))
                    .ok_or_else(|| undecidable(format!("probe row {row}: no loss at {q}")))?;
                nll_at.push(*value);
            }
            start = end;
        }
    }
    probes.fingerprint(&nll_at)
}

/// The trainability probe's backward step failed (on our side: a model that cannot take the step
/// is checked before, by loading it).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probe batch: {0}")]
    Batch(#[source] koth_model::ModelError),
    #[error("backward step: {0}")]
    Backward(#[source] koth_model::ModelError),
    #[error("gradient norm of {tensor}: {source}")]
    Norm {
        tensor: String,
        #[source]
        source: koth_model::ModelError,
    },
}

/// One backward step of the mean loss on the probe sequences: the loss, each tensor's gradient
/// L2 norm (f64; `None` when not finite). The model is left unchanged.
pub fn probe_gradients(
    model: &koth_model::Model,
    probes: &crate::fingerprint::ProbeSet,
) -> Result<crate::fingerprint::GradientSummary, ProbeError> {
    let ids: Vec<u32> = probes.sequences.concat();
    let batch = koth_model::TokenIds::new(ids, probes.sequences.len(), probes.len())
        .map_err(ProbeError::Batch)?;
    let (loss, grads) = model.loss_and_grads(&batch).map_err(ProbeError::Backward)?;
    let mut norms = Vec::with_capacity(grads.len());
    for (name, g) in grads {
        let sum_sq = g
            .to_dtype(koth_model::DType::F64)
            .and_then(|g| g.sqr())
            .and_then(|g| g.sum_all())
            .and_then(|g| g.to_scalar::<f64>())
            .map_err(|e| ProbeError::Norm {
                tensor: name.clone(),
                source: e.into(),
            })?;
        let norm = sum_sq.sqrt();
        norms.push((name, norm.is_finite().then_some(norm)));
    }
    Ok(crate::fingerprint::GradientSummary::from_norms(
        f64::from(loss),
        &norms,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/hf-golden")
            .join(name)
    }

    fn rms(values: &[f32], offset: f64) -> f64 {
        let sum: f64 = values.iter().map(|&v| (v as f64 + offset).powi(2)).sum();
        (sum / values.len() as f64).sqrt()
    }

    /// Qwen3.5's zero-centred gains are measured as the `1 + w` that acts; every other tensor
    /// (and every tensor of the other families) as stored.
    #[test]
    fn statistics_measure_the_gain_that_acts() {
        for (name, centred) in [
            ("qwen35-tiny", "model.layers.3.self_attn.q_norm.weight"),
            ("llama-tiny", ""),
        ] {
            // The checkpoint alone (the golden folder also holds expected and gradient files).
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path();
            for file in ["config.json", "model.safetensors"] {
                std::fs::copy(golden(name).join(file), dir.join(file)).unwrap();
            }
            let stats = tensor_stats(&parse_headers(dir).unwrap()).unwrap();
            let tensors =
                koth_model::weights::read_safetensors(&dir.join("model.safetensors")).unwrap();
            assert_eq!(stats.len(), tensors.len());
            for st in &stats {
                let values: Vec<f32> = tensors[&st.name].flatten_all().unwrap().to_vec1().unwrap();
                let is_centred = name == "qwen35-tiny"
                    && (st.name.ends_with("layernorm.weight")
                        || st.name.ends_with("q_norm.weight")
                        || st.name.ends_with("k_norm.weight")
                        || st.name == "model.norm.weight");
                let want = rms(&values, if is_centred { 1.0 } else { 0.0 });
                assert!(
                    (st.rms - want).abs() <= 1e-9 * want.max(1.0),
                    "{name} `{}`: rms {} vs {want}",
                    st.name,
                    st.rms
                );
                assert_eq!(st.non_finite, 0);
            }
            if !centred.is_empty() {
                let st = stats.iter().find(|s| s.name == centred).unwrap();
                assert!((0.8..1.2).contains(&st.rms), "{centred}: {}", st.rms);
            }
        }
    }
}
