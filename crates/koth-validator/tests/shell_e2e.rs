//! End to end on CPU with tiny models: a real embedded chain, a real local store, a real data
//! bundle and the real shell, with the trainability probe and the behavioural-fingerprint gate
//! switched on. Crafted submissions reach every rejection code; a genuinely better challenger
//! (trained a few steps) is crowned and weights land on chain; near copies (a model with tiny
//! noise added: another digest, the same behaviour) of the king, of a former king and of a
//! recent submission are refused with `near_copy`, also after a restart; the HTTP feeds show it.
//! Separate tests reach `hotkey_unregistered` through a pruning chain, and refuse a challenger
//! that fails in the duel itself with `weights_invalid` instead of retrying it forever.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::answer_of;
use koth_chain::{Chain, EmbeddedChain};
use koth_core::Digest;
use koth_model::{AdamWConfig, DType, Device, Model, ModelConfig, Tensor, TokenIds, Trainer};
use koth_validator::devkit::{self, key, payload, put, put_raw, register, TinyOptions};
use koth_validator::event::{Gate, Outcome};
use koth_validator::state::{Finished, GateResult};
use koth_validator::{Shell, ValidatorConfig};
use rand::{Rng, SeedableRng};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A copy of the checkpoint in `from` with Gaussian noise of standard deviation `std` added to
/// every weight (deterministic from `seed`): other bytes, other digest, the same behaviour.
fn noisy_copy(from: &Path, to: &Path, std: f32, seed: u64) {
    let model = Model::load(from, DType::F32, &Device::Cpu).unwrap();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let noisy = model
        .map_tensors(|_, t| {
            let values: Vec<f32> = t.flatten_all()?.to_vec1::<f32>()?;
            let noisy: Vec<f32> = values
                .iter()
                .map(|v| {
                    // Box–Muller from two uniforms.
                    let (u1, u2): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
                    v + std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
                })
                .collect();
            Ok(Tensor::from_vec(noisy, t.shape(), t.device())?)
        })
        .unwrap();
    devkit::save_model(&noisy, to).unwrap();
    std::fs::copy(from.join("config.json"), to.join("config.json")).unwrap();
}

/// The king trained a few steps on a scrambled version of the data (every token mapped to
/// another): a checkpoint that behaves differently from the king and is worse on the real data.
fn train_scrambled(king_dir: &Path, out: &Path, steps: usize, seq_len: usize) {
    let king = Model::load(king_dir, DType::F32, &Device::Cpu).unwrap();
    let mut trainer = Trainer::new(&king, AdamWConfig::default()).unwrap();
    let rows = 8;
    for step in 0..steps {
        let tokens: Vec<u32> = devkit::synthetic_tokens(rows * seq_len, 5000 + step as u64)
            .into_iter()
            .map(|t| (t * 7 + 3) % devkit::VOCAB)
            .collect();
        let ids = TokenIds::new(tokens, rows, seq_len).unwrap();
        trainer.step(&ids, 2e-3).unwrap();
    }
    devkit::save_model(trainer.model(), out).unwrap();
    std::fs::copy(king_dir.join("config.json"), out.join("config.json")).unwrap();
}

/// The king saved in the sharded layout, with one tensor left out of the index's weight map:
/// every file passes the gates (the headers are exactly the king's), but the loader refuses it.
fn broken_index_copy(king_dir: &Path, to: &Path) {
    let king = Model::load(king_dir, DType::F32, &Device::Cpu).unwrap();
    king.save_with_shard_limit(to, 32 * 1024).unwrap();
    let index_path = to.join("model.safetensors.index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let removed = index["weight_map"]
        .as_object_mut()
        .unwrap()
        .remove("lm_head.weight");
    assert!(removed.is_some(), "the index maps lm_head.weight");
    std::fs::write(&index_path, index.to_string()).unwrap();
    std::fs::copy(king_dir.join("config.json"), to.join("config.json")).unwrap();
}

fn rejection(f: &Finished) -> (String, Option<Gate>, String) {
    match &f.outcome {
        Outcome::Rejected {
            code,
            gate,
            message,
        } => (code.code().to_string(), *gate, message.clone()),
        other => panic!("entry {} was not rejected: {other:?}", f.id),
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
        near_copy: true,
        trainability_probe: true,
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

    // near_copy: the king with tiny noise (a new digest, the king's behaviour).
    let copy_dir_ = work.join("king-copy");
    noisy_copy(&net.king_dir, &copy_dir_, 1e-4, 1);
    let king_copy = put(&store, &copy_dir_).unwrap();
    assert_ne!(king_copy, net.king);

    // weights_invalid at the trainability probe: a checkpoint whose files pass every header
    // check but which does not load (its index leaves a tensor unmapped).
    let broken_dir = work.join("broken-index");
    broken_index_copy(&net.king_dir, &broken_dir);
    let broken = put(&store, &broken_dir).unwrap();

    let nothing = Digest::of(b"nothing is stored under this digest");

    // Miners and their commitments, all revealed in the same window.
    let miners: Vec<_> = (10u8..22).map(key).collect();
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
        (payload(&store, &king_copy, &miners[10]), "near_copy"),
        (payload(&store, &broken, &miners[11]), "weights_invalid"),
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
    // Every gate ran for the crowned challenger: the probe and the fingerprint included.
    let crowned = s
        .history
        .iter()
        .find(|f| f.hotkey == miners[0].account().to_ss58())
        .unwrap();
    let ran: Vec<(Gate, GateResult)> = crowned.gates.iter().map(|g| (g.gate, g.result)).collect();
    assert_eq!(
        ran,
        Gate::PIPELINE
            .iter()
            .map(|g| (*g, GateResult::Passed))
            .collect::<Vec<_>>()
    );
    // The near copy of the genesis king names it (as the king, or as the former king if the
    // better challenger was crowned first), with the distance and both fingerprints.
    let copy = s
        .history
        .iter()
        .find(|f| f.digest == Some(king_copy))
        .unwrap();
    let (_, gate, message) = rejection(copy);
    assert_eq!(gate, Some(Gate::Fingerprint));
    assert!(
        message.contains(&net.king.to_string()) && message.contains("Jensen–Shannon distance"),
        "{message}"
    );
    // The broken checkpoint was refused by the probe, which loads it; the sentence says why
    // without naming our cache.
    let (_, gate, message) =
        rejection(s.history.iter().find(|f| f.digest == Some(broken)).unwrap());
    assert_eq!(gate, Some(Gate::Trainability));
    assert!(
        message.contains("failed to load") && message.contains("lm_head.weight"),
        "{message}"
    );
    assert!(
        !message.contains(&net.work_dir.display().to_string()),
        "{message}"
    );
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
    // The log's bounds are the record's own: where the rule computed none, none is logged.
    let record: koth_core::verdict::Verdict = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (verdict.lower, verdict.upper),
        (record.outcome.lower, record.outcome.upper)
    );

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

    // A restart keeps the fingerprint secret (and so the probes): verdicts stay consistent.
    let secret_path = net.work_dir.join("fingerprint.secret");
    let secret = std::fs::read(&secret_path).unwrap();
    assert!(secret.len() >= 16);
    drop(shell);
    let mut shell = Shell::open(ValidatorConfig::load(&net.config_path).unwrap()).unwrap();
    assert_eq!(std::fs::read(&secret_path).unwrap(), secret);

    // A recent submission that lost its duel is remembered too: first a checkpoint that
    // behaves differently from the king (trained on scrambled data) is dueled and loses …
    let scrambled_dir = work.join("scrambled");
    train_scrambled(&net.king_dir, &scrambled_dir, 30, 32);
    let scrambled = put(&store, &scrambled_dir).unwrap();
    let (m_scrambled, m_copy_of_scrambled, m_copy_of_better) = (key(30), key(31), key(32));
    for m in [&m_scrambled, &m_copy_of_scrambled, &m_copy_of_better] {
        register(&chain, m).unwrap();
    }
    chain
        .commit(&m_scrambled, &payload(&store, &scrambled, &m_scrambled))
        .unwrap();
    let lost = answer_of(&mut shell, &m_scrambled, 120);
    assert_eq!(code_of(&lost.outcome), "kept_king", "{:?}", lost.outcome);
    // … then near copies of it and of the king (the better challenger) are refused, each
    // naming the checkpoint it copies.
    let copy_of_scrambled_dir = work.join("scrambled-copy");
    noisy_copy(&scrambled_dir, &copy_of_scrambled_dir, 1e-4, 2);
    let copy_of_scrambled = put(&store, &copy_of_scrambled_dir).unwrap();
    let copy_of_better_dir = work.join("better-copy");
    noisy_copy(&better_dir, &copy_of_better_dir, 1e-4, 3);
    let copy_of_better = put(&store, &copy_of_better_dir).unwrap();
    chain
        .commit(
            &m_copy_of_scrambled,
            &payload(&store, &copy_of_scrambled, &m_copy_of_scrambled),
        )
        .unwrap();
    chain
        .commit(
            &m_copy_of_better,
            &payload(&store, &copy_of_better, &m_copy_of_better),
        )
        .unwrap();
    let f = answer_of(&mut shell, &m_copy_of_scrambled, 120);
    let (code, gate, message) = rejection(&f);
    assert_eq!(
        (code.as_str(), gate),
        ("near_copy", Some(Gate::Fingerprint))
    );
    assert!(
        message.contains(&format!("submission #{}", lost.id))
            && message.contains(&scrambled.to_string()),
        "{message}"
    );
    let f = answer_of(&mut shell, &m_copy_of_better, 120);
    let (code, _, message) = rejection(&f);
    assert_eq!(code, "near_copy");
    assert!(
        message.contains("the king (reign 1)") && message.contains(&better.to_string()),
        "{message}"
    );
    // The king is still the better challenger.
    assert_eq!(shell.journal().state().king().unwrap().digest, better);

    // The margins, from the fingerprints the validator stored: genuine training moves the
    // behaviour far past the threshold, tiny noise leaves it far below.
    let stored = |d: &Digest| -> koth_validator::fingerprint::Fingerprint {
        let path = net
            .work_dir
            .join("fingerprints")
            .join(format!("{}.json", d.hex()));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        serde_json::from_value(v["fingerprint"].clone()).unwrap()
    };
    let dist = |a: &Digest, b: &Digest| {
        koth_validator::fingerprint::distance(&stored(a), &stored(b)).unwrap()
    };
    // (Measured: genuine pairs 0.23–0.38, noisy copies below 0.001; the threshold is 0.01.)
    let threshold = 0.01;
    for (what, a, b) in [
        ("better vs genesis", &better, &net.king),
        ("scrambled vs genesis", &scrambled, &net.king),
        ("scrambled vs better", &scrambled, &better),
    ] {
        let d = dist(a, b);
        assert!(d > 5.0 * threshold, "{what}: distance {d}");
    }
    for (what, a, b) in [
        ("genesis copy vs genesis", &king_copy, &net.king),
        ("better copy vs better", &copy_of_better, &better),
        (
            "scrambled copy vs scrambled",
            &copy_of_scrambled,
            &scrambled,
        ),
    ] {
        let d = dist(a, b);
        assert!(d < threshold / 5.0, "{what}: distance {d}");
    }
}

fn expect_len() -> usize {
    12
}

/// `hotkey_unregistered` through the real chain: a miner commits, then is pruned (a newcomer
/// takes its uid on a full subnet) before the validator reads the reveal. The reveal is still on
/// chain, but its signer has no uid, so the validator refuses it whatever the payload says.
#[test]
fn a_pruned_miners_reveal_is_refused_as_hotkey_unregistered() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = TinyOptions {
        max_uids: 3,
        immunity_period: Some(2),
        tokens: 20_000,
        ..TinyOptions::default()
    };
    let net = devkit::tiny_network(tmp.path(), &opts).unwrap();
    let chain = EmbeddedChain::open(&net.chain_path).unwrap();
    let (pruned, filler, newcomer) = (key(40), key(41), key(42));
    register(&chain, &pruned).unwrap();
    register(&chain, &filler).unwrap();
    let committed = payload(
        &net.store_url,
        &Digest::of(b"a checkpoint of the pruned miner"),
        &pruned,
    );
    chain.commit(&pruned, &committed).unwrap();
    // The subnet is full (validator, pruned, filler): the newcomer gets in once the immunity
    // period has passed, replacing the oldest registration that earned nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = chain.register(&newcomer, &newcomer.account()) {
        assert!(Instant::now() < deadline, "the newcomer never got in: {e}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let meta = chain.metagraph().unwrap();
    assert!(meta.by_hotkey(&pruned.account()).is_none(), "not pruned");
    assert!(meta.by_hotkey(&filler.account()).is_some());
    // The reveal comes out after the pruning.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !chain
        .revealed_commitments()
        .unwrap()
        .iter()
        .any(|r| r.hotkey == pruned.account())
    {
        assert!(
            Instant::now() < deadline,
            "the commitment was never revealed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut shell = Shell::open(ValidatorConfig::load(&net.config_path).unwrap()).unwrap();
    let f = answer_of(&mut shell, &pruned, 60);
    let (code, gate, message) = rejection(&f);
    assert_eq!((code.as_str(), gate), ("hotkey_unregistered", None));
    assert!(message.contains("had no uid"), "{message}");
    assert_eq!(f.uid, None);
    assert_eq!(shell.journal().state().counters.admitted, 0);
}

/// A challenger that passes every gate but fails in the duel because of itself (here: it does
/// not load) is refused with `weights_invalid`, once, instead of being retried as our fault
/// for ever; its digest is final, as after a verdict.
#[test]
fn a_challenger_that_fails_in_the_duel_is_refused_not_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = TinyOptions {
        tokens: 50_000,
        ..TinyOptions::default()
    };
    let net = devkit::tiny_network(tmp.path(), &opts).unwrap();
    let chain = EmbeddedChain::open(&net.chain_path).unwrap();
    let broken_dir = tmp.path().join("broken-index");
    broken_index_copy(&net.king_dir, &broken_dir);
    let broken = put(&net.store_url, &broken_dir).unwrap();
    let miner = key(50);
    register(&chain, &miner).unwrap();
    let p = payload(&net.store_url, &broken, &miner);
    chain.commit(&miner, &p).unwrap();

    let mut shell = Shell::open(ValidatorConfig::load(&net.config_path).unwrap()).unwrap();
    let f = answer_of(&mut shell, &miner, 120);
    let (code, gate, message) = rejection(&f);
    assert_eq!((code.as_str(), gate), ("weights_invalid", Some(Gate::Duel)));
    assert!(
        message.contains("the challenger failed to load") && message.contains("lm_head.weight"),
        "{message}"
    );
    assert_eq!(f.retries, 0);
    // The gates that are off are recorded as such; the others passed.
    assert!(f
        .gates
        .iter()
        .any(|g| g.gate == Gate::Fingerprint && g.result == GateResult::NotEnabled));
    let s = shell.journal().state();
    assert_eq!(s.counters.infra_faults, 0);
    assert_eq!(s.king().unwrap().digest, net.king);
    // The digest is final: committing it again is refused at intake.
    std::thread::sleep(Duration::from_millis(2 * opts.block_time_ms));
    chain.commit(&miner, &p).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let again = loop {
        shell.step().unwrap();
        let s = shell.journal().state();
        if let Some(f) = s
            .history
            .iter()
            .find(|g| g.hotkey == miner.account().to_ss58() && g.id != f.id)
        {
            break f.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the second commitment was never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (code, _, message) = rejection(&again);
    assert_eq!(code, "digest_owned");
    assert!(message.contains("already dueled"), "{message}");
}
