//! Where checkpoints are stored: `file:///absolute/path` or `s3://bucket/prefix`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::StoreError;

/// A store location. Both kinds hold the same layout under their root:
/// `blobs/sha256/<hex>` and `manifests/sha256/<hex>.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory on this host.
    Local(PathBuf),
    /// A bucket of an S3-compatible object store, and a key prefix inside it ("" for none).
    S3 { bucket: String, prefix: String },
}

impl FromStr for Location {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        let bad = |reason: &str| StoreError::BadLocation {
            location: s.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad(
                    "a file location must hold an absolute path (file:///…)",
                ));
            }
            if path.split('/').any(|c| c == "..") {
                return Err(bad("the path must not contain .."));
            }
            return Ok(Location::Local(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if !is_valid_bucket(bucket) {
                return Err(bad(&format!(
                    "bucket name {bucket:?} must be 3 to 63 characters of a-z 0-9 . -"
                )));
            }
            let prefix = prefix.trim_matches('/');
            if prefix
                .split('/')
                .any(|c| c == "." || c == ".." || (c.is_empty() && !prefix.is_empty()))
            {
                return Err(bad("the prefix must not contain empty, . or .. components"));
            }
            if prefix.chars().any(|c| c.is_control() || c == '\\') {
                return Err(bad(
                    "the prefix must not contain control characters or backslashes",
                ));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        Err(bad("unknown scheme"))
    }
}

impl Location {
    /// Whether this location is `scope` or lies under it, compared parsed: the same scheme, the
    /// same bucket, and `scope`'s path segments a prefix of this one's, segment by segment. So
    /// `file:///ws/store` contains `file:///ws/store/miner1` but not `file:///ws/store-evil`,
    /// and `s3://bucket/net` does not contain `s3://bucket/network` or `s3://bucket-evil/net`.
    pub fn is_within(&self, scope: &Location) -> bool {
        match (self, scope) {
            // Path::starts_with compares whole components (`..` is refused by the parser).
            (Location::Local(path), Location::Local(root)) => path.starts_with(root),
            (
                Location::S3 { bucket, prefix },
                Location::S3 {
                    bucket: scope_bucket,
                    prefix: scope_prefix,
                },
            ) => {
                bucket == scope_bucket && {
                    let mut have = prefix.split('/').filter(|c| !c.is_empty());
                    scope_prefix
                        .split('/')
                        .filter(|c| !c.is_empty())
                        .all(|want| have.next() == Some(want))
                }
            }
            _ => false,
        }
    }
}

/// S3's bucket naming rule, as far as koth relies on it: 3 to 63 characters of a-z 0-9 . -
fn is_valid_bucket(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "file://{}", p.display()),
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// How to reach an S3-compatible server. Unset fields fall back to AWS defaults; with no
/// credentials at all, requests are sent unsigned (anonymous read of a public bucket).
#[derive(Clone, Default)]
pub struct S3Options {
    /// e.g. `http://127.0.0.1:8333` for SeaweedFS or MinIO; unset means AWS.
    pub endpoint: Option<String>,
    /// Defaults to `us-east-1`.
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Allow plain http (implied by an `http://` endpoint).
    pub allow_http: bool,
}

impl fmt::Debug for S3Options {
    // Never print the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "…"),
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl S3Options {
    /// Read `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT`), `AWS_REGION` (or `AWS_DEFAULT_REGION`),
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        S3Options {
            endpoint: var("AWS_ENDPOINT_URL").or_else(|| var("AWS_ENDPOINT")),
            region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
            session_token: var("AWS_SESSION_TOKEN"),
            allow_http: var("AWS_ALLOW_HTTP").is_some_and(|v| v == "true" || v == "1"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_locations() {
        let l: Location = "file:///tmp/store".parse().unwrap();
        assert_eq!(l, Location::Local(PathBuf::from("/tmp/store")));
        assert_eq!(l.to_string(), "file:///tmp/store");
        let s: Location = "s3://my-bucket/some/prefix/".parse().unwrap();
        assert_eq!(
            s,
            Location::S3 {
                bucket: "my-bucket".into(),
                prefix: "some/prefix".into()
            }
        );
        assert_eq!(s.to_string(), "s3://my-bucket/some/prefix");
        let b: Location = "s3://bucket".parse().unwrap();
        assert_eq!(b.to_string(), "s3://bucket");
    }

    #[test]
    fn containment_is_by_scheme_bucket_and_whole_path_segments() {
        let l = |s: &str| s.parse::<Location>().unwrap();
        let inside = [
            ("file:///ws/store", "file:///ws/store"),
            ("file:///ws/store/miner1", "file:///ws/store"),
            ("file:///ws/store/", "file:///ws/store"),
            ("file:///ws/store//a", "file:///ws/store/"),
            ("file:///anything", "file:///"),
            ("s3://bucket/net/m1", "s3://bucket/net"),
            ("s3://bucket/net", "s3://bucket/"),
            ("s3://bucket", "s3://bucket"),
        ];
        for (loc, scope) in inside {
            assert!(l(loc).is_within(&l(scope)), "{loc} within {scope}");
        }
        let outside = [
            ("file:///ws/store-evil", "file:///ws/store"),
            ("file:///ws/storex/a", "file:///ws/store"),
            ("file:///ws", "file:///ws/store"),
            ("s3://bucket/network", "s3://bucket/net"),
            ("s3://bucket-evil/net", "s3://bucket/net"),
            ("s3://bucket/net", "file:///bucket/net"),
            ("file:///bucket/net", "s3://bucket/net"),
        ];
        for (loc, scope) in outside {
            assert!(!l(loc).is_within(&l(scope)), "{loc} not within {scope}");
        }
    }

    #[test]
    fn refuses_bad_locations() {
        for bad in [
            "file://relative/path",
            "/tmp/store",
            "file:///a/../b",
            "s3://",
            "s3://UPPER/x",
            "s3://ab",
            "s3://bucket/a/../b",
            "s3://bucket/a//b",
            "hf:0123",
            "http://example.com/x",
        ] {
            let err = bad.parse::<Location>().unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }
}
