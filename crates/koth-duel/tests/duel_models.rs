//! Real duels on a CPU: tiny models on a synthetic bundle, through the same driver a validator
//! runs.

use koth_core::verdict::{Decision, DuelModel, EffectFloor, RuleSpec, ScoringSetup, Verdict};
use koth_core::Digest;
use koth_data::Dataset;
use std::ops::ControlFlow;

use koth_duel::duel::{
    compare, run_duel, setup_of, DuelError, DuelSetup, DuelSink, ProgressFn, Stop,
};
use koth_duel::score::ModelScorer;
use koth_duel::stats::SequentialParams;
use koth_duel::toy;
use koth_model::Model;

const SEQ_LEN: u32 = 32;

fn setup(rule: RuleSpec, floor: EffectFloor) -> DuelSetup {
    DuelSetup {
        competition_sha256: None,
        king: DuelModel {
            digest: Digest::of(b"king"),
            path: None,
        },
        challenger: DuelModel {
            digest: Digest::of(b"challenger"),
            path: None,
        },
        seed_material: "block 0xabc | hotkey 5F...".into(),
        seq_len: SEQ_LEN,
        rule,
        effect_floor: floor,
        batch_size: 32,
        scoring: ScoringSetup {
            dtype: "f32".into(),
            device: "cpu".into(),
            batch_size: 32,
            path: ModelScorer::PATH.into(),
        },
        bundle_path: None,
    }
}

fn sequential(n_max: u64) -> RuleSpec {
    let mut p = SequentialParams::with_defaults(0.001, 0.0, n_max);
    p.min_n = 64;
    p.spec()
}

fn duel(dataset: &Dataset, s: &DuelSetup, king: &Model, challenger: &Model) -> Verdict {
    let mut batches = 0;
    let v = run_duel(
        dataset,
        s,
        &mut ModelScorer::new(king.clone()),
        &mut ModelScorer::new(challenger.clone()),
        None,
        &mut ProgressFn(|p: &koth_duel::duel::Progress| {
            batches += 1;
            assert_eq!(p.batch, batches);
            true
        }),
    )
    .unwrap();
    assert_eq!(
        v.bounds.len(),
        batches as usize,
        "progress is reported per batch"
    );
    v
}

#[test]
fn a_model_against_itself_is_never_crowned() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = toy::write_toy_bundle(dir.path(), 12_000, 1).unwrap();
    let dataset = Dataset::open(&bundle).unwrap();
    let king = toy::toy_model(1).unwrap();
    for (rule, floor) in [
        (sequential(512), EffectFloor::Absolute { nats: 0.0 }),
        (sequential(512), EffectFloor::Absolute { nats: 0.01 }),
        (sequential(512), EffectFloor::Relative { fraction: 0.001 }),
        (
            RuleSpec::Bootstrap {
                alpha: 0.001,
                n: 256,
                resamples: 1000,
                futility: Some(koth_duel::stats::bootstrap::TEUTONIC_FUTILITY),
            },
            EffectFloor::Absolute { nats: 0.0 },
        ),
    ] {
        let v = duel(&dataset, &setup(rule, floor), &king, &king);
        assert!(
            !v.outcome.decision.is_crown(),
            "{rule:?} {floor:?}: {:?}",
            v.outcome
        );
        assert!(matches!(v.outcome.decision, Decision::KeepKing(_)));
        assert_eq!(v.outcome.mu_hat, 0.0);
        assert!(v
            .windows
            .king
            .iter()
            .zip(&v.windows.challenger)
            .all(|(a, b)| a == b));
    }
}

#[test]
fn a_challenger_trained_further_is_crowned_and_the_verdict_replays_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = toy::write_toy_bundle(dir.path(), 12_000, 2).unwrap();
    let dataset = Dataset::open(&bundle).unwrap();
    let king = toy::toy_model(3).unwrap();
    let challenger = toy::train_further(&king, 30, 8, SEQ_LEN as usize, 1e-2, 99).unwrap();
    let s = setup(sequential(512), EffectFloor::Relative { fraction: 0.001 });
    let v = duel(&dataset, &s, &king, &challenger);
    assert_eq!(v.outcome.decision, Decision::Crown, "{:?}", v.outcome);
    assert!(v.outcome.mu_hat > 0.1, "{:?}", v.outcome);
    assert!(
        v.outcome.n_used < 512,
        "a clear win stops early: {:?}",
        v.outcome
    );
    assert_eq!(v.per_source.len(), 2);
    assert!(v.per_source.iter().all(|p| p.mean_diff > 0.0 && p.n > 0));
    assert_eq!(
        v.per_source.iter().map(|p| p.n).sum::<u64>(),
        v.outcome.n_used
    );
    assert_eq!(v.sample.shards.len(), 4);
    assert_eq!(v.sample.bundle_sha256, dataset.bundle_sha256());
    koth_duel::duel::check_verdict(&v).unwrap();

    // Through JSON and back, then replayed: identical, bit for bit.
    let json = serde_json::to_string_pretty(&v).unwrap();
    let recorded: Verdict = serde_json::from_str(&json).unwrap();
    let again = duel(&dataset, &setup_of(&recorded), &king, &challenger);
    assert_eq!(compare(&recorded, &again), Vec::<String>::new());

    // A replay against another challenger differs, and says where.
    let other = toy::train_further(&king, 5, 8, SEQ_LEN as usize, 1e-2, 7).unwrap();
    let different = duel(&dataset, &setup_of(&recorded), &king, &other);
    let diffs = compare(&recorded, &different);
    assert!(
        diffs
            .iter()
            .any(|d| d.starts_with("challenger losses differ")),
        "{diffs:?}"
    );
}

#[test]
fn the_bootstrap_rule_crowns_the_trained_challenger_at_its_fixed_n() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = toy::write_toy_bundle(dir.path(), 12_000, 4).unwrap();
    let dataset = Dataset::open(&bundle).unwrap();
    let king = toy::toy_model(5).unwrap();
    let challenger = toy::train_further(&king, 30, 8, SEQ_LEN as usize, 1e-2, 11).unwrap();
    let rule = RuleSpec::Bootstrap {
        alpha: 0.001,
        n: 200,
        resamples: 2000,
        futility: Some(koth_duel::stats::bootstrap::TEUTONIC_FUTILITY),
    };
    let v = duel(
        &dataset,
        &setup(rule, EffectFloor::Absolute { nats: 0.01 }),
        &king,
        &challenger,
    );
    assert_eq!(v.outcome.decision, Decision::Crown);
    assert_eq!(v.outcome.n_used, 200);
    assert!(v.outcome.lower.unwrap() > 0.01);
    assert!(v.bootstrap_seed.is_some());
}

#[test]
fn a_duel_can_be_cancelled_between_batches() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = toy::write_toy_bundle(dir.path(), 12_000, 6).unwrap();
    let dataset = Dataset::open(&bundle).unwrap();
    let king = toy::toy_model(1).unwrap();
    let s = setup(sequential(512), EffectFloor::Absolute { nats: 0.0 });
    let err = run_duel(
        &dataset,
        &s,
        &mut ModelScorer::new(king.clone()),
        &mut ModelScorer::new(king),
        None,
        &mut ProgressFn(|p: &koth_duel::duel::Progress| p.batch < 2),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            DuelError::Stopped {
                stop: Stop::Cancelled,
                windows: 64
            }
        ),
        "{err}"
    );
}

/// A sink whose deadline has passed before the first batch.
struct PastDeadline;

impl DuelSink for PastDeadline {
    type Error = std::convert::Infallible;
    fn before_batch(&mut self, _: u64) -> Result<ControlFlow<Stop>, Self::Error> {
        Ok(ControlFlow::Break(Stop::DeadlinePassed))
    }
    fn on_batch(
        &mut self,
        _: &koth_duel::duel::Progress,
    ) -> Result<ControlFlow<Stop>, Self::Error> {
        panic!("no batch may be scored after the deadline");
    }
}

#[test]
fn a_sink_stops_a_duel_at_its_deadline_before_scoring() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = toy::write_toy_bundle(dir.path(), 12_000, 6).unwrap();
    let dataset = Dataset::open(&bundle).unwrap();
    let king = toy::toy_model(1).unwrap();
    let s = setup(sequential(512), EffectFloor::Absolute { nats: 0.0 });
    let err = run_duel(
        &dataset,
        &s,
        &mut ModelScorer::new(king.clone()),
        &mut ModelScorer::new(king),
        None,
        &mut PastDeadline,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            DuelError::Stopped {
                stop: Stop::DeadlinePassed,
                windows: 0
            }
        ),
        "{err}"
    );
    assert_eq!(err.blames(), None);
}
