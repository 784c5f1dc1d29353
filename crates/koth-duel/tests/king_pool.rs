//! King-loss reuse: the king is scored once on a reign pool, each duel scores only the
//! challenger on whole pool batches. Real tiny models on a synthetic bundle, on the CPU.

use koth_core::verdict::{Decision, DuelModel, EffectFloor, ScoringSetup, Verdict};
use koth_core::Digest;
use koth_data::Dataset;

use koth_duel::duel::{compare, run_duel_pooled, DuelSetup, ProgressFn};
use koth_duel::pool::KingPool;
use koth_duel::score::{ModelScorer, ScoreError, WindowScorer};
use koth_duel::stats::SequentialParams;
use koth_duel::toy;
use koth_model::Model;

const SEQ_LEN: u32 = 32;
const BATCH: u32 = 32;

fn setup(king: Digest, seed: &str, n_max: u64) -> DuelSetup {
    let mut p = SequentialParams::with_defaults(0.001, 0.0, n_max);
    p.min_n = 64;
    DuelSetup {
        competition_sha256: None,
        king: DuelModel {
            digest: king,
            path: None,
        },
        challenger: DuelModel {
            digest: Digest::of(b"challenger"),
            path: None,
        },
        seed_material: seed.into(),
        seq_len: SEQ_LEN,
        rule: p.spec(),
        effect_floor: EffectFloor::Relative { fraction: 0.001 },
        batch_size: BATCH,
        scoring: ScoringSetup {
            dtype: "f32".into(),
            device: "cpu".into(),
            batch_size: BATCH,
            path: ModelScorer::PATH.into(),
        },
        bundle_path: None,
    }
}

/// Counts the windows it is asked to score.
struct Counting<'a> {
    inner: ModelScorer,
    windows: &'a mut usize,
}

impl WindowScorer for Counting<'_> {
    fn score(
        &mut self,
        tokens: &[u32],
        rows: usize,
        seq_len: usize,
    ) -> Result<Vec<f32>, ScoreError> {
        *self.windows += rows;
        self.inner.score(tokens, rows, seq_len)
    }
}

fn pool(dataset: &Dataset, king: &Model, king_digest: Digest, batches: u32) -> KingPool {
    KingPool::score(
        dataset,
        "crowning block 0x01",
        None,
        king_digest,
        &mut ModelScorer::new(king.clone()),
        batches,
        BATCH,
        SEQ_LEN,
    )
    .unwrap()
}

fn pooled(dataset: &Dataset, s: &DuelSetup, pool: &KingPool, challenger: &Model) -> Verdict {
    run_duel_pooled(
        dataset,
        s,
        pool,
        &mut ModelScorer::new(challenger.clone()),
        &mut ProgressFn(|_: &koth_duel::duel::Progress| true),
    )
    .unwrap()
}

#[test]
fn a_pooled_duel_scores_only_the_challenger_and_its_king_losses_are_the_kings_own() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = toy::write_toy_bundle(dir.path(), 12_000, 2).unwrap();
    let dataset = Dataset::open(&bundle).unwrap();
    let king = toy::toy_model(3).unwrap();
    let king_digest = Digest::of(b"king");
    let challenger = toy::train_further(&king, 30, 8, SEQ_LEN as usize, 1e-2, 99).unwrap();
    let pool = pool(&dataset, &king, king_digest, 16);
    assert_eq!(pool.windows.len(), 16 * BATCH as usize);

    let s = setup(king_digest, "duel seed A", 512);
    let mut challenger_windows = 0;
    let v = run_duel_pooled(
        &dataset,
        &s,
        &pool,
        &mut Counting {
            inner: ModelScorer::new(challenger.clone()),
            windows: &mut challenger_windows,
        },
        &mut ProgressFn(|_: &koth_duel::duel::Progress| true),
    )
    .unwrap();
    assert_eq!(v.outcome.decision, Decision::Crown, "{:?}", v.outcome);
    // Only the challenger was scored, and only on whole pool batches.
    assert_eq!(challenger_windows as u64 % u64::from(BATCH), 0);
    assert!(challenger_windows as u64 >= v.outcome.n_used);
    let record = v.king_pool.clone().expect("the verdict records the pool");
    assert_eq!(record.digest, pool.digest);
    assert_eq!(record.batch_order.len(), v.bounds.len());

    // Each king loss taken from the pool is exactly what scoring the king now, on that pool
    // batch in its layout, gives: the king's side of a pooled duel is the king's own.
    let mut king_scorer = ModelScorer::new(king.clone());
    for (i, &b) in record.batch_order.iter().enumerate() {
        let tokens = dataset.read_windows(pool.batch_windows(b)).unwrap();
        let live = king_scorer
            .score(&tokens, BATCH as usize, SEQ_LEN as usize)
            .unwrap();
        let start = i * BATCH as usize;
        let used = (v.windows.king.len() - start).min(BATCH as usize);
        let recorded = &v.windows.king[start..start + used];
        assert!(
            recorded
                .iter()
                .zip(&live)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "pool batch {b}"
        );
    }

    // Two duels of one reign draw different batches by their own seeds, from the same pool.
    let other = pooled(
        &dataset,
        &setup(king_digest, "duel seed B", 512),
        &pool,
        &challenger,
    );
    assert_ne!(
        other.king_pool.as_ref().unwrap().batch_order,
        record.batch_order
    );
    assert_eq!(other.king_pool.as_ref().unwrap().digest, pool.digest);
}

#[test]
fn a_pooled_verdict_replays_bit_for_bit_from_a_rebuilt_pool() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = toy::write_toy_bundle(dir.path(), 12_000, 4).unwrap();
    let dataset = Dataset::open(&bundle).unwrap();
    let king = toy::toy_model(5).unwrap();
    let king_digest = Digest::of(b"king");
    let challenger = toy::train_further(&king, 10, 8, SEQ_LEN as usize, 1e-2, 7).unwrap();
    let first = pool(&dataset, &king, king_digest, 8);
    let s = setup(king_digest, "duel seed", 256);
    let v = pooled(&dataset, &s, &first, &challenger);
    let json = serde_json::to_string(&v).unwrap();
    let recorded: Verdict = serde_json::from_str(&json).unwrap();

    let rebuilt = pool(&dataset, &king, king_digest, 8);
    rebuilt
        .matches(recorded.king_pool.as_ref().unwrap())
        .unwrap();
    let again = pooled(&dataset, &s, &rebuilt, &challenger);
    assert_eq!(compare(&recorded, &again), Vec::<String>::new());

    // A crafted pool record is refused before anything is allocated or scored.
    koth_duel::duel::check_verdict(&recorded).unwrap();
    let mut huge = recorded.clone();
    huge.king_pool.as_mut().unwrap().windows = u64::MAX - u64::MAX % u64::from(BATCH);
    let err = koth_duel::duel::check_verdict(&huge).unwrap_err();
    assert_eq!(err.field, "king_pool.windows", "{err}");
    let mut outside = recorded.clone();
    outside.king_pool.as_mut().unwrap().batch_order[0] = 8;
    let err = koth_duel::duel::check_verdict(&outside).unwrap_err();
    assert_eq!(err.field, "king_pool.batch_order", "{err}");
    let err = KingPool::score(
        &dataset,
        "s",
        None,
        king_digest,
        &mut ModelScorer::new(king.clone()),
        u32::MAX,
        BATCH,
        SEQ_LEN,
    )
    .unwrap_err();
    assert!(err.to_string().contains("at most"), "{err}");

    // A pool scored by another king is refused by its digest, before any duel.
    let impostor = toy::toy_model(6).unwrap();
    let wrong = pool(&dataset, &impostor, king_digest, 8);
    let err = wrong
        .matches(recorded.king_pool.as_ref().unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("pool digest"), "{err}");
}

#[test]
fn a_pool_refuses_a_duel_it_cannot_serve() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = toy::write_toy_bundle(dir.path(), 12_000, 1).unwrap();
    let dataset = Dataset::open(&bundle).unwrap();
    let king = toy::toy_model(1).unwrap();
    let king_digest = Digest::of(b"king");
    let small = pool(&dataset, &king, king_digest, 2);
    // The rule may need 512 windows; the pool holds 64.
    let err = small
        .check_fits(&setup(king_digest, "s", 512))
        .unwrap_err()
        .to_string();
    assert!(err.contains("the pool has 2 batches"), "{err}");
    // Another king's duel.
    let err = small
        .check_fits(&setup(Digest::of(b"someone else"), "s", 64))
        .unwrap_err()
        .to_string();
    assert!(err.contains("scored by king"), "{err}");
}
