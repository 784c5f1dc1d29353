//! A blocking JSON-RPC 2.0 client for a subtensor node's HTTP endpoint.
//!
//! A Substrate node answers JSON-RPC over HTTP POST and over WebSocket on the same port, so a
//! `ws://` or `wss://` endpoint (what Bittensor's tools print) is spoken to as `http://` or
//! `https://`. koth needs no subscriptions: it polls finalized heads and storage, which keeps the
//! client synchronous like the `Chain` trait it serves.
//!
//! Transport failures (connection refused, reset, timeout, a 5xx) are retried with a doubling
//! back-off up to [`RetryPolicy::attempts`]; an answer from the node (a JSON-RPC error object,
//! an undecodable body) is never retried: asking again gives the same answer.

use std::io::Read;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// The largest response body read: runtime metadata is a few hundred KiB; anything near this
/// is not a node speaking JSON-RPC.
pub const MAX_RESPONSE_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error(
        "endpoint {endpoint:?}: expected ws://, wss://, http:// or https:// followed by a host"
    )]
    BadEndpoint { endpoint: String },
    #[error("{method} to {url}: {message} (after {attempts} attempt(s))")]
    Transport {
        url: String,
        method: String,
        message: String,
        attempts: u32,
    },
    #[error("{method} to {url}: HTTP status {status}")]
    Http {
        url: String,
        method: String,
        status: u16,
    },
    #[error("{method}: the node answered error {code}: {message}{}", data.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Node {
        method: String,
        code: i64,
        message: String,
        data: Option<String>,
    },
    #[error("{method}: the node's answer is not what was expected: {message}")]
    BadAnswer { method: String, message: String },
}

/// How often and how patiently a call is retried when the transport fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// The wait before the second attempt; it doubles after each failure.
    pub first_backoff: Duration,
    /// The most a single request may take, connection included.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            first_backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(30),
        }
    }
}

/// A JSON-RPC client bound to one node.
pub struct RpcClient {
    url: String,
    http: reqwest::blocking::Client,
    retry: RetryPolicy,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient").field("url", &self.url).finish()
    }
}

/// The HTTP URL a node endpoint is spoken to at.
pub fn http_url(endpoint: &str) -> Result<String, RpcError> {
    let bad = || RpcError::BadEndpoint {
        endpoint: endpoint.to_string(),
    };
    let (scheme, rest) = endpoint.split_once("://").ok_or_else(bad)?;
    let scheme = match scheme {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        _ => return Err(bad()),
    };
    if rest.is_empty() || rest.starts_with('/') || rest.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    Ok(format!("{scheme}://{rest}"))
}

impl RpcClient {
    pub fn new(endpoint: &str, retry: RetryPolicy) -> Result<Self, RpcError> {
        let url = http_url(endpoint)?;
        let http = reqwest::blocking::Client::builder()
            .timeout(retry.timeout)
            .connect_timeout(retry.timeout)
            .build()
            .map_err(|e| RpcError::Transport {
                url: url.clone(),
                method: "(client set-up)".into(),
                message: e.to_string(),
                attempts: 0,
            })?;
        Ok(Self {
            url,
            http,
            retry: RetryPolicy {
                attempts: retry.attempts.max(1),
                ..retry
            },
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Call `method` with positional `params` and decode its result.
    pub fn call<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<T, RpcError> {
        decode(method, self.call_raw(method, params)?)
    }

    /// [`Self::call`] with one attempt: for requests that must not be repeated (submitting an
    /// extrinsic).
    pub fn call_once<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, RpcError> {
        decode(method, self.request(method, params, 1)?)
    }

    /// Call `method` and return its `result` as JSON.
    pub fn call_raw(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        self.request(method, params, self.retry.attempts)
    }

    /// One call, sent up to `attempts` times while the transport fails.
    fn request(&self, method: &str, params: Value, attempts: u32) -> Result<Value, RpcError> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let mut backoff = self.retry.first_backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.post_once(method, &body) {
                Ok(v) => return parse_response(method, v),
                Err(Failure::Retryable(message)) if attempt < attempts => {
                    tracing::debug!(
                        "{method} to {}: {message}; retrying in {backoff:?}",
                        self.url
                    );
                    std::thread::sleep(backoff);
                    backoff = backoff.saturating_mul(2);
                }
                Err(Failure::Retryable(message)) => {
                    return Err(RpcError::Transport {
                        url: self.url.clone(),
                        method: method.to_string(),
                        message,
                        attempts: attempt,
                    })
                }
                Err(Failure::Final(e)) => return Err(e),
            }
        }
    }

    fn post_once(&self, method: &str, body: &Value) -> Result<Value, Failure> {
        let response = self
            .http
            .post(&self.url)
            .json(body)
            .send()
            .map_err(|e| Failure::Retryable(error_chain(&e)))?;
        let status = response.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(Failure::Retryable(format!("HTTP status {status}")));
        }
        if !status.is_success() {
            return Err(Failure::Final(RpcError::Http {
                url: self.url.clone(),
                method: method.to_string(),
                status: status.as_u16(),
            }));
        }
        let mut bytes = Vec::new();
        response
            .take(MAX_RESPONSE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::Retryable(e.to_string()))?;
        if bytes.len() as u64 > MAX_RESPONSE_BYTES {
            return Err(Failure::Final(RpcError::BadAnswer {
                method: method.to_string(),
                message: format!("the response is larger than {MAX_RESPONSE_BYTES} bytes"),
            }));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            Failure::Final(RpcError::BadAnswer {
                method: method.to_string(),
                message: format!("not JSON: {e}"),
            })
        })
    }
}

enum Failure {
    Retryable(String),
    Final(RpcError),
}

/// A call's `result` as `T`.
fn decode<T: DeserializeOwned>(method: &str, result: Value) -> Result<T, RpcError> {
    serde_json::from_value(result).map_err(|e| RpcError::BadAnswer {
        method: method.to_string(),
        message: e.to_string(),
    })
}

/// The `result` of a JSON-RPC response, or its `error` as [`RpcError::Node`].
fn parse_response(method: &str, mut v: Value) -> Result<Value, RpcError> {
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        return Err(RpcError::Node {
            method: method.to_string(),
            code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)")
                .to_string(),
            data: err.get("data").map(|d| match d {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
        });
    }
    match v.get_mut("result") {
        Some(r) => Ok(r.take()),
        None => Err(RpcError::BadAnswer {
            method: method.to_string(),
            message: "neither `result` nor `error` in the response".into(),
        }),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// `0x`-prefixed hex of `bytes`, as Substrate's RPC writes bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// Bytes from the node's `0x`-prefixed hex.
pub fn from_hex(method: &str, s: &str) -> Result<Vec<u8>, RpcError> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    hex::decode(digits).map_err(|e| RpcError::BadAnswer {
        method: method.to_string(),
        message: format!("{s:.40}... is not hex: {e}"),
    })
}

/// A 32-byte hash from the node's hex.
pub fn hash_from_hex(method: &str, s: &str) -> Result<[u8; 32], RpcError> {
    let bytes = from_hex(method, s)?;
    bytes.try_into().map_err(|b: Vec<u8>| RpcError::BadAnswer {
        method: method.to_string(),
        message: format!("a hash of {} bytes; expected 32", b.len()),
    })
}

/// A block number as the node writes it: a `0x` hex string (headers) or a JSON number.
pub fn number_from_json(method: &str, v: &Value) -> Result<u64, RpcError> {
    let bad = || RpcError::BadAnswer {
        method: method.to_string(),
        message: format!("{v} is not a block number"),
    };
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(bad),
        Value::String(s) => {
            let digits = s.strip_prefix("0x").ok_or_else(bad)?;
            u64::from_str_radix(digits, 16).map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_map_to_http() {
        assert_eq!(
            http_url("wss://entrypoint-finney.opentensor.ai:443").unwrap(),
            "https://entrypoint-finney.opentensor.ai:443"
        );
        assert_eq!(
            http_url("ws://127.0.0.1:9944").unwrap(),
            "http://127.0.0.1:9944"
        );
        assert_eq!(
            http_url("http://127.0.0.1:9944/").unwrap(),
            "http://127.0.0.1:9944/"
        );
        for bad in ["127.0.0.1:9944", "ftp://x", "ws://", "ws:///x", "ws://a b"] {
            assert!(
                matches!(http_url(bad), Err(RpcError::BadEndpoint { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn node_errors_carry_code_message_and_data() {
        let v = json!({"jsonrpc":"2.0","id":1,"error":{"code":1010,"message":"Invalid Transaction","data":"Transaction is outdated"}});
        match parse_response("author_submitExtrinsic", v) {
            Err(RpcError::Node {
                code,
                message,
                data,
                ..
            }) => {
                assert_eq!(code, 1010);
                assert_eq!(message, "Invalid Transaction");
                assert_eq!(data.as_deref(), Some("Transaction is outdated"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_response("m", json!({"jsonrpc":"2.0","id":1})),
            Err(RpcError::BadAnswer { .. })
        ));
    }

    #[test]
    fn numbers_and_hashes_parse_or_name_the_problem() {
        assert_eq!(number_from_json("h", &json!("0x1a")).unwrap(), 26);
        assert_eq!(number_from_json("h", &json!(26)).unwrap(), 26);
        assert!(number_from_json("h", &json!("26")).is_err());
        assert!(number_from_json("h", &json!(-1)).is_err());
        assert!(hash_from_hex("h", "0x00").is_err());
        assert_eq!(hash_from_hex("h", &to_hex(&[7u8; 32])).unwrap(), [7u8; 32]);
    }

    #[test]
    fn a_dead_endpoint_fails_after_the_retries_with_the_method_named() {
        // A port nothing listens on: bind, note the port, drop the listener.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = RpcClient::new(
            &format!("ws://127.0.0.1:{port}"),
            RetryPolicy {
                attempts: 2,
                first_backoff: Duration::from_millis(10),
                timeout: Duration::from_secs(2),
            },
        )
        .unwrap();
        match client.call_raw("chain_getFinalizedHead", json!([])) {
            Err(RpcError::Transport {
                method, attempts, ..
            }) => {
                assert_eq!(method, "chain_getFinalizedHead");
                assert_eq!(attempts, 2);
            }
            other => panic!("{other:?}"),
        }
    }
}
