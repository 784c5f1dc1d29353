//! Importing keys made by Bittensor's tools (btcli, `bittensor_wallet`) into koth's keystore.
//!
//! koth's keystore stores the 32-byte *mini-secret seed* a key is expanded from (see
//! [`crate::keys`]). Two sources give one:
//!
//! - **A mnemonic** (with an optional derivation path and password, written as a Substrate
//!   "secret URI": `<words>[//hard…][///password]`), as [`keypair_from_uri`] reads it:
//!   the BIP-39 *entropy* of the English phrase (not the BIP-39 seed), then
//!   PBKDF2-HMAC-SHA512 with salt `"mnemonic" + password` and 2048 rounds; the first 32 bytes
//!   are the seed (Substrate's `substrate-bip39`). Each `//hard` junction replaces the seed
//!   with its hard derivation (`HDKD-hard`, chain code from the SCALE-encoded junction), which
//!   is again a seed, so hard-derived keys can be stored. A `/soft` junction gives a key that
//!   has no seed at all and is refused.
//! - **A Bittensor key file** (`~/.bittensor/wallets/<wallet>/hotkeys/<hotkey>`, or an
//!   unencrypted `coldkey`), as [`read_wallet_file`] reads it: the JSON object that
//!   `bittensor_wallet` writes, whose `secretSeed` (or else `secretPhrase`) gives the key. The
//!   derived public key must equal the file's `publicKey`, `accountId` and `ss58Address`, its
//!   `secretPhrase` must give the same key as its `secretSeed`, and its `privateKey` must be
//!   that key's expansion, or nothing is imported.
//!
//! What is refused, and why:
//! - Encrypted files (`$NACL` secretbox, Ansible Vault, the legacy Fernet format): koth does not
//!   decrypt wallets. Decrypt with btcli or import the mnemonic.
//! - Public-only files (`coldkeypub.txt`, `hotkeys/<name>pub.txt`): the keystore holds signing
//!   keys only; it has no watch-only entries.
//! - A file with a `privateKey` but no `secretSeed`/`secretPhrase` (what `bittensor_wallet`
//!   writes for a key made from a URI such as `<mnemonic>//hotkey`): the 64-byte expanded key
//!   cannot be turned back into a seed. Import the same URI with `--mnemonic-stdin` instead.
//! - ed25519 keys (`cryptoType` 0): koth signs with sr25519.
//!
//! Error messages never repeat secret material (words, seeds, passwords).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest as _};
use schnorrkel::derive::ChainCode;
use schnorrkel::{ExpansionMode, MiniSecretKey};
use serde_json::{Map, Value};
use sha2::Sha512;
use zeroize::{Zeroize, Zeroizing};

use crate::keys::{AccountId, Keypair};

/// A Bittensor key file is under 1 KiB; anything beyond this is not one and is not read further.
pub const MAX_WALLET_FILE_BYTES: u64 = 64 * 1024;
/// The longest mnemonic URI read from stdin (24 words with a path and a password fit easily).
pub const MAX_MNEMONIC_BYTES: usize = 4096;

/// Why a mnemonic (secret URI) was refused. Never contains the secret itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MnemonicError {
    #[error("the mnemonic is empty: expected 12, 15, 18, 21 or 24 BIP-39 English words")]
    Empty,
    #[error("the mnemonic is longer than {MAX_MNEMONIC_BYTES} bytes: expected 12 to 24 BIP-39 English words")]
    TooLong,
    #[error("the mnemonic spans several lines: expected the words on one line")]
    MultiLine,
    #[error("nothing before the derivation path: expected BIP-39 words first, as in `<words>//hotkey` (koth does not use Substrate's public development phrase)")]
    NoPhrase,
    #[error("the mnemonic has {0} words; expected 12, 15, 18, 21 or 24 BIP-39 English words")]
    WordCount(usize),
    #[error("word {index} of {count} is not in the BIP-39 English word list (lower case; the word is not shown because it is secret)")]
    UnknownWord { index: usize, count: usize },
    #[error("the mnemonic's checksum does not match: a word is mistyped, missing or out of order")]
    Checksum,
    #[error(
        "derivation path: junction {0} is empty (`//` or `/` must be followed by a name or number)"
    )]
    EmptyJunction(usize),
    #[error("derivation path: junction {index} is soft (`/{junction}`); a soft-derived sr25519 key has no seed, and koth's keystore stores seeds; only hard junctions (`//{junction}`) are supported")]
    SoftJunction { index: usize, junction: String },
}

/// Why a Bittensor key file was refused.
#[derive(Debug, thiserror::Error)]
#[error("Bittensor wallet file {}: {problem}", path.display())]
pub struct WalletFileError {
    pub path: PathBuf,
    pub problem: WalletProblem,
}

#[derive(Debug, thiserror::Error)]
pub enum WalletProblem {
    #[error("cannot be read: {0}")]
    Read(#[source] std::io::Error),
    #[error("is a directory; pass a key file in it: a hotkey is <wallet>/hotkeys/<name>, the coldkey <wallet>/coldkey")]
    Directory,
    #[error("is larger than {MAX_WALLET_FILE_BYTES} bytes; a Bittensor key file is a JSON object under 1 KiB")]
    TooLarge,
    #[error("is encrypted ({0}); koth does not decrypt wallet files: decrypt it with btcli, or import the key's mnemonic with `koth keys import --mnemonic-stdin`")]
    Encrypted(&'static str),
    #[error("is not JSON ({0}); expected a Bittensor key file: a JSON object with secretSeed or secretPhrase, publicKey and ss58Address")]
    NotJson(String),
    #[error("is JSON but not an object; expected a Bittensor key file: a JSON object with secretSeed or secretPhrase, publicKey and ss58Address")]
    NotObject,
    #[error("field {field}: expected {expected}, found {found}")]
    Field {
        field: &'static str,
        expected: &'static str,
        found: String,
    },
    #[error("holds an ed25519 key (cryptoType {0}); koth's keys are sr25519 (cryptoType 1)")]
    NotSr25519(i64),
    #[error("holds only a public key (like coldkeypub.txt or hotkeys/<name>pub.txt); koth's keystore stores signing keys and has no watch-only entries: import the key's mnemonic with `koth keys import --mnemonic-stdin`")]
    PublicOnly,
    #[error("has a privateKey (the 64-byte expanded sr25519 key) but no secretSeed or secretPhrase; koth's keystore stores the 32-byte seed a key is expanded from, which cannot be recovered from the expanded key. bittensor_wallet writes such a file for a key made from a URI (e.g. `<mnemonic>//hotkey`): pipe that same URI to `koth keys import --mnemonic-stdin`")]
    PrivateKeyOnly,
    #[error("has none of secretSeed, secretPhrase, privateKey, publicKey, ss58Address: not a Bittensor key file")]
    NoKey,
    #[error(
        "has a secret but no publicKey, accountId or ss58Address to check the derived key against"
    )]
    NoAddress,
    #[error("field secretPhrase: {0}")]
    Phrase(#[source] MnemonicError),
    #[error("its secretPhrase gives address {from_phrase} but its secretSeed gives {from_seed}; refusing to guess which is meant")]
    PhraseSeedMismatch {
        from_phrase: String,
        from_seed: String,
    },
    #[error("its {source_field} gives address {derived}, but its {field} names address {stated}; refusing to import a key whose address is not the one the file states")]
    AddressMismatch {
        source_field: &'static str,
        derived: String,
        field: &'static str,
        stated: String,
    },
    #[error("its privateKey is not the expansion of its {0} (the file is damaged or was edited)")]
    PrivateKeyMismatch(&'static str),
}

/// A Substrate "secret URI" split into its parts (borrowing from the input).
struct SecretUri<'a> {
    phrase: &'a str,
    /// Hard junctions, in order.
    hard: Vec<&'a str>,
    password: &'a str,
}

fn split_uri(uri: &str) -> Result<SecretUri<'_>, MnemonicError> {
    let (phrase, mut rest) = match uri.find('/') {
        Some(i) => uri.split_at(i),
        None => (uri, ""),
    };
    let mut hard = Vec::new();
    let mut password = "";
    let mut index = 0;
    while !rest.is_empty() {
        index += 1;
        if let Some(pw) = rest.strip_prefix("///") {
            password = pw;
            break;
        }
        let (is_hard, body) = match rest.strip_prefix("//") {
            Some(body) => (true, body),
            None => (false, &rest[1..]),
        };
        let end = body.find('/').unwrap_or(body.len());
        let junction = &body[..end];
        if junction.is_empty() {
            return Err(MnemonicError::EmptyJunction(index));
        }
        if !is_hard {
            return Err(MnemonicError::SoftJunction {
                index,
                junction: junction.to_string(),
            });
        }
        hard.push(junction);
        rest = &body[end..];
    }
    if phrase.trim().is_empty() {
        return Err(if uri.trim().is_empty() {
            MnemonicError::Empty
        } else {
            MnemonicError::NoPhrase
        });
    }
    Ok(SecretUri {
        phrase,
        hard,
        password,
    })
}

/// The 32-byte mini-secret seed of a BIP-39 English phrase, as Substrate's `substrate-bip39`
/// derives it (and so `bittensor_wallet`, btcli and `subkey`): PBKDF2-HMAC-SHA512 over the
/// phrase's entropy, salt `"mnemonic" + password`, 2048 rounds, first 32 bytes.
pub fn seed_from_mnemonic(phrase: &str, password: &str) -> Result<[u8; 32], MnemonicError> {
    let count = phrase.split_whitespace().count();
    if count == 0 {
        return Err(MnemonicError::Empty);
    }
    let mnemonic = bip39::Mnemonic::parse_in_normalized(bip39::Language::English, phrase).map_err(
        |e| match e {
            bip39::Error::BadWordCount(n) => MnemonicError::WordCount(n),
            bip39::Error::UnknownWord(i) => MnemonicError::UnknownWord {
                index: i + 1,
                count,
            },
            // The other variants (entropy length, ambiguous language) cannot come from parsing
            // English words; a checksum is the nearest description.
            _ => MnemonicError::Checksum,
        },
    )?;
    let (entropy, len) = mnemonic.to_entropy_array();
    let entropy = Zeroizing::new(entropy);
    let mut salt = Zeroizing::new(String::with_capacity(8 + password.len()));
    salt.push_str("mnemonic");
    salt.push_str(password);
    let mut out = Zeroizing::new([0u8; 64]);
    pbkdf2::pbkdf2_hmac::<Sha512>(&entropy[..len], salt.as_bytes(), 2048, &mut out[..]);
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&out[..32]);
    Ok(seed)
}

/// The chain code of a derivation junction, as Substrate computes it: a junction that parses
/// as a `u64` is its 8 little-endian bytes, anything else its SCALE encoding as a string
/// (compact length, then the bytes); the result is zero-padded to 32 bytes, or replaced by its
/// blake2b-256 hash when longer.
fn chain_code(junction: &str) -> [u8; 32] {
    let encoded = match junction.parse::<u64>() {
        Ok(n) => n.to_le_bytes().to_vec(),
        Err(_) => {
            let mut v = scale_compact_len(junction.len());
            v.extend_from_slice(junction.as_bytes());
            v
        }
    };
    let mut cc = [0u8; 32];
    if encoded.len() > 32 {
        cc.copy_from_slice(&Blake2b::<U32>::digest(&encoded));
    } else {
        cc[..encoded.len()].copy_from_slice(&encoded);
    }
    cc
}

/// SCALE's compact encoding of a length (the prefix of an encoded string).
fn scale_compact_len(len: usize) -> Vec<u8> {
    let n = len as u64;
    if n < 1 << 6 {
        vec![(n as u8) << 2]
    } else if n < 1 << 14 {
        ((n as u16) << 2 | 0b01).to_le_bytes().to_vec()
    } else if n < 1 << 30 {
        ((n as u32) << 2 | 0b10).to_le_bytes().to_vec()
    } else {
        let bytes = n.to_le_bytes();
        let used = 8 - (n.leading_zeros() / 8) as usize;
        let mut v = vec![(((used - 4) as u8) << 2) | 0b11];
        v.extend_from_slice(&bytes[..used]);
        v
    }
}

/// The key of a secret URI `<words>[//hard…][///password]`, exactly as Substrate's
/// `sr25519::Pair::from_string` (and `bittensor_wallet`'s `Keypair.create_from_uri` /
/// `create_from_mnemonic`) derive it. Words are separated by any whitespace and must be
/// lower-case English BIP-39 words; soft (`/x`) junctions are refused.
pub fn keypair_from_uri(uri: &str) -> Result<Keypair, MnemonicError> {
    if uri.len() > MAX_MNEMONIC_BYTES {
        return Err(MnemonicError::TooLong);
    }
    let parts = split_uri(uri)?;
    let mut seed = seed_from_mnemonic(parts.phrase, parts.password)?;
    for junction in &parts.hard {
        let mini = match MiniSecretKey::from_bytes(&seed) {
            Ok(mini) => mini,
            Err(_) => unreachable!("a [u8; 32] is always a valid mini secret key"),
        };
        let (derived, _) = mini.hard_derive_mini_secret_key(
            Some(ChainCode(chain_code(junction))),
            b"",
            ExpansionMode::Ed25519,
        );
        seed.zeroize();
        seed = derived.to_bytes();
    }
    let key = Keypair::from_seed(seed);
    seed.zeroize();
    Ok(key)
}

/// Read a mnemonic URI from `reader` (stdin): one line, at most [`MAX_MNEMONIC_BYTES`], a
/// trailing line break removed. Surrounding whitespace is removed too unless the URI carries a
/// `///password`, whose trailing characters are kept as they are (only the line break goes).
pub fn keypair_from_reader(reader: impl Read) -> Result<Keypair, MnemonicReadError> {
    let mut buf = Zeroizing::new(Vec::with_capacity(256));
    reader
        .take(MAX_MNEMONIC_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(MnemonicReadError::Read)?;
    if buf.len() > MAX_MNEMONIC_BYTES {
        return Err(MnemonicError::TooLong.into());
    }
    let text = std::str::from_utf8(&buf).map_err(|_| MnemonicReadError::NotUtf8)?;
    let mut line = text.strip_suffix('\n').unwrap_or(text);
    line = line.strip_suffix('\r').unwrap_or(line);
    if line.contains(['\n', '\r']) {
        return Err(MnemonicError::MultiLine.into());
    }
    let line = if line.contains("///") {
        line.trim_start()
    } else {
        line.trim()
    };
    Ok(keypair_from_uri(line)?)
}

/// Why reading a mnemonic from a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum MnemonicReadError {
    #[error("reading the mnemonic from stdin: {0}")]
    Read(#[source] std::io::Error),
    #[error("the mnemonic on stdin is not UTF-8 text: expected BIP-39 English words")]
    NotUtf8,
    #[error(transparent)]
    Mnemonic(#[from] MnemonicError),
}

/// Read and check a Bittensor key file (bounded to [`MAX_WALLET_FILE_BYTES`]); see the module
/// documentation for what is accepted and refused.
pub fn read_wallet_file(path: &Path) -> Result<Keypair, WalletFileError> {
    let fail = |problem| WalletFileError {
        path: path.to_path_buf(),
        problem,
    };
    let file = fs::File::open(path).map_err(|e| fail(WalletProblem::Read(e)))?;
    let meta = file.metadata().map_err(|e| fail(WalletProblem::Read(e)))?;
    if meta.is_dir() {
        return Err(fail(WalletProblem::Directory));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(1024));
    file.take(MAX_WALLET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(WalletProblem::Read(e)))?;
    if bytes.len() as u64 > MAX_WALLET_FILE_BYTES {
        return Err(fail(WalletProblem::TooLarge));
    }
    parse_wallet_file(&bytes).map_err(fail)
}

/// The encrypted formats Bittensor's wallets have used, by their leading bytes.
fn encryption_format(bytes: &[u8]) -> Option<&'static str> {
    let start = bytes.trim_ascii_start();
    if start.starts_with(b"$NACL") {
        Some("NaCl secretbox, `$NACL`")
    } else if start.starts_with(b"$ANSIBLE_VAULT") {
        Some("legacy Ansible Vault")
    } else if start.starts_with(b"gAAAAA") {
        Some("legacy Fernet")
    } else {
        None
    }
}

/// A short description of a JSON value for an error message, never showing its content.
fn kind_of(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(_) => "a number".into(),
        Value::String(s) => format!("a string of {} characters", s.chars().count()),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn string_field<'a>(
    map: &'a Map<String, Value>,
    field: &'static str,
    expected: &'static str,
) -> Result<Option<&'a str>, WalletProblem> {
    match map.get(field) {
        // An empty string is taken as absent, as null is.
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(WalletProblem::Field {
            field,
            expected,
            found: kind_of(other),
        }),
    }
}

/// `0x` (optional) followed by exactly `N` bytes of hex.
fn hex_field<const N: usize>(
    map: &Map<String, Value>,
    field: &'static str,
    expected: &'static str,
) -> Result<Option<Zeroizing<[u8; N]>>, WalletProblem> {
    let Some(s) = string_field(map, field, expected)? else {
        return Ok(None);
    };
    let digits = s.strip_prefix("0x").unwrap_or(s);
    let mut out = Zeroizing::new([0u8; N]);
    if digits.len() != 2 * N || hex::decode_to_slice(digits, &mut out[..]).is_err() {
        let found = if digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            format!("{} hex digits", digits.len())
        } else {
            format!("{} characters that are not all hex digits", digits.len())
        };
        return Err(WalletProblem::Field {
            field,
            expected,
            found,
        });
    }
    Ok(Some(out))
}

/// The `secretSeed` field: `0x` and 64 hex digits, or `0x` and the 32 seed bytes themselves
/// as text, which is how `bittensor_wallet` 4.x writes a seed (given to `regenerate_hotkey`/
/// `regenerate_coldkey` as `seed=`) whose bytes happen to be valid UTF-8. Either way the public
/// key is checked against the file afterwards, so a misread seed cannot be imported.
fn seed_field(
    map: &Map<String, Value>,
    expected: &'static str,
) -> Result<Option<Zeroizing<[u8; 32]>>, WalletProblem> {
    let Some(s) = string_field(map, "secretSeed", expected)? else {
        return Ok(None);
    };
    let mut out = Zeroizing::new([0u8; 32]);
    let digits = s.strip_prefix("0x").unwrap_or(s);
    if digits.len() == 64 && hex::decode_to_slice(digits, &mut out[..]).is_ok() {
        return Ok(Some(out));
    }
    if let Some(raw) = s.strip_prefix("0x").filter(|raw| raw.len() == 32) {
        out.copy_from_slice(raw.as_bytes());
        return Ok(Some(out));
    }
    hex_field::<32>(map, "secretSeed", expected)
}

/// Check a Bittensor key file's bytes and derive its key; see the module documentation.
pub fn parse_wallet_file(bytes: &[u8]) -> Result<Keypair, WalletProblem> {
    if let Some(format) = encryption_format(bytes) {
        return Err(WalletProblem::Encrypted(format));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        // serde_json's message names the line and column, never the content.
        WalletProblem::NotJson(e.to_string())
    })?;
    let Value::Object(map) = value else {
        return Err(WalletProblem::NotObject);
    };
    let parsed = check_wallet_map(&map);
    // The parsed JSON holds the secrets as plain strings; wipe them before returning.
    wipe(Value::Object(map));
    parsed
}

fn wipe(value: Value) {
    match value {
        Value::String(mut s) => s.zeroize(),
        Value::Array(items) => items.into_iter().for_each(wipe),
        Value::Object(map) => map.into_iter().for_each(|(_, v)| wipe(v)),
        _ => {}
    }
}

fn check_wallet_map(map: &Map<String, Value>) -> Result<Keypair, WalletProblem> {
    match map.get("cryptoType") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_i64() == Some(1) => {}
        Some(Value::Number(n)) if n.as_i64() == Some(0) => {
            return Err(WalletProblem::NotSr25519(0));
        }
        Some(other) => {
            return Err(WalletProblem::Field {
                field: "cryptoType",
                expected: "1 (sr25519)",
                found: match other {
                    Value::Number(n) => format!("{n}"),
                    v => kind_of(v),
                },
            })
        }
    }
    const SEED: &str = "0x followed by 64 hex digits (a 32-byte seed)";
    const PUBLIC: &str = "0x followed by 64 hex digits (a 32-byte public key)";
    const PRIVATE: &str = "0x followed by 128 hex digits (a 64-byte expanded sr25519 key)";
    let seed = seed_field(map, SEED)?;
    let phrase = string_field(map, "secretPhrase", "a BIP-39 mnemonic")?;
    let private = hex_field::<64>(map, "privateKey", PRIVATE)?;
    let public = hex_field::<32>(map, "publicKey", PUBLIC)?;
    let account_id = hex_field::<32>(map, "accountId", PUBLIC)?;
    let ss58 = match string_field(map, "ss58Address", "an SS58 address")? {
        None => None,
        Some(s) => Some(AccountId::from_ss58(s).map_err(|e| WalletProblem::Field {
            field: "ss58Address",
            expected: "an SS58 address with prefix 42",
            found: e.to_string(),
        })?),
    };
    let has_public = public.is_some() || account_id.is_some() || ss58.is_some();

    let from_seed = seed.as_ref().map(|s| Keypair::from_seed(**s));
    let from_phrase = match phrase {
        Some(p) => Some(keypair_from_uri(p).map_err(WalletProblem::Phrase)?),
        None => None,
    };
    let (key, source_field) = match (from_seed, from_phrase) {
        (Some(s), Some(p)) => {
            if s.account() != p.account() {
                return Err(WalletProblem::PhraseSeedMismatch {
                    from_phrase: p.account().to_ss58(),
                    from_seed: s.account().to_ss58(),
                });
            }
            (s, "secretSeed")
        }
        (Some(s), None) => (s, "secretSeed"),
        (None, Some(p)) => (p, "secretPhrase"),
        (None, None) if private.is_some() => return Err(WalletProblem::PrivateKeyOnly),
        (None, None) if has_public => return Err(WalletProblem::PublicOnly),
        (None, None) => return Err(WalletProblem::NoKey),
    };
    if !has_public {
        return Err(WalletProblem::NoAddress);
    }
    let derived = key.account();
    let stated = [
        ("publicKey", public.map(|p| AccountId::from_bytes(*p))),
        ("accountId", account_id.map(|p| AccountId::from_bytes(*p))),
        ("ss58Address", ss58),
    ];
    for (field, stated) in stated {
        if let Some(stated) = stated {
            if stated != derived {
                return Err(WalletProblem::AddressMismatch {
                    source_field,
                    derived: derived.to_ss58(),
                    field,
                    stated: stated.to_ss58(),
                });
            }
        }
    }
    if let Some(private) = private {
        if !key.expanded_secret_eq(&private) {
            return Err(WalletProblem::PrivateKeyMismatch(source_field));
        }
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV_PHRASE: &str =
        "bottom drive obey lake curtain smoke basket hold race lonely fit walk";

    #[test]
    fn development_accounts_match_substrate() {
        // `subkey inspect //Alice` and `//Bob`: the development phrase with a hard junction.
        let alice = keypair_from_uri(&format!("{DEV_PHRASE}//Alice")).unwrap();
        assert_eq!(
            alice.account().to_ss58(),
            "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
        );
        assert_eq!(
            hex::encode(alice.seed()),
            "e5be9a5092b81bca64be81d212e7f2f9eba183bb7a90954f7b76361f6edb5c0a"
        );
        let bob = keypair_from_uri(&format!("{DEV_PHRASE}//Bob")).unwrap();
        assert_eq!(
            bob.account().to_ss58(),
            "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
        );
        // The phrase alone: `subkey inspect "bottom drive …"`.
        let root = keypair_from_uri(DEV_PHRASE).unwrap();
        assert_eq!(
            root.account().to_ss58(),
            "5DfhGyQdFobKM8NsWvEeAKk5EQQgYe9AydgJ7rMB6E1EqRzV"
        );
    }

    #[test]
    fn chain_codes_follow_substrates_junction_encoding() {
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(chain_code("1"), one);
        let mut alice = [0u8; 32];
        alice[0] = 5 << 2;
        alice[1..6].copy_from_slice(b"Alice");
        assert_eq!(chain_code("Alice"), alice);
        // 40 characters encode to 41 bytes, so they are hashed.
        let long = "x".repeat(40);
        let mut enc = vec![40 << 2];
        enc.extend_from_slice(long.as_bytes());
        assert_eq!(chain_code(&long)[..], Blake2b::<U32>::digest(&enc)[..]);
        assert_eq!(scale_compact_len(64), vec![0x01, 0x01]);
        assert_eq!(scale_compact_len(1 << 14), vec![0x02, 0x00, 0x01, 0x00]);
    }

    #[test]
    fn bad_mnemonics_are_refused_without_showing_the_words() {
        assert_eq!(keypair_from_uri("").unwrap_err(), MnemonicError::Empty);
        assert_eq!(keypair_from_uri("   ").unwrap_err(), MnemonicError::Empty);
        assert_eq!(
            keypair_from_uri("//Alice").unwrap_err(),
            MnemonicError::NoPhrase
        );
        let eleven: Vec<&str> = DEV_PHRASE.split(' ').take(11).collect();
        assert_eq!(
            keypair_from_uri(&eleven.join(" ")).unwrap_err(),
            MnemonicError::WordCount(11)
        );
        let typo = DEV_PHRASE.replace("lake", "lakes");
        let err = keypair_from_uri(&typo).unwrap_err();
        assert_eq!(
            err,
            MnemonicError::UnknownWord {
                index: 4,
                count: 12
            }
        );
        assert!(!err.to_string().contains("lakes"), "{err}");
        let swapped = DEV_PHRASE.replace("fit walk", "walk fit");
        assert_eq!(
            keypair_from_uri(&swapped).unwrap_err(),
            MnemonicError::Checksum
        );
        assert_eq!(
            keypair_from_uri(&DEV_PHRASE.to_uppercase()).unwrap_err(),
            MnemonicError::UnknownWord {
                index: 1,
                count: 12
            }
        );
        assert!(matches!(
            keypair_from_uri(&format!("{DEV_PHRASE}/soft")).unwrap_err(),
            MnemonicError::SoftJunction { index: 1, .. }
        ));
        assert!(matches!(
            keypair_from_uri(&format!("{DEV_PHRASE}//hard/soft")).unwrap_err(),
            MnemonicError::SoftJunction { index: 2, .. }
        ));
        assert_eq!(
            keypair_from_uri(&format!("{DEV_PHRASE}//a//")).unwrap_err(),
            MnemonicError::EmptyJunction(2)
        );
        assert_eq!(
            keypair_from_uri(&"abandon ".repeat(1000)).unwrap_err(),
            MnemonicError::TooLong
        );
    }

    #[test]
    fn stdin_reading_trims_line_endings_and_keeps_passwords() {
        let plain = keypair_from_uri(DEV_PHRASE).unwrap().account();
        for input in [
            format!("{DEV_PHRASE}\n"),
            format!("  {DEV_PHRASE}  \r\n"),
            DEV_PHRASE.replace(' ', "\t "),
        ] {
            let key = keypair_from_reader(input.as_bytes()).unwrap();
            assert_eq!(key.account(), plain, "{input:?}");
        }
        let with_pw = keypair_from_uri(&format!("{DEV_PHRASE}///pw ")).unwrap();
        let read = keypair_from_reader(format!("{DEV_PHRASE}///pw \n").as_bytes()).unwrap();
        assert_eq!(read.account(), with_pw.account());
        assert_ne!(
            read.account(),
            keypair_from_uri(&format!("{DEV_PHRASE}///pw"))
                .unwrap()
                .account()
        );
        assert!(matches!(
            keypair_from_reader(format!("{DEV_PHRASE}\nmore\n").as_bytes()),
            Err(MnemonicReadError::Mnemonic(MnemonicError::MultiLine))
        ));
        assert!(matches!(
            keypair_from_reader(&[0xff, 0xfe][..]),
            Err(MnemonicReadError::NotUtf8)
        ));
        assert!(matches!(
            keypair_from_reader(std::io::repeat(b'a')),
            Err(MnemonicReadError::Mnemonic(MnemonicError::TooLong))
        ));
    }
}
