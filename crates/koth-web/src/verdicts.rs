//! The numbers a page needs from a duel's full verdict record (the file the validator wrote to
//! `work/verdicts/`): both models' held-out losses, the rule's bounds after every batch, the
//! threshold they were compared with, per-source scores. A record is read only if its bytes
//! hash to the digest the event log holds for it.

use std::io::Read as _;
use std::path::Path;

use koth_core::verdict::{Decision, KeepReason, Verdict};
use koth_core::Digest;

/// Largest verdict file read (per-window losses make records grow with n_max; this is far above
/// any real one and only bounds memory).
pub const MAX_VERDICT_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct BatchBounds {
    pub n: u64,
    pub mu_hat: f64,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SourceLoss {
    pub source: String,
    pub n: u64,
    pub king_mean_loss: f64,
    pub challenger_mean_loss: f64,
}

/// What the dashboard shows of one verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictFacts {
    pub king_mean_loss: f64,
    pub challenger_mean_loss: f64,
    pub n_used: u64,
    pub n_max: u64,
    pub threshold: f64,
    pub rule: &'static str,
    /// "crown", "keep the king (futility)", "keep the king (n_max reached)", …
    pub decision: &'static str,
    pub bounds: Vec<BatchBounds>,
    pub per_source: Vec<SourceLoss>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerdictReadError {
    #[error("verdict record {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("verdict record {path}: larger than {MAX_VERDICT_BYTES} bytes")]
    TooLarge { path: String },
    #[error("verdict record {path}: hashes to {found}, the event log says {expected}")]
    DigestMismatch {
        path: String,
        found: Digest,
        expected: Digest,
    },
    #[error("verdict record {path}: not a koth verdict: {message}")]
    Parse { path: String, message: String },
}

/// The facts of a verdict record from its bytes (pure).
pub fn facts_from_bytes(bytes: &[u8], path: &str) -> Result<VerdictFacts, VerdictReadError> {
    let v: Verdict = serde_json::from_slice(bytes).map_err(|e| VerdictReadError::Parse {
        path: path.to_string(),
        message: e.to_string(),
    })?;
    let o = &v.outcome;
    Ok(VerdictFacts {
        king_mean_loss: o.king_mean_loss,
        challenger_mean_loss: o.challenger_mean_loss,
        n_used: o.n_used,
        n_max: v.rule.n_max(),
        threshold: o.threshold,
        rule: v.rule.name(),
        decision: match o.decision {
            Decision::Crown => "crown",
            Decision::Continue => "undecided",
            Decision::KeepKing(KeepReason::Futility) => "keep the king (futility)",
            Decision::KeepKing(KeepReason::NMax) => "keep the king (all windows scored)",
        },
        bounds: v
            .bounds
            .iter()
            .map(|b| BatchBounds {
                n: b.n,
                mu_hat: b.mu_hat,
                lower: b.lower,
                upper: b.upper,
            })
            .collect(),
        per_source: v
            .per_source
            .iter()
            .map(|s| SourceLoss {
                source: s.source.clone(),
                n: s.n,
                king_mean_loss: s.king_mean_loss,
                challenger_mean_loss: s.challenger_mean_loss,
            })
            .collect(),
    })
}

/// Read and check the record at `path` against `expected`.
pub fn read_verdict(path: &Path, expected: &Digest) -> Result<VerdictFacts, VerdictReadError> {
    let shown = path.display().to_string();
    let io = |source| VerdictReadError::Io {
        path: shown.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_VERDICT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_VERDICT_BYTES {
        return Err(VerdictReadError::TooLarge { path: shown });
    }
    let found = Digest::of(&bytes);
    if &found != expected {
        return Err(VerdictReadError::DigestMismatch {
            path: shown,
            found,
            expected: *expected,
        });
    }
    facts_from_bytes(&bytes, &shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_record_that_does_not_match_its_digest_or_is_not_a_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.json");
        std::fs::write(&p, b"{\"format\":\"nope\"}").unwrap();
        let err = read_verdict(&p, &Digest::of(b"other")).unwrap_err();
        assert!(
            matches!(err, VerdictReadError::DigestMismatch { .. }),
            "{err}"
        );
        let err = read_verdict(&p, &Digest::of(b"{\"format\":\"nope\"}")).unwrap_err();
        assert!(matches!(err, VerdictReadError::Parse { .. }), "{err}");
        let err = read_verdict(&dir.path().join("missing.json"), &Digest::of(b"")).unwrap_err();
        assert!(err.to_string().contains("missing.json"), "{err}");
    }
}
