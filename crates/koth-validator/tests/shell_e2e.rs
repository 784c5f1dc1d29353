//! End to end on CPU with tiny models: a real embedded chain, a real local store, a real data
//! bundle and the real shell. Crafted submissions reach every rejection code the chain can
//! produce; a genuinely better challenger (trained a few steps) is crowned and weights land on
//! chain; the HTTP feeds show it.

use std::path::Path;
use std::time::{Duration, Instant};

use koth_chain::{Chain, EmbeddedChain};
use koth_core::Digest;
use koth_model::{DType, Device, Model, ModelConfig};
use koth_validator::devkit::{self, key, payload, put, put_raw, register, TinyOptions};
use koth_validator::event::Outcome;
use koth_validator::{Shell, ValidatorConfig};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn code_of(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Rejected { code, .. } => code.code().to_string(),
        Outcome::Dueled {
            crowned: Some(_), ..
        } => "crowned".into(),
        Outcome::Dueled { crowned: None, .. } => "kept_king".into(),
        Outcome::Superseded { .. } => "superseded".into(),
    }
}

#[test]
fn every_code_is_reached_and_a_better_challenger_is_crowned() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = TinyOptions {
        size_cap_bytes: 1 << 20,
        ..TinyOptions::default()
    };
    let net = devkit::tiny_network(tmp.path(), &opts).unwrap();
    let chain = EmbeddedChain::open(&net.chain_path).unwrap();
    let store = net.store_url.clone();
    let work = tmp.path().join("crafted");

    // A better challenger: the king trained a few steps on the data's distribution.
    let better_dir = work.join("better");
    devkit::train_better(&net.king_dir, &better_dir, 30, 32).unwrap();
    let better = put(&store, &better_dir).unwrap();
    let stats = koth_validator::gate_run::tensor_stats(
        &koth_validator::gate_run::parse_headers(&better_dir).unwrap(),
    )
    .unwrap();
    let bad: Vec<_> = stats.iter().filter(|s| s.non_finite > 0).collect();
    assert!(
        bad.is_empty(),
        "trained challenger has non-finite weights: {bad:?}"
    );

    // config_mismatch: a locked key changed.
    let cfg_dir = work.join("config");
    copy_dir(&net.king_dir, &cfg_dir);
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cfg_dir.join("config.json")).unwrap()).unwrap();
    cfg["rope_theta"] = serde_json::json!(20000.0);
    std::fs::write(cfg_dir.join("config.json"), cfg.to_string()).unwrap();
    let config_bad = put(&store, &cfg_dir).unwrap();

    // tensors_mismatch: the king's config.json over weights of another shape.
    let ten_dir = work.join("tensors");
    let mut other: serde_json::Value =
        serde_json::from_str(&devkit::tiny_config().to_json_string()).unwrap();
    other["intermediate_size"] = serde_json::json!(48);
    let other = ModelConfig::from_json(&other.to_string(), "other").unwrap();
    let m = Model::init(&other, 3, DType::F32, &Device::Cpu).unwrap();
    devkit::save_model(&m, &ten_dir).unwrap();
    std::fs::copy(
        net.king_dir.join("config.json"),
        ten_dir.join("config.json"),
    )
    .unwrap();
    let tensors_bad = put(&store, &ten_dir).unwrap();

    // weights_invalid: the king with a NaN tensor.
    let nan_dir = work.join("nan");
    let king_model = Model::load(&net.king_dir, DType::F32, &Device::Cpu).unwrap();
    let poisoned = king_model
        .map_tensors(|name, t| {
            if name.ends_with("norm.weight") {
                Ok(t.affine(1.0, f64::NAN)?)
            } else {
                Ok(t.clone())
            }
        })
        .unwrap();
    devkit::save_model(&poisoned, &nan_dir).unwrap();
    std::fs::copy(
        net.king_dir.join("config.json"),
        nan_dir.join("config.json"),
    )
    .unwrap();
    let weights_bad = put(&store, &nan_dir).unwrap();

    // file_refused: Python in the upload (written into the store's layout directly: `put`
    // itself refuses it).
    let king_files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&net.king_dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    let mut with_py: Vec<(&str, Vec<u8>)> = king_files
        .iter()
        .map(|(n, b)| (n.as_str(), b.clone()))
        .collect();
    with_py.push((
        "modeling_llama.py",
        b"import os\nos.system('rm -rf /')\n".to_vec(),
    ));
    let file_bad = put_raw(&net.store_dir, &with_py).unwrap();

    // too_large: a valid checkpoint with a tokenizer file over the cap.
    let big_dir = work.join("big");
    copy_dir(&net.king_dir, &big_dir);
    std::fs::write(
        big_dir.join("tokenizer.json"),
        vec![b' '; (opts.size_cap_bytes + 1) as usize],
    )
    .unwrap();
    let too_big = put(&store, &big_dir).unwrap();

    let nothing = Digest::of(b"nothing is stored under this digest");

    // Miners and their commitments, all revealed in the same window.
    let miners: Vec<_> = (10u8..20).map(key).collect();
    for m in &miners {
        register(&chain, m).unwrap();
    }
    let expect = [
        (payload(&store, &better, &miners[0]), "crowned"),
        ("v4|not a payload".to_string(), "payload_malformed"),
        (payload(&store, &net.king, &miners[2]), "digest_owned"),
        (
            payload(&store, &nothing, &miners[3]),
            "manifest_unreachable",
        ),
        (
            payload(
                "file:///somewhere/else",
                &Digest::of(b"a location outside the allowed ones"),
                &miners[4],
            ),
            "manifest_unreachable",
        ),
        (payload(&store, &file_bad, &miners[5]), "file_refused"),
        (payload(&store, &too_big, &miners[6]), "too_large"),
        (payload(&store, &config_bad, &miners[7]), "config_mismatch"),
        (
            payload(&store, &tensors_bad, &miners[8]),
            "tensors_mismatch",
        ),
        (payload(&store, &weights_bad, &miners[9]), "weights_invalid"),
    ];
    for (i, (p, _)) in expect.iter().enumerate() {
        chain.commit(&miners[i], p).unwrap();
    }

    let cfg = ValidatorConfig::load(&net.config_path).unwrap();
    let mut shell = Shell::open(cfg).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        shell.step().unwrap();
        let s = shell.journal().state();
        let answered = s.history.len();
        let weights_ok = s.weights.last_set_block.is_some() && s.reigns.len() == 2;
        if answered >= expect.len() && weights_ok {
            break;
        }
        if answered >= expect.len() && s.reigns.len() == 1 {
            let all: Vec<_> = s
                .history
                .iter()
                .map(|f| {
                    (
                        f.id,
                        f.digest == Some(better),
                        f.digest == Some(weights_bad),
                        &f.outcome,
                    )
                })
                .collect();
            panic!("everything answered but nothing crowned: {all:#?}");
        }
        assert!(
            Instant::now() < deadline,
            "timed out: {answered} answered, reigns {}, weights {:?}",
            s.reigns.len(),
            s.weights
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = shell.journal().state();
    for (i, (_, code)) in expect.iter().enumerate() {
        let hotkey = miners[i].account().to_ss58();
        let f = s
            .history
            .iter()
            .find(|f| f.hotkey == hotkey)
            .unwrap_or_else(|| panic!("no answer for miner {i} ({code})"));
        assert_eq!(&code_of(&f.outcome), code, "miner {i}: {:?}", f.outcome);
        if let Outcome::Rejected { message, .. } = &f.outcome {
            assert!(!message.is_empty());
        }
    }
    // Gates that are off are recorded as such, never as passed.
    let crowned = s
        .history
        .iter()
        .find(|f| f.hotkey == miners[0].account().to_ss58())
        .unwrap();
    assert!(crowned
        .gates
        .iter()
        .any(|g| matches!(g.result, koth_validator::state::GateResult::NotEnabled)));
    let king = s.king().unwrap();
    assert_eq!(king.digest, better);
    assert_eq!(
        king.hotkey.as_deref(),
        Some(miners[0].account().to_ss58().as_str())
    );
    // Weights on chain: the validator pays the king's uid everything.
    let deadline = Instant::now() + Duration::from_secs(10);
    let uid = chain
        .metagraph()
        .unwrap()
        .by_hotkey(&miners[0].account())
        .unwrap()
        .uid;
    loop {
        let w = chain.weights().unwrap();
        if let Some(v) = w
            .iter()
            .find(|v| v.validator_hotkey == net.validator.account())
        {
            assert_eq!(v.weights, vec![(uid, 65535)]);
            break;
        }
        assert!(Instant::now() < deadline, "weights never appeared on chain");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The verdict record exists and hashes to what the log says.
    let koth_validator::event::Outcome::Dueled { verdict, .. } = &crowned.outcome else {
        panic!("not dueled")
    };
    let bytes = std::fs::read(&verdict.verdict_path).unwrap();
    assert_eq!(Digest::of(&bytes), verdict.verdict_digest);

    // The feeds over HTTP.
    let feed = shell.feed();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, koth_validator::api_router(feed))
                .await
                .unwrap()
        });
        let client = reqwest::Client::new();
        let dash: serde_json::Value = client
            .get(format!("http://{addr}/dashboard.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(dash["king"]["king_digest"], better.to_string());
        assert_eq!(dash["king"]["reign_number"], 1);
        let state: serde_json::Value = client
            .get(format!("http://{addr}/api/state"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(state["history"].as_array().unwrap().len(), expect_len());
        let metrics = client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(metrics.contains("crowns_total"), "{metrics}");
        let health = client
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .unwrap();
        assert!(health.status().is_success());
        // SSE: a client resuming after event 1 gets the log from event 2 on.
        let resp = client
            .get(format!("http://{addr}/api/events"))
            .header("Last-Event-ID", "1")
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
        let mut body = resp.bytes_stream();
        use futures::StreamExt;
        let first = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&first);
        assert!(text.contains("id: 2"), "{text}");
    });
}

fn expect_len() -> usize {
    10
}
