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
    MAX_HEADER_BYTES,
};

fn undecidable(m: String) -> GateError {
    GateError::Undecidable(m)
}

/// The king's `config.json`, or undecidable.
pub fn read_king_config(dir: &Path) -> Result<Value, GateError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| undecidable(format!("reading the king's {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| undecidable(format!("the king's config.json does not parse: {e}")))
}

/// The challenger's `config.json`: unreadable JSON is the challenger's `config_mismatch`.
pub fn read_challenger_config(dir: &Path) -> Result<Value, GateError> {
    let path = dir.join("config.json");
    let bytes = std::fs::read(&path)
        .map_err(|e| undecidable(format!("reading the fetched {}: {e}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| GateError::Refused {
        code: RejectCode::ConfigMismatch,
        message: format!("config.json is not valid JSON: {e}"),
    })
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
        // Read what the header claims, but never past the file or the header limit: the pure
        // parser then refuses an out-of-bounds length with a precise message.
        let want = header_len
            .min(MAX_HEADER_BYTES)
            .min(file_len.saturating_sub(8));
        let mut head = len8[..got].to_vec();
        if got == 8 && want > 0 {
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

/// Per-tensor statistics (count of NaN/Inf, RMS of the finite values) in f64, streamed from
/// disk in bounded chunks.
pub fn tensor_stats(files: &[ParsedFile]) -> Result<Vec<TensorStats>, GateError> {
    const CHUNK: usize = 1 << 20;
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
            let (mut sum_sq, mut count, mut non_finite) = (0.0f64, 0u64, 0u64);
            let step = CHUNK - CHUNK % width;
            while remaining > 0 {
                let take = remaining.min(step as u64) as usize;
                let chunk = &mut buf[..take];
                f.read_exact(chunk).map_err(io)?;
                for x in chunk.chunks_exact(width) {
                    let v = decode(&e.info.dtype, x);
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
