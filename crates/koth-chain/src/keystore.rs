//! A keystore: a directory with one JSON file per named key.
//!
//! `<dir>/<name>.json` = `{"name", "ss58", "public", "secret_seed"}` (hex, as `subkey` prints a
//! seed). The directory is created with mode 0700 and every file is written with mode 0600,
//! atomically (a temporary file, fsync, then a hard link to the final name, which fails rather
//! than replace an existing key). Loading re-derives the public key from the seed and refuses a
//! file whose address does not match it, or whose permissions let others read the secret.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::keys::{AccountId, Keypair};

#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error("key name {0:?} is not allowed: use 1 to 64 characters from A-Z a-z 0-9 _ - .  (not starting with '.')")]
    BadName(String),
    #[error("key {name:?} already exists at {path}; refusing to overwrite it")]
    Exists { name: String, path: PathBuf },
    #[error("no key named {name:?} in keystore {dir} (create it with `koth keys new --name {name}`, or import a Bittensor key with `koth keys import --name {name}`)")]
    Missing { name: String, dir: PathBuf },
    #[error("key file {path} can be read by other users (mode {mode:o}); run `chmod 600 {path}`")]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("key file {path} is not a koth key file: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What is stored in one key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub name: String,
    pub ss58: String,
    pub public: String,
    pub secret_seed: String,
}

/// The public half of a stored key, for listing.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub name: String,
    pub ss58: String,
    pub public: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Keystore {
    dir: PathBuf,
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KeystoreError {
    let path = path.to_path_buf();
    move |source| KeystoreError::Io { what, path, source }
}

/// Names become file names, so only a safe alphabet is allowed.
pub fn validate_name(name: &str) -> Result<(), KeystoreError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(KeystoreError::BadName(name.to_string()))
    }
}

impl Keystore {
    /// A keystore at `dir` (nothing is created until a key is written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$HOME/.koth/keys`, or `./.koth/keys` where HOME is unset.
    pub fn default_dir() -> PathBuf {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".koth")
            .join("keys")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Generate a fresh key and store it under `name`; refuses if the name is taken.
    pub fn create(&self, name: &str) -> Result<(Keypair, PathBuf), KeystoreError> {
        let key = Keypair::generate();
        let path = self.insert(name, &key)?;
        Ok((key, path))
    }

    /// Store `key` under `name` (mode 0600, atomic, never replacing an existing file).
    pub fn insert(&self, name: &str, key: &Keypair) -> Result<PathBuf, KeystoreError> {
        validate_name(name)?;
        self.ensure_dir()?;
        let path = self.path_of(name);
        if path.exists() {
            return Err(KeystoreError::Exists {
                name: name.to_string(),
                path,
            });
        }
        let account = key.account();
        let file = KeyFile {
            name: name.to_string(),
            ss58: account.to_ss58(),
            public: account.public_hex(),
            secret_seed: format!("0x{}", hex::encode(key.seed())),
        };
        let mut text =
            serde_json::to_string_pretty(&file).map_err(|e| KeystoreError::Malformed {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        text.push('\n');
        let tmp = self
            .dir
            .join(format!(".{name}.json.tmp-{}", std::process::id()));
        let written = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("writing key file", &tmp)(e));
        }
        // A hard link fails if the destination exists, so two processes creating the same name
        // cannot overwrite each other; `rename` would silently replace.
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(KeystoreError::Exists {
                    name: name.to_string(),
                    path,
                })
            }
            Err(e) => return Err(io_err("creating key file", &path)(e)),
        }
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(path)
    }

    fn ensure_dir(&self) -> Result<(), KeystoreError> {
        if !self.dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(io_err("creating keystore directory", &self.dir))?;
            // `mode` applies to the last component only; make sure of it despite the umask.
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
                .map_err(io_err("setting permissions of", &self.dir))?;
        }
        Ok(())
    }

    /// Load the key stored under `name`, checking the file's permissions and consistency.
    pub fn load(&self, name: &str) -> Result<Keypair, KeystoreError> {
        validate_name(name)?;
        let path = self.path_of(name);
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeystoreError::Missing {
                    name: name.to_string(),
                    dir: self.dir.clone(),
                })
            }
            Err(e) => return Err(io_err("reading key file", &path)(e)),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeystoreError::TooOpen { path, mode });
        }
        let (file, key) = read_key_file(&path)?;
        if file.name != name {
            return Err(KeystoreError::Malformed {
                path,
                reason: format!("it names key {:?}, not {name:?}", file.name),
            });
        }
        Ok(key)
    }

    /// The public halves of every key in the store, sorted by name. A file that fails to parse
    /// is an error (naming it) rather than silently skipped.
    pub fn list(&self) -> Result<Vec<KeyInfo>, KeystoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing keystore", &self.dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("listing keystore", &self.dir))?;
            let path = entry.path();
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if file_name.starts_with('.') || !file_name.ends_with(".json") {
                continue;
            }
            let (file, _) = read_key_file(&path)?;
            out.push(KeyInfo {
                name: file.name,
                ss58: file.ss58,
                public: file.public,
                path,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The public half of one key.
    pub fn info(&self, name: &str) -> Result<KeyInfo, KeystoreError> {
        let key = self.load(name)?;
        let account = key.account();
        Ok(KeyInfo {
            name: name.to_string(),
            ss58: account.to_ss58(),
            public: account.public_hex(),
            path: self.path_of(name),
        })
    }
}

fn read_key_file(path: &Path) -> Result<(KeyFile, Keypair), KeystoreError> {
    let text = fs::read_to_string(path).map_err(io_err("reading key file", path))?;
    let malformed = |reason: String| KeystoreError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let file: KeyFile = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
    let key = Keypair::from_seed_hex(&file.secret_seed).map_err(|e| malformed(e.to_string()))?;
    let account = key.account();
    let stated =
        AccountId::from_ss58(&file.ss58).map_err(|e| malformed(format!("field ss58: {e}")))?;
    if stated != account || file.public.trim_start_matches("0x") != account.public_hex() {
        return Err(malformed(format!(
            "its secret seed gives address {account}, but the file says {} / {}",
            file.ss58, file.public
        )));
    }
    Ok((file, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_load_list_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let store = Keystore::new(dir.path().join("keys"));
        let (key, path) = store.create("miner-1").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(store.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        let before = fs::read(&path).unwrap();
        assert!(matches!(
            store.create("miner-1"),
            Err(KeystoreError::Exists { .. })
        ));
        assert_eq!(fs::read(&path).unwrap(), before, "existing key untouched");
        assert_eq!(store.load("miner-1").unwrap().account(), key.account());
        store.create("alice").unwrap();
        let names: Vec<String> = store.list().unwrap().into_iter().map(|k| k.name).collect();
        assert_eq!(names, ["alice", "miner-1"]);
        // No temporary files are left behind.
        let count = fs::read_dir(store.dir()).unwrap().count();
        assert_eq!(count, 2);
    }

    #[test]
    fn bad_names_missing_keys_open_permissions_and_tampering_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Keystore::new(dir.path());
        for bad in ["", "../x", "a/b", ".hidden", &"x".repeat(65)] {
            assert!(
                matches!(store.create(bad), Err(KeystoreError::BadName(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            store.load("nobody"),
            Err(KeystoreError::Missing { .. })
        ));
        let (_, path) = store.create("k").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            store.load("k"),
            Err(KeystoreError::TooOpen { .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        // Replace the seed with another key's: the stated address no longer matches.
        let mut file: KeyFile = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        file.secret_seed = format!("0x{}", hex::encode([7u8; 32]));
        fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();
        let err = store.load("k").unwrap_err();
        assert!(matches!(err, KeystoreError::Malformed { .. }), "{err}");
        fs::write(&path, b"not json").unwrap();
        assert!(matches!(
            store.load("k"),
            Err(KeystoreError::Malformed { .. })
        ));
    }
}
