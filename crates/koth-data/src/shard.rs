//! Token shards: `.npy` files holding a 1-D little-endian `uint32` array (Teutonic's format).
//!
//! [`VerifiedShard::open`] checks, in one streaming pass and before any token is used: the
//! header (dtype `<u4`, 1-D, C order), that the file holds exactly the data the header promises
//! (a truncated or misaligned shard is named as such), the token count against the manifest, the
//! sha256 of the whole file against the manifest, and that every id is below the tokenizer's
//! vocabulary size. The file stays open afterwards, so windows are read from the bytes that
//! were verified even if the path is later replaced.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use koth_core::npy::{parse_header, NpyDtype, NpyError};
use koth_core::{Digest, Sha256Writer};

use crate::error::{DataError, Result};

/// What a shard is expected to be (from its manifest entry).
#[derive(Debug, Clone, Copy)]
pub struct ShardExpectation {
    pub sha256: Digest,
    pub tokens: u64,
    pub vocab_size: u32,
}

/// The facts of a shard file read without a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardFacts {
    pub sha256: Digest,
    pub tokens: u64,
    pub data_offset: u64,
}

/// A shard that passed verification; its file stays open for reading windows.
#[derive(Debug)]
pub struct VerifiedShard {
    path: PathBuf,
    file: Mutex<File>,
    data_offset: u64,
    tokens: u64,
}

/// The largest `.npy` header read (NumPy's own headers are a few hundred bytes).
const MAX_HEADER: usize = 1 << 20;
const CHUNK: usize = 1 << 20;

impl VerifiedShard {
    /// Verify `path` against `expected` and keep it open. Errors name the shard and, for a hash
    /// mismatch, both hashes.
    pub fn open(path: &Path, expected: &ShardExpectation) -> Result<Self> {
        let (file, facts, out_of_vocab) = scan(path, Some(expected.vocab_size))?;
        if facts.tokens != expected.tokens {
            return Err(DataError::ShardFormat {
                path: path.to_path_buf(),
                reason: format!(
                    "holds {} tokens but the manifest lists {}",
                    facts.tokens, expected.tokens
                ),
            });
        }
        if facts.sha256 != expected.sha256 {
            return Err(DataError::ShardHash {
                path: path.to_path_buf(),
                expected: expected.sha256,
                actual: facts.sha256,
            });
        }
        // Only after the hash: a shard that is not the manifest's is reported as such, and
        // one that is but holds foreign ids means the manifest names the wrong tokenizer.
        if let Some(e) = out_of_vocab {
            return Err(e);
        }
        Ok(VerifiedShard {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            data_offset: facts.data_offset,
            tokens: facts.tokens,
        })
    }

    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `len` tokens from token `offset`, appended to `out`.
    pub fn read_into(&self, offset: u64, len: u64, out: &mut Vec<u32>) -> Result<()> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.tokens)
            .ok_or_else(|| DataError::ShardFormat {
                path: self.path.clone(),
                reason: format!(
                    "window {offset}..{} is outside its {} tokens",
                    offset.saturating_add(len),
                    self.tokens
                ),
            })?;
        let n = usize::try_from(end - offset).map_err(|_| DataError::ShardFormat {
            path: self.path.clone(),
            reason: "window too large for memory".into(),
        })?;
        let mut bytes = vec![0u8; n * 4];
        {
            let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
            f.seek(SeekFrom::Start(self.data_offset + offset * 4))
                .and_then(|_| f.read_exact(&mut bytes))
                .map_err(|e| DataError::io(&self.path, e))?;
        }
        out.reserve(n);
        out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        Ok(())
    }
}

/// Read a shard without a manifest: check its format (and ids against `vocab_size` if given)
/// and return its hash and token count. Used to build manifests for existing shards and by
/// `koth data verify`.
pub fn inspect(path: &Path, vocab_size: Option<u32>) -> Result<ShardFacts> {
    let (_, facts, out_of_vocab) = scan(path, vocab_size)?;
    match out_of_vocab {
        Some(e) => Err(e),
        None => Ok(facts),
    }
}

/// Check the format, hash the whole file, and find the first id ≥ `vocab_size` (returned, not
/// raised, so the caller decides which failure to report first).
fn scan(path: &Path, vocab_size: Option<u32>) -> Result<(File, ShardFacts, Option<DataError>)> {
    let fmt_err = |reason: String| DataError::ShardFormat {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    let mut head = Vec::new();
    (&mut file)
        .take(MAX_HEADER as u64)
        .read_to_end(&mut head)
        .map_err(|e| DataError::io(path, e))?;
    let header = parse_header(&head).map_err(|e| DataError::Npy {
        path: path.to_path_buf(),
        source: e,
    })?;
    if header.dtype != NpyDtype::U32 {
        return Err(DataError::Npy {
            path: path.to_path_buf(),
            source: NpyError::WrongDtype {
                expected: "<u4 (little-endian uint32 token ids)",
                found: header.dtype.descr(),
            },
        });
    }
    if header.shape.len() != 1 {
        return Err(fmt_err(format!(
            "shape {:?} is not 1-D; a shard is one token stream",
            header.shape
        )));
    }
    let promised = header.shape[0] as u64;
    let data_len = file_len - header.data_offset as u64;
    if !data_len.is_multiple_of(4) {
        return Err(fmt_err(format!(
            "misaligned: its data is {data_len} bytes, not a whole number of 4-byte tokens"
        )));
    }
    let held = data_len / 4;
    if held < promised {
        return Err(fmt_err(format!(
            "truncated: the header promises {promised} tokens but the file holds {held}"
        )));
    }
    if held > promised {
        return Err(fmt_err(format!(
            "has {} bytes of trailing data after the {promised} tokens its header promises",
            (held - promised) * 4
        )));
    }
    // Hash and check ids in one pass over the whole file.
    let mut hasher = Sha256Writer::new();
    file.seek(SeekFrom::Start(0))
        .map_err(|e| DataError::io(path, e))?;
    let mut buf = vec![0u8; CHUNK];
    let mut pos: u64 = 0; // bytes consumed
    let data_offset = header.data_offset as u64;
    let mut carry: Vec<u8> = Vec::with_capacity(4);
    let mut out_of_vocab: Option<DataError> = None;
    loop {
        let n = file.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        hasher.update(chunk);
        if let (Some(vocab), None) = (vocab_size, &out_of_vocab) {
            // The part of this chunk that is token data.
            let start = data_offset.saturating_sub(pos).min(n as u64) as usize;
            let mut data = &chunk[start..];
            let mut token_index = (pos + start as u64).saturating_sub(data_offset) / 4;
            if !carry.is_empty() {
                let need = 4 - carry.len();
                let take = need.min(data.len());
                carry.extend_from_slice(&data[..take]);
                data = &data[take..];
                if carry.len() == 4 {
                    let id = u32::from_le_bytes([carry[0], carry[1], carry[2], carry[3]]);
                    if let Err(e) = check_id(path, id, token_index, vocab) {
                        out_of_vocab = Some(e);
                    }
                    carry.clear();
                    token_index += 1;
                }
            }
            let whole = data.len() / 4 * 4;
            if out_of_vocab.is_none() {
                if let Some(i) = data[..whole]
                    .chunks_exact(4)
                    .position(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) >= vocab)
                {
                    let c = &data[i * 4..i * 4 + 4];
                    let id = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    out_of_vocab = check_id(path, id, token_index + i as u64, vocab).err();
                }
            }
            carry.extend_from_slice(&data[whole..]);
        }
        pos += n as u64;
    }
    if pos != file_len {
        return Err(fmt_err(format!(
            "changed while being read: {pos} bytes read, {file_len} expected"
        )));
    }
    Ok((
        file,
        ShardFacts {
            sha256: hasher.finish(),
            tokens: promised,
            data_offset,
        },
        out_of_vocab,
    ))
}

fn check_id(path: &Path, id: u32, position: u64, vocab_size: u32) -> Result<()> {
    if id >= vocab_size {
        return Err(DataError::TokenOutOfVocab {
            path: path.to_path_buf(),
            id,
            position,
            vocab_size,
        });
    }
    Ok(())
}
