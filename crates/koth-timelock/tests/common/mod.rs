//! Shared by koth-timelock's integration tests: the in-repo fixtures, and the reference client
//! (the Python SDK's bittensor_drand, through tests/sdk_helper.py).
#![allow(dead_code)] // each test binary uses its own part

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn read_json(rel: &str) -> Value {
    let path = crate_dir().join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// drand quicknet's parameters and round-1000 pulse, from public sources (see the file).
pub struct Quicknet {
    pub public_key: Vec<u8>,
    pub genesis_time: u64,
    pub period: u64,
    pub chain_hash: String,
    pub scheme_id: String,
    pub round: u64,
    pub signature: Vec<u8>,
    pub randomness: Vec<u8>,
    pub invalid_signature: Vec<u8>,
}

fn hex_field(v: &Value, key: &str) -> Vec<u8> {
    hex::decode(
        v[key]
            .as_str()
            .unwrap_or_else(|| panic!("no string {key} in {v}")),
    )
    .unwrap_or_else(|e| panic!("{key} is not hex: {e}"))
}

pub fn quicknet() -> Quicknet {
    let f = read_json("tests/fixtures/quicknet.json");
    let info = &f["info"];
    let pulse = &f["pulse"];
    Quicknet {
        public_key: hex_field(info, "public_key"),
        genesis_time: info["genesis_time"].as_u64().unwrap(),
        period: info["period"].as_u64().unwrap(),
        chain_hash: info["hash"].as_str().unwrap().to_string(),
        scheme_id: info["schemeID"].as_str().unwrap().to_string(),
        round: pulse["round"].as_u64().unwrap(),
        signature: hex_field(pulse, "signature"),
        randomness: hex_field(pulse, "randomness"),
        invalid_signature: hex_field(&f["invalid_pulse"], "signature"),
    }
}

/// The Python that has the pinned SDK: `scripts/bittensor-venv.sh` (it installs it from PyPI
/// when missing). A missing or broken reference client fails the test, with the reason.
pub fn sdk_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let script = crate_dir().join("../../scripts/bittensor-venv.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let python = stdout.lines().last().unwrap_or("").trim().to_string();
        if !out.status.success() || python.is_empty() {
            panic!(
                "the reference client is missing: {} exited with {} (stdout: {stdout:?}). \
                 These cross-checks need bittensor==10.5.0 with bittensor_drand; run the \
                 script by hand to see why it failed.",
                script.display(),
                out.status
            );
        }
        PathBuf::from(python)
    })
}

/// Sends `requests` (a JSON list) to tests/sdk_helper.py and returns its answers, one each.
pub fn sdk(requests: Value) -> Vec<Value> {
    let python = sdk_python();
    let helper = crate_dir().join("tests/sdk_helper.py");
    let mut child = Command::new(python)
        .arg(&helper)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {}: {e}", python.display()));
    let n = requests.as_array().map_or(0, Vec::len);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(requests.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        panic!(
            "{} {} failed ({}): {}",
            python.display(),
            helper.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let answers: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "sdk_helper.py answered no JSON list ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(answers.len(), n, "one answer per request");
    answers
}

pub fn hex_of(v: &Value, key: &str) -> Vec<u8> {
    hex_field(v, key)
}
