//! `koth miner check`: what the validator would answer for a checkpoint directory, wherever it
//! was produced (the built-in trainer, `[train] command`, or anything else).
//!
//! Every gate that can run without the validator's private state runs here, in the
//! validator's order, through the validator's own code: the pure checks of koth-hill's
//! [`gates`] and the I/O around them in koth-validator's [`gate_run`] (the functions the
//! validator's shell calls), so a refusal carries the validator's [`RejectCode`] and the very
//! sentence the validator would write. Then the local duel with the competition's rule on the
//! miner's held-out windows ([`crate::judge`]).
//!
//! - fetch: the file policy and the size cap over the directory's files (what the validator
//!   checks on the manifest; hashes are the store's to check).
//! - config: `config.json` against the king's under the architecture lock.
//! - tensors: the exact tensor set (names, shapes, dtypes) and header bounds.
//! - weights: NaN/Inf and norm scales against the king's.
//! - trainability: one backward step on probe sequences, when the competition turns it on.
//!   The probes are derived from a secret of the miner's own (`<work_dir>/check/`), not the
//!   validator's: the check is the same, the sequences differ.
//! - fingerprint (near copy): not run here; it compares against the validator's secret probes
//!   and its history of submissions, which only the validator has.

use std::path::{Path, PathBuf};

use koth_core::checkpoint::{CheckpointManifest, FileEntry};
use koth_core::competition::Competition;
use koth_core::{Digest, RejectCode};
use koth_hill::event::Gate;
use koth_hill::gates::{self, GateError};
use koth_validator::gate_run;
use serde::Serialize;

use crate::error::{MinerError, Result};

/// What one gate said.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GateStatus {
    Passed,
    Refused,
    /// The competition turns this gate off.
    Off,
    /// The gate needs the validator's private state; only the validator can run it.
    NotLocal,
}

/// A refusal, as the validator would answer it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refusal {
    /// The gate that refused (its name as the validator's feed shows it).
    pub gate: String,
    pub code: RejectCode,
    /// The validator's message for this directory.
    pub message: String,
}

impl Refusal {
    /// The code's stable sentence (koth-core's [`RejectCode::explain`]).
    pub fn sentence(&self) -> &'static str {
        self.code.explain()
    }
}

/// The gates' answers, in the validator's order, up to the first refusal.
#[derive(Debug, Clone, Serialize)]
pub struct GateReport {
    pub gates: Vec<(String, GateStatus)>,
    pub refusal: Option<Refusal>,
}

/// What the gates need besides the two directories.
pub struct GateSetup<'a> {
    pub competition: &'a Competition,
    /// Where the local trainability probe keeps its secret.
    pub probe_dir: PathBuf,
    pub device: &'a str,
    pub dtype: &'a str,
}

fn ours(what: &str, message: impl std::fmt::Display) -> MinerError {
    MinerError::Check(format!("{what}: {message}"))
}

/// Every file under `dir` as the manifest would name it (`a/b` for nested ones), with its size.
fn files_of(dir: &Path) -> Result<Vec<(String, u64)>> {
    fn walk(root: &Path, rel: &str, out: &mut Vec<(String, u64)>) -> Result<()> {
        let here = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let rd = std::fs::read_dir(&here).map_err(|e| MinerError::io(&here, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| MinerError::io(&here, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta =
                std::fs::metadata(entry.path()).map_err(|e| MinerError::io(entry.path(), e))?;
            if meta.is_dir() {
                walk(root, &path, out)?;
            } else {
                out.push((path, meta.len()));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    out.sort();
    Ok(out)
}

/// A gate's result: `Ok(true)` passed, `Ok(false)` refused (recorded in `report`), `Err` when
/// the check itself could not be made (our side: the king's files, the disk).
fn record(
    report: &mut GateReport,
    gate: Gate,
    result: std::result::Result<(), GateError>,
) -> Result<bool> {
    match result {
        Ok(()) => {
            report
                .gates
                .push((gate.name().to_string(), GateStatus::Passed));
            Ok(true)
        }
        Err(GateError::Refused { code, message }) => {
            report
                .gates
                .push((gate.name().to_string(), GateStatus::Refused));
            report.refusal = Some(Refusal {
                gate: gate.name().to_string(),
                code,
                // Clipped as the validator's log records it.
                message: koth_hill::event::clip_text(&message),
            });
            Ok(false)
        }
        Err(GateError::Undecidable(m)) => Err(ours(&format!("gate {}", gate.name()), m)),
    }
}

/// Run the validator's gates on `dir` against the king in `king_dir`.
pub fn check_gates(
    setup: &GateSetup<'_>,
    king: (&Digest, &Path),
    dir: &Path,
) -> Result<GateReport> {
    let competition = setup.competition;
    let mut report = GateReport {
        gates: Vec::new(),
        refusal: None,
    };
    if !dir.is_dir() {
        return Err(MinerError::Checkpoint {
            path: dir.to_path_buf(),
            message: "is not a directory".into(),
        });
    }
    // Gate 2 (fetch): what the validator checks on the manifest, in its order: the store's
    // policy on every path (as `fetch_manifest` refuses it, with the store's sentence), then
    // the gates' layout and the size cap. Hashes are the store's to check on download.
    let files = files_of(dir)?;
    let entries = files
        .iter()
        .map(|(path, size)| FileEntry {
            path: path.clone(),
            size: *size,
            sha256: Digest::of(b""),
        })
        .collect();
    let fetch = match CheckpointManifest::new(entries) {
        Err(error) => Err(GateError::Refused {
            code: RejectCode::ManifestUnreachable,
            message: format!("the directory cannot be stored as a checkpoint: {error}"),
        }),
        Ok(manifest) => match manifest.check_policy() {
            Err((path, reason)) => {
                let e = koth_store::StoreError::FileRefused { path, reason };
                Err(GateError::Refused {
                    code: e.reject_code().unwrap_or(RejectCode::FileRefused),
                    message: e.to_string(),
                })
            }
            Ok(()) => gates::check_files(files.iter().map(|(p, _)| p.as_str())).and_then(|()| {
                gates::check_size(
                    files.iter().map(|(_, s)| *s),
                    competition.intake.size_cap_bytes,
                )
            }),
        },
    };
    if !record(&mut report, Gate::Fetch, fetch)? {
        return Ok(report);
    }
    // Gate 3: config.json against the king's under the lock.
    let king_config = gate_run::read_king_config(king.1).map_err(|e| ours("the king", e))?;
    let config = gate_run::read_challenger_config(dir)
        .and_then(|c| gates::check_config(&king_config, &c, &competition.architecture));
    if !record(&mut report, Gate::Config, config)? {
        return Ok(report);
    }
    // Gate 4: the exact tensor set.
    let king_files = gate_run::parse_headers(king.1).map_err(|e| ours("the king's tensors", e))?;
    let king_index = gate_run::index_of(&king_files).map_err(|e| ours("the king's tensors", e))?;
    let tensors = gate_run::parse_headers(dir)
        .and_then(|f| gate_run::index_of(&f))
        .and_then(|index| {
            gates::check_tensors(
                &king_index,
                &index,
                &competition.architecture.allowed_dtypes,
            )
        });
    if !record(&mut report, Gate::Tensors, tensors)? {
        return Ok(report);
    }
    // Gate 5: weights sanity against the king's statistics.
    let king_stats =
        gate_run::tensor_stats(&king_files).map_err(|e| ours("the king's weights", e))?;
    let weights = gate_run::parse_headers(dir)
        .and_then(|f| gate_run::tensor_stats(&f))
        .and_then(|c| gates::check_weights(&king_stats, &c, gates::DEFAULT_MAX_SCALE_RATIO));
    if !record(&mut report, Gate::Weights, weights)? {
        return Ok(report);
    }
    // Gate 5b: the trainability probe, when the competition runs it.
    if competition.gates.trainability_probe {
        let mut optional =
            gate_run::OptionalGates::open(&setup.probe_dir, competition, setup.device, setup.dtype)
                .map_err(|e| ours("the trainability probe", e))?;
        let probe = optional.trainability(&king_config, king, dir);
        if !record(&mut report, Gate::Trainability, probe)? {
            return Ok(report);
        }
    } else {
        report
            .gates
            .push((Gate::Trainability.name().to_string(), GateStatus::Off));
    }
    // Gate 6 needs the validator's secret probes and its history of submissions.
    report.gates.push((
        Gate::Fingerprint.name().to_string(),
        if competition.gates.near_copy {
            GateStatus::NotLocal
        } else {
            GateStatus::Off
        },
    ));
    Ok(report)
}

/// One line per gate and, on a refusal, the validator's answer: code, message and sentence.
pub fn report_text(report: &GateReport) -> String {
    let gates: Vec<String> = report
        .gates
        .iter()
        .map(|(g, s)| {
            let s = match s {
                GateStatus::Passed => "passed",
                GateStatus::Refused => "REFUSED",
                GateStatus::Off => "off in this competition",
                GateStatus::NotLocal => "not checked here (needs the validator's private probes)",
            };
            format!("{g}: {s}")
        })
        .collect();
    let mut out = format!("gates: {}", gates.join(", "));
    if let Some(r) = &report.refusal {
        out.push_str(&format!(
            "\nthe validator would answer: rejected [{}] at gate {}: {}\n  {}",
            r.code,
            r.gate,
            r.message,
            r.sentence()
        ));
    }
    out
}
