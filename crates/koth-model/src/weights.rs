//! Safetensors checkpoints: strict parsing, exact tensor sets, loading and saving in Hugging
//! Face layout (`model.safetensors`, or `model.safetensors.index.json` + numbered shards).
//!
//! Headers are parsed here rather than by the `safetensors` crate so that every refusal names
//! the file and the tensor at fault (the crate reports e.g. a byte-count mismatch without the
//! tensor's name). Checks: the 8-byte header length lies inside the file; the header is a JSON
//! object of tensors with a known dtype, a shape and `data_offsets`; dtype × shape equals the
//! byte span; spans are contiguous, non-overlapping and cover the data exactly to the end of the
//! file. Writing uses the `safetensors` crate, the reference writer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};
use safetensors::Dtype as StDtype;
use serde_json::Value;

use crate::config::{ModelConfig, TensorSpec};
use crate::error::{ModelError, Result};

/// The single-file checkpoint name.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Hugging Face's default shard size ("5GB").
pub const DEFAULT_SHARD_LIMIT_BYTES: u64 = 5_000_000_000;
/// Larger headers are refused (the safetensors crate's own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One tensor as a safetensors header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: StDtype,
    pub shape: Vec<usize>,
    /// Byte range relative to the start of the data section.
    pub start: usize,
    pub end: usize,
}

/// A parsed and validated safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    pub path: PathBuf,
    /// Offset of the data section from the start of the file (8 + header length).
    pub data_start: usize,
    /// Sorted by name.
    pub entries: Vec<TensorEntry>,
}

/// Parse a safetensors header. `bytes` holds at least the first `8 + n` bytes of the file and
/// `file_len` is the length of the whole file.
fn parse_header(path: &Path, bytes: &[u8], file_len: u64) -> Result<FileHeader> {
    let err = |tensor: Option<&str>, reason: String| ModelError::safetensors(path, tensor, reason);
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            err(
                None,
                format!("file is {file_len} bytes, too short for the 8-byte header length"),
            )
        })?;
    let n = u64::from_le_bytes(len_bytes);
    if n > MAX_HEADER_BYTES {
        return Err(err(
            None,
            format!("header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit"),
        ));
    }
    if 8 + n > file_len {
        return Err(err(
            None,
            format!("header length {n} points past the end of the file ({file_len} bytes)"),
        ));
    }
    let data_start = 8 + n as usize;
    let header_bytes = bytes
        .get(8..data_start)
        .ok_or_else(|| err(None, "header is truncated".into()))?;
    let text = std::str::from_utf8(header_bytes)
        .map_err(|e| err(None, format!("header is not UTF-8: {e}")))?;
    let Value::Object(map) = serde_json::from_str::<Value>(text)
        .map_err(|e| err(None, format!("header is not valid JSON: {e}")))?
    else {
        return Err(err(None, "header is not a JSON object".into()));
    };

    let mut entries = Vec::with_capacity(map.len());
    for (name, info) in &map {
        if name == "__metadata__" {
            continue;
        }
        let t = Some(name.as_str());
        let dtype_value = info
            .get("dtype")
            .ok_or_else(|| err(t, "has no `dtype`".into()))?;
        let dtype: StDtype = serde_json::from_value(dtype_value.clone())
            .map_err(|_| err(t, format!("unknown dtype {dtype_value}")))?;
        let shape = info
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| err(t, "has no `shape` list".into()))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| err(t, format!("shape {} is not a list of sizes", info["shape"])))?;
        let offsets = info
            .get("data_offsets")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 2)
            .and_then(|a| {
                let s = usize::try_from(a[0].as_u64()?).ok()?;
                let e = usize::try_from(a[1].as_u64()?).ok()?;
                Some((s, e))
            })
            .ok_or_else(|| err(t, "`data_offsets` is not a pair of byte offsets".into()))?;
        let (start, end) = offsets;
        if end < start {
            return Err(err(
                t,
                format!("data_offsets [{start}, {end}] end before they start"),
            ));
        }
        let byte_len = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.bitsize()))
            .map(|bits| bits.div_ceil(8))
            .ok_or_else(|| err(t, format!("shape {shape:?} overflows")))?;
        if byte_len != end - start {
            return Err(err(
                t,
                format!(
                    "dtype {dtype:?} with shape {shape:?} needs {byte_len} bytes but data_offsets [{start}, {end}] span {}",
                    end - start
                ),
            ));
        }
        entries.push(TensorEntry {
            name: name.clone(),
            dtype,
            shape,
            start,
            end,
        });
    }

    // The spans must tile the data section: no gaps (hidden bytes), no overlaps (aliasing).
    let mut by_offset: Vec<&TensorEntry> = entries.iter().collect();
    by_offset.sort_by_key(|e| (e.start, e.end));
    let mut cursor = 0usize;
    let mut previous: Option<&str> = None;
    for e in &by_offset {
        if e.start != cursor {
            let what = if e.start < cursor {
                "overlaps"
            } else {
                "leaves a gap after"
            };
            return Err(err(
                Some(&e.name),
                format!(
                    "data_offsets start at {} which {what} {} (ends at {cursor})",
                    e.start,
                    previous
                        .map(|p| format!("tensor `{p}`"))
                        .unwrap_or("the data start".into())
                ),
            ));
        }
        cursor = e.end;
        previous = Some(&e.name);
    }
    let expected_len = data_start as u64 + cursor as u64;
    if expected_len != file_len {
        return Err(err(
            None,
            format!(
                "file is {file_len} bytes but its header describes {expected_len} ({})",
                if file_len < expected_len {
                    "truncated"
                } else {
                    "trailing bytes"
                }
            ),
        ));
    }
    Ok(FileHeader {
        path: path.to_owned(),
        data_start,
        entries,
    })
}

/// Read and validate only the header of a safetensors file (cheap: no tensor data is read).
pub fn read_header(path: &Path) -> Result<FileHeader> {
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| ModelError::io(path, e))?.len();
    let mut len_bytes = [0u8; 8];
    if file_len < 8 {
        return parse_header(path, &[], file_len);
    }
    file.read_exact(&mut len_bytes)
        .map_err(|e| ModelError::io(path, e))?;
    let n = u64::from_le_bytes(len_bytes);
    if n > MAX_HEADER_BYTES || 8 + n > file_len {
        return parse_header(path, &len_bytes, file_len);
    }
    let mut bytes = vec![0u8; 8 + n as usize];
    bytes[..8].copy_from_slice(&len_bytes);
    file.read_exact(&mut bytes[8..])
        .map_err(|e| ModelError::io(path, e))?;
    parse_header(path, &bytes, file_len)
}

/// The safetensors files of a checkpoint directory, with validated headers, and which file holds
/// each tensor.
#[derive(Debug, Clone)]
pub struct CheckpointFiles {
    pub headers: Vec<FileHeader>,
}

impl CheckpointFiles {
    /// Find and validate the weight files of `dir`: `model.safetensors`, or the index and every
    /// shard it names. A tensor in a shard that the index does not map to that shard, or an
    /// index entry whose shard lacks it, is an error.
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join(SINGLE_FILE);
        let index = dir.join(INDEX_FILE);
        match (single.exists(), index.exists()) {
            (true, true) => Err(ModelError::safetensors(
                dir,
                None,
                format!("holds both {SINGLE_FILE} and {INDEX_FILE}; a checkpoint has one layout"),
            )),
            (true, false) => Ok(Self {
                headers: vec![read_header(&single)?],
            }),
            (false, true) => Self::open_sharded(dir, &index),
            (false, false) => Err(ModelError::safetensors(
                dir,
                None,
                format!("holds neither {SINGLE_FILE} nor {INDEX_FILE}"),
            )),
        }
    }

    fn open_sharded(dir: &Path, index: &Path) -> Result<Self> {
        let err =
            |tensor: Option<&str>, reason: String| ModelError::safetensors(index, tensor, reason);
        let text = std::fs::read_to_string(index).map_err(|e| ModelError::io(index, e))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|e| err(None, format!("not valid JSON: {e}")))?;
        let weight_map = value
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| err(None, "has no `weight_map` object".into()))?;
        // shard file name → tensor names the index puts there
        let mut shards: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (tensor, file) in weight_map {
            let file = file
                .as_str()
                .ok_or_else(|| err(Some(tensor), format!("shard name {file} is not a string")))?;
            let plain = !file.is_empty()
                && !file.contains(['/', '\\'])
                && file != "."
                && file != ".."
                && file.ends_with(".safetensors");
            if !plain {
                return Err(err(
                    Some(tensor),
                    format!("shard `{file}` is not a plain *.safetensors file name"),
                ));
            }
            shards
                .entry(file.to_owned())
                .or_default()
                .insert(tensor.clone());
        }
        let mut headers = Vec::with_capacity(shards.len());
        for (file, mapped) in &shards {
            let header = read_header(&dir.join(file))?;
            let present: BTreeSet<String> = header.entries.iter().map(|e| e.name.clone()).collect();
            if let Some(t) = mapped.difference(&present).next() {
                return Err(err(
                    Some(t),
                    format!("is mapped to `{file}`, which does not hold it"),
                ));
            }
            if let Some(t) = present.difference(mapped).next() {
                return Err(ModelError::safetensors(
                    &header.path,
                    Some(t),
                    format!("is not mapped to this shard by {INDEX_FILE}"),
                ));
            }
            headers.push(header);
        }
        Ok(Self { headers })
    }

    /// Check that the files hold exactly the tensors `config` implies, with the right shapes
    /// and a floating-point dtype koth loads (F32, BF16, F16).
    pub fn check_tensor_set(&self, dir: &Path, config: &ModelConfig) -> Result<()> {
        let specs_owned = config.tensor_specs();
        let specs: BTreeMap<&str, &TensorSpec> =
            specs_owned.iter().map(|s| (s.name.as_str(), s)).collect();
        let mut problems = Vec::new();
        let mut seen: HashMap<&str, &Path> = HashMap::new();
        for h in &self.headers {
            for e in &h.entries {
                if let Some(first) = seen.insert(&e.name, &h.path) {
                    problems.push(format!(
                        "tensor `{}` appears in both {} and {}",
                        e.name,
                        first.display(),
                        h.path.display()
                    ));
                }
                match specs.get(e.name.as_str()) {
                    None => problems.push(format!("unexpected tensor `{}`", e.name)),
                    Some(spec) if spec.shape != e.shape => problems.push(format!(
                        "tensor `{}` has shape {:?}, expected {:?}",
                        e.name, e.shape, spec.shape
                    )),
                    Some(_) => {}
                }
                if !matches!(e.dtype, StDtype::F32 | StDtype::BF16 | StDtype::F16) {
                    problems.push(format!(
                        "tensor `{}` has dtype {:?}, expected F32, BF16 or F16",
                        e.name, e.dtype
                    ));
                }
            }
        }
        for spec in &specs_owned {
            if !seen.contains_key(spec.name.as_str()) {
                problems.push(format!(
                    "missing tensor `{}` (shape {:?})",
                    spec.name, spec.shape
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            const SHOWN: usize = 12;
            let more = problems.len().saturating_sub(SHOWN);
            problems.truncate(SHOWN);
            if more > 0 {
                problems.push(format!("and {more} more"));
            }
            Err(ModelError::TensorSet {
                path: dir.to_owned(),
                problems,
            })
        }
    }

    /// Total bytes of tensor data.
    pub fn data_bytes(&self) -> u64 {
        self.headers
            .iter()
            .flat_map(|h| &h.entries)
            .map(|e| (e.end - e.start) as u64)
            .sum()
    }

    /// The distinct stored dtypes, e.g. `["BF16"]`.
    pub fn dtypes(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .headers
            .iter()
            .flat_map(|h| &h.entries)
            .map(|e| format!("{:?}", e.dtype))
            .collect();
        set.into_iter().collect()
    }

    /// Read every tensor, converted to `dtype` on `device`. Each file is read whole, checked
    /// against the header validated when it was opened (a file that changed since is refused),
    /// converted, and dropped before the next is read.
    pub fn load_tensors(&self, dtype: DType, device: &Device) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for expected in &self.headers {
            let path = &expected.path;
            let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
            let header = parse_header(path, &bytes, bytes.len() as u64)?;
            if &header != expected {
                return Err(ModelError::safetensors(
                    path,
                    None,
                    "changed while it was being loaded",
                ));
            }
            let data = &bytes[header.data_start..];
            for e in &header.entries {
                let raw = data.get(e.start..e.end).ok_or_else(|| {
                    ModelError::safetensors(path, Some(&e.name), "data out of range")
                })?;
                let t = decode_tensor(path, e, raw)?
                    .to_dtype(dtype)?
                    .to_device(device)?;
                out.insert(e.name.clone(), t);
            }
        }
        Ok(out)
    }
}

fn decode_tensor(path: &Path, e: &TensorEntry, raw: &[u8]) -> Result<Tensor> {
    let cpu = Device::Cpu;
    let shape = e.shape.as_slice();
    Ok(match e.dtype {
        StDtype::F32 => {
            let v: Vec<f32> = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Tensor::from_vec(v, shape, &cpu)?
        }
        StDtype::BF16 => {
            let v: Vec<bf16> = raw
                .chunks_exact(2)
                .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                .collect();
            Tensor::from_vec(v, shape, &cpu)?
        }
        StDtype::F16 => {
            let v: Vec<f16> = raw
                .chunks_exact(2)
                .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                .collect();
            Tensor::from_vec(v, shape, &cpu)?
        }
        other => {
            return Err(ModelError::safetensors(
                path,
                Some(&e.name),
                format!("dtype {other:?} is not loadable (F32, BF16 or F16)"),
            ))
        }
    })
}

/// Read a whole safetensors file into named tensors on the CPU, in their stored dtype. For
/// files that are not checkpoints (expected outputs, gradients).
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    let header = parse_header(path, &bytes, bytes.len() as u64)?;
    let data = &bytes[header.data_start..];
    let mut out = BTreeMap::new();
    for e in &header.entries {
        let raw = &data[e.start..e.end];
        let t = match e.dtype {
            StDtype::F64 => {
                let v: Vec<f64> = raw
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect();
                Tensor::from_vec(v, e.shape.as_slice(), &Device::Cpu)?
            }
            StDtype::I64 => {
                let v: Vec<i64> = raw
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect();
                Tensor::from_vec(v, e.shape.as_slice(), &Device::Cpu)?
            }
            _ => decode_tensor(path, e, raw)?,
        };
        out.insert(e.name.clone(), t);
    }
    Ok(out)
}

/// A tensor's bytes ready for the safetensors writer.
struct EncodedTensor {
    dtype: StDtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl safetensors::View for &EncodedTensor {
    fn dtype(&self) -> StDtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn encode_tensor(name: &str, t: &Tensor) -> Result<EncodedTensor> {
    let flat = t.to_device(&Device::Cpu)?.flatten_all()?;
    let (dtype, bytes) = match t.dtype() {
        DType::F32 => (
            StDtype::F32,
            flat.to_vec1::<f32>()?
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        DType::BF16 => (
            StDtype::BF16,
            flat.to_vec1::<bf16>()?
                .iter()
                .flat_map(|x| x.to_bits().to_le_bytes())
                .collect(),
        ),
        DType::F16 => (
            StDtype::F16,
            flat.to_vec1::<f16>()?
                .iter()
                .flat_map(|x| x.to_bits().to_le_bytes())
                .collect(),
        ),
        other => {
            return Err(ModelError::Invalid(format!(
                "tensor `{name}` has dtype {other:?}; only f32, bf16 and f16 are saved"
            )))
        }
    };
    Ok(EncodedTensor {
        dtype,
        shape: t.dims().to_vec(),
        bytes,
    })
}

fn write_file(path: &Path, tensors: &[(String, EncodedTensor)]) -> Result<()> {
    let metadata = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    safetensors::serialize_to_file(
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        Some(metadata),
        path,
    )
    .map_err(|e| ModelError::safetensors(path, None, format!("cannot write: {e}")))
}

/// Write named tensors in `f32`/`bf16`/`f16` as a single file, or as shards of at most
/// `shard_limit_bytes` of tensor data each (a tensor larger than the limit gets a shard of its
/// own) plus `model.safetensors.index.json`. Returns the files written. A directory that already
/// holds weights or a config.json is refused: a checkpoint is never overwritten.
pub fn save_tensors(
    dir: &Path,
    tensors: &[(String, Tensor)],
    shard_limit_bytes: u64,
) -> Result<Vec<PathBuf>> {
    if shard_limit_bytes == 0 {
        return Err(ModelError::Invalid("shard limit must be positive".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    refuse_existing_weights(dir)?;

    let mut shards: Vec<Vec<(String, EncodedTensor)>> = vec![Vec::new()];
    let mut shard_bytes = 0u64;
    let mut total = 0u64;
    for (name, t) in tensors {
        let enc = encode_tensor(name, t)?;
        let n = enc.bytes.len() as u64;
        if shard_bytes + n > shard_limit_bytes && shard_bytes > 0 {
            shards.push(Vec::new());
            shard_bytes = 0;
        }
        shard_bytes += n;
        total += n;
        if let Some(last) = shards.last_mut() {
            last.push((name.clone(), enc));
        }
    }

    if shards.len() == 1 {
        let path = dir.join(SINGLE_FILE);
        write_file(&path, &shards[0])?;
        return Ok(vec![path]);
    }
    let count = shards.len();
    let mut written = Vec::with_capacity(count + 1);
    let mut weight_map = serde_json::Map::new();
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{count:05}.safetensors", i + 1);
        let path = dir.join(&file);
        write_file(&path, shard)?;
        for (name, _) in shard {
            weight_map.insert(name.clone(), Value::String(file.clone()));
        }
        written.push(path);
    }
    let index = serde_json::json!({
        "metadata": { "total_size": total },
        "weight_map": Value::Object(weight_map),
    });
    let path = dir.join(INDEX_FILE);
    let text = serde_json::to_string_pretty(&index).unwrap_or_default() + "\n";
    std::fs::write(&path, text).map_err(|e| ModelError::io(&path, e))?;
    written.push(path);
    Ok(written)
}

fn refuse_existing_weights(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ModelError::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let weights =
            name.starts_with("model") && (name.ends_with(".safetensors") || name == INDEX_FILE);
        if weights || name == "config.json" {
            return Err(ModelError::Invalid(format!(
                "{}: already holds a checkpoint ({name}); refusing to overwrite",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Write named tensors as one safetensors file (gradients, test fixtures); overwrites `path`.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let encoded = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), encode_tensor(n, t)?)))
        .collect::<Result<Vec<_>>>()?;
    write_file(path, &encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with_header(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    fn parse(bytes: &[u8]) -> String {
        parse_header(Path::new("w.safetensors"), bytes, bytes.len() as u64)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn accepts_a_valid_header() {
        let b = file_with_header(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"format":"pt"}}"#,
            &[0; 8],
        );
        let h = parse_header(Path::new("w"), &b, b.len() as u64).unwrap();
        assert_eq!(h.entries.len(), 1);
    }

    #[test]
    fn refusals_name_file_and_tensor() {
        let e = parse(&[1, 2, 3]);
        assert!(
            e.contains("w.safetensors") && e.contains("too short"),
            "{e}"
        );
        let mut b = 1000u64.to_le_bytes().to_vec();
        b.extend_from_slice(b"{}");
        let e = parse(&b);
        assert!(e.contains("past the end"), "{e}");
        let b = file_with_header(
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            &[0; 8],
        );
        let e = parse(&b);
        assert!(e.contains("`a`") && e.contains("12 bytes"), "{e}");
        let b = file_with_header(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            &[0; 4],
        );
        let e = parse(&b);
        assert!(e.contains("truncated"), "{e}");
        let b = file_with_header(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            &[0; 12],
        );
        let e = parse(&b);
        assert!(e.contains("`b`") && e.contains("overlaps"), "{e}");
        let b = file_with_header(
            r#"{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}"#,
            &[0; 8],
        );
        let e = parse(&b);
        assert!(e.contains("`a`") && e.contains("Q9"), "{e}");
    }
}
