//! The gate checks that need no network: pure functions over data the shell has already fetched
//! (manifest file lists, `config.json` values, safetensors headers, per-tensor statistics).
//!
//! Every check fails closed. It returns [`GateError::Refused`] with the stable code and a
//! sentence naming what is wrong (the submission's fault, which consumes it), or
//! [`GateError::Undecidable`] when our side lacks what the check needs — the king's config
//! misses a locked key, a statistic was not computed. The shell reports an undecidable gate as
//! an infrastructure fault: the entry goes back to the head of the queue. Nothing here ever
//! answers "nothing to compare, pass" (PROTOCOL §9).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use koth_core::checkpoint::file_policy;
use koth_core::competition::ArchitectureLock;
use koth_core::RejectCode;

use crate::event::truncate;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GateError {
    /// The submission fails the gate.
    #[error("{code}: {message}")]
    Refused { code: RejectCode, message: String },
    /// The gate cannot decide; never a pass. Reported as an infrastructure fault.
    #[error("gate cannot decide: {0}")]
    Undecidable(String),
}

impl GateError {
    fn refused(code: RejectCode, message: impl Into<String>) -> Self {
        GateError::Refused {
            code,
            message: message.into(),
        }
    }

    /// The code, for a refusal.
    pub fn code(&self) -> Option<RejectCode> {
        match self {
            GateError::Refused { code, .. } => Some(*code),
            GateError::Undecidable(_) => None,
        }
    }
}

/// Listed names in messages are cut after this many, with a count of the rest.
const LIST_IN_MESSAGE: usize = 5;
/// JSON values quoted in messages are cut to this many bytes.
const VALUE_IN_MESSAGE: usize = 120;

fn list_names<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let all: Vec<&str> = names.into_iter().collect();
    let shown: Vec<String> = all
        .iter()
        .take(LIST_IN_MESSAGE)
        .map(|n| format!("{:?}", truncate(n, VALUE_IN_MESSAGE)))
        .collect();
    if all.len() > LIST_IN_MESSAGE {
        format!(
            "{} and {} more",
            shown.join(", "),
            all.len() - LIST_IN_MESSAGE
        )
    } else {
        shown.join(", ")
    }
}

// ---------------------------------------------------------------------------------------------
// Gate 2: the manifest's files and sizes.

/// Whether `name` is a weight shard: `model-<digits>-of-<digits>.safetensors`.
fn is_shard_name(name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix("model-")
        .and_then(|r| r.strip_suffix(".safetensors"))
    else {
        return false;
    };
    let Some((i, n)) = rest.split_once("-of-") else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.len() <= 6 && s.bytes().all(|b| b.is_ascii_digit());
    digits(i) && digits(n)
}

/// `file_refused`: every path in the manifest passes the checkpoint file policy
/// (`koth_core::checkpoint::file_policy`: nothing executable, nothing pickled, top level only,
/// known names), once; and the files form one loadable layout: a `config.json` and either one
/// `model.safetensors` or `model.safetensors.index.json` with `model-NNNNN-of-NNNNN.safetensors`
/// shards, and no other weights file.
pub fn check_files<'a>(paths: impl IntoIterator<Item = &'a str>) -> Result<(), GateError> {
    let mut seen = BTreeSet::new();
    let mut refused = Vec::new();
    for p in paths {
        if !seen.insert(p) {
            return Err(GateError::refused(
                RejectCode::FileRefused,
                format!(
                    "the manifest lists {:?} twice",
                    truncate(p, VALUE_IN_MESSAGE)
                ),
            ));
        }
        if let Err(why) = file_policy(p) {
            refused.push(format!("{:?} ({why})", truncate(p, VALUE_IN_MESSAGE)));
        } else if p.ends_with(".safetensors") && p != "model.safetensors" && !is_shard_name(p) {
            refused.push(format!(
                "{:?} (a weights file must be model.safetensors or model-NNNNN-of-NNNNN.safetensors)",
                truncate(p, VALUE_IN_MESSAGE)
            ));
        }
    }
    if !refused.is_empty() {
        let more = refused.len().saturating_sub(LIST_IN_MESSAGE);
        let mut message = format!(
            "not allowed: {}",
            refused
                .into_iter()
                .take(LIST_IN_MESSAGE)
                .collect::<Vec<_>>()
                .join("; ")
        );
        if more > 0 {
            message.push_str(&format!("; and {more} more"));
        }
        return Err(GateError::refused(RejectCode::FileRefused, message));
    }
    let missing = |what: &str| GateError::refused(RejectCode::FileRefused, what.to_string());
    if !seen.contains("config.json") {
        return Err(missing("the checkpoint has no config.json"));
    }
    let single = seen.contains("model.safetensors");
    let index = seen.contains("model.safetensors.index.json");
    let shards = seen.iter().any(|p| is_shard_name(p));
    match (single, index, shards) {
        (true, false, false) | (false, true, true) => Ok(()),
        (false, false, false) => Err(missing(
            "the checkpoint has no weights (model.safetensors, or model.safetensors.index.json with shards)",
        )),
        (false, true, false) => Err(missing(
            "model.safetensors.index.json is present but no model-*-of-*.safetensors shard is",
        )),
        (false, false, true) => Err(missing(
            "weight shards are present without model.safetensors.index.json",
        )),
        (true, _, _) => Err(missing(
            "both model.safetensors and a sharded index are present; a checkpoint has one layout",
        )),
    }
}

/// `too_large`: the sum of the manifest's file sizes against the competition's cap. The shell
/// enforces the cap again while downloading (a manifest may lie about sizes).
pub fn check_size(sizes: impl IntoIterator<Item = u64>, cap_bytes: u64) -> Result<(), GateError> {
    let mut total: u64 = 0;
    let mut files = 0usize;
    for s in sizes {
        files += 1;
        total = match total.checked_add(s) {
            Some(t) => t,
            None => {
                return Err(GateError::refused(
                    RejectCode::TooLarge,
                    format!("the manifest's sizes overflow 64 bits; the cap is {cap_bytes} bytes"),
                ))
            }
        };
    }
    if total > cap_bytes {
        return Err(GateError::refused(
            RejectCode::TooLarge,
            format!(
                "the checkpoint is {total} bytes ({files} files in its manifest); the cap is {cap_bytes} bytes"
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Gate 3: config.json against the architecture lock.

fn show(v: Option<&Value>) -> String {
    match v {
        None => "absent".to_string(),
        Some(v) => {
            let s = v.to_string();
            if s.len() > VALUE_IN_MESSAGE {
                format!("{}…", truncate(&s, VALUE_IN_MESSAGE))
            } else {
                s
            }
        }
    }
}

/// JSON equality where numbers compare by value (`1e-5` equals `0.00001`), but an integer never
/// equals a float of another value, and `1` vs `1.0` compare equal only if both are the same
/// number.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(p), Some(q), _, _) => p == q,
                (_, _, Some(p), Some(q)) => p == q,
                _ => match (x.as_f64(), y.as_f64()) {
                    (Some(p), Some(q)) => p == q,
                    _ => false,
                },
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// `config_mismatch`: the challenger's `config.json` must equal the king's on every key except
/// those on the lock's free list — absent-vs-present counts — its `model_type` must be the
/// lock's family, and it must not name custom code (`auto_map`).
///
/// Undecidable when the king's config is not an object or lacks a locked key: then there is
/// nothing sound to compare against, and the gate must not pass.
pub fn check_config(
    king: &Value,
    challenger: &Value,
    lock: &ArchitectureLock,
) -> Result<(), GateError> {
    let Some(king) = king.as_object() else {
        return Err(GateError::Undecidable(
            "the king's config.json is not a JSON object".into(),
        ));
    };
    if let Some(missing) = lock.locked_keys.iter().find(|k| !king.contains_key(*k)) {
        return Err(GateError::Undecidable(format!(
            "the king's config.json lacks the locked key {missing:?}"
        )));
    }
    let Some(chal) = challenger.as_object() else {
        return Err(GateError::refused(
            RejectCode::ConfigMismatch,
            "config.json is not a JSON object",
        ));
    };
    if chal.contains_key("auto_map") {
        return Err(GateError::refused(
            RejectCode::ConfigMismatch,
            "config.json has `auto_map` (custom model code); submitted code is never run",
        ));
    }
    let family = chal.get("model_type");
    if family.and_then(Value::as_str) != Some(lock.family.as_str()) {
        return Err(GateError::refused(
            RejectCode::ConfigMismatch,
            format!(
                "key `model_type`: the competition's family is {:?}, the challenger has {}",
                lock.family,
                show(family)
            ),
        ));
    }
    let free: BTreeSet<&str> = lock.free_keys.iter().map(String::as_str).collect();
    let keys: BTreeSet<&str> = king
        .keys()
        .chain(chal.keys())
        .map(String::as_str)
        .filter(|k| !free.contains(k))
        .collect();
    let mut diffs = Vec::new();
    for k in keys {
        let (a, b) = (king.get(k), chal.get(k));
        let equal = match (a, b) {
            (Some(a), Some(b)) => json_equal(a, b),
            (None, None) => true,
            _ => false,
        };
        if !equal {
            diffs.push(format!(
                "key `{}`: king has {}, challenger has {}",
                truncate(k, VALUE_IN_MESSAGE),
                show(a),
                show(b)
            ));
        }
    }
    if diffs.is_empty() {
        return Ok(());
    }
    let more = diffs.len().saturating_sub(LIST_IN_MESSAGE);
    let mut message = diffs
        .into_iter()
        .take(LIST_IN_MESSAGE)
        .collect::<Vec<_>>()
        .join("; ");
    if more > 0 {
        message.push_str(&format!("; and {more} more keys differ"));
    }
    Err(GateError::refused(RejectCode::ConfigMismatch, message))
}

// ---------------------------------------------------------------------------------------------
// Gate 4: safetensors headers and the tensor set.

/// A tensor's type and shape, as its safetensors header declares them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorInfo {
    pub dtype: String,
    pub shape: Vec<u64>,
}

/// One tensor of one safetensors file, with its byte range inside the data section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub info: TensorInfo,
    pub begin: u64,
    pub end: u64,
}

/// Largest safetensors header accepted: the one header parser's limit.
pub use koth_core::safetensors::MAX_HEADER_BYTES;

/// Parse the header of a safetensors file `file` (named in messages) of `file_len` bytes, given
/// at least its first `8 + header length` bytes in `head`, with the workspace's one header parser
/// ([`koth_core::safetensors::parse_header`], which the model loader uses too, so the gate and
/// the loader accept exactly the same files). Every bound is checked there: the header fits the
/// file and the size cap, no key twice, known dtypes, each tensor's byte range matches its
/// shape, and the ranges tile the data section exactly. A bad header is the checkpoint's
/// `tensors_mismatch`; fewer bytes than the header needs is the reader's fault (undecidable).
pub fn parse_safetensors_header(
    file: &str,
    head: &[u8],
    file_len: u64,
) -> Result<Vec<TensorEntry>, GateError> {
    let header = koth_core::safetensors::parse_header(head, file_len).map_err(|e| {
        let message = format!("{}: {e}", truncate(file, VALUE_IN_MESSAGE));
        if e.is_incomplete_read() {
            GateError::Undecidable(message)
        } else {
            GateError::refused(RejectCode::TensorsMismatch, message)
        }
    })?;
    Ok(header
        .entries
        .into_iter()
        .map(|e| TensorEntry {
            info: TensorInfo {
                dtype: e.dtype.name().to_string(),
                shape: e.shape,
            },
            name: e.name,
            begin: e.begin,
            end: e.end,
        })
        .collect())
}

/// Merge the tensors of all files of a checkpoint into one name → info map; a name in two files
/// is refused.
pub fn tensor_index<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a [TensorEntry])>,
) -> Result<BTreeMap<String, TensorInfo>, GateError> {
    let mut index: BTreeMap<String, TensorInfo> = BTreeMap::new();
    let mut origin: BTreeMap<&str, &str> = BTreeMap::new();
    for (file, entries) in files {
        for e in entries {
            if let Some(first) = origin.insert(e.name.as_str(), file) {
                return Err(GateError::refused(
                    RejectCode::TensorsMismatch,
                    format!(
                        "tensor {:?} appears in both {first} and {file}",
                        truncate(&e.name, VALUE_IN_MESSAGE)
                    ),
                ));
            }
            index.insert(e.name.clone(), e.info.clone());
        }
    }
    Ok(index)
}

/// `tensors_mismatch`: exactly the king's tensor names and shapes, no extras; each dtype in
/// `allowed_dtypes`, or exactly the king's when that list is empty.
pub fn check_tensors(
    king: &BTreeMap<String, TensorInfo>,
    challenger: &BTreeMap<String, TensorInfo>,
    allowed_dtypes: &[String],
) -> Result<(), GateError> {
    if king.is_empty() {
        return Err(GateError::Undecidable("the king has no tensors".into()));
    }
    let refuse = |m: String| GateError::refused(RejectCode::TensorsMismatch, m);
    let missing: Vec<&str> = king
        .keys()
        .filter(|k| !challenger.contains_key(*k))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(refuse(format!(
            "{} of the king's tensors are missing: {}",
            missing.len(),
            list_names(missing)
        )));
    }
    let extra: Vec<&str> = challenger
        .keys()
        .filter(|k| !king.contains_key(*k))
        .map(String::as_str)
        .collect();
    if !extra.is_empty() {
        return Err(refuse(format!(
            "{} tensors the king does not have: {}",
            extra.len(),
            list_names(extra)
        )));
    }
    for (name, k) in king {
        let Some(c) = challenger.get(name) else {
            continue;
        };
        let n = truncate(name, VALUE_IN_MESSAGE);
        if c.shape != k.shape {
            return Err(refuse(format!(
                "tensor {n:?} has shape {:?}, the king's is {:?}",
                c.shape, k.shape
            )));
        }
        let dtype_ok = if allowed_dtypes.is_empty() {
            c.dtype == k.dtype
        } else {
            allowed_dtypes.contains(&c.dtype)
        };
        if !dtype_ok {
            let allowed = if allowed_dtypes.is_empty() {
                format!("the king's {}", k.dtype)
            } else {
                format!("one of {allowed_dtypes:?}")
            };
            return Err(refuse(format!(
                "tensor {n:?} has dtype {}, must be {allowed}",
                truncate(&c.dtype, VALUE_IN_MESSAGE)
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Gate 5: the weights' values.

/// Statistics of one tensor's values, computed by the shell (in f64 over the whole tensor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorStats {
    pub name: String,
    /// Count of NaN and ±Inf values.
    pub non_finite: u64,
    /// Root mean square of the finite values.
    pub rms: f64,
}

/// How far a tensor's RMS may move from the king's, as a factor either way, by default. Fine
/// tuning moves norm gains by percents; the RMSNorm × Linear reparameterisation that leaves the
/// function unchanged but makes a model untrainable moves them by orders of magnitude.
pub const DEFAULT_MAX_SCALE_RATIO: f64 = 8.0;

/// King tensors with an RMS below this (zero-initialised biases, for instance) give no scale to
/// compare with; their challenger values are only checked for being finite.
pub const MIN_COMPARABLE_RMS: f64 = 1e-12;

/// `weights_invalid`: no NaN/Inf anywhere, and every tensor's RMS within `max_ratio` of the
/// king's (either way).
pub fn check_weights(
    king: &[TensorStats],
    challenger: &[TensorStats],
    max_ratio: f64,
) -> Result<(), GateError> {
    if !(max_ratio.is_finite() && max_ratio >= 1.0) {
        return Err(GateError::Undecidable(format!(
            "max scale ratio {max_ratio} must be a finite number >= 1"
        )));
    }
    let refuse = |m: String| GateError::refused(RejectCode::WeightsInvalid, m);
    for c in challenger {
        if c.non_finite > 0 || !c.rms.is_finite() {
            return Err(refuse(format!(
                "tensor {:?} has {} NaN/Inf values",
                truncate(&c.name, VALUE_IN_MESSAGE),
                c.non_finite.max(1)
            )));
        }
    }
    let by_name: BTreeMap<&str, &TensorStats> =
        challenger.iter().map(|s| (s.name.as_str(), s)).collect();
    for k in king {
        let Some(c) = by_name.get(k.name.as_str()) else {
            return Err(GateError::Undecidable(format!(
                "no statistics for the challenger's tensor {:?}",
                k.name
            )));
        };
        if !(k.rms.is_finite()) {
            return Err(GateError::Undecidable(format!(
                "the king's tensor {:?} has a non-finite RMS",
                k.name
            )));
        }
        if k.rms < MIN_COMPARABLE_RMS {
            continue;
        }
        let ratio = c.rms / k.rms;
        if ratio > max_ratio || ratio < 1.0 / max_ratio {
            return Err(refuse(format!(
                "tensor {:?} has RMS {:.6e}, the king's is {:.6e} (ratio {ratio:.3e}, allowed 1/{max_ratio} to {max_ratio})",
                truncate(&c.name, VALUE_IN_MESSAGE),
                c.rms,
                k.rms
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(r: Result<(), GateError>) -> Option<RejectCode> {
        r.err().and_then(|e| e.code())
    }

    fn lock() -> ArchitectureLock {
        ArchitectureLock {
            family: "llama".into(),
            locked_keys: vec!["hidden_size".into(), "num_hidden_layers".into()],
            free_keys: vec!["transformers_version".into(), "torch_dtype".into()],
            allowed_dtypes: vec![],
        }
    }

    fn king_config() -> Value {
        json!({
            "model_type": "llama",
            "hidden_size": 256,
            "num_hidden_layers": 4,
            "rms_norm_eps": 1e-5,
            "rope_scaling": null,
            "transformers_version": "4.40.0",
            "torch_dtype": "bfloat16"
        })
    }

    #[test]
    fn files_allowed_layouts_pass() {
        assert_eq!(check_files(["config.json", "model.safetensors"]), Ok(()));
        assert_eq!(
            check_files([
                "config.json",
                "model.safetensors.index.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
                "tokenizer.json",
            ]),
            Ok(())
        );
    }

    #[test]
    fn file_refused_for_code_pickles_subdirectories_and_broken_layouts() {
        for bad in [
            vec!["config.json", "model.safetensors", "modeling_llama.py"],
            vec!["config.json", "pytorch_model.bin"],
            vec!["config.json", "model.safetensors", "sub/tokenizer.json"],
            vec!["config.json", "model.safetensors", "../config.json"],
            vec!["model.safetensors"],
            vec!["config.json"],
            vec!["config.json", "model.safetensors.index.json"],
            vec!["config.json", "model-00001-of-00001.safetensors"],
            vec!["config.json", "model.safetensors", "model.safetensors"],
            vec![
                "config.json",
                "model.safetensors",
                "adapter_model.safetensors",
            ],
            vec!["config.json", "model.safetensors", "optimizer.pt"],
            vec!["config.json", "model.safetensors", "README.md"],
            vec![
                "config.json",
                "model.safetensors",
                "model.safetensors.index.json",
                "model-00001-of-00001.safetensors",
            ],
        ] {
            assert_eq!(
                code(check_files(bad.iter().copied())),
                Some(RejectCode::FileRefused),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn file_refusals_say_why() {
        let err = check_files(["config.json", "model.safetensors", "modeling_llama.py"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"modeling_llama.py\"") && err.contains("executable"),
            "{err}"
        );
        let err = check_files(["config.json", "pytorch_model.bin"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("pickle"), "{err}");
    }

    #[test]
    fn too_large_fires_on_the_sum_and_on_overflow() {
        assert_eq!(check_size([40, 60], 100), Ok(()));
        let err = check_size([40, 61], 100).unwrap_err();
        assert_eq!(err.code(), Some(RejectCode::TooLarge));
        assert!(err.to_string().contains("101 bytes"), "{err}");
        assert_eq!(
            code(check_size([u64::MAX, 1], u64::MAX)),
            Some(RejectCode::TooLarge)
        );
    }

    #[test]
    fn config_equal_but_for_free_keys_passes() {
        let mut c = king_config();
        c["transformers_version"] = json!("5.0.0");
        c["torch_dtype"] = json!("float32");
        c["rms_norm_eps"] = json!(0.00001);
        assert_eq!(check_config(&king_config(), &c, &lock()), Ok(()));
    }

    #[test]
    fn config_mismatch_names_the_key_and_both_values() {
        let mut c = king_config();
        c["hidden_size"] = json!(512);
        let err = check_config(&king_config(), &c, &lock()).unwrap_err();
        assert_eq!(err.code(), Some(RejectCode::ConfigMismatch));
        let m = err.to_string();
        assert!(
            m.contains("`hidden_size`") && m.contains("256") && m.contains("512"),
            "{m}"
        );
    }

    #[test]
    fn config_absent_vs_present_is_a_mismatch_both_ways() {
        let mut extra = king_config();
        extra["tie_word_embeddings"] = json!(false);
        let err = check_config(&king_config(), &extra, &lock()).unwrap_err();
        assert!(err.to_string().contains("king has absent"), "{err}");
        let mut missing = king_config();
        missing.as_object_mut().unwrap().remove("rope_scaling");
        let err = check_config(&king_config(), &missing, &lock()).unwrap_err();
        assert!(err.to_string().contains("challenger has absent"), "{err}");
        // `null` is a value, not absence.
        let mut null_vs_absent = king_config();
        null_vs_absent
            .as_object_mut()
            .unwrap()
            .remove("rope_scaling");
        assert!(check_config(&null_vs_absent, &king_config(), &lock()).is_err());
    }

    #[test]
    fn config_family_auto_map_and_non_object_are_refused() {
        let mut c = king_config();
        c["model_type"] = json!("qwen3");
        assert_eq!(
            code(check_config(&king_config(), &c, &lock())),
            Some(RejectCode::ConfigMismatch)
        );
        let mut c = king_config();
        c["auto_map"] = json!({"AutoModel": "modeling.Evil"});
        let err = check_config(&king_config(), &c, &lock()).unwrap_err();
        assert!(err.to_string().contains("auto_map"), "{err}");
        assert_eq!(
            code(check_config(&king_config(), &json!([1]), &lock())),
            Some(RejectCode::ConfigMismatch)
        );
        // An integer is not a float of another value.
        let mut c = king_config();
        c["hidden_size"] = json!(256.5);
        assert!(check_config(&king_config(), &c, &lock()).is_err());
    }

    #[test]
    fn config_cannot_decide_without_a_sound_king_config() {
        let mut king = king_config();
        king.as_object_mut().unwrap().remove("num_hidden_layers");
        // Even a challenger identical to this king must not pass: the lock cannot be checked.
        assert!(matches!(
            check_config(&king, &king.clone(), &lock()),
            Err(GateError::Undecidable(_))
        ));
        assert!(matches!(
            check_config(&Value::Null, &king_config(), &lock()),
            Err(GateError::Undecidable(_))
        ));
    }

    fn header_bytes(header: &Value, data_len: usize) -> (Vec<u8>, u64) {
        let h = serde_json::to_vec(header).unwrap();
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&h);
        let file_len = out.len() as u64 + data_len as u64;
        (out, file_len)
    }

    fn good_header() -> Value {
        json!({
            "__metadata__": {"format": "pt"},
            "a": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]},
            "b": {"dtype": "F32", "shape": [4], "data_offsets": [12, 28]}
        })
    }

    #[test]
    fn safetensors_header_parses_with_exact_tiling() {
        let (head, len) = header_bytes(&good_header(), 28);
        let entries = parse_safetensors_header("model.safetensors", &head, len).unwrap();
        assert_eq!(entries.len(), 2);
        let index = tensor_index([("model.safetensors", entries.as_slice())]).unwrap();
        assert_eq!(index["a"].shape, vec![2, 3]);
    }

    #[test]
    fn safetensors_headers_with_bad_bounds_are_refused() {
        let cases: Vec<(Value, usize)> = vec![
            // overlap
            (
                json!({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                       "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}),
                24,
            ),
            // gap
            (
                json!({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}),
                8,
            ),
            // past the end
            (
                json!({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}),
                8,
            ),
            // size does not match shape
            (
                json!({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}),
                16,
            ),
            // unknown dtype
            (
                json!({"a": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 2]}}),
                2,
            ),
            // trailing bytes not covered
            (
                json!({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}),
                9,
            ),
            // shape overflow
            (
                json!({"a": {"dtype": "F64", "shape": [u64::MAX, 2], "data_offsets": [0, 0]}}),
                0,
            ),
            // negative dimension
            (
                json!({"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 0]}}),
                0,
            ),
            (json!([1, 2]), 0),
        ];
        for (header, data_len) in cases {
            let (head, len) = header_bytes(&header, data_len);
            let r = parse_safetensors_header("x.safetensors", &head, len);
            assert_eq!(
                r.as_ref().err().and_then(|e| e.code()),
                Some(RejectCode::TensorsMismatch),
                "{header} -> {r:?}"
            );
        }
        // A header length that runs past the file.
        let mut head = 1_000u64.to_le_bytes().to_vec();
        head.extend_from_slice(b"{}");
        assert!(parse_safetensors_header("x", &head, 10).is_err());
        assert!(parse_safetensors_header("x", &[1, 2, 3], 3).is_err());
        // Not JSON.
        let mut head = 3u64.to_le_bytes().to_vec();
        head.extend_from_slice(b"{x}");
        assert_eq!(
            parse_safetensors_header("x", &head, 11)
                .err()
                .and_then(|e| e.code()),
            Some(RejectCode::TensorsMismatch)
        );
        // A tensor named twice (a JSON reader keeping the last would see other weights).
        let twice = br#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#;
        let mut head = (twice.len() as u64).to_le_bytes().to_vec();
        head.extend_from_slice(twice);
        let len = head.len() as u64 + 1;
        let e = parse_safetensors_header("x", &head, len).unwrap_err();
        assert_eq!(e.code(), Some(RejectCode::TensorsMismatch));
        assert!(e.to_string().contains("twice"), "{e}");
        // Fewer bytes read than the header needs is ours to retry, not the checkpoint's fault.
        let (head, len) = header_bytes(&good_header(), 28);
        let e = parse_safetensors_header("x", &head[..20], len).unwrap_err();
        assert_eq!(e.code(), None, "{e}");
    }

    fn index(entries: &[(&str, &str, &[u64])]) -> BTreeMap<String, TensorInfo> {
        entries
            .iter()
            .map(|(n, d, s)| {
                (
                    n.to_string(),
                    TensorInfo {
                        dtype: d.to_string(),
                        shape: s.to_vec(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn tensors_must_match_exactly() {
        let king = index(&[("embed", "BF16", &[10, 4]), ("norm", "BF16", &[4])]);
        assert_eq!(check_tensors(&king, &king.clone(), &[]), Ok(()));
        let missing = index(&[("embed", "BF16", &[10, 4])]);
        let err = check_tensors(&king, &missing, &[]).unwrap_err();
        assert!(err.to_string().contains("\"norm\""), "{err}");
        let extra = index(&[
            ("embed", "BF16", &[10, 4]),
            ("norm", "BF16", &[4]),
            ("lora_A", "BF16", &[4]),
        ]);
        assert!(check_tensors(&king, &extra, &[])
            .unwrap_err()
            .to_string()
            .contains("lora_A"));
        let shape = index(&[("embed", "BF16", &[11, 4]), ("norm", "BF16", &[4])]);
        assert_eq!(
            code(check_tensors(&king, &shape, &[])),
            Some(RejectCode::TensorsMismatch)
        );
        let dtype = index(&[("embed", "F32", &[10, 4]), ("norm", "BF16", &[4])]);
        assert_eq!(
            code(check_tensors(&king, &dtype, &[])),
            Some(RejectCode::TensorsMismatch)
        );
        // With an allow-list, F32 is fine and F16 is not.
        let allowed = vec!["BF16".to_string(), "F32".to_string()];
        assert_eq!(check_tensors(&king, &dtype, &allowed), Ok(()));
        let f16 = index(&[("embed", "F16", &[10, 4]), ("norm", "BF16", &[4])]);
        assert!(check_tensors(&king, &f16, &allowed).is_err());
        // A tensor in two shards.
        let e = TensorEntry {
            name: "w".into(),
            info: TensorInfo {
                dtype: "F32".into(),
                shape: vec![1],
            },
            begin: 0,
            end: 4,
        };
        let one = [e.clone()];
        assert!(tensor_index([("a", &one[..]), ("b", &one[..])]).is_err());
        assert!(matches!(
            check_tensors(&BTreeMap::new(), &king, &[]),
            Err(GateError::Undecidable(_))
        ));
    }

    fn stats(name: &str, non_finite: u64, rms: f64) -> TensorStats {
        TensorStats {
            name: name.into(),
            non_finite,
            rms,
        }
    }

    #[test]
    fn weights_invalid_on_nan_and_on_reparameterised_scales() {
        let king = vec![stats("norm.weight", 0, 1.0), stats("proj.weight", 0, 0.02)];
        let fine = vec![
            stats("norm.weight", 0, 1.05),
            stats("proj.weight", 0, 0.021),
        ];
        assert_eq!(check_weights(&king, &fine, DEFAULT_MAX_SCALE_RATIO), Ok(()));
        let nan = vec![stats("norm.weight", 3, 1.0), stats("proj.weight", 0, 0.02)];
        assert_eq!(
            code(check_weights(&king, &nan, DEFAULT_MAX_SCALE_RATIO)),
            Some(RejectCode::WeightsInvalid)
        );
        // RMSNorm gain × 100, projection ÷ 100: same function, untrainable model.
        let reparam = vec![
            stats("norm.weight", 0, 100.0),
            stats("proj.weight", 0, 0.0002),
        ];
        let err = check_weights(&king, &reparam, DEFAULT_MAX_SCALE_RATIO).unwrap_err();
        assert!(err.to_string().contains("norm.weight"), "{err}");
        // Missing statistics: cannot decide, never a pass.
        assert!(matches!(
            check_weights(&king, &fine[..1], DEFAULT_MAX_SCALE_RATIO),
            Err(GateError::Undecidable(_))
        ));
    }
}
