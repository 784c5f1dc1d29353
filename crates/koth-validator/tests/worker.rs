//! The remote eval worker over real HTTP: bearer token required, one duel at a time, progress
//! streamed, cancellable; the client reports every failure as an error (an infra fault for the
//! validator), never as a verdict; a verdict that does not answer the request is refused, and
//! the real shell records it as an infra fault.

use std::time::Duration;

use koth_chain::{Chain, EmbeddedChain};
use koth_core::competition::Competition;
use koth_validator::devkit::{self, key, payload, put, register, TinyOptions};
use koth_validator::duel_run::DuelFailure;
use koth_validator::event::{Event, SeedMaterial};
use koth_validator::worker::{
    check_worker_verdict, remote_duel, worker_router, DuelRequest, WorkerConfig,
};
use koth_validator::{Shell, ValidatorConfig};

#[test]
fn worker_serves_one_authenticated_cancellable_duel_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = TinyOptions {
        seq_len: 64,
        n_max: 4096,
        batch_size: 16,
        tokens: 600_000,
        ..TinyOptions::default()
    };
    let net = devkit::tiny_network(tmp.path(), &opts).unwrap();
    let competition =
        Competition::from_toml_bytes(&std::fs::read(&net.competition_path).unwrap()).unwrap();
    let better_dir = tmp.path().join("better");
    devkit::train_better(&net.king_dir, &better_dir, 30, 64).unwrap();
    let better = put(&net.store_url, &better_dir).unwrap();
    // A re-saved king with one nudged tensor: indistinguishable, so its duel runs long.
    let same_dir = tmp.path().join("same");
    let king = koth_model::Model::load(
        &net.king_dir,
        koth_model::DType::F32,
        &koth_model::Device::Cpu,
    )
    .unwrap();
    let nudged = king
        .map_tensors(|name, t| {
            if name.ends_with("lm_head.weight") {
                Ok(t.affine(1.000001, 0.0)?)
            } else {
                Ok(t.clone())
            }
        })
        .unwrap();
    devkit::save_model(&nudged, &same_dir).unwrap();
    let same = put(&net.store_url, &same_dir).unwrap();

    let token = "s3cret-token".to_string();
    let router = worker_router(WorkerConfig {
        token: token.clone(),
        competition: competition.clone(),
        bundle_path: net.bundle_path.clone(),
        cache_dir: tmp.path().join("worker-cache"),
        cache_budget_bytes: 1 << 30,
        s3: Default::default(),
        device: "cpu".into(),
        dtype: "f32".into(),
    })
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, router).await.unwrap() });
    let url = format!("http://{addr}");

    let request = |challenger| DuelRequest {
        competition_sha256: competition.sha256(),
        king: net.king,
        king_location: net.store_url.clone(),
        challenger,
        challenger_location: net.store_url.clone(),
        seed: SeedMaterial {
            competition_sha256: competition.sha256(),
            reveal_block_hash: "sha256:00".into(),
            hotkey: "5Test".into(),
        },
        king_pool: None,
    };

    // No token, wrong token: 401.
    rt.block_on(async {
        let c = reqwest::Client::new();
        let r = c
            .post(format!("{url}/duel"))
            .json(&request(better))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r = c
            .post(format!("{url}/duel"))
            .bearer_auth("wrong")
            .json(&request(better))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    });

    // A real duel: progress streamed, a crowning verdict.
    let mut batches = 0;
    let verdict = remote_duel(
        &url,
        &token,
        &request(better),
        Duration::from_secs(120),
        &mut |_| {
            batches += 1;
            true
        },
    )
    .unwrap();
    assert!(verdict.outcome.decision.is_crown(), "{:?}", verdict.outcome);
    assert!(batches >= 1);
    assert_eq!(verdict.challenger.digest, better);

    // The verdict answers its request; one that does not — another challenger, another seed,
    // another competition, a decision that does not follow from its own losses — is refused
    // with the field named.
    check_worker_verdict(&request(better), &competition, &verdict).unwrap();
    // King-loss reuse on the worker: a request naming a reign pool gets a verdict that records
    // it; a verdict that ignored the pool (or used one the request did not name) is refused.
    let mut pooled = request(better);
    pooled.king_pool = Some(koth_validator::event::PoolSpec {
        seed_material: "koth/reign-pool/1\nworker test\nreign 0".into(),
        batches: competition.duel.n_max.div_ceil(competition.duel.batch_size),
    });
    let pooled_verdict = remote_duel(&url, &token, &pooled, Duration::from_secs(120), &mut |_| {
        true
    })
    .unwrap();
    let record = pooled_verdict
        .king_pool
        .clone()
        .expect("the pool is recorded");
    assert_eq!(
        record.seed_material,
        pooled.king_pool.as_ref().unwrap().seed_material
    );
    check_worker_verdict(&pooled, &competition, &pooled_verdict).unwrap();
    let e = check_worker_verdict(&pooled, &competition, &verdict)
        .unwrap_err()
        .to_string();
    assert!(e.contains("king pool"), "{e}");
    let e = check_worker_verdict(&request(better), &competition, &pooled_verdict)
        .unwrap_err()
        .to_string();
    assert!(e.contains("king pool"), "{e}");
    let other_request = request(same);
    let e = check_worker_verdict(&other_request, &competition, &verdict)
        .unwrap_err()
        .to_string();
    assert!(e.contains("challenger digest"), "{e}");
    let mut reseeded = request(better);
    reseeded.seed.hotkey = "5Other".into();
    let e = check_worker_verdict(&reseeded, &competition, &verdict)
        .unwrap_err()
        .to_string();
    assert!(e.contains("seed material"), "{e}");
    let mut other_game = verdict.clone();
    other_game.competition_sha256 = Some(koth_core::Digest::of(b"another competition"));
    let e = check_worker_verdict(&request(better), &competition, &other_game)
        .unwrap_err()
        .to_string();
    assert!(e.contains("competition sha256"), "{e}");
    let mut flipped = verdict.clone();
    flipped.outcome.decision =
        koth_core::verdict::Decision::KeepKing(koth_core::verdict::KeepReason::NMax);
    let e = check_worker_verdict(&request(better), &competition, &flipped)
        .unwrap_err()
        .to_string();
    assert!(e.contains("decision"), "{e}");
    let mut tampered = verdict.clone();
    tampered.windows.challenger[0] -= 0.5;
    assert!(check_worker_verdict(&request(better), &competition, &tampered).is_err());

    // One at a time: while a long duel runs, another is 409; DELETE cancels it.
    // The long duel's first progress report says it is running: wait for that, not a fixed time.
    let (running_tx, running_rx) = std::sync::mpsc::channel();
    let long = {
        let (url, token, req) = (url.clone(), token.clone(), request(same));
        std::thread::spawn(move || {
            remote_duel(&url, &token, &req, Duration::from_secs(120), &mut |_| {
                let _ = running_tx.send(());
                true
            })
        })
    };
    running_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the long duel reports progress");
    rt.block_on(async {
        let c = reqwest::Client::new();
        let mut busy = false;
        for _ in 0..50 {
            let r = c
                .post(format!("{url}/duel"))
                .bearer_auth(&token)
                .json(&request(better))
                .send()
                .await
                .unwrap();
            if r.status() == 409 {
                busy = true;
                break;
            }
            // The long duel had not started yet and this one ran; try again.
            let _ = r.bytes().await;
        }
        assert!(busy, "a second duel was accepted while one was running");
        let r = c
            .delete(format!("{url}/duel"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    });
    let cancelled = long.join().unwrap();
    assert!(
        cancelled.is_err(),
        "a cancelled duel must not give a verdict"
    );

    // A worker that is not there: an error (the validator's infra fault), not a verdict.
    let gone = remote_duel(
        "http://127.0.0.1:9",
        &token,
        &request(better),
        Duration::from_secs(5),
        &mut |_| true,
    );
    assert!(matches!(gone, Err(DuelFailure::Infra(_))), "{gone:?}");

    // The real shell against a worker that answers with a verdict for another duel: the
    // mismatch is our infra fault (logged, the entry re-queued), never the miner's verdict.
    let stale = serde_json::to_string(&serde_json::json!({ "verdict": verdict })).unwrap() + "\n";
    let liar = axum::Router::new().route(
        "/duel",
        axum::routing::post(move || {
            let body = stale.clone();
            async move { body }
        }),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let liar_url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, liar).await.unwrap() });
    let config = std::fs::read_to_string(&net.config_path).unwrap().replace(
        "worker = \"in-process\"",
        &format!("worker = \"{liar_url}\"\ntoken = \"t\""),
    );
    std::fs::write(&net.config_path, config).unwrap();
    let chain = EmbeddedChain::open(&net.chain_path).unwrap();
    let miner = key(60);
    register(&chain, &miner).unwrap();
    chain
        .commit(&miner, &payload(&net.store_url, &same, &miner))
        .unwrap();
    let mut shell = Shell::open(ValidatorConfig::load(&net.config_path).unwrap()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let reason = loop {
        shell.step().unwrap();
        let mut fault = None;
        shell
            .journal()
            .log()
            .replay(|e| {
                if let Event::InfraFault { reason, .. } = &e.event {
                    fault = Some(reason.clone());
                }
                Ok(())
            })
            .unwrap();
        if let Some(r) = fault {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no infra fault was recorded"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        reason.contains("does not answer the request") && reason.contains("challenger digest"),
        "{reason}"
    );
    let s = shell.journal().state();
    assert!(
        s.history.is_empty(),
        "the entry was answered: {:?}",
        s.history
    );
    assert_eq!(s.counters.duels_finished, 0);
}
