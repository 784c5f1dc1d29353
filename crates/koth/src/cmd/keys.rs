//! `koth keys …`: sr25519 keys with SS58 addresses in a keystore directory.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use koth_chain::{KeyInfo, Keystore};

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

pub fn run(c: KeysCommand) -> Result<()> {
    match c {
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
