//! `koth keys …`: sr25519 keys with SS58 addresses in a keystore directory.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use koth_chain::import;
use koth_chain::keystore::validate_name;
use koth_chain::{KeyInfo, Keystore, KeystoreError};

#[derive(Args, Clone)]
pub struct KeystoreArg {
    /// Keystore directory (one 0600 JSON file per key). Default: ~/.koth/keys.
    #[arg(long, env = "KOTH_KEYSTORE")]
    pub keystore: Option<PathBuf>,
}

impl KeystoreArg {
    pub fn open(&self) -> Keystore {
        Keystore::new(self.keystore.clone().unwrap_or_else(Keystore::default_dir))
    }
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Generate a new sr25519 key and store it under a name (never overwrites).
    New {
        /// Name of the key (A-Z a-z 0-9 _ - .).
        #[arg(long)]
        name: String,
        #[command(flatten)]
        keystore: KeystoreArg,
        /// Print the key's public record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Import a key made by Bittensor under a name (never overwrites): a wallet's key file
    /// (`--wallet`), or a mnemonic read from stdin (`--mnemonic-stdin`). The address is the one
    /// btcli shows for that key.
    Import {
        /// Name of the key (A-Z a-z 0-9 _ - .).
        #[arg(long)]
        name: String,
        /// A Bittensor key file: `<wallet>/hotkeys/<hotkey>`, or an unencrypted
        /// `<wallet>/coldkey` (encrypted ones are refused: import their mnemonic instead).
        #[arg(
            long,
            value_name = "FILE",
            conflicts_with = "mnemonic_stdin",
            required_unless_present = "mnemonic_stdin"
        )]
        wallet: Option<PathBuf>,
        /// Read a mnemonic from stdin, one line: `<words>[//hard…][///password]` (12 to 24
        /// BIP-39 English words; optional hard derivation junctions and password, as
        /// Substrate's secret URIs and bittensor_wallet's `create_from_uri` write them).
        #[arg(long)]
        mnemonic_stdin: bool,
        #[command(flatten)]
        keystore: KeystoreArg,
        /// Print the key's public record as JSON (the same record as `koth keys new --json`).
        #[arg(long)]
        json: bool,
    },
    /// List the keys in the keystore (names and addresses only).
    List {
        #[command(flatten)]
        keystore: KeystoreArg,
        #[arg(long)]
        json: bool,
    },
    /// Show one key's address and public key (never its secret).
    Show {
        /// Name of the key.
        name: String,
        #[command(flatten)]
        keystore: KeystoreArg,
        #[arg(long)]
        json: bool,
    },
}

fn print_info(info: &KeyInfo) {
    println!(
        "{}\t{}\t0x{}\t{}",
        info.name,
        info.ss58,
        info.public,
        info.path.display()
    );
}

/// The key a `koth keys import` names: read from a wallet file or from stdin. Checks the name
/// first, so no secret is read for a name that cannot be stored.
fn import(name: &str, wallet: Option<&Path>, store: &Keystore) -> Result<(KeyInfo, String)> {
    validate_name(name)?;
    let path = store.path_of(name);
    if path.exists() {
        return Err(KeystoreError::Exists {
            name: name.to_string(),
            path,
        }
        .into());
    }
    let (key, source) = match wallet {
        Some(file) => (
            import::read_wallet_file(file)?,
            format!("Bittensor key file {}", file.display()),
        ),
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!(
                    "type the mnemonic (`<words>[//hard…][///password]`) and press Enter; it is shown as typed"
                );
            }
            (
                import::keypair_from_reader(stdin.lock())?,
                "the mnemonic on stdin".to_string(),
            )
        }
    };
    store.insert(name, &key)?;
    let info = store
        .info(name)
        .with_context(|| format!("reading back key {name:?}"))?;
    Ok((info, source))
}

pub fn run(c: KeysCommand) -> Result<()> {
    match c {
        KeysCommand::Import {
            name,
            wallet,
            mnemonic_stdin: _,
            keystore,
            json,
        } => {
            let store = keystore.open();
            let (info, source) = import(&name, wallet.as_deref(), &store).with_context(|| {
                format!("importing key {name:?} into {}", store.dir().display())
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                println!("imported key {:?} from {source}", info.name);
                println!("  address (SS58): {}", info.ss58);
                println!("  public key:     0x{}", info.public);
                println!("  file:           {}", info.path.display());
            }
            Ok(())
        }
        KeysCommand::New {
            name,
            keystore,
            json,
        } => {
            let store = keystore.open();
            store
                .create(&name)
                .with_context(|| format!("creating key {name:?} in {}", store.dir().display()))?;
            let info = store
                .info(&name)
                .with_context(|| format!("reading back key {name:?}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                println!("created key {:?}", info.name);
                println!("  address (SS58): {}", info.ss58);
                println!("  public key:     0x{}", info.public);
                println!("  file:           {}", info.path.display());
            }
            Ok(())
        }
        KeysCommand::List { keystore, json } => {
            let store = keystore.open();
            let keys = store
                .list()
                .with_context(|| format!("listing keystore {}", store.dir().display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else if keys.is_empty() {
                println!("no keys in {}", store.dir().display());
            } else {
                for k in &keys {
                    print_info(k);
                }
            }
            Ok(())
        }
        KeysCommand::Show {
            name,
            keystore,
            json,
        } => {
            let store = keystore.open();
            let info = store
                .info(&name)
                .with_context(|| format!("reading key {name:?} from {}", store.dir().display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print_info(&info);
            }
            Ok(())
        }
    }
}
