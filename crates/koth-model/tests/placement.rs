//! Placement in the engine, on the CPU: virtual stages (several stages on one device) run the
//! multi-device code path, and must give bit-identical losses to the one-stage model.

mod common;

use common::*;

use koth_model::{DType, Device, Model, OpPath, Placement, ScoreOptions};

const DTYPES: [DType; 2] = [DType::F32, DType::BF16];

fn bits(xs: &[f32]) -> Vec<u32> {
    xs.iter().map(|x| x.to_bits()).collect()
}

fn cpus(n: usize) -> Vec<Device> {
    vec![Device::Cpu; n]
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
