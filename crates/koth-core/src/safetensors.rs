//! The one safetensors header parser of the workspace.
//!
//! A safetensors file is an 8-byte little-endian header length `n`, `n` bytes of JSON, then the
//! data section. The validator's tensor gate and the model loader both read headers of files a
//! stranger uploaded, so both call [`parse_header`] and agree on what is a valid file. Every rule
//! is checked before anything is sized by a declared number:
//!
//! - the file holds the 8-byte length; the length is at most [`MAX_HEADER_BYTES`] and the header
//!   lies inside the file;
//! - the header is UTF-8 JSON, an object, with no key twice at any level (a JSON parser that keeps
//!   the last of two equal keys would let two readers see different tensors);
//! - `__metadata__`, if present, maps strings to strings;
//! - every other key is a tensor: an object with exactly `dtype`, `shape` and `data_offsets`;
//!   the dtype is one of [`DTYPE_NAMES`], the shape a list of non-negative integers, the offsets
//!   two integers `[begin, end]` with `begin <= end <= data length`;
//! - dtype width × the shape's product equals `end - begin`, computed without overflow;
//! - sorted by offset, the tensors tile the data section exactly: no overlap (aliasing), no gap
//!   (hidden bytes), nothing after the last tensor.
//!
//! Pure: the caller hands the bytes (see [`header_read_len`] for how many to read).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Largest header accepted, in bytes: the reference implementation's limit (100 MB). The header
/// of a 0.6B-parameter checkpoint is about 30 KB.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Tensor names and dtypes quoted in messages are cut to this many characters: they are
/// stranger-controlled text that ends up in logs and rejection reasons.
const NAME_IN_MESSAGE: usize = 120;

/// The key of the optional string → string map that is not a tensor.
pub const METADATA_KEY: &str = "__metadata__";

/// A tensor element type a header may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    F8E4M3,
    F8E5M2,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    F64,
    I64,
}

/// Every dtype name a header may use, as written in the file.
pub const DTYPE_NAMES: [&str; 14] = [
    "BOOL", "U8", "I8", "F8_E4M3", "F8_E5M2", "I16", "U16", "F16", "BF16", "I32", "U32", "F32",
    "F64", "I64",
];

const DTYPES: [Dtype; 14] = [
    Dtype::Bool,
    Dtype::U8,
    Dtype::I8,
    Dtype::F8E4M3,
    Dtype::F8E5M2,
    Dtype::I16,
    Dtype::U16,
    Dtype::F16,
    Dtype::BF16,
    Dtype::I32,
    Dtype::U32,
    Dtype::F32,
    Dtype::F64,
    Dtype::I64,
];

impl Dtype {
    /// The dtype named `name` exactly as a header writes it (`"BF16"`), if known.
    pub fn from_name(name: &str) -> Option<Dtype> {
        DTYPE_NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| DTYPES[i])
    }

    /// The name a header writes for this dtype.
    pub fn name(self) -> &'static str {
        DTYPE_NAMES[DTYPES.iter().position(|d| *d == self).unwrap_or(0)]
    }

    /// Bytes per element.
    pub fn byte_width(self) -> u64 {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 | Dtype::F8E4M3 | Dtype::F8E5M2 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::F64 => 8,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor as a validated header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Byte range relative to the start of the data section: `begin..end`.
    pub begin: u64,
    pub end: u64,
}

/// A validated safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Offset of the data section from the start of the file: 8 + the header length.
    pub data_start: u64,
    /// Length of the data section: the file's length minus `data_start`.
    pub data_len: u64,
    /// The tensors, sorted by name.
    pub entries: Vec<TensorEntry>,
    /// The `__metadata__` map (empty when absent).
    pub metadata: BTreeMap<String, String>,
}

/// Why a header is refused. Every variant names what was wrong and what was expected; a tensor
/// name or dtype from the file is cut to a bounded length when shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("file is {file_len} bytes, too short for the 8-byte header length")]
    TooShort { file_len: u64 },
    #[error("header length {len} exceeds the limit of {MAX_HEADER_BYTES} bytes")]
    HeaderTooLarge { len: u64 },
    #[error("header length {len} runs past the end of the {file_len}-byte file")]
    HeaderPastEnd { len: u64, file_len: u64 },
    /// The caller handed fewer bytes than the header needs (a reader's short read, not the
    /// file's fault).
    #[error("only {got} bytes of the header were read, {needed} are needed")]
    Incomplete { got: u64, needed: u64 },
    #[error("header is not valid JSON: {0}")]
    NotJson(String),
    #[error("header is a JSON {0}, not an object of tensors")]
    NotObject(&'static str),
    #[error("{} appears twice in the header", shown(.0))]
    DuplicateKey(String),
    #[error("{METADATA_KEY} must map strings to strings")]
    BadMetadata,
    #[error("tensor {}: is not an object with dtype, shape and data_offsets", shown(.0))]
    NotATensor(String),
    #[error("tensor {}: unknown field {}", shown(.tensor), shown(.field))]
    UnknownField { tensor: String, field: String },
    #[error("tensor {}: has no {field}", shown(.tensor))]
    MissingField { tensor: String, field: &'static str },
    #[error("tensor {}: unknown dtype {}; known: {DTYPE_NAMES:?}", shown(.tensor), shown(.dtype))]
    UnknownDtype { tensor: String, dtype: String },
    #[error("tensor {}: shape is not a list of non-negative integers", shown(.0))]
    BadShape(String),
    #[error("tensor {}: data_offsets is not a pair [begin, end] of non-negative integers", shown(.0))]
    BadOffsets(String),
    #[error("tensor {}: data_offsets [{begin}, {end}] end before they begin", shown(.tensor))]
    OffsetsReversed {
        tensor: String,
        begin: u64,
        end: u64,
    },
    #[error("tensor {}: data_offsets [{begin}, {end}] run past the end of the {data_len}-byte data section (the file is truncated, or the offsets are wrong)", shown(.tensor))]
    OffsetsPastData {
        tensor: String,
        begin: u64,
        end: u64,
        data_len: u64,
    },
    #[error("tensor {}: {dtype} with shape {shape:?} overflows a 64-bit byte count", shown(.tensor))]
    Overflow {
        tensor: String,
        dtype: Dtype,
        shape: Vec<u64>,
    },
    #[error("tensor {}: {dtype} with shape {shape:?} needs {needed} bytes, but data_offsets [{begin}, {end}] span {}", shown(.tensor), .end - .begin)]
    SizeMismatch {
        tensor: String,
        dtype: Dtype,
        shape: Vec<u64>,
        needed: u64,
        begin: u64,
        end: u64,
    },
    #[error("tensor {}: data_offsets start at {begin}, which overlaps the previous tensor (ending at {previous_end})", shown(.tensor))]
    Overlap {
        tensor: String,
        begin: u64,
        previous_end: u64,
    },
    #[error("tensor {}: data_offsets start at {begin}, which leaves a gap after the previous tensor (ending at {previous_end})", shown(.tensor))]
    Gap {
        tensor: String,
        begin: u64,
        previous_end: u64,
    },
    #[error("tensors cover {covered} bytes of the {data_len}-byte data section ({})", if .covered < .data_len { "trailing bytes" } else { "truncated" })]
    Coverage { covered: u64, data_len: u64 },
}

impl HeaderError {
    /// True when the error says the caller read too little, not that the file is bad.
    pub fn is_incomplete_read(&self) -> bool {
        matches!(self, HeaderError::Incomplete { .. })
    }
}

/// A name from the file, quoted and cut to [`NAME_IN_MESSAGE`] characters.
fn shown(name: &str) -> String {
    if name.chars().count() <= NAME_IN_MESSAGE {
        format!("`{name}`")
    } else {
        let cut: String = name.chars().take(NAME_IN_MESSAGE).collect();
        format!("`{cut}…`")
    }
}

/// How many bytes from the start of a `file_len`-byte file a reader should hand to
/// [`parse_header`], given the file's first (up to) 8 bytes `prefix`: `8 + n` when the declared
/// length `n` is acceptable, otherwise just the prefix (the parser then refuses the length with a
/// precise message). Never more than `8 + MAX_HEADER_BYTES`, never past the file.
pub fn header_read_len(prefix: &[u8], file_len: u64) -> u64 {
    let Some(len) = declared_len(prefix) else {
        return prefix.len().min(8) as u64;
    };
    if len > MAX_HEADER_BYTES || len > file_len.saturating_sub(8) {
        8
    } else {
        8 + len
    }
}

fn declared_len(prefix: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = prefix.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// Parse and validate the header of a safetensors file of `file_len` bytes, given at least its
/// first `8 + n` bytes in `head` (more is fine: a whole file may be passed).
pub fn parse_header(head: &[u8], file_len: u64) -> Result<Header, HeaderError> {
    let Some(len) = declared_len(head) else {
        return Err(if file_len < 8 {
            HeaderError::TooShort { file_len }
        } else {
            HeaderError::Incomplete {
                got: head.len() as u64,
                needed: 8,
            }
        });
    };
    if len > MAX_HEADER_BYTES {
        return Err(HeaderError::HeaderTooLarge { len });
    }
    // len <= MAX_HEADER_BYTES, so 8 + len cannot overflow.
    let data_start = 8 + len;
    if data_start > file_len {
        return Err(HeaderError::HeaderPastEnd { len, file_len });
    }
    let data_len = file_len - data_start;
    let Some(json) = usize::try_from(data_start)
        .ok()
        .and_then(|end| head.get(8..end))
    else {
        return Err(HeaderError::Incomplete {
            got: head.len() as u64,
            needed: data_start,
        });
    };
    let text =
        std::str::from_utf8(json).map_err(|e| HeaderError::NotJson(format!("not UTF-8: {e}")))?;
    let top = Json::parse(text)?;
    let Json::Object(fields) = top else {
        return Err(HeaderError::NotObject(top.kind()));
    };

    let mut metadata = BTreeMap::new();
    let mut entries = Vec::with_capacity(fields.len());
    for (name, spec) in fields {
        if name == METADATA_KEY {
            let Json::Object(pairs) = spec else {
                return Err(HeaderError::BadMetadata);
            };
            for (k, v) in pairs {
                let Json::String(v) = v else {
                    return Err(HeaderError::BadMetadata);
                };
                metadata.insert(k, v);
            }
            continue;
        }
        entries.push(tensor_entry(name, spec, data_len)?);
    }

    // Tiling: sorted by offset, each tensor starts where the previous ended.
    let mut by_offset: Vec<&TensorEntry> = entries.iter().collect();
    by_offset.sort_by_key(|e| (e.begin, e.end));
    let mut cursor = 0u64;
    for e in by_offset {
        if e.begin < cursor {
            return Err(HeaderError::Overlap {
                tensor: e.name.clone(),
                begin: e.begin,
                previous_end: cursor,
            });
        }
        if e.begin > cursor {
            return Err(HeaderError::Gap {
                tensor: e.name.clone(),
                begin: e.begin,
                previous_end: cursor,
            });
        }
        cursor = e.end;
    }
    if cursor != data_len {
        return Err(HeaderError::Coverage {
            covered: cursor,
            data_len,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Header {
        data_start,
        data_len,
        entries,
        metadata,
    })
}

fn tensor_entry(name: String, spec: Json, data_len: u64) -> Result<TensorEntry, HeaderError> {
    let Json::Object(fields) = spec else {
        return Err(HeaderError::NotATensor(name));
    };
    let (mut dtype, mut shape, mut offsets) = (None, None, None);
    for (field, value) in fields {
        match field.as_str() {
            "dtype" => dtype = Some(value),
            "shape" => shape = Some(value),
            "data_offsets" => offsets = Some(value),
            _ => {
                return Err(HeaderError::UnknownField {
                    tensor: name,
                    field,
                })
            }
        }
    }
    let missing = |field| HeaderError::MissingField {
        tensor: name.clone(),
        field,
    };
    let dtype = dtype.ok_or_else(|| missing("dtype"))?;
    let shape = shape.ok_or_else(|| missing("shape"))?;
    let offsets = offsets.ok_or_else(|| missing("data_offsets"))?;

    let dtype = match &dtype {
        Json::String(s) => Dtype::from_name(s).ok_or_else(|| HeaderError::UnknownDtype {
            tensor: name.clone(),
            dtype: s.clone(),
        })?,
        other => {
            return Err(HeaderError::UnknownDtype {
                tensor: name.clone(),
                dtype: format!("(a JSON {})", other.kind()),
            })
        }
    };
    let Some(shape) = shape.as_u64_list() else {
        return Err(HeaderError::BadShape(name));
    };
    let (begin, end) = match offsets.as_u64_list().as_deref() {
        Some(&[b, e]) => (b, e),
        _ => return Err(HeaderError::BadOffsets(name)),
    };
    if begin > end {
        return Err(HeaderError::OffsetsReversed {
            tensor: name,
            begin,
            end,
        });
    }
    if end > data_len {
        return Err(HeaderError::OffsetsPastData {
            tensor: name,
            begin,
            end,
            data_len,
        });
    }
    let Some(needed) = shape
        .iter()
        .try_fold(dtype.byte_width(), |acc, d| acc.checked_mul(*d))
    else {
        return Err(HeaderError::Overflow {
            tensor: name,
            dtype,
            shape,
        });
    };
    if needed != end - begin {
        return Err(HeaderError::SizeMismatch {
            tensor: name,
            dtype,
            shape,
            needed,
            begin,
            end,
        });
    }
    Ok(TensorEntry {
        name,
        dtype,
        shape,
        begin,
        end,
    })
}

/// A JSON value that keeps every object key in order, duplicates included, so that duplicates
/// can be refused (serde_json's own `Value` keeps only the last of two equal keys).
enum Json {
    Null,
    Bool,
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Parse `text`; a key that appears twice in one object is refused.
    fn parse(text: &str) -> Result<Json, HeaderError> {
        let value: Json =
            serde_json::from_str(text).map_err(|e| HeaderError::NotJson(e.to_string()))?;
        value.refuse_duplicates()?;
        Ok(value)
    }

    fn refuse_duplicates(&self) -> Result<(), HeaderError> {
        match self {
            Json::Object(fields) => {
                let mut seen = std::collections::BTreeSet::new();
                for (k, v) in fields {
                    if !seen.insert(k.as_str()) {
                        return Err(HeaderError::DuplicateKey(k.clone()));
                    }
                    v.refuse_duplicates()?;
                }
                Ok(())
            }
            Json::Array(items) => items.iter().try_for_each(Json::refuse_duplicates),
            _ => Ok(()),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool => "boolean",
            Json::Number(_) => "number",
            Json::String(_) => "string",
            Json::Array(_) => "array",
            Json::Object(_) => "object",
        }
    }

    /// The values of an array of non-negative integers; `None` for anything else (a negative
    /// or fractional number, a number past u64, a non-number, a non-array).
    fn as_u64_list(&self) -> Option<Vec<u64>> {
        let Json::Array(items) = self else {
            return None;
        };
        items
            .iter()
            .map(|v| match v {
                Json::Number(n) => n.as_u64(),
                _ => None,
            })
            .collect()
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Json, E> {
        Ok(Json::Bool)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        // Not finite cannot come from JSON text; keep it a number that is not a u64 either way.
        Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element::<Json>()? {
            items.push(v);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut fields = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            fields.push((k, map.next_value::<Json>()?));
        }
        Ok(Json::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file: the header text's length, the text, then `data_len` zero bytes.
    fn file(header: &str, data_len: usize) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend(std::iter::repeat_n(0u8, data_len));
        v
    }

    fn parse(header: &str, data_len: usize) -> Result<Header, HeaderError> {
        let f = file(header, data_len);
        parse_header(&f, f.len() as u64)
    }

    fn refused(header: &str, data_len: usize) -> HeaderError {
        parse(header, data_len).expect_err(header)
    }

    const GOOD: &str = r#"{"__metadata__":{"format":"pt"},
        "b":{"dtype":"F32","shape":[4],"data_offsets":[12,28]},
        "a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]}}"#;

    #[test]
    fn a_valid_header_parses_sorted_by_name_with_its_metadata() {
        let h = parse(GOOD, 28).unwrap();
        assert_eq!(h.data_start, 8 + GOOD.len() as u64);
        assert_eq!(h.data_len, 28);
        let names: Vec<&str> = h.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(
            h.entries[0],
            TensorEntry {
                name: "a".into(),
                dtype: Dtype::BF16,
                shape: vec![2, 3],
                begin: 0,
                end: 12
            }
        );
        assert_eq!(h.metadata.get("format").map(String::as_str), Some("pt"));
        // Without metadata, empty, zero-sized tensors and scalars are fine.
        let h = parse(
            r#"{"z":{"dtype":"U8","shape":[0,5],"data_offsets":[0,0]},"s":{"dtype":"F64","shape":[],"data_offsets":[0,8]}}"#,
            8,
        )
        .unwrap();
        assert!(h.metadata.is_empty());
        assert_eq!(h.entries.len(), 2);
        assert!(parse("{}", 0).unwrap().entries.is_empty());
        // Padding spaces after the JSON (the reference writer pads to 8 bytes) are allowed.
        assert!(parse("{}      ", 0).is_ok());
    }

    #[test]
    fn every_dtype_has_its_width_and_name() {
        for (name, width) in [
            ("BOOL", 1),
            ("U8", 1),
            ("I8", 1),
            ("F8_E4M3", 1),
            ("F8_E5M2", 1),
            ("I16", 2),
            ("U16", 2),
            ("F16", 2),
            ("BF16", 2),
            ("I32", 4),
            ("U32", 4),
            ("F32", 4),
            ("F64", 8),
            ("I64", 8),
        ] {
            let d = Dtype::from_name(name).unwrap();
            assert_eq!((d.name(), d.byte_width()), (name, width));
            let header = format!(
                r#"{{"t":{{"dtype":"{name}","shape":[3],"data_offsets":[0,{}]}}}}"#,
                3 * width
            );
            assert_eq!(
                parse(&header, 3 * width as usize).unwrap().entries[0].dtype,
                d
            );
        }
        assert_eq!(Dtype::from_name("bf16"), None);
        assert_eq!(Dtype::from_name("U64"), None);
    }

    #[test]
    fn the_header_length_must_fit_the_file_and_the_cap() {
        assert_eq!(
            parse_header(&[1, 2, 3], 3),
            Err(HeaderError::TooShort { file_len: 3 })
        );
        let mut f = 1000u64.to_le_bytes().to_vec();
        f.extend_from_slice(b"{}");
        let e = parse_header(&f, f.len() as u64).unwrap_err();
        assert_eq!(
            e,
            HeaderError::HeaderPastEnd {
                len: 1000,
                file_len: 10
            }
        );
        assert!(e.to_string().contains("past the end"), "{e}");
        // The cap is checked on the declared number alone, before anything is read or sized.
        let huge = (MAX_HEADER_BYTES + 1).to_le_bytes();
        assert_eq!(
            parse_header(&huge, u64::MAX),
            Err(HeaderError::HeaderTooLarge {
                len: MAX_HEADER_BYTES + 1
            })
        );
        assert_eq!(
            parse_header(&u64::MAX.to_le_bytes(), u64::MAX),
            Err(HeaderError::HeaderTooLarge { len: u64::MAX })
        );
        // A length at the cap is acceptable as a length; the reader then hands its bytes.
        assert!(parse_header(&MAX_HEADER_BYTES.to_le_bytes(), u64::MAX)
            .unwrap_err()
            .is_incomplete_read());
    }

    #[test]
    fn a_short_read_is_the_readers_fault_not_the_files() {
        let f = file(GOOD, 28);
        let e = parse_header(&f[..20], f.len() as u64).unwrap_err();
        assert_eq!(
            e,
            HeaderError::Incomplete {
                got: 20,
                needed: 8 + GOOD.len() as u64
            }
        );
        assert!(e.is_incomplete_read());
        let e = parse_header(&f[..4], f.len() as u64).unwrap_err();
        assert!(e.is_incomplete_read());
        assert!(!HeaderError::TooShort { file_len: 4 }.is_incomplete_read());
    }

    #[test]
    fn header_read_len_is_bounded_by_the_cap_and_the_file() {
        let f = file(GOOD, 28);
        assert_eq!(
            header_read_len(&f[..8], f.len() as u64),
            8 + GOOD.len() as u64
        );
        assert_eq!(header_read_len(&f[..3], f.len() as u64), 3);
        assert_eq!(header_read_len(&u64::MAX.to_le_bytes(), u64::MAX), 8);
        assert_eq!(header_read_len(&1000u64.to_le_bytes(), 100), 8);
        assert_eq!(header_read_len(&92u64.to_le_bytes(), 100), 100);
        // Whatever it says to read, the parser then decides without asking for more.
        for (prefix, len) in [
            (u64::MAX.to_le_bytes(), u64::MAX),
            (1000u64.to_le_bytes(), 100),
        ] {
            let n = header_read_len(&prefix, len) as usize;
            assert!(!parse_header(&prefix[..n], len)
                .unwrap_err()
                .is_incomplete_read());
        }
    }

    #[test]
    fn the_header_must_be_a_utf8_json_object() {
        let mut f = 4u64.to_le_bytes().to_vec();
        f.extend_from_slice(&[b'{', 0xff, 0xfe, b'}']);
        assert!(matches!(
            parse_header(&f, f.len() as u64),
            Err(HeaderError::NotJson(m)) if m.contains("UTF-8")
        ));
        assert!(matches!(refused("{x}", 0), HeaderError::NotJson(_)));
        assert!(matches!(refused("", 0), HeaderError::NotJson(_)));
        assert!(matches!(refused("{} {}", 0), HeaderError::NotJson(_)));
        assert_eq!(refused("[1,2]", 0), HeaderError::NotObject("array"));
        assert_eq!(refused("null", 0), HeaderError::NotObject("null"));
        assert_eq!(refused("\"x\"", 0), HeaderError::NotObject("string"));
        // Nesting deeper than serde_json's recursion limit is an error, not a stack overflow.
        let deep = format!(
            "{{\"__metadata__\":{}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(matches!(refused(&deep, 0), HeaderError::NotJson(_)));
    }

    #[test]
    fn a_key_twice_is_refused_at_every_level() {
        let t = r#"{"dtype":"U8","shape":[1],"data_offsets":[0,1]}"#;
        assert_eq!(
            refused(&format!(r#"{{"a":{t},"a":{t}}}"#), 1),
            HeaderError::DuplicateKey("a".into())
        );
        assert_eq!(
            refused(
                r#"{"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
                1
            ),
            HeaderError::DuplicateKey("dtype".into())
        );
        assert_eq!(
            refused(
                &format!(r#"{{"__metadata__":{{"k":"1","k":"2"}},"a":{t}}}"#),
                1
            ),
            HeaderError::DuplicateKey("k".into())
        );
        assert_eq!(
            refused(r#"{"__metadata__":{},"__metadata__":{}}"#, 0),
            HeaderError::DuplicateKey("__metadata__".into())
        );
    }

    #[test]
    fn metadata_maps_strings_to_strings() {
        for bad in [
            r#"{"__metadata__":{"n":1}}"#,
            r#"{"__metadata__":{"n":null}}"#,
            r#"{"__metadata__":{"n":{"x":"y"}}}"#,
            r#"{"__metadata__":["a"]}"#,
            r#"{"__metadata__":"pt"}"#,
        ] {
            assert_eq!(refused(bad, 0), HeaderError::BadMetadata, "{bad}");
        }
        let h = parse(r#"{"__metadata__":{}}"#, 0).unwrap();
        assert!(h.metadata.is_empty() && h.entries.is_empty());
    }

    #[test]
    fn a_tensor_has_exactly_dtype_shape_and_offsets() {
        assert_eq!(
            refused(r#"{"a":3}"#, 0),
            HeaderError::NotATensor("a".into())
        );
        assert_eq!(
            refused(
                r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":1}}"#,
                1
            ),
            HeaderError::UnknownField {
                tensor: "a".into(),
                field: "extra".into()
            }
        );
        for (missing, header) in [
            ("dtype", r#"{"a":{"shape":[1],"data_offsets":[0,1]}}"#),
            ("shape", r#"{"a":{"dtype":"U8","data_offsets":[0,1]}}"#),
            ("data_offsets", r#"{"a":{"dtype":"U8","shape":[1]}}"#),
        ] {
            assert_eq!(
                refused(header, 1),
                HeaderError::MissingField {
                    tensor: "a".into(),
                    field: missing
                }
            );
        }
    }

    #[test]
    fn dtype_shape_and_offsets_are_checked() {
        let e = refused(
            r#"{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}"#,
            8,
        );
        assert!(matches!(&e, HeaderError::UnknownDtype { dtype, .. } if dtype == "Q9"));
        assert!(
            e.to_string().contains("`a`") && e.to_string().contains("Q9"),
            "{e}"
        );
        assert!(matches!(
            refused(r#"{"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}}"#, 8),
            HeaderError::UnknownDtype { .. }
        ));
        for shape in [
            "[-1]",
            "[1.5]",
            "[\"2\"]",
            "2",
            "[18446744073709551616]",
            "null",
        ] {
            let h = format!(r#"{{"a":{{"dtype":"U8","shape":{shape},"data_offsets":[0,0]}}}}"#);
            assert_eq!(refused(&h, 0), HeaderError::BadShape("a".into()), "{shape}");
        }
        for offsets in ["[0]", "[0,1,1]", "[-1,0]", "[0.0,1]", "{}", "[\"0\",\"1\"]"] {
            let h = format!(r#"{{"a":{{"dtype":"U8","shape":[1],"data_offsets":{offsets}}}}}"#);
            assert_eq!(
                refused(&h, 1),
                HeaderError::BadOffsets("a".into()),
                "{offsets}"
            );
        }
    }

    #[test]
    fn offsets_lie_inside_the_data_section() {
        // begin after end
        assert!(matches!(
            refused(
                r#"{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,2]}}"#,
                4
            ),
            HeaderError::OffsetsReversed {
                begin: 4,
                end: 2,
                ..
            }
        ));
        // end past the data
        let e = refused(
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            8,
        );
        assert_eq!(
            e,
            HeaderError::OffsetsPastData {
                tensor: "a".into(),
                begin: 0,
                end: 16,
                data_len: 8
            }
        );
        assert!(e.to_string().contains("truncated"), "{e}");
        // an end near u64::MAX is out of bounds, not an overflow
        let h = format!(
            r#"{{"a":{{"dtype":"U8","shape":[1],"data_offsets":[0,{}]}}}}"#,
            u64::MAX
        );
        assert!(matches!(
            refused(&h, 1),
            HeaderError::OffsetsPastData { .. }
        ));
    }

    #[test]
    fn dtype_times_shape_equals_the_byte_span() {
        let e = refused(
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            8,
        );
        assert!(
            matches!(e, HeaderError::SizeMismatch { needed: 12, .. }),
            "{e}"
        );
        assert!(
            e.to_string().contains("`a`") && e.to_string().contains("12 bytes"),
            "{e}"
        );
        // Overflow of the element count, and of the byte count through the width.
        let h = format!(
            r#"{{"a":{{"dtype":"F64","shape":[{},2],"data_offsets":[0,0]}}}}"#,
            u64::MAX
        );
        assert!(matches!(refused(&h, 0), HeaderError::Overflow { .. }));
        let h = format!(
            r#"{{"a":{{"dtype":"F32","shape":[{}],"data_offsets":[0,0]}}}}"#,
            u64::MAX / 2
        );
        assert!(matches!(refused(&h, 0), HeaderError::Overflow { .. }));
        // A zero dimension makes any other dimension harmless.
        let h = format!(
            r#"{{"a":{{"dtype":"F32","shape":[0,{}],"data_offsets":[0,0]}}}}"#,
            u64::MAX
        );
        assert!(parse(&h, 0).is_ok());
    }

    #[test]
    fn tensors_tile_the_data_section_exactly() {
        let e = refused(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            12,
        );
        assert_eq!(
            e,
            HeaderError::Overlap {
                tensor: "b".into(),
                begin: 4,
                previous_end: 8
            }
        );
        assert!(e.to_string().contains("overlaps"), "{e}");
        assert_eq!(
            refused(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                8
            ),
            HeaderError::Gap {
                tensor: "a".into(),
                begin: 4,
                previous_end: 0
            }
        );
        let e = refused(
            r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#,
            9,
        );
        assert_eq!(
            e,
            HeaderError::Coverage {
                covered: 4,
                data_len: 9
            }
        );
        assert!(e.to_string().contains("trailing bytes"), "{e}");
        // Two tensors on the same bytes (aliasing) overlap.
        assert!(matches!(
            refused(
                r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}}"#,
                4
            ),
            HeaderError::Overlap { .. }
        ));
    }

    #[test]
    fn names_in_messages_are_cut() {
        let long = "x".repeat(10_000);
        let h = format!(r#"{{"{long}":{{"dtype":"Q","shape":[1],"data_offsets":[0,1]}}}}"#);
        let shown = refused(&h, 1).to_string();
        assert!(shown.len() < 400, "{} bytes", shown.len());
        assert!(shown.contains('…'), "{shown}");
    }

    mod random {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Arbitrary bytes and lengths never panic; an accepted header is self-consistent.
            #[test]
            fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), extra in 0u64..64) {
                let file_len = bytes.len() as u64 + extra;
                if let Ok(h) = parse_header(&bytes, file_len) {
                    prop_assert_eq!(h.data_start + h.data_len, file_len);
                }
                let _ = header_read_len(&bytes, file_len);
            }

            /// A valid file with some bytes of its header changed, or cut, never panics, and
            /// whatever is accepted still tiles the data section.
            #[test]
            fn mutated_headers_never_panic(
                edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
                cut in any::<prop::sample::Index>(),
                keep_whole in any::<bool>(),
            ) {
                let mut f = file(GOOD, 28);
                for (i, b) in edits {
                    let i = i.index(f.len());
                    f[i] = b;
                }
                let file_len = f.len() as u64;
                let head = if keep_whole { &f[..] } else { &f[..cut.index(f.len() + 1)] };
                if let Ok(h) = parse_header(head, file_len) {
                    let covered: u64 = h.entries.iter().map(|e| e.end - e.begin).sum();
                    prop_assert_eq!(covered, h.data_len);
                    for e in &h.entries {
                        let n = e.shape.iter().product::<u64>() * e.dtype.byte_width();
                        prop_assert_eq!(n, e.end - e.begin);
                    }
                }
            }
        }
    }
}
