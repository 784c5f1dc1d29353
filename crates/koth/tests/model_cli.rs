//! `koth model …` end to end: golden NLL and gradients through the binary, and refusals of bad
//! input with a non-zero exit and a message on stderr (never a panic).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use koth_core::npy::{NpyArray, NpyData};

const FAMILIES: [&str; 6] = [
    "llama-tiny",
    "qwen2-tiny",
    "qwen3-tiny",
    "qwen3moe-tiny",
    "qwen35-tiny",
    "qwen35moe-tiny",
];

fn golden_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/hf-golden")
        .join(name)
}

fn koth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_koth"))
        .args(args)
        .env("KOTH_LOG", "warn")
        .output()
        .expect("run koth")
}

fn ok(args: &[&str]) -> String {
    let out = koth(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "koth {args:?} failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail; returns its stderr.
fn fails(args: &[&str]) -> String {
    let out = koth(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "koth {args:?} succeeded but should fail"
    );
    assert_eq!(out.status.code(), Some(1), "koth {args:?}: {stderr}");
    assert!(
        !stderr.contains("panicked"),
        "koth {args:?} panicked: {stderr}"
    );
    assert!(stderr.contains("error:"), "{stderr}");
    stderr
}

struct Golden {
    nll: Vec<f64>,
    ids_i64: Vec<i64>,
    shape: [usize; 2],
}

fn golden(name: &str) -> Golden {
    let t = koth_model::weights::read_safetensors(&golden_dir(name).join("expected.safetensors"))
        .unwrap();
    let ids = &t["input_ids"];
    let (b, s) = ids.dims2().unwrap();
    Golden {
        nll: t["nll"].flatten_all().unwrap().to_vec1::<f64>().unwrap(),
        ids_i64: ids.flatten_all().unwrap().to_vec1::<i64>().unwrap(),
        shape: [b, s],
    }
}

fn write_npy(path: &Path, arr: &NpyArray) {
    let mut f = std::fs::File::create(path).unwrap();
    arr.write(&mut f).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn nll_and_grads_match_transformers_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    for name in FAMILIES {
        let g = golden(name);
        let dir = golden_dir(name);
        // int64 for some families, uint32 for the others: both are accepted.
        let data = if name.starts_with("qwen3") {
            NpyData::U32(g.ids_i64.iter().map(|&x| x as u32).collect())
        } else {
            NpyData::I64(g.ids_i64.clone())
        };
        let ids = tmp.path().join(format!("{name}-ids.npy"));
        write_npy(
            &ids,
            &NpyArray {
                shape: g.shape.to_vec(),
                data,
            },
        );

        let out = tmp.path().join(format!("{name}-nll.npy"));
        ok(&[
            "model",
            "nll",
            "--model",
            s(&dir),
            "--ids",
            s(&ids),
            "--out",
            s(&out),
        ]);
        let arr = NpyArray::read(std::fs::File::open(&out).unwrap()).unwrap();
        assert_eq!(arr.shape, vec![g.shape[0], g.shape[1] - 1]);
        let NpyData::F32(v) = arr.data else {
            panic!("nll is not f32")
        };
        let worst = v
            .iter()
            .zip(&g.nll)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(worst <= 2e-5, "{name}: CLI nll max error {worst:e}");

        let gout = tmp.path().join(format!("{name}-grads.safetensors"));
        ok(&[
            "model",
            "grads",
            "--model",
            s(&dir),
            "--ids",
            s(&ids),
            "--out",
            s(&gout),
        ]);
        let ours = koth_model::weights::read_safetensors(&gout).unwrap();
        let reference =
            koth_model::weights::read_safetensors(&dir.join("grads.safetensors")).unwrap();
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            reference.keys().collect::<Vec<_>>(),
            "{name}: gradient names"
        );
        for (tensor, r) in &reference {
            let a = ours[tensor]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let b = r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let num: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| ((x - y) as f64).powi(2))
                .sum();
            let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
            let rel = (num / den).sqrt();
            assert!(rel <= 1e-3, "{name}: `{tensor}` relative error {rel:e}");
        }
    }
}

#[test]
fn init_then_info_then_nll() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fresh");
    let config = golden_dir("qwen3moe-tiny").join("config.json");
    ok(&[
        "model",
        "init",
        "--config",
        s(&config),
        "--seed",
        "11",
        "--out",
        s(&out),
    ]);
    let again = tmp.path().join("again");
    ok(&[
        "model",
        "init",
        "--config",
        s(&config),
        "--seed",
        "11",
        "--out",
        s(&again),
    ]);
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        std::fs::read(again.join("model.safetensors")).unwrap(),
        "same seed, same bytes"
    );
    let text = ok(&["model", "info", s(&out)]);
    assert!(text.contains("qwen3_moe") && text.contains("f32"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["model", "info", s(&out), "--json"])).unwrap();
    let golden_info: serde_json::Value = serde_json::from_str(&ok(&[
        "model",
        "info",
        s(&golden_dir("qwen3moe-tiny")),
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        json, golden_info,
        "a fresh model has the golden model's shape"
    );
    assert_eq!(json["bytes"], 4 * json["parameters"].as_u64().unwrap());

    // A fresh model's loss is close to log(vocab).
    let ids = tmp.path().join("ids.npy");
    let v: Vec<u32> = (0..64).map(|i| (i * 37 % 384) as u32).collect();
    write_npy(
        &ids,
        &NpyArray {
            shape: vec![2, 32],
            data: NpyData::U32(v),
        },
    );
    let nll = tmp.path().join("nll.npy");
    ok(&[
        "model",
        "nll",
        "--model",
        s(&out),
        "--ids",
        s(&ids),
        "--out",
        s(&nll),
        "--dtype",
        "bf16",
    ]);
    let arr = NpyArray::read(std::fs::File::open(&nll).unwrap()).unwrap();
    let v = arr.into_f64().unwrap();
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    assert!((mean - (384f64).ln()).abs() < 0.1, "fresh mean nll {mean}");

    // init refuses a non-empty directory and leaves it alone.
    let e = fails(&[
        "model",
        "init",
        "--config",
        s(&config),
        "--seed",
        "12",
        "--out",
        s(&out),
    ]);
    assert!(e.contains("not empty"), "{e}");
}

#[test]
fn bad_inputs_exit_non_zero_with_a_named_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = golden_dir("llama-tiny");

    // ids ≥ vocab
    let ids = tmp.path().join("big.npy");
    write_npy(
        &ids,
        &NpyArray {
            shape: vec![1, 3],
            data: NpyData::I64(vec![1, 384, 2]),
        },
    );
    let out = tmp.path().join("o.npy");
    let e = fails(&[
        "model",
        "nll",
        "--model",
        s(&dir),
        "--ids",
        s(&ids),
        "--out",
        s(&out),
    ]);
    // The error names the ids file, the id, where it is and the vocabulary it broke.
    let parts = [
        "big.npy",
        "token id 384",
        "row 0, position 1",
        "vocab_size 384",
    ];
    for part in parts {
        assert!(e.contains(part), "nll error lacks {part:?}: {e}");
    }
    assert!(!out.exists());
    let gout = tmp.path().join("g.safetensors");
    let e = fails(&[
        "model",
        "grads",
        "--model",
        s(&dir),
        "--ids",
        s(&ids),
        "--out",
        s(&gout),
    ]);
    for part in parts {
        assert!(e.contains(part), "grads error lacks {part:?}: {e}");
    }
    assert!(!gout.exists());

    // negative id, 1-D ids, float ids
    write_npy(
        &ids,
        &NpyArray {
            shape: vec![1, 3],
            data: NpyData::I64(vec![1, -5, 2]),
        },
    );
    let e = fails(&[
        "model",
        "nll",
        "--model",
        s(&dir),
        "--ids",
        s(&ids),
        "--out",
        s(&out),
    ]);
    assert!(e.contains("big.npy") && e.contains("-5"), "{e}");
    write_npy(
        &ids,
        &NpyArray {
            shape: vec![3],
            data: NpyData::I64(vec![1, 5, 2]),
        },
    );
    let e = fails(&[
        "model",
        "nll",
        "--model",
        s(&dir),
        "--ids",
        s(&ids),
        "--out",
        s(&out),
    ]);
    assert!(e.contains("2-D"), "{e}");
    write_npy(
        &ids,
        &NpyArray {
            shape: vec![1, 2],
            data: NpyData::F32(vec![1.0, 2.0]),
        },
    );
    let e = fails(&[
        "model",
        "grads",
        "--model",
        s(&dir),
        "--ids",
        s(&ids),
        "--out",
        s(&out),
    ]);
    assert!(e.contains("big.npy"), "{e}");

    // truncated weights
    let bad = tmp.path().join("truncated");
    std::fs::create_dir(&bad).unwrap();
    std::fs::copy(dir.join("config.json"), bad.join("config.json")).unwrap();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    std::fs::write(bad.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let e = fails(&["model", "info", s(&bad)]);
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );

    // header length past the end of the file
    let mut b = bytes.clone();
    b[..8].copy_from_slice(&(10 * bytes.len() as u64).to_le_bytes());
    std::fs::write(bad.join("model.safetensors"), &b).unwrap();
    write_npy(
        &ids,
        &NpyArray {
            shape: vec![1, 3],
            data: NpyData::I64(vec![1, 5, 2]),
        },
    );
    let e = fails(&[
        "model",
        "nll",
        "--model",
        s(&bad),
        "--ids",
        s(&ids),
        "--out",
        s(&out),
    ]);
    assert!(
        e.contains("model.safetensors") && e.contains("past the end"),
        "{e}"
    );

    // dtype disagreeing with the byte count
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&header).unwrap();
    v["model.norm.weight"]["dtype"] = "F16".into();
    let text = serde_json::to_string(&v).unwrap();
    let mut b = (text.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(text.as_bytes());
    b.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(bad.join("model.safetensors"), &b).unwrap();
    let e = fails(&["model", "info", s(&bad)]);
    assert!(
        e.contains("`model.norm.weight`") && e.contains("F16"),
        "{e}"
    );

    // config with a zero size, and with an unknown model type
    std::fs::write(bad.join("model.safetensors"), &bytes).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let mut c = cfg.clone();
    c["intermediate_size"] = 0.into();
    std::fs::write(bad.join("config.json"), c.to_string()).unwrap();
    let e = fails(&["model", "info", s(&bad)]);
    assert!(
        e.contains("config.json") && e.contains("intermediate_size"),
        "{e}"
    );
    let cfg_path = tmp.path().join("gpt.json");
    let mut c = cfg.clone();
    c["model_type"] = "gpt_neox".into();
    std::fs::write(&cfg_path, c.to_string()).unwrap();
    let e = fails(&[
        "model",
        "init",
        "--config",
        s(&cfg_path),
        "--seed",
        "1",
        "--out",
        s(&tmp.path().join("x")),
    ]);
    assert!(e.contains("gpt.json") && e.contains("model_type"), "{e}");

    // bad flags
    let e = fails(&[
        "model",
        "nll",
        "--model",
        s(&dir),
        "--ids",
        s(&ids),
        "--out",
        s(&out),
        "--dtype",
        "f8",
    ]);
    assert!(e.contains("--dtype") && e.contains("f8"), "{e}");
    let e = fails(&[
        "model",
        "nll",
        "--model",
        s(&dir),
        "--ids",
        s(&ids),
        "--out",
        s(&out),
        "--device",
        "tpu",
    ]);
    assert!(e.contains("--device") && e.contains("tpu"), "{e}");
}

#[test]
fn plan_places_teutonic_lxxx_on_eight_and_four_gpus_and_refuses_bad_sizes() {
    let config =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/bench/teutonic-lxxx.json");
    let config = s(&config);
    let eight = ok(&[
        "model",
        "plan",
        "--config",
        config,
        "--gpus",
        "8",
        "--gpu-mem",
        "141GiB",
    ]);
    assert!(eight.contains("82328204288 parameters"), "{eight}");
    assert_eq!(eight.matches(": fits").count(), 2, "{eight}");
    assert!(
        eight.contains("king L0-8+emb") && eight.contains("chal L27-35+head"),
        "{eight}"
    );
    let four = ok(&[
        "model",
        "plan",
        "--config",
        config,
        "--gpus",
        "4",
        "--gpu-mem",
        "141GiB",
        "--layout",
        "disjoint",
        "--json",
    ]);
    let plans: serde_json::Value = serde_json::from_str(&four).unwrap();
    assert_eq!(plans[0]["fits"], true);
    assert_eq!(plans[0]["stages"].as_array().unwrap().len(), 4);
    let two = ok(&["model", "plan", "--config", config, "--gpus", "2"]);
    assert!(two.contains("DOES NOT FIT"), "{two}");
    let err = fails(&[
        "model",
        "plan",
        "--config",
        config,
        "--gpus",
        "8",
        "--gpu-mem",
        "lots",
    ]);
    assert!(err.contains("--gpu-mem") && err.contains("141GiB"), "{err}");
    let err = fails(&[
        "model", "plan", "--config", config, "--gpus", "8", "--layout", "zigzag",
    ]);
    assert!(
        err.contains("--layout") && err.contains("interleaved"),
        "{err}"
    );
    let err = fails(&["model", "plan", "--config", config, "--gpus", "0"]);
    assert!(err.contains("at least one GPU"), "{err}");
}

#[test]
fn a_device_list_splits_the_model_into_stages_with_the_same_losses() {
    let tmp = tempfile::tempdir().unwrap();
    // `koth model nll` on two and on four-times-named CPU devices: virtual stages, the same
    // per-token NLL bit for bit as one device.
    for name in ["qwen2-tiny", "qwen3moe-tiny"] {
        let g = golden(name);
        let ids = tmp.path().join(format!("{name}-ids.npy"));
        write_npy(
            &ids,
            &NpyArray {
                shape: g.shape.to_vec(),
                data: NpyData::I64(g.ids_i64.clone()),
            },
        );
        let nll = |device: &str| {
            let out = tmp.path().join(format!("{name}-{}.npy", device.len()));
            let dir = golden_dir(name);
            ok(&[
                "model",
                "nll",
                "--model",
                s(&dir),
                "--ids",
                s(&ids),
                "--out",
                s(&out),
                "--device",
                device,
                "--dtype",
                "bf16",
            ]);
            let NpyData::F32(v) = NpyArray::read(std::fs::File::open(&out).unwrap())
                .unwrap()
                .data
            else {
                panic!("nll is not f32")
            };
            v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>()
        };
        assert_eq!(nll("cpu,cpu"), nll("cpu"), "{name}");
        let e = fails(&[
            "model",
            "nll",
            "--model",
            s(&golden_dir(name)),
            "--ids",
            s(&ids),
            "--out",
            s(&tmp.path().join("x.npy")),
            "--device",
            "cpu,cpu,cpu",
        ]);
        assert!(e.contains("2 layers cannot be cut into 3 stages"), "{e}");
    }
    // `koth bench score --stages 2` on one device reports the bit-identity check; a device list
    // is placed by the planner (4 devices, 2 layers: two stages per model, disjoint).
    let config = golden_dir("qwen3moe-tiny").join("config.json");
    let bench = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "bench",
            "score",
            "--config",
            s(&config),
            "--batch",
            "3",
            "--seq",
            "16",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = ok(&args);
        serde_json::from_str(out.lines().last().unwrap()).unwrap()
    };
    let r = bench(&["--stages", "2", "--micro-batch", "1"]);
    assert_eq!(r["stages"], 2, "{r}");
    assert_eq!(r["micro_batch"], 1, "{r}");
    assert_eq!(r["bit_identical_to_one_stage"], true, "{r}");
    assert_eq!(r["schedule"], "sequential", "{r}");
    // The same draw timed as one stage too, so a 30B pair is drawn once for both rows.
    assert!(
        r["one_stage"]["tokens_per_s"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    assert!(r["init_s"].as_f64().unwrap() > 0.0, "{r}");
    let r = bench(&[
        "--stages",
        "2",
        "--micro-batch",
        "1",
        "--schedule",
        "threads",
    ]);
    assert_eq!(r["schedule"], "threads", "{r}");
    assert_eq!(r["bit_identical_to_one_stage"], true, "{r}");
    let r = bench(&["--device", "cpu,cpu,cpu,cpu"]);
    assert_eq!(r["stages"], 2, "{r}");
    assert!(r.get("one_stage").is_none(), "{r}");
    let e = fails(&[
        "bench",
        "score",
        "--config",
        s(&config),
        "--device",
        "cpu,cpu",
        "--stages",
        "2",
    ]);
    assert!(e.contains("--stages is for one --device"), "{e}");
}

/// `koth --version` names the commit the binary was built from (what `koth bench` records as
/// `koth_commit`), or "unknown" outside a git checkout.
#[test]
fn version_names_the_commit_the_binary_was_built_from() {
    let version = ok(&["--version"]);
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let want = format!(
        "koth {} ({})",
        env!("CARGO_PKG_VERSION"),
        head.as_deref().unwrap_or("unknown")
    );
    assert_eq!(version.trim(), want);
}
