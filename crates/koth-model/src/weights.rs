//! Safetensors checkpoints: strict parsing, exact tensor sets, loading and saving in Hugging
//! Face layout (`model.safetensors`, or `model.safetensors.index.json` + numbered shards).
//!
//! Headers are parsed by [`koth_core::safetensors`], the one parser the validator's tensor gate
//! uses too, rather than by the `safetensors` crate, so that every refusal names the file and the
//! tensor at fault and the loader accepts exactly what the gate accepts (the rules are listed
//! there: bounded header, no duplicate keys, known dtypes, dtype × shape = byte span, spans that
//! tile the data section to the end of the file). Writing uses the `safetensors` crate, the
//! reference writer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};
use safetensors::Dtype as StDtype;
use serde_json::Value;

use koth_core::safetensors as safetensors_header;

use crate::config::{ModelConfig, TensorSpec};
use crate::error::{ModelError, Result};

/// The single-file checkpoint name.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Hugging Face's default shard size ("5GB").
pub const DEFAULT_SHARD_LIMIT_BYTES: u64 = 5_000_000_000;

/// Largest `model.safetensors.index.json` read (a real one is tens of KiB): checked on the
/// file's size before a byte is read.
pub const MAX_INDEX_BYTES: u64 = 1 << 20;

/// What [`read_capped`] found wrong with a file of a checkpoint.
#[derive(Debug)]
pub enum CappedReadError {
    /// The file does not exist.
    Missing,
    /// Not a regular file (a directory, a FIFO, a device, a symlink).
    NotRegular,
    /// Longer than the cap (its length in bytes).
    TooLarge(u64),
    /// An I/O error reading it (ours: the disk, permissions of our own cache).
    Io(std::io::Error),
}

/// Read a small file of a checkpoint whole, refusing it before a byte is read when it is not a
/// regular file or is over `cap` bytes; at most `cap` bytes are read even if the file grows
/// meanwhile. A symlink to a regular file is followed (a Hugging Face cache snapshot is made of
/// them); the validator reads only directories it wrote itself after verifying every byte, and
/// the stranger-facing opens, in the store, refuse symlinks and never block.
pub fn read_capped_file(path: &Path, cap: u64) -> std::result::Result<Vec<u8>, CappedReadError> {
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_file() => {}
        Ok(_) => return Err(CappedReadError::NotRegular),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(CappedReadError::Missing),
        Err(e) => return Err(CappedReadError::Io(e)),
    }
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(CappedReadError::Missing),
        Err(e) => return Err(CappedReadError::Io(e)),
    };
    let meta = file.metadata().map_err(CappedReadError::Io)?;
    if !meta.file_type().is_file() {
        return Err(CappedReadError::NotRegular);
    }
    if meta.len() > cap {
        return Err(CappedReadError::TooLarge(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(CappedReadError::Io)?;
    if bytes.len() as u64 > cap {
        return Err(CappedReadError::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

/// [`read_capped_file`] for a JSON document of a checkpoint (config.json): every refusal is a
/// [`ModelError::Config`] (the checkpoint's fault); only an I/O error is [`ModelError::Io`].
pub(crate) fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let refuse = |reason: String| ModelError::Config {
        source_name: path.display().to_string(),
        field: "(document)".into(),
        reason,
    };
    read_capped_file(path, cap).map_err(|e| match e {
        CappedReadError::Missing => refuse("is missing".into()),
        CappedReadError::NotRegular => refuse("is not a regular file".into()),
        CappedReadError::TooLarge(n) => refuse(format!("is {n} bytes, over the cap of {cap}")),
        CappedReadError::Io(e) => ModelError::io(path, e),
    })
}

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

/// Parse a safetensors header with the workspace's one parser
/// ([`koth_core::safetensors::parse_header`], the rules the validator's tensor gate applies).
/// `bytes` holds at least the first `8 + n` bytes of the file and `file_len` is the length of
/// the whole file.
fn parse_header(path: &Path, bytes: &[u8], file_len: u64) -> Result<FileHeader> {
    let err = |reason: String| ModelError::safetensors(path, None, reason);
    let header =
        safetensors_header::parse_header(bytes, file_len).map_err(|e| err(e.to_string()))?;
    let data_start = usize::try_from(header.data_start).map_err(|_| {
        err(format!(
            "data starts at byte {}, past this platform's address space",
            header.data_start
        ))
    })?;
    let entries = header
        .entries
        .into_iter()
        .map(|e| {
            let too_big = || {
                ModelError::safetensors(
                    path,
                    Some(&e.name),
                    "shape or offsets exceed this platform's address space",
                )
            };
            let shape = e
                .shape
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| too_big()))
                .collect::<Result<Vec<usize>>>()?;
            let start = usize::try_from(e.begin).map_err(|_| too_big())?;
            let end = usize::try_from(e.end).map_err(|_| too_big())?;
            Ok(TensorEntry {
                dtype: st_dtype(e.dtype),
                name: e.name,
                shape,
                start,
                end,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(FileHeader {
        path: path.to_owned(),
        data_start,
        entries,
    })
}

/// The `safetensors` crate's name for a dtype the header parser accepted.
fn st_dtype(d: safetensors_header::Dtype) -> StDtype {
    use safetensors_header::Dtype as D;
    match d {
        D::Bool => StDtype::BOOL,
        D::U8 => StDtype::U8,
        D::I8 => StDtype::I8,
        D::F8E4M3 => StDtype::F8_E4M3,
        D::F8E5M2 => StDtype::F8_E5M2,
        D::I16 => StDtype::I16,
        D::U16 => StDtype::U16,
        D::F16 => StDtype::F16,
        D::BF16 => StDtype::BF16,
        D::I32 => StDtype::I32,
        D::U32 => StDtype::U32,
        D::F32 => StDtype::F32,
        D::F64 => StDtype::F64,
        D::I64 => StDtype::I64,
    }
}

/// Read and validate only the header of a safetensors file (cheap: no tensor data is read, and
/// never more than the header-size cap).
pub fn read_header(path: &Path) -> Result<FileHeader> {
    let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| ModelError::io(path, e))?.len();
    let mut prefix = Vec::with_capacity(8);
    (&file)
        .take(8)
        .read_to_end(&mut prefix)
        .map_err(|e| ModelError::io(path, e))?;
    let want = safetensors_header::header_read_len(&prefix, file_len);
    let mut bytes = prefix;
    (&file)
        .take(want.saturating_sub(bytes.len() as u64))
        .read_to_end(&mut bytes)
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
        // Everything wrong with the index is the checkpoint's fault, never an I/O error of ours:
        // too large, not a regular file, not UTF-8, not JSON.
        let bytes = read_capped_file(index, MAX_INDEX_BYTES).map_err(|e| match e {
            CappedReadError::Io(e) => ModelError::io(index, e),
            CappedReadError::Missing => err(None, "is missing".into()),
            CappedReadError::NotRegular => err(None, "is not a regular file".into()),
            CappedReadError::TooLarge(n) => err(
                None,
                format!("is {n} bytes, over the cap of {MAX_INDEX_BYTES}"),
            ),
        })?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| err(None, format!("not valid UTF-8 JSON: {e}")))?;
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
        // Every shard the index names must be a file of the checkpoint (checked for all before
        // any is read, so the sentence names the missing one).
        for (file, mapped) in &shards {
            let shard = dir.join(file);
            match std::fs::metadata(&shard) {
                Ok(m) if m.file_type().is_file() => {}
                Ok(_) => {
                    return Err(err(
                        mapped.iter().next().map(String::as_str),
                        format!("is mapped to `{file}`, which is not a regular file"),
                    ))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(err(
                        mapped.iter().next().map(String::as_str),
                        format!("is mapped to `{file}`, which is not in the checkpoint"),
                    ))
                }
                Err(e) => return Err(ModelError::io(&shard, e)),
            }
        }
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

    /// Read every tensor, converted to `dtype` on `device`: [`CheckpointFiles::load_tensors_placed`]
    /// with every tensor going to `device`.
    pub fn load_tensors(&self, dtype: DType, device: &Device) -> Result<HashMap<String, Tensor>> {
        self.load_tensors_placed(dtype, |_| device)
    }

    /// Stream every tensor to the device `device_of(name)` names, in `dtype`. Each file is
    /// memory-mapped and its header checked against the one validated when it was opened (a
    /// file that changed since is refused); then tensor by tensor, a tensor stored in `dtype`
    /// is copied from the mapped bytes straight to its device (no conversion, no staging copy
    /// in host memory on the way to a GPU; on the CPU the tensor itself is the only copy), and
    /// one stored in another dtype is decoded and converted on the host first, one tensor at a
    /// time. The mapping is dropped before the next file: host memory never holds the model
    /// twice.
    pub fn load_tensors_placed<'d>(
        &self,
        dtype: DType,
        device_of: impl Fn(&str) -> &'d Device,
    ) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for expected in &self.headers {
            let path = &expected.path;
            let map = map_file(path)?;
            let header = parse_header(path, &map, map.len() as u64)?;
            if &header != expected {
                return Err(ModelError::safetensors(
                    path,
                    None,
                    "changed while it was being loaded",
                ));
            }
            let data = &map[header.data_start..];
            for e in &header.entries {
                let raw = data.get(e.start..e.end).ok_or_else(|| {
                    ModelError::safetensors(path, Some(&e.name), "data out of range")
                })?;
                let device = device_of(&e.name);
                let t = match candle_dtype(e.dtype) {
                    Some(stored) if stored == dtype => {
                        Tensor::from_raw_buffer(raw, dtype, &e.shape, device)?
                    }
                    _ => decode_tensor(path, e, raw)?
                        .to_dtype(dtype)?
                        .to_device(device)?,
                };
                out.insert(e.name.clone(), t);
            }
        }
        Ok(out)
    }
}

/// Map a checkpoint file read-only.
fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    // SAFETY: the mapping is read-only and private to this call; it is undefined behaviour only
    // if another process truncates or rewrites the file while it is mapped. koth loads only
    // checkpoint directories it wrote itself (the validator's and miner's caches, after every
    // byte was verified against its digest) or that its user named; the header is re-parsed from
    // the mapping and compared with the one validated at open, so a file replaced in between is
    // refused rather than read.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
    // A hint only: tensors are read front to back.
    #[cfg(unix)]
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(map)
}

/// candle's dtype of a stored floating-point tensor koth loads.
fn candle_dtype(d: StDtype) -> Option<DType> {
    match d {
        StDtype::F32 => Some(DType::F32),
        StDtype::BF16 => Some(DType::BF16),
        StDtype::F16 => Some(DType::F16),
        _ => None,
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
