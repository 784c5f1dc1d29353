//! The remote eval worker over real HTTP: bearer token required, one duel at a time, progress
//! streamed, cancellable; the client reports every failure as an error (an infra fault for the
//! validator), never as a verdict.

use std::time::Duration;

use koth_core::competition::Competition;
use koth_validator::devkit::{self, put, TinyOptions};
use koth_validator::event::SeedMaterial;
use koth_validator::worker::{remote_duel, worker_router, DuelRequest, WorkerConfig};

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

    // One at a time: while a long duel runs, another is 409; DELETE cancels it.
    let long = {
        let (url, token, req) = (url.clone(), token.clone(), request(same));
        std::thread::spawn(move || {
            remote_duel(&url, &token, &req, Duration::from_secs(120), &mut |_| true)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
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
    assert!(gone.is_err());
}
