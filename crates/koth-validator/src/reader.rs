//! The validator as readers see it: [`koth_hill::reader::HillReader`] over the published state
//! snapshot, the event log opened read-only, and the chain's emission. The dashboard reads the
//! validator only through this, so it needs neither SQLite nor a chain client of its own.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use koth_chain::{AccountId, Chain, EmbeddedChain};
use koth_hill::reader::{EmissionRow, HillReader, HotkeyError, ReadError};
use koth_hill::{LoggedEvent, ValidatorState};

use crate::config::ResolvedConfig;
use crate::http::SharedFeed;

/// Longest text accepted as a hotkey (an SS58 address is 47–48 characters).
const MAX_HOTKEY_CHARS: usize = 64;

/// Where accrued emission is read from.
#[derive(Clone)]
pub enum ChainSource {
    /// Not shown.
    None,
    /// An embedded chain file, opened on first use (and again after a failure).
    Path(PathBuf),
    /// A configured chain (a file or a subtensor node), opened on first use (and again after a
    /// failure).
    Target(koth_subtensor::ChainTarget),
    /// A chain handle the caller already holds.
    Handle(Arc<dyn Chain>),
}

/// A running validator's feed, log and chain, for readers.
pub struct ValidatorReader {
    feed: SharedFeed,
    log_path: PathBuf,
    chain_source: ChainSource,
    chain: Mutex<Option<Arc<dyn Chain>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ValidatorReader {
    pub fn new(feed: SharedFeed, log_path: PathBuf, chain: ChainSource) -> Self {
        let handle = match &chain {
            ChainSource::Handle(c) => Some(c.clone()),
            _ => None,
        };
        ValidatorReader {
            feed,
            log_path,
            chain_source: chain,
            chain: Mutex::new(handle),
        }
    }

    /// The reader of the validator configured by `cfg`, publishing into `feed`.
    pub fn of_validator(cfg: &ResolvedConfig, feed: SharedFeed) -> Self {
        Self::new(feed, cfg.log_path(), ChainSource::Target(cfg.chain.clone()))
    }
}

impl HillReader for ValidatorReader {
    fn state(&self) -> Arc<ValidatorState> {
        self.feed.snapshot()
    }

    fn events_from(&self, from: i64, limit: usize) -> Result<Vec<LoggedEvent>, ReadError> {
        crate::log::open_read_only(&self.log_path)
            .and_then(|log| log.read_from(from, limit))
            .map_err(|e| ReadError {
                what: "the event log",
                detail: e.to_string(),
            })
    }

    fn emission(&self) -> Result<Option<Vec<EmissionRow>>, ReadError> {
        let chain_error = |detail: String| ReadError {
            what: "the chain",
            detail,
        };
        let mut handle = lock(&self.chain);
        if handle.is_none() {
            match &self.chain_source {
                ChainSource::None => return Ok(None),
                ChainSource::Handle(c) => *handle = Some(c.clone()),
                ChainSource::Path(p) => {
                    let chain = EmbeddedChain::open(p).map_err(|e| chain_error(e.to_string()))?;
                    *handle = Some(Arc::new(chain));
                }
                ChainSource::Target(t) => {
                    let chain = t.open().map_err(|e| chain_error(e.to_string()))?;
                    *handle = Some(Arc::from(chain));
                }
            }
        }
        let Some(chain) = handle.as_ref() else {
            return Ok(None);
        };
        let rows = chain.emission().map_err(|e| chain_error(e.to_string()))?;
        Ok(Some(
            rows.into_iter()
                .map(|r| EmissionRow {
                    uid: r.uid,
                    hotkey: r.hotkey.to_ss58(),
                    rao: r.rao,
                })
                .collect(),
        ))
    }

    fn canonical_hotkey(&self, text: &str) -> Result<String, HotkeyError> {
        canonical_hotkey(text)
    }
}

/// `text` as an SS58 address in its canonical spelling.
pub fn canonical_hotkey(text: &str) -> Result<String, HotkeyError> {
    let n = text.chars().count();
    if n == 0 || n > MAX_HOTKEY_CHARS {
        return Err(HotkeyError(format!(
            "A hotkey is an SS58 address of at most {MAX_HOTKEY_CHARS} characters; this one has {n}."
        )));
    }
    AccountId::from_ss58(text)
        .map(|a| a.to_ss58())
        .map_err(|e| HotkeyError(format!("{text:?} is not an SS58 address: {e}")))
}
