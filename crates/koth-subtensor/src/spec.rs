//! Which chain a process plays on: the `[chain]` section the validator's and the miner's
//! configs share, and the one place that opens either kind.
//!
//! ```toml
//! [chain]                 # the embedded chain (the default kind)
//! path = "chain.db"
//!
//! [chain]                 # a subtensor node
//! kind = "subtensor"
//! [chain.subtensor]
//! endpoint = "wss://entrypoint-finney.opentensor.ai:443"
//! netuid = 3
//! ```

use std::path::{Path, PathBuf};

use koth_chain::{Chain, ChainError, EmbeddedChain};
use serde::{Deserialize, Serialize};

use crate::chain::{SubtensorChain, SubtensorConfig};

/// The kinds of chain koth plays on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainKind {
    /// The SQLite ledger shared by the processes of one host (`koth chain init`, devnets).
    #[default]
    Embedded,
    /// A subtensor node (Bittensor).
    Subtensor,
}

/// The `[chain]` section of a config file, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ChainSection {
    #[serde(default)]
    pub kind: ChainKind,
    /// `kind = "embedded"`: the chain file, relative to the config's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// `kind = "subtensor"`: the node and the subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtensor: Option<SubtensorConfig>,
}

impl ChainSection {
    /// An embedded chain at `path`.
    pub fn embedded(path: impl Into<PathBuf>) -> Self {
        Self {
            kind: ChainKind::Embedded,
            path: Some(path.into()),
            subtensor: None,
        }
    }

    /// A subtensor node.
    pub fn subtensor(cfg: SubtensorConfig) -> Self {
        Self {
            kind: ChainKind::Subtensor,
            path: None,
            subtensor: Some(cfg),
        }
    }

    /// [`Self::resolve`], and an embedded chain's file must exist.
    pub fn resolve_existing(&self, base: &Path) -> Result<ChainTarget, SpecError> {
        let target = self.resolve(base)?;
        if let ChainTarget::Embedded(path) = &target {
            if !path.is_file() {
                return Err(SpecError {
                    key: "chain.path",
                    message: format!(
                        "no chain file at {} (create one with `koth chain init`)",
                        path.display()
                    ),
                });
            }
        }
        Ok(target)
    }

    /// Check the section and resolve a relative chain file against `base` (the config's
    /// directory); the file system is not read. The error names the key at fault and what was
    /// expected.
    pub fn resolve(&self, base: &Path) -> Result<ChainTarget, SpecError> {
        match self.kind {
            ChainKind::Embedded => {
                if self.subtensor.is_some() {
                    return Err(SpecError {
                        key: "chain.subtensor",
                        message: "only a `kind = \"subtensor\"` chain has a [chain.subtensor] \
                                  section"
                            .into(),
                    });
                }
                let path = self.path.as_ref().ok_or(SpecError {
                    key: "chain.path",
                    message: "an embedded chain needs `path` (the file `koth chain init` made)"
                        .into(),
                })?;
                let path = if path.is_absolute() {
                    path.clone()
                } else {
                    base.join(path)
                };
                Ok(ChainTarget::Embedded(path))
            }
            ChainKind::Subtensor => {
                if self.path.is_some() {
                    return Err(SpecError {
                        key: "chain.path",
                        message: "a subtensor chain has no file; give [chain.subtensor] \
                                  endpoint and netuid"
                            .into(),
                    });
                }
                let cfg = self.subtensor.as_ref().ok_or(SpecError {
                    key: "chain.subtensor",
                    message: "`kind = \"subtensor\"` needs a [chain.subtensor] section with \
                              endpoint and netuid"
                        .into(),
                })?;
                crate::rpc::http_url(&cfg.endpoint).map_err(|e| SpecError {
                    key: "chain.subtensor.endpoint",
                    message: e.to_string(),
                })?;
                if cfg.block_time_ms == 0 {
                    return Err(SpecError {
                        key: "chain.subtensor.block_time_ms",
                        message: "must be > 0".into(),
                    });
                }
                if cfg.drand.period == 0 {
                    return Err(SpecError {
                        key: "chain.subtensor.drand.period",
                        message: "must be > 0".into(),
                    });
                }
                Ok(ChainTarget::Subtensor(cfg.clone()))
            }
        }
    }
}

/// A `[chain]` section that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key `{key}`: {message}")]
pub struct SpecError {
    pub key: &'static str,
    pub message: String,
}

/// A checked chain to open.
#[derive(Debug, Clone, PartialEq)]
pub enum ChainTarget {
    Embedded(PathBuf),
    Subtensor(SubtensorConfig),
}

impl ChainTarget {
    /// Open (or connect to) the chain.
    pub fn open(&self) -> Result<Box<dyn Chain>, ChainError> {
        Ok(match self {
            ChainTarget::Embedded(path) => Box::new(EmbeddedChain::open(path)?),
            ChainTarget::Subtensor(cfg) => Box::new(SubtensorChain::connect(cfg.clone())?),
        })
    }

    /// What the chain is, for messages: the file, or the endpoint and netuid.
    pub fn describe(&self) -> String {
        match self {
            ChainTarget::Embedded(path) => path.display().to_string(),
            ChainTarget::Subtensor(cfg) => format!("{} (netuid {})", cfg.endpoint, cfg.netuid),
        }
    }

    /// The chain file, for an embedded chain.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ChainTarget::Embedded(p) => Some(p),
            ChainTarget::Subtensor(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ChainSection, toml::de::Error> {
        #[derive(Deserialize)]
        struct File {
            chain: ChainSection,
        }
        toml::from_str::<File>(text).map(|f| f.chain)
    }

    #[test]
    fn the_embedded_form_is_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("chain.db"), b"").unwrap();
        let s = parse("[chain]\npath = \"chain.db\"\n").unwrap();
        assert_eq!(
            s.resolve_existing(dir.path()).unwrap(),
            ChainTarget::Embedded(dir.path().join("chain.db"))
        );
        let missing = parse("[chain]\npath = \"nope.db\"\n").unwrap();
        assert_eq!(
            missing.resolve(dir.path()).unwrap(),
            ChainTarget::Embedded(dir.path().join("nope.db"))
        );
        let e = missing.resolve_existing(dir.path()).unwrap_err();
        assert_eq!(e.key, "chain.path");
        assert!(e.message.contains("koth chain init"), "{e}");
    }

    #[test]
    fn a_subtensor_section_resolves_with_defaults() {
        let s = parse(
            "[chain]\nkind = \"subtensor\"\n[chain.subtensor]\nendpoint = \"ws://127.0.0.1:9944\"\nnetuid = 3\n",
        )
        .unwrap();
        let ChainTarget::Subtensor(cfg) = s.resolve(Path::new("/")).unwrap() else {
            panic!("not subtensor")
        };
        assert_eq!(cfg.netuid, 3);
        assert_eq!(cfg.block_time_ms, 12_000);
        assert_eq!(cfg.drand.period, 3);
    }

    #[test]
    fn mixed_or_missing_sections_are_refused_by_key() {
        let base = Path::new("/");
        let cases = [
            ("[chain]\nkind = \"subtensor\"\n", "chain.subtensor"),
            (
                "[chain]\nkind = \"subtensor\"\npath = \"c.db\"\n[chain.subtensor]\nendpoint = \"ws://x:1\"\nnetuid = 1\n",
                "chain.path",
            ),
            (
                "[chain]\npath = \"c.db\"\n[chain.subtensor]\nendpoint = \"ws://x:1\"\nnetuid = 1\n",
                "chain.subtensor",
            ),
            (
                "[chain]\nkind = \"subtensor\"\n[chain.subtensor]\nendpoint = \"localhost:9944\"\nnetuid = 1\n",
                "chain.subtensor.endpoint",
            ),
            ("[chain]\n", "chain.path"),
        ];
        for (text, key) in cases {
            let e = parse(text).unwrap().resolve(base).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
        }
        // Unknown keys and kinds are refused by the parser.
        assert!(parse("[chain]\nkind = \"ethereum\"\n").is_err());
        assert!(parse("[chain]\npaht = \"c.db\"\n").is_err());
        assert!(parse(
            "[chain]\nkind = \"subtensor\"\n[chain.subtensor]\nendpoint = \"ws://x:1\"\nnetuid = 1\nnetuidd = 2\n"
        )
        .is_err());
    }
}
