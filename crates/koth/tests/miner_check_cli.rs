//! `koth miner check` answers like the validator: five checkpoint directories (the config lock
//! broken, a tensor missing, a NaN in the weights, a `.py` file, an honest but worse model) are
//! checked by the CLI, then stored, committed and run through the real validator's shell (in
//! process, on the same mini network); each gets the same code and message from both, and the
//! worse model passes every gate on both sides (the trainability probe included) and is kept
//! out by both the local duel and the validator's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use koth_chain::{Chain, EmbeddedChain};
use koth_core::RejectCode;
use koth_miner::devkit::{mini_network, MiniOptions, SHORT_TRAIN};
use koth_model::Tensor;
use koth_validator::event::Outcome;
use koth_validator::{Shell, ValidatorConfig};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The king's tensors, edited by `edit`, written over `dir/model.safetensors`.
fn edit_weights(dir: &Path, edit: impl FnOnce(&mut BTreeMap<String, Tensor>)) {
    let path = dir.join("model.safetensors");
    let mut tensors = koth_model::weights::read_safetensors(&path).unwrap();
    edit(&mut tensors);
    let list: Vec<(String, Tensor)> = tensors.into_iter().collect();
    koth_model::weights::write_safetensors(&path, &list).unwrap();
}

/// What `koth miner check --json` printed, and its exit status.
fn check(config: &Path, dir: &Path) -> (serde_json::Value, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_koth"))
        .args(["miner", "check", "--json", "--config"])
        .arg(config)
        .arg(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_else(|| {
        panic!(
            "no output; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        serde_json::from_str(line).unwrap(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn miner_check_gives_the_validators_code_and_sentence() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = MiniOptions {
        miners: 6,
        n_max: 128,
        ..MiniOptions::default()
    };
    let net = mini_network(tmp.path(), &opts).unwrap();
    // The trainability probe on, for both: the optional gate runs on each side too.
    let text = std::fs::read_to_string(&net.competition_path).unwrap();
    let mut competition = koth_core::competition::Competition::from_toml_str(&text)
        .unwrap()
        .to_file();
    competition.gates.trainability_probe = true;
    std::fs::write(&net.competition_path, competition.to_toml().unwrap()).unwrap();
    let config = net.write_miner_config(0, None, 64, 5, SHORT_TRAIN).unwrap();
    let cases: Vec<(&str, PathBuf)> = ["config", "tensor", "nan", "python", "worse"]
        .iter()
        .map(|n| (*n, tmp.path().join(format!("case-{n}"))))
        .collect();
    for (name, dir) in &cases {
        copy_dir(&net.king_dir, dir);
        match *name {
            "config" => {
                let path = dir.join("config.json");
                let mut c: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                c["rms_norm_eps"] = serde_json::json!(1e-5);
                std::fs::write(&path, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
            }
            "tensor" => edit_weights(dir, |t| {
                t.remove("model.layers.1.mlp.down_proj.weight").unwrap();
            }),
            "nan" => edit_weights(dir, |t| {
                let name = "model.layers.0.self_attn.q_proj.weight";
                let w = &t[name];
                let mut v: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
                v[7] = f32::NAN;
                let nan = Tensor::from_vec(v, w.shape(), w.device()).unwrap();
                t.insert(name.to_string(), nan);
            }),
            "python" => std::fs::write(dir.join("train.py"), "print('hi')\n").unwrap(),
            // Honest (every gate passes) but worse: the head's logits three times as large
            // make the random king's predictions more confidently wrong.
            "worse" => edit_weights(dir, |t| {
                let w = (&t["lm_head.weight"] * 3.0).unwrap();
                t.insert("lm_head.weight".to_string(), w);
            }),
            _ => unreachable!(),
        }
    }

    // The miner's answers.
    let mut local = BTreeMap::new();
    for (name, dir) in &cases {
        let (json, status) = check(&config, dir);
        local.insert(*name, (json, status));
    }

    // The validator's answers: each directory stored as it is (the store's client would refuse
    // the `.py`; the raw writer does not) and committed by its own miner.
    let chain = EmbeddedChain::open(&net.chain_path).unwrap();
    let store_dir = PathBuf::from(net.store_url.trim_start_matches("file://"));
    let mut by_digest = BTreeMap::new();
    for (i, (name, dir)) in cases.iter().enumerate() {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        let refs: Vec<(&str, Vec<u8>)> =
            files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
        let digest = koth_validator::devkit::put_raw(&store_dir, &refs).unwrap();
        let (_, key) = &net.miners[i];
        chain
            .commit(
                key,
                &koth_validator::devkit::payload(&net.store_url, &digest, key),
            )
            .unwrap();
        by_digest.insert(digest, *name);
    }
    let last = chain.block().unwrap().number + 1 + opts.reveal_delay;
    while chain.block().unwrap().number < last {
        std::thread::sleep(Duration::from_millis(20));
    }
    let validator_toml = koth_validator::devkit::write_validator_config(
        &net.root,
        "validator",
        "127.0.0.1:0",
        &net.store_url,
        100,
    )
    .unwrap();
    let mut shell = Shell::open(ValidatorConfig::load(&validator_toml).unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while (shell.journal().state().counters.answered as usize) < cases.len() {
        assert!(
            Instant::now() < deadline,
            "the validator did not answer all"
        );
        shell.step().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut theirs = BTreeMap::new();
    let mut their_gates = BTreeMap::new();
    for f in &shell.journal().state().history {
        if let Some(name) = f.digest.and_then(|d| by_digest.get(&d)) {
            theirs.insert(*name, f.outcome.clone());
            their_gates.insert(*name, f.gates.clone());
        }
    }

    let expected = [
        ("config", RejectCode::ConfigMismatch, "config"),
        ("tensor", RejectCode::TensorsMismatch, "tensors"),
        ("nan", RejectCode::WeightsInvalid, "weights"),
        ("python", RejectCode::FileRefused, "fetch"),
    ];
    for (name, code, gate) in expected {
        let (json, status) = &local[name];
        let refusal = &json["gates"]["refusal"];
        let Some(Outcome::Rejected {
            code: their_code,
            gate: their_gate,
            message: their_message,
        }) = theirs.get(name)
        else {
            panic!("{name}: the validator answered {:?}", theirs.get(name))
        };
        assert_eq!(*their_code, code, "{name}: {their_message}");
        assert_eq!(
            their_gate.map(|g| g.name()),
            Some(gate),
            "{name}: {their_message}"
        );
        assert_eq!(refusal["code"], code.code(), "{name}: {json}");
        assert_eq!(refusal["gate"], gate, "{name}: {json}");
        assert_eq!(
            refusal["message"].as_str(),
            Some(their_message.as_str()),
            "{name}: the miner's message is the validator's"
        );
        assert_eq!(*status, 1, "{name}: a refusal exits 1");
        assert!(json["local"].is_null(), "{name}: no duel after a refusal");
    }

    // The worse model passes every gate on both sides and is kept out by both duels.
    let (json, status) = &local["worse"];
    assert!(json["gates"]["refusal"].is_null(), "{json}");
    assert_eq!(
        json["gates"]["gates"][4],
        serde_json::json!(["trainability", "passed"]),
        "{json}"
    );
    assert_eq!(json["local"]["crown"], false, "{json}");
    assert_eq!(*status, 3, "a kept king exits 3: {json}");
    assert!(
        their_gates["worse"]
            .iter()
            .any(|g| g.gate == koth_validator::Gate::Trainability
                && g.result == koth_validator::state::GateResult::Passed),
        "{:?}",
        their_gates["worse"]
    );
    match theirs.get("worse") {
        Some(Outcome::Dueled { verdict, crowned }) => {
            assert!(!verdict.accepted && crowned.is_none(), "{verdict:?}");
        }
        other => panic!("the worse model: the validator answered {other:?}"),
    }
}
