//! The private holdout end to end: a competition whose duel data is a private source with a
//! committed root. `validator.toml`'s `[data] holdout_secret_file` is checked at start (needed,
//! readable, non-empty, matching the committed root); the shell passes the secret to its duels,
//! a better challenger is crowned on private windows, and the verdict record says that a
//! private source was used without containing the secret.

use std::path::Path;
use std::time::{Duration, Instant};

use koth_chain::{Chain, EmbeddedChain};
use koth_core::Digest;
use koth_data::bundle::{Bundle, SourceSpec};
use koth_data::Dataset;
use koth_validator::devkit::{self, key, payload, put, register, TinyNet, TinyOptions};
use koth_validator::event::Outcome;
use koth_validator::{Shell, ValidatorConfig};

const SECRET: &str = "5f1e0c7a9b3d42e8a6c1f0b7d9e3a2c4-devnet-test-secret\n";

/// A tiny network whose only data source is private, with the holdout root committed in the
/// competition file. Returns the network and the committed root.
fn private_network(root: &Path) -> (TinyNet, Digest) {
    let opts = TinyOptions::default();
    let net = devkit::tiny_network(root, &opts).unwrap();
    // Re-bundle the synthetic source as private.
    let private_bundle = root.join("data/private-bundle.json");
    let bundle = Bundle::build(
        &private_bundle,
        &[SourceSpec {
            name: "synthetic".into(),
            manifest: root.join("data/synthetic"),
            weight: 1,
            private: true,
        }],
    )
    .unwrap();
    bundle.write_new(&private_bundle).unwrap();
    let secret_path = root.join("holdout-secret");
    std::fs::write(&secret_path, SECRET).unwrap();
    let ds = Dataset::open(&private_bundle).unwrap();
    let committed = koth_data::holdout::commit_root(&ds, SECRET.as_bytes()).unwrap();
    // The same game on the bundle with the private source, its holdout root committed.
    let text = std::fs::read_to_string(&net.competition_path).unwrap();
    let mut file = koth_core::competition::Competition::from_toml_str(&text)
        .unwrap()
        .to_file();
    file.data.bundle = "data/private-bundle.json".into();
    file.data.bundle_sha256 = bundle.sha256();
    file.data.holdout = koth_core::competition::HoldoutPolicy::Private { root: committed };
    let competition = file.to_toml().unwrap();
    assert!(competition.contains("policy = \"private\""));
    std::fs::write(&net.competition_path, competition).unwrap();
    (net, committed)
}

fn with_secret_line(net: &TinyNet, line: &str) {
    let text = std::fs::read_to_string(&net.config_path).unwrap();
    let text = match text.find("\n[data]\n") {
        Some(i) => text[..i + 1].to_string(),
        None => text,
    };
    std::fs::write(&net.config_path, format!("{text}\n[data]\n{line}\n")).unwrap();
}

fn load_error(net: &TinyNet) -> String {
    ValidatorConfig::load(&net.config_path)
        .err()
        .unwrap_or_else(|| panic!("the config must be refused"))
        .to_string()
}

#[test]
fn the_holdout_secret_is_required_checked_against_the_root_and_never_shown() {
    let tmp = tempfile::tempdir().unwrap();
    let (net, committed) = private_network(tmp.path());

    // No secret for a private bundle: refused, naming the key.
    let e = load_error(&net);
    assert!(e.contains("data.holdout_secret_file"), "{e}");
    assert!(e.contains("private source"), "{e}");

    // A file that is not there.
    with_secret_line(&net, "holdout_secret_file = \"no-such-secret\"");
    let e = load_error(&net);
    assert!(
        e.contains("data.holdout_secret_file") && e.contains("no-such-secret"),
        "{e}"
    );

    // An empty file.
    std::fs::write(tmp.path().join("empty-secret"), b"").unwrap();
    with_secret_line(&net, "holdout_secret_file = \"empty-secret\"");
    let e = load_error(&net);
    assert!(e.contains("empty"), "{e}");

    // The wrong secret: its root is not the committed one.
    std::fs::write(tmp.path().join("wrong-secret"), b"not the secret").unwrap();
    with_secret_line(&net, "holdout_secret_file = \"wrong-secret\"");
    let e = load_error(&net);
    assert!(
        e.contains("holdout") && e.contains(&committed.to_string()),
        "{e}"
    );

    // An unknown key in [data] is refused too.
    with_secret_line(&net, "holdout_secret = \"inline\"");
    let e = load_error(&net);
    assert!(e.contains("holdout_secret"), "{e}");

    // The right one.
    with_secret_line(&net, "holdout_secret_file = \"holdout-secret\"");
    let cfg = ValidatorConfig::load(&net.config_path).unwrap();
    let h = cfg.holdout_secret.as_ref().expect("the secret is loaded");
    assert_eq!(h.root, committed);
    assert_eq!(h.private_sources, vec!["synthetic".to_string()]);
    assert_eq!(h.bytes(), SECRET.as_bytes());
    let shown = format!("{cfg:?}");
    assert!(!shown.contains(SECRET.trim()), "Debug leaks the secret");
}

#[test]
fn a_secret_for_a_bundle_without_private_sources_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let net = devkit::tiny_network(tmp.path(), &TinyOptions::default()).unwrap();
    std::fs::write(tmp.path().join("holdout-secret"), SECRET).unwrap();
    with_secret_line(&net, "holdout_secret_file = \"holdout-secret\"");
    let e = load_error(&net);
    assert!(e.contains("no private source"), "{e}");
}

#[test]
fn duels_on_a_private_holdout_use_the_secret_and_the_verdict_records_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (net, committed) = private_network(tmp.path());
    with_secret_line(&net, "holdout_secret_file = \"holdout-secret\"");
    let chain = EmbeddedChain::open(&net.chain_path).unwrap();
    let better_dir = tmp.path().join("better");
    devkit::train_better(&net.king_dir, &better_dir, 30, 32).unwrap();
    let better = put(&net.store_url, &better_dir).unwrap();
    let miner = key(40);
    register(&chain, &miner).unwrap();
    chain
        .commit(&miner, &payload(&net.store_url, &better, &miner))
        .unwrap();

    let cfg = ValidatorConfig::load(&net.config_path).unwrap();
    let mut shell = Shell::open(cfg).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while shell.journal().state().history.is_empty() {
        shell.step().unwrap();
        assert!(Instant::now() < deadline, "no verdict within 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = shell.journal().state();
    let finished = &s.history[0];
    let Outcome::Dueled { verdict, crowned } = &finished.outcome else {
        panic!("not dueled: {:?}", finished.outcome)
    };
    assert!(crowned.is_some(), "the better challenger was not crowned");
    assert_eq!(s.king().map(|k| k.digest), Some(better));
    let bytes = std::fs::read(&verdict.verdict_path).unwrap();
    assert_eq!(Digest::of(&bytes), verdict.verdict_digest);
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        !text.contains(SECRET.trim()),
        "the verdict leaks the secret"
    );
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    let holdout = &record["private_holdout"];
    assert_eq!(holdout["sources"], serde_json::json!(["synthetic"]));
    assert_eq!(holdout["root"], committed.to_string());
    assert_eq!(holdout["windows"], serde_json::json!(verdict.n));
    // Still a valid verdict record for readers of the type.
    let parsed: koth_core::verdict::Verdict = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed.outcome.n_used, verdict.n);

    // Anyone holding the data (and, once the pool retires, the published secret) replays the
    // validator's verdict with `koth duel replay`'s driver, bit for bit.
    koth_duel::duel::check_verdict(&parsed).unwrap();
    assert_eq!(
        (
            parsed.scoring.device.as_str(),
            parsed.scoring.dtype.as_str()
        ),
        ("cpu", "f32")
    );
    let load = |path: &Option<String>| {
        let dir = path
            .as_deref()
            .expect("the verdict records the model's path");
        koth_model::Model::load(
            Path::new(dir),
            koth_model::DType::F32,
            &koth_model::Device::Cpu,
        )
        .unwrap()
    };
    let bundle = parsed
        .sample
        .bundle_path
        .as_deref()
        .expect("bundle path recorded");
    let dataset = Dataset::open(Path::new(bundle)).unwrap();
    let replay = |secret: Option<&[u8]>| {
        koth_duel::duel::run_duel(
            &dataset,
            &koth_duel::duel::setup_of(&parsed),
            &mut koth_duel::score::ModelScorer::new(load(&parsed.king.path)),
            &mut koth_duel::score::ModelScorer::new(load(&parsed.challenger.path)),
            secret,
            &mut koth_duel::duel::ProgressFn(|_: &koth_duel::duel::Progress| true),
        )
    };
    let again = replay(Some(SECRET.as_bytes())).unwrap();
    let differences = koth_duel::duel::compare(&parsed, &again);
    assert!(differences.is_empty(), "replay differs: {differences:?}");
    // Without the secret the private windows cannot be drawn again.
    match replay(None) {
        Err(_) => {}
        Ok(v) => assert!(
            !koth_duel::duel::compare(&parsed, &v).is_empty(),
            "a replay without the secret reproduced the private windows"
        ),
    }
}
