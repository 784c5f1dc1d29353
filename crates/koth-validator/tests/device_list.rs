//! `[eval] device` as a list of devices: checked at start with errors naming the key, and a duel
//! on several devices (virtual ones: the CPU named more than once) gives the verdict of the duel
//! on one device: the same windows, the same per-window losses bit for bit, the same decision.

use koth_core::competition::Competition;
use koth_data::Dataset;
use koth_duel::duel::ProgressFn;
use koth_validator::devkit::{self, put, TinyNet, TinyOptions};
use koth_validator::duel_run::{run_duel, DuelSetup};
use koth_validator::event::SeedMaterial;
use koth_validator::ValidatorConfig;

fn with_device(net: &TinyNet, device: &str) {
    let text = std::fs::read_to_string(&net.config_path).unwrap();
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("device = ") {
                format!("device = \"{device}\"")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("device = ")).count(),
        1
    );
    std::fs::write(&net.config_path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn eval_device_takes_a_list_and_refuses_a_bad_entry_by_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let net = devkit::tiny_network(tmp.path(), &TinyOptions::default()).unwrap();
    with_device(&net, "cpu, cpu");
    let cfg = ValidatorConfig::load(&net.config_path).unwrap();
    assert_eq!(cfg.device, "cpu, cpu");
    for (bad, needle) in [
        ("cpu,,cpu", "entry 2 is empty"),
        ("cpu,gpu7", "`gpu7` is not one of cpu, cuda, cuda:N"),
    ] {
        with_device(&net, bad);
        let e = ValidatorConfig::load(&net.config_path)
            .err()
            .unwrap_or_else(|| panic!("{bad} must be refused"))
            .to_string();
        assert!(
            e.contains("eval.device") && e.contains(needle),
            "{bad}: {e}"
        );
    }
}

#[test]
fn a_duel_on_a_device_list_gives_the_one_device_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = TinyOptions {
        seq_len: 64,
        n_max: 256,
        batch_size: 32,
        tokens: 300_000,
        ..TinyOptions::default()
    };
    let net = devkit::tiny_network(tmp.path(), &opts).unwrap();
    let competition =
        Competition::from_toml_bytes(&std::fs::read(&net.competition_path).unwrap()).unwrap();
    let dataset = Dataset::open(&net.bundle_path).unwrap();
    let better_dir = tmp.path().join("better");
    devkit::train_better(&net.king_dir, &better_dir, 10, 64).unwrap();
    let better = put(&net.store_url, &better_dir).unwrap();
    let seed = SeedMaterial {
        competition_sha256: competition.sha256(),
        reveal_block_hash: "sha256:00".into(),
        hotkey: "5Test".into(),
    };
    let duel = |device: &str| {
        let setup = DuelSetup {
            competition: &competition,
            dataset: &dataset,
            bundle_path: &net.bundle_path,
            device,
            dtype: "f32",
            holdout_secret: None,
            king_pool: None,
        };
        run_duel(
            &setup,
            (&net.king, &net.king_dir),
            (&better, &better_dir),
            &seed,
            &mut ProgressFn(|_: &koth_duel::duel::Progress| true),
        )
        .unwrap()
    };
    let one = duel("cpu");
    let bits = |xs: &[f32]| xs.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    // Two devices: one whole model on each (disjoint). Three: still one stage per model (two
    // layers cannot be cut in three). Four: each model in two stages, king on devices 0–1,
    // challenger on 2–3.
    for devices in ["cpu,cpu", "cpu,cpu,cpu", "cpu,cpu,cpu,cpu"] {
        let many = duel(devices);
        assert_eq!(many.scoring.device, devices);
        assert_eq!(many.sample.sample_digest, one.sample.sample_digest);
        assert_eq!(
            bits(&many.windows.king),
            bits(&one.windows.king),
            "{devices}"
        );
        assert_eq!(
            bits(&many.windows.challenger),
            bits(&one.windows.challenger),
            "{devices}"
        );
        assert_eq!(many.windows.digest, one.windows.digest);
        assert_eq!(many.outcome.decision, one.outcome.decision);
    }
    // What "cpu,cpu,cpu,cpu" places: two stages per model.
    let devices = koth_model::parse_devices("cpu,cpu,cpu,cpu").unwrap();
    for side in [
        koth_model::placement::KING,
        koth_model::placement::CHALLENGER,
    ] {
        let m = koth_model::placement::load_for_duel(
            &net.king_dir,
            koth_model::DType::F32,
            &devices,
            side,
            64,
        )
        .unwrap();
        assert_eq!(m.placement().len(), 2, "side {side}");
    }
}
