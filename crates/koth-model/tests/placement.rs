//! Placement in the engine, the micro-batch pipeline and the streaming loader, on the CPU:
//! virtual stages (several stages on one device) run the multi-device code path, and must give
//! bit-identical losses to the one-stage model.

mod common;

use common::*;
use koth_model::{
    DType, Device, Model, OpPath, Pipeline, Placement, Schedule, ScoreOptions, TokenIds,
};

const DTYPES: [DType; 2] = [DType::F32, DType::BF16];

fn bits(xs: &[f32]) -> Vec<u32> {
    xs.iter().map(|x| x.to_bits()).collect()
}

fn cpus(n: usize) -> Vec<Device> {
    vec![Device::Cpu; n]
}

/// A qwen3_moe or dense model of `layers` layers with seeded random weights.
fn init_model(model_type: &str, layers: usize, dtype: DType) -> Model {
    let c = tiny_config_of(model_type, 96, layers, 6);
    Model::init(&c, 11, dtype, &Device::Cpu).unwrap()
}

fn pattern(rows: usize, cols: usize, vocab: u32) -> TokenIds {
    let ids = (0..rows * cols)
        .map(|i| ((i * 7919 + i / cols * 31) as u32) % vocab)
        .collect();
    TokenIds::new(ids, rows, cols).unwrap()
}

#[test]
fn two_virtual_stages_score_bit_identically_to_one() {
    for name in FAMILIES {
        for dtype in DTYPES {
            let dir = golden_dir(name);
            let one = Model::load(&dir, dtype, &Device::Cpu).unwrap();
            let two = Placement::cut(2, &cpus(2), &[1]).unwrap();
            let placed = one.place(two.clone()).unwrap();
            let streamed = Model::load_placed(&dir, dtype, two).unwrap();
            assert_eq!(placed.placement().len(), 2);
            assert_eq!(streamed.placement().len(), 2);
            let ids = expected(name).ids;
            let want = one.sequence_losses(&ids).unwrap();
            for (how, m) in [("placed", &placed), ("streamed", &streamed)] {
                assert_eq!(
                    bits(&m.sequence_losses(&ids).unwrap()),
                    bits(&want),
                    "{name} {dtype:?} {how}: sequence losses"
                );
                for path in [OpPath::Fused, OpPath::Composite] {
                    let a = one.nll_with(&ids, path, ScoreOptions::default()).unwrap();
                    let b = m.nll_with(&ids, path, ScoreOptions::default()).unwrap();
                    assert_eq!(
                        bits(&flat_f32(&b)),
                        bits(&flat_f32(&a)),
                        "{name} {dtype:?} {how} {path:?}: per-token NLL"
                    );
                }
            }
        }
    }
}

#[test]
fn gradients_through_two_stages_equal_the_one_stage_gradients() {
    let name = "qwen3moe-tiny";
    let one = Model::load(&golden_dir(name), DType::F32, &Device::Cpu).unwrap();
    let two = one
        .place(Placement::cut(2, &cpus(2), &[1]).unwrap())
        .unwrap();
    let ids = expected(name).ids;
    let (la, ga) = one.loss_and_grads(&ids).unwrap();
    let (lb, gb) = two.loss_and_grads(&ids).unwrap();
    assert_eq!(la.to_bits(), lb.to_bits());
    assert_eq!(ga.len(), gb.len());
    for ((na, a), (nb, b)) in ga.iter().zip(&gb) {
        assert_eq!(na, nb);
        assert_eq!(bits(&flat_f32(a)), bits(&flat_f32(b)), "{na}");
    }
}

#[test]
fn the_pipeline_is_bit_identical_whatever_the_micro_batch_and_schedule() {
    // Golden models (2 layers, 3 sequences) on two virtual stages, and 5-layer models cut
    // unevenly into 2, 3 and 5 stages on a batch of 7. `golden` marks the acceptance configs.
    let mut cases: Vec<(String, bool, Model, TokenIds)> = Vec::new();
    for name in FAMILIES {
        for dtype in DTYPES {
            let m = Model::load(&golden_dir(name), dtype, &Device::Cpu).unwrap();
            cases.push((format!("{name} {dtype:?}"), true, m, expected(name).ids));
        }
    }
    for model_type in ["llama", "qwen2", "qwen3_moe"] {
        for dtype in DTYPES {
            let m = init_model(model_type, 5, dtype);
            let what = format!("{model_type} ×5 {dtype:?}");
            cases.push((what, false, m, pattern(7, 12, 96)));
        }
    }
    for (what, golden, one, ids) in &cases {
        let whole = one.sequence_losses(ids).unwrap();
        let layers = one.config().num_hidden_layers;
        let mut placements = vec![Placement::cut(layers, &cpus(2), &[1]).unwrap()];
        if layers == 5 {
            placements.push(Placement::cut(layers, &cpus(3), &[1, 4]).unwrap());
            placements.push(Placement::even(layers, &cpus(5)).unwrap());
        }
        for placement in placements {
            let stages = placement.len();
            let placed = one.place(placement).unwrap();
            for rows in 1..=ids.rows() + 1 {
                // The non-pipelined run: the same micro-batches scored one after another by
                // the one-stage model's own `sequence_losses`.
                let reference: Vec<f32> = koth_model::pipeline::micro_batches(ids, rows)
                    .unwrap()
                    .iter()
                    .flat_map(|mb| one.sequence_losses(mb).unwrap())
                    .collect();
                if *golden || rows >= ids.rows() {
                    // One micro-batch is the whole batch; and for the golden models the CPU's
                    // kernels give a row the same loss whatever rows score beside it (not so
                    // for every shape: a sparse layer's experts see other row counts, and the
                    // matmul may block them differently).
                    assert_eq!(bits(&reference), bits(&whole), "{what}: {rows} rows");
                }
                for schedule in [Schedule::Sequential, Schedule::Threads, Schedule::Auto] {
                    let pipeline = Pipeline {
                        micro_batch_rows: Some(rows),
                        schedule,
                    };
                    let got = placed
                        .sequence_losses_with(
                            ids,
                            placed.scoring_path(),
                            ScoreOptions::default(),
                            &pipeline,
                        )
                        .unwrap();
                    assert_eq!(
                        bits(&got),
                        bits(&reference),
                        "{what}: {stages} stages, {rows} rows per micro-batch, {schedule:?}"
                    );
                    // The one-stage model through the same micro-batches.
                    let single = one
                        .sequence_losses_with(
                            ids,
                            one.scoring_path(),
                            ScoreOptions::default(),
                            &pipeline,
                        )
                        .unwrap();
                    assert_eq!(bits(&single), bits(&reference), "{what}: one stage, {rows}");
                }
                // The model's own pipeline setting drives `sequence_losses`.
                let own = placed.clone().with_pipeline(Pipeline {
                    micro_batch_rows: Some(rows),
                    schedule: Schedule::Threads,
                });
                assert_eq!(bits(&own.sequence_losses(ids).unwrap()), bits(&reference));
            }
        }
    }
}

#[test]
fn the_pipeline_refuses_bad_ids_by_their_row_in_the_whole_batch() {
    let one = init_model("qwen3_moe", 4, DType::F32);
    let placed = one.place(Placement::even(4, &cpus(4)).unwrap()).unwrap();
    let mut raw = pattern(6, 8, 96).as_slice().to_vec();
    raw[5 * 8 + 3] = 96;
    let ids = TokenIds::new(raw, 6, 8).unwrap();
    for schedule in [Schedule::Sequential, Schedule::Threads] {
        let pipeline = Pipeline {
            micro_batch_rows: Some(2),
            schedule,
        };
        let e = placed
            .sequence_losses_with(&ids, OpPath::Fused, Default::default(), &pipeline)
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 5, position 3"), "{schedule:?}: {e}");
    }
}

#[test]
fn init_placed_makes_the_weights_of_init_on_their_stages() {
    for model_type in ["qwen2", "qwen3_moe"] {
        let one = init_model(model_type, 5, DType::BF16);
        let placement = Placement::cut(5, &cpus(3), &[2, 3]).unwrap();
        let placed = Model::init_placed(one.config(), 11, DType::BF16, placement).unwrap();
        assert_eq!(placed.placement().len(), 3);
        for ((na, a), (nb, b)) in one.named_tensors().iter().zip(placed.named_tensors()) {
            assert_eq!(na, &nb);
            assert_eq!(
                bits(&flat_f32(a)),
                bits(&flat_f32(&b)),
                "{model_type}: {nb}"
            );
        }
        let ids = pattern(4, 10, 96);
        assert_eq!(
            bits(&placed.sequence_losses(&ids).unwrap()),
            bits(&one.sequence_losses(&ids).unwrap())
        );
    }
}

fn error_of<T>(r: koth_model::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_placement_must_fit_the_model() {
    let one = Model::load(&golden_dir("qwen3-tiny"), DType::F32, &Device::Cpu).unwrap();
    let three = Placement::even(3, &cpus(3)).unwrap();
    let e = error_of(one.place(three.clone()));
    assert!(
        e.contains("cover 3 decoder layers") && e.contains("has 2"),
        "{e}"
    );
    let e = error_of(Model::load_placed(
        &golden_dir("qwen3-tiny"),
        DType::F32,
        three,
    ));
    assert!(e.contains("cover 3 decoder layers"), "{e}");
    // The Qwen3.5 hybrids run on one device only.
    let hybrid = Model::load(&golden_dir("qwen35-tiny"), DType::F32, &Device::Cpu).unwrap();
    let layers = hybrid.config().num_hidden_layers;
    let e = error_of(hybrid.place(Placement::even(layers, &cpus(2)).unwrap()));
    assert!(e.contains("not cut into stages"), "{e}");
    let same = hybrid
        .place(Placement::single(Device::Cpu, layers))
        .unwrap();
    let ids = expected("qwen35-tiny").ids;
    assert_eq!(
        bits(&same.sequence_losses(&ids).unwrap()),
        bits(&hybrid.sequence_losses(&ids).unwrap())
    );
}

#[test]
fn a_sharded_checkpoint_streams_into_two_stages_and_scores_like_the_unsharded_load() {
    for name in ["qwen2-tiny", "qwen3moe-tiny"] {
        for dtype in DTYPES {
            let dir = golden_dir(name);
            let one = Model::load(&dir, dtype, &Device::Cpu).unwrap();
            let tmp = tempfile::tempdir().unwrap();
            let sharded = tmp.path().join("sharded");
            // Shards of at most 64 KiB: many files, most tensors alone or in small groups.
            one.save_with_shard_limit(&sharded, 64 << 10).unwrap();
            assert!(sharded.join("model.safetensors.index.json").exists());
            let shards = std::fs::read_dir(&sharded)
                .unwrap()
                .filter(|e| {
                    let e = e.as_ref().unwrap().file_name();
                    e.to_string_lossy().ends_with(".safetensors")
                })
                .count();
            assert!(shards > 3, "{name}: {shards} shards");
            let two = Placement::cut(2, &cpus(2), &[1]).unwrap();
            let streamed = Model::load_placed(&sharded, dtype, two).unwrap();
            // Stored in `dtype`, loaded in `dtype`: every tensor as stored, bit for bit.
            assert_eq!(streamed.dtype(), dtype);
            for ((na, a), (nb, b)) in one.named_tensors().iter().zip(streamed.named_tensors()) {
                assert_eq!(na, &nb);
                assert_eq!(b.dtype(), dtype, "{name}: {nb}");
                assert_eq!(bits(&flat_f32(a)), bits(&flat_f32(&b)), "{name}: {nb}");
            }
            let ids = expected(name).ids;
            assert_eq!(
                bits(&streamed.sequence_losses(&ids).unwrap()),
                bits(&one.sequence_losses(&ids).unwrap()),
                "{name} {dtype:?}"
            );
            // The one-device loader streams the same way.
            let whole = Model::load(&sharded, dtype, &Device::Cpu).unwrap();
            assert_eq!(
                bits(&whole.sequence_losses(&ids).unwrap()),
                bits(&one.sequence_losses(&ids).unwrap())
            );
        }
    }
}

#[test]
fn a_file_changed_after_opening_is_refused_by_the_streaming_loader() {
    let one = Model::load(&golden_dir("qwen3-tiny"), DType::F32, &Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    one.save(tmp.path()).unwrap();
    let files = koth_model::CheckpointFiles::open(tmp.path()).unwrap();
    // Same length, different header: a byte of a dtype name changed.
    let path = tmp.path().join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(5).position(|w| w == b"\"F32\"").unwrap();
    bytes[at + 1..at + 4].copy_from_slice(b"I32");
    std::fs::write(&path, &bytes).unwrap();
    let device = Device::Cpu;
    let e = files
        .load_tensors_placed(DType::F32, |_| &device)
        .unwrap_err()
        .to_string();
    assert!(e.contains("changed while it was being loaded"), "{e}");
}
