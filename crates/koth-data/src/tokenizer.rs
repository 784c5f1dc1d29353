//! Tokenizers: Hugging Face `tokenizer.json` files, the built-in GPT-2 (tiktoken's r50k_base,
//! shipped inside the `tiktoken-rs` crate, so ids are tiktoken's exactly) and byte-level BPE
//! training for small models.
//!
//! Every tokenizer has a [`TokenizerIdentity`] that manifests and bundles record; two shards are
//! only mixed when their identities are equal. Special tokens written in the text are encoded as
//! ordinary text, never as their special id, so a document cannot forge an end-of-text marker.

use std::path::Path;
use std::sync::OnceLock;

use koth_core::{Digest, Sha256Writer};
use serde::{Deserialize, Serialize};
use tiktoken_rs::CoreBPE;

use crate::error::{DataError, Result};

/// The name under which the built-in GPT-2 tokenizer is selected and recorded.
pub const GPT2_NAME: &str = "gpt2-r50k";
/// GPT-2's `<|endoftext|>`.
pub const GPT2_EOS_ID: u32 = 50256;
pub const GPT2_VOCAB_SIZE: u32 = 50257;
/// The end-of-text token trained tokenizers get (as GPT-2's).
pub const ENDOFTEXT: &str = "<|endoftext|>";
/// End-of-sequence tokens looked for, in this order, in a `tokenizer.json` when none is named.
pub const KNOWN_EOS_TOKENS: &[&str] = &[
    "<|endoftext|>",
    "</s>",
    "<|end_of_text|>",
    "<eos>",
    "<|im_end|>",
];

/// What a manifest records about the tokenizer its shards were made with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerIdentity {
    /// `gpt2-r50k`, or `file:<file name>` for a `tokenizer.json`.
    pub name: String,
    /// sha256 of the tokenizer's canonical bytes: the `tokenizer.json` file's bytes, or for
    /// GPT-2 a canonical encoding of r50k's ranks, pattern and special tokens.
    pub sha256: Digest,
    /// Number of token ids, special tokens included: every id in a shard is below it.
    pub vocab_size: u32,
    pub eos_id: u32,
    pub eos_token: String,
}

impl TokenizerIdentity {
    /// Same tokenizer (the name may differ: one file copied under another name is the same).
    pub fn same_tokenizer(&self, other: &TokenizerIdentity) -> bool {
        self.sha256 == other.sha256
            && self.vocab_size == other.vocab_size
            && self.eos_id == other.eos_id
    }
}

/// A loaded tokenizer.
pub struct Tokenizer {
    kind: Kind,
    identity: TokenizerIdentity,
}

enum Kind {
    Gpt2(&'static CoreBPE),
    HuggingFace(Box<tokenizers::Tokenizer>),
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("identity", &self.identity)
            .finish()
    }
}

impl Tokenizer {
    /// `gpt2` / `gpt2-r50k` selects the built-in GPT-2; anything else is a `tokenizer.json` path.
    pub fn load(spec: &str, eos: Option<&str>) -> Result<Self> {
        match spec {
            "gpt2" | GPT2_NAME => {
                if let Some(e) = eos {
                    if e != ENDOFTEXT {
                        return Err(DataError::Tokenizer {
                            name: GPT2_NAME.into(),
                            reason: format!("its end-of-text token is {ENDOFTEXT}, not {e:?}"),
                        });
                    }
                }
                Ok(Self::gpt2())
            }
            path => Self::from_file(Path::new(path), eos),
        }
    }

    /// The built-in GPT-2 tokenizer (tiktoken's r50k_base).
    pub fn gpt2() -> Self {
        Tokenizer {
            kind: Kind::Gpt2(tiktoken_rs::r50k_base_singleton()),
            identity: TokenizerIdentity {
                name: GPT2_NAME.into(),
                sha256: gpt2_canonical_sha256(),
                vocab_size: GPT2_VOCAB_SIZE,
                eos_id: GPT2_EOS_ID,
                eos_token: ENDOFTEXT.into(),
            },
        }
    }

    /// A Hugging Face `tokenizer.json`. `eos` names the end-of-text token; without it the first
    /// of [`KNOWN_EOS_TOKENS`] present in the vocabulary is used.
    pub fn from_file(path: &Path, eos: Option<&str>) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let name = format!(
            "file:{}",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string())
        );
        Self::from_json_bytes(&bytes, name, eos)
    }

    /// A `tokenizer.json` held in memory, recorded under `name`.
    pub fn from_json_bytes(bytes: &[u8], name: String, eos: Option<&str>) -> Result<Self> {
        let err = |reason: String| DataError::Tokenizer {
            name: name.clone(),
            reason,
        };
        let mut inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| err(format!("not a loadable tokenizer.json: {e}")))?;
        // Special tokens inside the text are ordinary text (see the module docs).
        inner.set_encode_special_tokens(true);
        let vocab_size = u32::try_from(inner.get_vocab_size(true))
            .map_err(|_| err("vocabulary larger than u32".into()))?;
        let (eos_token, eos_id) = match eos {
            Some(t) => (
                t.to_string(),
                inner.token_to_id(t).ok_or_else(|| {
                    err(format!("end-of-text token {t:?} is not in its vocabulary"))
                })?,
            ),
            None => KNOWN_EOS_TOKENS
                .iter()
                .find_map(|t| inner.token_to_id(t).map(|id| (t.to_string(), id)))
                .ok_or_else(|| {
                    err(format!(
                        "none of the usual end-of-text tokens {KNOWN_EOS_TOKENS:?} is in its \
                         vocabulary; name one with --eos"
                    ))
                })?,
        };
        if eos_id >= vocab_size {
            return Err(err(format!(
                "end-of-text id {eos_id} is not below the vocabulary size {vocab_size}"
            )));
        }
        Ok(Tokenizer {
            identity: TokenizerIdentity {
                name,
                sha256: Digest::of(bytes),
                vocab_size,
                eos_id,
                eos_token,
            },
            kind: Kind::HuggingFace(Box::new(inner)),
        })
    }

    pub fn identity(&self) -> &TokenizerIdentity {
        &self.identity
    }

    /// Token ids of `text`, with no special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match &self.kind {
            Kind::Gpt2(bpe) => Ok(bpe.encode_ordinary(text)),
            Kind::HuggingFace(t) => t
                .encode_fast(text, false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| DataError::Tokenizer {
                    name: self.identity.name.clone(),
                    reason: format!("encoding failed: {e}"),
                }),
        }
    }

    /// Text of `ids` (special tokens included as their text).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let err = |reason: String| DataError::Tokenizer {
            name: self.identity.name.clone(),
            reason,
        };
        match &self.kind {
            Kind::Gpt2(bpe) => {
                let bytes = bpe
                    .decode_bytes(ids)
                    .map_err(|e| err(format!("decoding failed: {e}")))?;
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            Kind::HuggingFace(t) => t
                .decode(ids, false)
                .map_err(|e| err(format!("decoding failed: {e}"))),
        }
    }
}

/// sha256 of r50k's canonical encoding: a tag, the pre-tokenizer pattern, then for every id its
/// bytes (u32 LE length + bytes), then the special tokens. Computed once per process.
fn gpt2_canonical_sha256() -> Digest {
    static SHA: OnceLock<Digest> = OnceLock::new();
    *SHA.get_or_init(|| {
        let bpe = tiktoken_rs::r50k_base_singleton();
        let mut h = Sha256Writer::new();
        h.update(b"koth-tokenizer/tiktoken-r50k_base/v1\n");
        h.update(
            b"'(?:[sdmt]|ll|ve|re)| ?\\p{L}++| ?\\p{N}++| ?[^\\s\\p{L}\\p{N}]++|\\s++$|\\s+(?!\\S)|\\s\n",
        );
        for id in 0..GPT2_EOS_ID {
            // Every id below 50256 is an ordinary rank of r50k; a missing one would be a broken
            // vocabulary, which we record as an empty entry rather than panic.
            let bytes = bpe.decode_bytes(&[id]).unwrap_or_default();
            h.update(&(bytes.len() as u32).to_le_bytes());
            h.update(&bytes);
        }
        h.update(format!("special {ENDOFTEXT} {GPT2_EOS_ID}\n").as_bytes());
        h.finish()
    })
}

/// Train a byte-level BPE tokenizer (GPT-2's pre-tokenizer and byte alphabet, `<|endoftext|>`
/// as id 0) of `vocab_size` ids on `documents`; returns the `tokenizer.json` text.
pub fn train_byte_level_bpe<I, S>(
    documents: I,
    vocab_size: u32,
    min_frequency: u64,
) -> Result<String>
where
    I: Iterator<Item = S> + Send,
    S: AsRef<str> + Send,
{
    use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
    use tokenizers::models::TrainerWrapper;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{AddedToken, DecoderWrapper, PostProcessorWrapper, PreTokenizerWrapper};

    let err = |reason: String| DataError::Tokenizer {
        name: "byte-level BPE training".into(),
        reason,
    };
    // 256 byte symbols + the end-of-text token is the smallest vocabulary that can encode text.
    if vocab_size < 257 {
        return Err(err(format!(
            "vocab size {vocab_size} is below 257 (256 bytes + {ENDOFTEXT})"
        )));
    }
    let mut trainer = TrainerWrapper::BpeTrainer(
        BpeTrainerBuilder::new()
            .vocab_size(vocab_size as usize)
            .min_frequency(min_frequency)
            .show_progress(false)
            .special_tokens(vec![AddedToken::from(ENDOFTEXT, true)])
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build(),
    );
    let mut tok = tokenizers::Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
        false, true, true,
    ))));
    tok.with_post_processor(Some(PostProcessorWrapper::ByteLevel(ByteLevel::new(
        false, true, true,
    ))));
    tok.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::new(
        false, true, true,
    ))));
    tok.train(&mut trainer, documents)
        .map_err(|e| err(format!("training failed: {e}")))?;
    tok.to_string(true)
        .map_err(|e| err(format!("serialising the trained tokenizer failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_known_ids() {
        let t = Tokenizer::gpt2();
        // tiktoken.get_encoding("r50k_base").encode("Hello world") == [15496, 995]
        assert_eq!(t.encode("Hello world").unwrap(), vec![15496, 995]);
        // The special token in text is ordinary text, not id 50256.
        let ids = t.encode("<|endoftext|>").unwrap();
        assert!(!ids.contains(&GPT2_EOS_ID), "{ids:?}");
        assert_eq!(t.decode(&ids).unwrap(), "<|endoftext|>");
        assert_eq!(t.decode(&[GPT2_EOS_ID]).unwrap(), "<|endoftext|>");
    }
}
