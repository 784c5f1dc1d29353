//! `koth duel …` end to end through the built binary.

use std::path::Path;
use std::process::{Command, Output};

use koth_core::npy::{NpyArray, NpyData};
use koth_duel::toy;

fn koth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_koth"))
        .args(args)
        .output()
        .expect("running koth")
}

fn write_npy(path: &Path, shape: Vec<usize>, data: NpyData) {
    let file = std::fs::File::create(path).unwrap();
    NpyArray { shape, data }.write(file).unwrap();
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "koth failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn decide_prints_the_decision_on_given_differences() {
    let dir = tempfile::tempdir().unwrap();
    let better = dir.path().join("better.npy");
    let diffs: Vec<f64> = (0..4000)
        .map(|i| 0.02 + 0.01 * (((i * 37) % 101) as f64 / 50.0 - 1.0))
        .collect();
    write_npy(&better, vec![diffs.len()], NpyData::F64(diffs));
    let same = dir.path().join("same.npy");
    write_npy(&same, vec![4000], NpyData::F64(vec![0.0; 4000]));
    let b = better.to_str().unwrap();
    let s = same.to_str().unwrap();

    let v = json(&koth(&[
        "duel",
        "decide",
        "--diffs",
        b,
        "--rule",
        "sequential",
        "--alpha",
        "0.001",
        "--delta",
        "0.0025",
        "--batch",
        "64",
    ]));
    assert_eq!(v["accepted"], true, "{v}");
    assert_eq!(v["decision"], "crown");
    assert_eq!(
        v["n_used"], 256,
        "a clear case is decided at the first look: {v}"
    );
    assert!(v["lower"].as_f64().unwrap() > 0.0025);
    assert!((v["mu_hat"].as_f64().unwrap() - 0.02).abs() < 0.002);
    assert!(v.get("bounds").is_none());

    let v = json(&koth(&[
        "duel",
        "decide",
        "--diffs",
        s,
        "--rule",
        "sequential",
        "--delta",
        "0.0025",
        "--trace",
    ]));
    assert_eq!(v["accepted"], false);
    assert_eq!(v["decision"], serde_json::json!({"keep_king": "futility"}));
    assert_eq!(v["bounds"].as_array().unwrap().len(), 4);

    let v = json(&koth(&[
        "duel",
        "decide",
        "--diffs",
        b,
        "--rule",
        "bootstrap",
        "--delta",
        "0.0025",
        "--resamples",
        "2000",
        "--batch",
        "500",
    ]));
    assert_eq!(v["accepted"], true);
    assert_eq!(v["n_used"], 4000);

    // Bad input: a 2-D array, a missing floor, a missing file.
    let bad = dir.path().join("bad.npy");
    write_npy(&bad, vec![2, 2], NpyData::F64(vec![0.0; 4]));
    let out = koth(&[
        "duel",
        "decide",
        "--diffs",
        bad.to_str().unwrap(),
        "--delta",
        "0.01",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1-D"),
        "{out:?}"
    );
    let out = koth(&["duel", "decide", "--diffs", b]);
    assert!(!out.status.success());
    let out = koth(&[
        "duel",
        "decide",
        "--diffs",
        "/nonexistent.npy",
        "--delta",
        "0.01",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.npy"));
}

#[test]
fn run_crowns_a_trained_challenger_and_replay_reproduces_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bundle = toy::write_toy_bundle(&d.join("data"), 12_000, 21).unwrap();
    let king = toy::toy_model(4).unwrap();
    let challenger = toy::train_further(&king, 30, 8, 32, 1e-2, 5).unwrap();
    king.save(&d.join("king")).unwrap();
    challenger.save(&d.join("challenger")).unwrap();
    king.save(&d.join("king-copy")).unwrap();
    let p = |x: &str| d.join(x).to_str().unwrap().to_string();
    let run = |challenger: &str, out: &str| {
        koth(&[
            "duel",
            "run",
            "--king",
            &p("king"),
            "--challenger",
            &p(challenger),
            "--bundle",
            bundle.to_str().unwrap(),
            "--seed-material",
            "block 7 | hotkey x",
            "--seq-len",
            "32",
            "--n-max",
            "512",
            "--rule",
            "sequential",
            "--alpha",
            "0.001",
            "--relative-delta",
            "0.001",
            "--min-n",
            "64",
            "--batch-size",
            "32",
            "--out",
            &p(out),
        ])
    };

    let v = json(&run("challenger", "v.json"));
    assert_eq!(v["accepted"], true, "{v}");
    let verdict: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("v.json")).unwrap()).unwrap();
    assert_eq!(verdict["format"], "koth-verdict/1");
    assert_eq!(verdict["per_source"].as_array().unwrap().len(), 2);
    assert_eq!(verdict["outcome"]["decision"], "crown");

    let out = koth(&["duel", "replay", &p("v.json")]);
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("identical"));

    // The record is never overwritten.
    let out = run("challenger", "v.json");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists"));

    // A tampered record does not replay.
    let mut tampered = verdict.clone();
    tampered["outcome"]["mu_hat"] = serde_json::json!(0.5);
    std::fs::write(d.join("t.json"), serde_json::to_vec(&tampered).unwrap()).unwrap();
    let out = koth(&["duel", "replay", &p("t.json")]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("outcome numbers"),
        "{out:?}"
    );

    // A crafted record whose sizes would make the replay allocate without bound is refused
    // with a sentence naming the field, before anything is loaded or sampled.
    for (field, value, expect) in [
        ("n_max", serde_json::json!(u64::MAX), "rule n_max"),
        ("n_max", serde_json::json!(0), "rule n_max"),
        ("min_n", serde_json::json!(1), "min_n"),
    ] {
        let mut crafted = verdict.clone();
        crafted["rule"][field] = value;
        std::fs::write(d.join("c.json"), serde_json::to_vec(&crafted).unwrap()).unwrap();
        let out = koth(&["duel", "replay", &p("c.json")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{field}: {stderr}");
        assert!(stderr.contains(expect), "{field}: {stderr}");
    }
    let mut crafted = verdict.clone();
    crafted["rule"] = serde_json::json!({
        "rule": "bootstrap",
        "alpha": 0.001,
        "n": verdict["outcome"]["n_used"],
        "resamples": u32::MAX,
        "futility": null,
    });
    std::fs::write(d.join("c.json"), serde_json::to_vec(&crafted).unwrap()).unwrap();
    let out = koth(&["duel", "replay", &p("c.json")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bootstrap resamples"), "{stderr}");

    // Replaying against another checkpoint is refused by digest.
    let out = koth(&[
        "duel",
        "replay",
        &p("v.json"),
        "--challenger",
        &p("king-copy"),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hashes to"));

    // A model against (a copy of) itself is not crowned.
    let v = json(&run("king-copy", "self.json"));
    assert_eq!(v["accepted"], false, "{v}");
    assert_eq!(v["mu_hat"], 0.0);
}

#[test]
fn simulate_prints_tables() {
    let out = koth(&[
        "duel",
        "simulate",
        "--preset",
        "false-crown",
        "--reps",
        "20",
        "--n-max",
        "1000",
        "--n",
        "500",
        "--resamples",
        "200",
        "--threads",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("| sequential | 1 | skew-left |"), "{text}");
    assert!(text.contains("| bootstrap | 1 | student-t3 |"), "{text}");
    let out = koth(&["duel", "simulate", "--distribution", "cauchy"]);
    assert!(!out.status.success());
}
