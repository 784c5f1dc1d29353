//! NumPy `.npy` files: the interchange format for token shards (1-D little-endian `uint32`, as
//! Teutonic writes them), token-id batches, per-token losses and per-window differences.
//!
//! Only C-order, little-endian arrays of the dtypes koth exchanges are read; anything else is
//! an error that says what was found and what was expected.

use std::io::{self, Read, Write};

/// The dtypes koth reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NpyDtype {
    U32,
    I32,
    I64,
    F32,
    F64,
}

impl NpyDtype {
    pub fn descr(self) -> &'static str {
        match self {
            NpyDtype::U32 => "<u4",
            NpyDtype::I32 => "<i4",
            NpyDtype::I64 => "<i8",
            NpyDtype::F32 => "<f4",
            NpyDtype::F64 => "<f8",
        }
    }
    pub fn size(self) -> usize {
        match self {
            NpyDtype::U32 | NpyDtype::I32 | NpyDtype::F32 => 4,
            NpyDtype::I64 | NpyDtype::F64 => 8,
        }
    }
    fn from_descr(d: &str) -> Option<Self> {
        Some(match d {
            "<u4" => NpyDtype::U32,
            "<i4" => NpyDtype::I32,
            "<i8" => NpyDtype::I64,
            "<f4" => NpyDtype::F32,
            "<f8" => NpyDtype::F64,
            _ => return None,
        })
    }
}

/// A parsed `.npy` header: what the data after it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    pub dtype: NpyDtype,
    pub shape: Vec<usize>,
    /// Byte offset of the first element from the start of the file.
    pub data_offset: usize,
}

impl NpyHeader {
    pub fn element_count(&self) -> usize {
        self.shape.iter().product()
    }
    /// Bytes of array data the header promises.
    pub fn data_len(&self) -> usize {
        self.element_count() * self.dtype.size()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("not a .npy file: it does not start with the \\x93NUMPY magic")]
    Magic,
    #[error(".npy format version {0}.{1} is not supported (1.0, 2.0 and 3.0 are)")]
    Version(u8, u8),
    #[error(".npy header is truncated: the file ends inside it")]
    TruncatedHeader,
    #[error(".npy header is malformed: {0}")]
    Header(String),
    #[error(
        ".npy dtype {found:?} is not one koth reads (expected one of <u4, <i4, <i8, <f4, <f8)"
    )]
    Dtype { found: String },
    #[error(".npy array is Fortran-ordered; only C order is read")]
    FortranOrder,
    #[error(".npy data is {found} bytes but the header's dtype and shape need {expected}")]
    DataLength { expected: usize, found: usize },
    #[error(".npy array has dtype {found} but {expected} was expected")]
    WrongDtype {
        expected: &'static str,
        found: &'static str,
    },
    #[error(transparent)]
    Io(#[from] io::Error),
}

const MAGIC: &[u8] = b"\x93NUMPY";

/// Parse the header at the start of `bytes` (which may hold more than the header).
pub fn parse_header(bytes: &[u8]) -> Result<NpyHeader, NpyError> {
    if bytes.len() < 8 {
        return Err(if bytes.starts_with(&MAGIC[..bytes.len().min(6)]) {
            NpyError::TruncatedHeader
        } else {
            NpyError::Magic
        });
    }
    if &bytes[..6] != MAGIC {
        return Err(NpyError::Magic);
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (len_bytes, text_start) = match major {
        1 => (2, 10),
        2 | 3 => (4, 12),
        _ => return Err(NpyError::Version(major, minor)),
    };
    if bytes.len() < text_start {
        return Err(NpyError::TruncatedHeader);
    }
    let header_len = if len_bytes == 2 {
        u16::from_le_bytes([bytes[8], bytes[9]]) as usize
    } else {
        u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize
    };
    let data_offset = text_start
        .checked_add(header_len)
        .ok_or(NpyError::TruncatedHeader)?;
    if bytes.len() < data_offset {
        return Err(NpyError::TruncatedHeader);
    }
    let text = std::str::from_utf8(&bytes[text_start..data_offset])
        .map_err(|_| NpyError::Header("header is not UTF-8/ASCII".into()))?;
    let descr = dict_value(text, "descr")?;
    let descr = descr.trim().trim_matches(|c| c == '\'' || c == '"');
    let dtype = NpyDtype::from_descr(descr).ok_or_else(|| NpyError::Dtype {
        found: descr.to_string(),
    })?;
    match dict_value(text, "fortran_order")?.trim() {
        "False" => {}
        "True" => return Err(NpyError::FortranOrder),
        other => return Err(NpyError::Header(format!("fortran_order is {other:?}"))),
    }
    let shape_text = dict_value(text, "shape")?;
    let shape = parse_shape(shape_text)?;
    // The promised byte count must be a number: `element_count` and `data_len` are then safe
    // for every header this function returns (a shape like (2^40, 2^40) is refused here).
    shape
        .iter()
        .try_fold(dtype.size(), |n, &d| n.checked_mul(d))
        .ok_or_else(|| NpyError::Header(format!("shape {shape:?} overflows a byte count")))?;
    Ok(NpyHeader {
        dtype,
        shape,
        data_offset,
    })
}

/// The text after `'key':` up to the next top-level comma or closing brace.
fn dict_value<'a>(text: &'a str, key: &str) -> Result<&'a str, NpyError> {
    let pat1 = format!("'{key}':");
    let pat2 = format!("\"{key}\":");
    let start = text
        .find(&pat1)
        .map(|i| i + pat1.len())
        .or_else(|| text.find(&pat2).map(|i| i + pat2.len()))
        .ok_or_else(|| NpyError::Header(format!("no {key:?} entry")))?;
    let rest = &text[start..];
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Ok(&rest[..i]),
            _ => {}
        }
    }
    Err(NpyError::Header(format!("{key:?} entry is not terminated")))
}

fn parse_shape(s: &str) -> Result<Vec<usize>, NpyError> {
    let s = s.trim();
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| NpyError::Header(format!("shape {s:?} is not a tuple")))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<usize>()
                .map_err(|_| NpyError::Header(format!("shape entry {p:?} is not a size")))
        })
        .collect()
}

/// Encode a version-1.0 header for `dtype` and `shape`, padded so the data starts on a
/// 64-byte boundary (as NumPy does).
pub fn encode_header(dtype: NpyDtype, shape: &[usize]) -> Vec<u8> {
    let shape_text = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
        dtype.descr(),
        shape_text
    );
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    dict.push_str(&" ".repeat(pad));
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// A whole array in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: NpyData,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    U32(Vec<u32>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl NpyData {
    pub fn dtype(&self) -> NpyDtype {
        match self {
            NpyData::U32(_) => NpyDtype::U32,
            NpyData::I32(_) => NpyDtype::I32,
            NpyData::I64(_) => NpyDtype::I64,
            NpyData::F32(_) => NpyDtype::F32,
            NpyData::F64(_) => NpyDtype::F64,
        }
    }
}

impl NpyArray {
    /// Decode a whole `.npy` file held in memory. Trailing bytes are an error: a shard with
    /// more data than its header promises is as suspect as one with less.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, NpyError> {
        let header = parse_header(bytes)?;
        let body = &bytes[header.data_offset..];
        let expected = header
            .element_count()
            .checked_mul(header.dtype.size())
            .ok_or_else(|| NpyError::Header("shape overflows".into()))?;
        if body.len() != expected {
            return Err(NpyError::DataLength {
                expected,
                found: body.len(),
            });
        }
        let data = match header.dtype {
            NpyDtype::U32 => NpyData::U32(decode(body, u32::from_le_bytes)),
            NpyDtype::I32 => NpyData::I32(decode(body, i32::from_le_bytes)),
            NpyDtype::I64 => NpyData::I64(decode(body, i64::from_le_bytes)),
            NpyDtype::F32 => NpyData::F32(decode(body, f32::from_le_bytes)),
            NpyDtype::F64 => NpyData::F64(decode(body, f64::from_le_bytes)),
        };
        Ok(Self {
            shape: header.shape,
            data,
        })
    }

    pub fn read(mut r: impl Read) -> Result<Self, NpyError> {
        let mut bytes = Vec::new();
        r.read_to_end(&mut bytes)?;
        Self::from_bytes(&bytes)
    }

    pub fn write(&self, mut w: impl Write) -> Result<(), NpyError> {
        w.write_all(&encode_header(self.data.dtype(), &self.shape))?;
        match &self.data {
            NpyData::U32(v) => write_le(&mut w, v, |x| x.to_le_bytes())?,
            NpyData::I32(v) => write_le(&mut w, v, |x| x.to_le_bytes())?,
            NpyData::I64(v) => write_le(&mut w, v, |x| x.to_le_bytes())?,
            NpyData::F32(v) => write_le(&mut w, v, |x| x.to_le_bytes())?,
            NpyData::F64(v) => write_le(&mut w, v, |x| x.to_le_bytes())?,
        }
        Ok(())
    }

    /// Token ids as `u32`, whatever integer dtype they were stored in; negative or too large
    /// ids are an error naming the first offending index.
    pub fn to_token_ids(&self) -> Result<Vec<u32>, NpyError> {
        fn conv<T: Copy + TryInto<u32> + std::fmt::Display>(v: &[T]) -> Result<Vec<u32>, NpyError> {
            v.iter()
                .enumerate()
                .map(|(i, &x)| {
                    x.try_into().map_err(|_| {
                        NpyError::Header(format!(
                            "token id {x} at flat index {i} is not a valid u32"
                        ))
                    })
                })
                .collect()
        }
        match &self.data {
            NpyData::U32(v) => Ok(v.clone()),
            NpyData::I32(v) => conv(v),
            NpyData::I64(v) => conv(v),
            other => Err(NpyError::WrongDtype {
                expected: "an integer dtype (<u4, <i4, <i8)",
                found: other.dtype().descr(),
            }),
        }
    }

    pub fn into_f64(self) -> Result<Vec<f64>, NpyError> {
        match self.data {
            NpyData::F64(v) => Ok(v),
            NpyData::F32(v) => Ok(v.into_iter().map(f64::from).collect()),
            other => Err(NpyError::WrongDtype {
                expected: "<f8 or <f4",
                found: other.dtype().descr(),
            }),
        }
    }
}

fn decode<T, const N: usize>(body: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    body.chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunks_exact yields N bytes")))
        .collect()
}

fn write_le<T: Copy, const N: usize>(
    w: &mut impl Write,
    v: &[T],
    f: fn(T) -> [u8; N],
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(v.len().min(1 << 16) * N);
    for chunk in v.chunks(1 << 16) {
        buf.clear();
        for &x in chunk {
            buf.extend_from_slice(&f(x));
        }
        w.write_all(&buf)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_dtype() {
        let arrays = [
            NpyArray {
                shape: vec![2, 3],
                data: NpyData::U32(vec![1, 2, 3, 4, 5, u32::MAX]),
            },
            NpyArray {
                shape: vec![3],
                data: NpyData::I64(vec![-1, 0, i64::MAX]),
            },
            NpyArray {
                shape: vec![1, 2],
                data: NpyData::F32(vec![0.5, -1.25]),
            },
            NpyArray {
                shape: vec![2],
                data: NpyData::F64(vec![1e-300, f64::NAN]),
            },
            NpyArray {
                shape: vec![0],
                data: NpyData::I32(vec![]),
            },
        ];
        for a in arrays {
            let mut bytes = Vec::new();
            a.write(&mut bytes).unwrap();
            let h = parse_header(&bytes).unwrap();
            assert_eq!(h.data_offset % 64, 0);
            let b = NpyArray::from_bytes(&bytes).unwrap();
            assert_eq!(a.shape, b.shape);
            // NaN != NaN, so compare the encodings.
            let mut again = Vec::new();
            b.write(&mut again).unwrap();
            assert_eq!(bytes, again);
        }
    }

    #[test]
    fn reads_numpy_written_header() {
        // Bytes as numpy 2.x writes np.arange(3, dtype='<u4').
        let mut bytes = b"\x93NUMPY\x01\x00v\x00".to_vec();
        let mut dict = "{'descr': '<u4', 'fortran_order': False, 'shape': (3,), }".to_string();
        dict.push_str(&" ".repeat(118 - dict.len() - 1));
        dict.push('\n');
        bytes.extend_from_slice(dict.as_bytes());
        for x in 0u32..3 {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        let a = NpyArray::from_bytes(&bytes).unwrap();
        assert_eq!(a.data, NpyData::U32(vec![0, 1, 2]));
    }

    #[test]
    fn bad_files_are_named_errors() {
        let good = {
            let mut b = Vec::new();
            NpyArray {
                shape: vec![4],
                data: NpyData::U32(vec![1, 2, 3, 4]),
            }
            .write(&mut b)
            .unwrap();
            b
        };
        assert!(matches!(
            NpyArray::from_bytes(b"hello world"),
            Err(NpyError::Magic)
        ));
        assert!(matches!(
            NpyArray::from_bytes(&good[..20]),
            Err(NpyError::TruncatedHeader)
        ));
        assert!(matches!(
            NpyArray::from_bytes(&good[..good.len() - 2]),
            Err(NpyError::DataLength {
                expected: 16,
                found: 14
            })
        ));
        let mut extra = good.clone();
        extra.push(0);
        assert!(matches!(
            NpyArray::from_bytes(&extra),
            Err(NpyError::DataLength { .. })
        ));
        let mut f16 = good.clone();
        let at = f16.windows(3).position(|w| w == b"<u4").unwrap();
        f16[at..at + 3].copy_from_slice(b"<f2");
        assert!(matches!(
            NpyArray::from_bytes(&f16),
            Err(NpyError::Dtype { .. })
        ));
        let neg = NpyArray {
            shape: vec![1],
            data: NpyData::I64(vec![-5]),
        };
        assert!(neg.to_token_ids().is_err());
    }
}
