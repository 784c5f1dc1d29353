//! Checkpoint I/O: bit-exact round trips (single file and sharded) and refusal of malformed
//! files with errors that name the file and the tensor or field.

mod common;

use std::path::Path;

use common::*;
use koth_model::{DType, Device, Model, ModelConfig, ModelError, TokenIds};

fn copy_checkpoint(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

fn load_err(dir: &Path) -> String {
    match Model::load(dir, DType::F32, &Device::Cpu) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_bit_exact(a: &Model, b: &Model) {
    let (ta, tb) = (a.named_tensors(), b.named_tensors());
    assert_eq!(ta.len(), tb.len());
    for ((na, xa), (nb, xb)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        assert_eq!(xa.dtype(), xb.dtype());
        let bits = |t: &koth_model::Tensor| -> Vec<u32> {
            flat_f32(t).iter().map(|x| x.to_bits()).collect()
        };
        assert_eq!(bits(xa), bits(xb), "`{na}` differs after save/load");
    }
}

#[test]
fn save_load_round_trip_is_bit_exact_single_and_sharded() {
    for name in FAMILIES {
        let model = Model::load(&golden_dir(name), DType::F32, &Device::Cpu).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let single = tmp.path().join("single");
        model.save(&single).unwrap();
        assert!(single.join("model.safetensors").exists());
        assert_bit_exact(
            &model,
            &Model::load(&single, DType::F32, &Device::Cpu).unwrap(),
        );
        // The golden file itself and ours describe the same config.
        assert_eq!(
            ModelConfig::from_file(&single.join("config.json")).unwrap(),
            *model.config()
        );

        let sharded = tmp.path().join("sharded");
        model.save_with_shard_limit(&sharded, 100_000).unwrap();
        assert!(sharded.join("model.safetensors.index.json").exists());
        assert!(!sharded.join("model.safetensors").exists());
        let shards = std::fs::read_dir(&sharded)
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                let n = n.to_string_lossy();
                n.starts_with("model-") && n.ends_with(".safetensors")
            })
            .count();
        assert!(shards > 2, "{name}: {shards} shards");
        assert_bit_exact(
            &model,
            &Model::load(&sharded, DType::F32, &Device::Cpu).unwrap(),
        );
    }
}

#[test]
fn bf16_round_trip_is_bit_exact() {
    let model = Model::load(&golden_dir("qwen3-tiny"), DType::BF16, &Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    model.save(tmp.path()).unwrap();
    let header = koth_model::weights::read_header(&tmp.path().join("model.safetensors")).unwrap();
    assert!(header
        .entries
        .iter()
        .all(|e| e.dtype == safetensors::Dtype::BF16));
    assert_bit_exact(
        &model,
        &Model::load(tmp.path(), DType::BF16, &Device::Cpu).unwrap(),
    );
}

#[test]
fn save_refuses_to_overwrite_weights() {
    let model = Model::load(&golden_dir("llama-tiny"), DType::F32, &Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    model.save(tmp.path()).unwrap();
    let before = std::fs::read(tmp.path().join("model.safetensors")).unwrap();
    let e = model.save(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("refusing to overwrite"), "{e}");
    assert_eq!(
        before,
        std::fs::read(tmp.path().join("model.safetensors")).unwrap()
    );
}

#[test]
fn truncated_file_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    copy_checkpoint(&golden_dir("llama-tiny"), tmp.path());
    let p = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let e = load_err(tmp.path());
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn header_length_past_eof_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    copy_checkpoint(&golden_dir("llama-tiny"), tmp.path());
    let p = tmp.path().join("model.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    let huge = (bytes.len() as u64 + 1).to_le_bytes();
    bytes[..8].copy_from_slice(&huge);
    std::fs::write(&p, &bytes).unwrap();
    let e = load_err(tmp.path());
    assert!(
        e.contains("model.safetensors") && e.contains("past the end"),
        "{e}"
    );
}

/// Rewrite the JSON header of a safetensors file (keeping the data) with `edit`.
fn edit_header(p: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let bytes = std::fs::read(p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(header.as_object_mut().unwrap());
    let text = serde_json::to_string(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(p, out).unwrap();
}

#[test]
fn dtype_or_shape_disagreeing_with_byte_count_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    copy_checkpoint(&golden_dir("llama-tiny"), tmp.path());
    let p = tmp.path().join("model.safetensors");
    edit_header(&p, |h| h["model.norm.weight"]["dtype"] = "BF16".into());
    let e = load_err(tmp.path());
    assert!(
        e.contains("model.safetensors") && e.contains("`model.norm.weight`"),
        "{e}"
    );
    assert!(e.contains("BF16") && e.contains("bytes"), "{e}");

    copy_checkpoint(&golden_dir("llama-tiny"), tmp.path());
    edit_header(&p, |h| {
        h["model.norm.weight"]["shape"] = serde_json::json!([65])
    });
    let e = load_err(tmp.path());
    assert!(
        e.contains("`model.norm.weight`") && e.contains("[65]"),
        "{e}"
    );
}

#[test]
fn missing_extra_and_misshaped_tensors_are_named() {
    let model = Model::load(&golden_dir("qwen2-tiny"), DType::F32, &Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let write = |dir: &Path, tensors: Vec<(String, koth_model::Tensor)>| {
        std::fs::create_dir_all(dir).unwrap();
        model.config().save(dir).unwrap();
        koth_model::weights::write_safetensors(&dir.join("model.safetensors"), &tensors).unwrap();
    };
    let all = model.named_tensors();

    let missing = tmp.path().join("missing");
    write(
        &missing,
        all.iter()
            .filter(|(n, _)| n != "model.layers.1.self_attn.k_proj.bias")
            .cloned()
            .collect(),
    );
    let e = load_err(&missing);
    assert!(
        e.contains("missing tensor `model.layers.1.self_attn.k_proj.bias`"),
        "{e}"
    );

    let extra = tmp.path().join("extra");
    let mut tensors = all.clone();
    // Tied embeddings: a separate head is an extra tensor, never silently ignored.
    tensors.push(("lm_head.weight".into(), all[0].1.clone()));
    write(&extra, tensors);
    let e = load_err(&extra);
    assert!(e.contains("unexpected tensor `lm_head.weight`"), "{e}");

    let misshaped = tmp.path().join("misshaped");
    let tensors = all
        .iter()
        .map(|(n, t)| {
            if n == "model.norm.weight" {
                (n.clone(), t.narrow(0, 0, 32).unwrap())
            } else {
                (n.clone(), t.clone())
            }
        })
        .collect();
    write(&misshaped, tensors);
    let e = load_err(&misshaped);
    assert!(
        e.contains("`model.norm.weight` has shape [32], expected [64]"),
        "{e}"
    );
}

#[test]
fn bad_index_is_refused() {
    let model = Model::load(&golden_dir("llama-tiny"), DType::F32, &Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    model.save_with_shard_limit(tmp.path(), 200_000).unwrap();
    let index = tmp.path().join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors".into();
    std::fs::write(&index, v.to_string()).unwrap();
    let e = load_err(tmp.path());
    assert!(
        e.contains("model.safetensors.index.json") && e.contains("`model.norm.weight`"),
        "{e}"
    );
}

/// Load `dir` and return the error, which must be the checkpoint's own (config, safetensors or
/// tensor set), never an I/O error that a validator would count as its own fault.
fn checkpoint_fault(dir: &Path) -> String {
    match Model::load(dir, DType::F32, &Device::Cpu) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(
            e @ (ModelError::Config { .. }
            | ModelError::Safetensors { .. }
            | ModelError::TensorSet { .. }),
        ) => e.to_string(),
        Err(e) => panic!("not attributed to the checkpoint: {e:?}"),
    }
}

fn sharded_copy() -> tempfile::TempDir {
    let model = Model::load(&golden_dir("llama-tiny"), DType::F32, &Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    model.save_with_shard_limit(tmp.path(), 200_000).unwrap();
    tmp
}

#[test]
fn an_index_naming_a_missing_shard_is_the_checkpoints_fault() {
    let tmp = sharded_copy();
    let index = tmp.path().join("model.safetensors.index.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    v["weight_map"]["model.norm.weight"] = "model-00009-of-00009.safetensors".into();
    std::fs::write(&index, v.to_string()).unwrap();
    let e = checkpoint_fault(tmp.path());
    assert!(
        e.contains("model-00009-of-00009.safetensors") && e.contains("not in the checkpoint"),
        "{e}"
    );
}

#[test]
fn a_non_utf8_or_oversized_or_odd_typed_index_is_the_checkpoints_fault() {
    let tmp = sharded_copy();
    let index = tmp.path().join("model.safetensors.index.json");
    std::fs::write(&index, b"{\"weight_map\": {\"\xff\xfe\": 1}}").unwrap();
    let e = checkpoint_fault(tmp.path());
    assert!(e.contains("not valid UTF-8 JSON"), "{e}");
    // Over the 1 MiB cap: refused from its size, before it is read.
    let mut big = b"{\"weight_map\": {}, \"pad\": \"".to_vec();
    big.resize(koth_model::weights::MAX_INDEX_BYTES as usize + 10, b'a');
    big.extend_from_slice(b"\"}");
    std::fs::write(&index, &big).unwrap();
    let e = checkpoint_fault(tmp.path());
    assert!(e.contains("over the cap"), "{e}");
    // A directory where the index should be.
    std::fs::remove_file(&index).unwrap();
    std::fs::create_dir(&index).unwrap();
    let e = checkpoint_fault(tmp.path());
    assert!(e.contains("not a regular file"), "{e}");
}

#[test]
fn an_oversized_or_missing_config_is_the_checkpoints_fault() {
    let tmp = tempfile::tempdir().unwrap();
    copy_checkpoint(&golden_dir("qwen3-tiny"), tmp.path());
    let p = tmp.path().join("config.json");
    let mut big = std::fs::read(&p).unwrap();
    big.truncate(big.len() - 2);
    big.extend_from_slice(b", \"pad\": \"");
    big.resize(koth_model::MAX_CONFIG_BYTES as usize + 1, b' ');
    big.extend_from_slice(b"\"}");
    std::fs::write(&p, &big).unwrap();
    let e = checkpoint_fault(tmp.path());
    assert!(
        e.contains("config.json") && e.contains("over the cap"),
        "{e}"
    );
    std::fs::remove_file(&p).unwrap();
    let e = checkpoint_fault(tmp.path());
    assert!(e.contains("config.json") && e.contains("missing"), "{e}");
}

#[test]
fn config_dimensions_are_capped_before_anything_is_allocated() {
    let base: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden_dir("qwen3-tiny").join("config.json")).unwrap(),
    )
    .unwrap();
    for (field, value) in [
        ("num_hidden_layers", 1_000_000_000_000u64),
        ("vocab_size", 1 << 40),
        ("hidden_size", 1 << 30),
        ("intermediate_size", 1 << 30),
        ("num_attention_heads", 1 << 20),
        ("head_dim", 1 << 20),
    ] {
        let mut v = base.clone();
        v[field] = value.into();
        let e = ModelConfig::from_json(&v.to_string(), "config.json")
            .expect_err(field)
            .to_string();
        assert!(e.contains(field) && e.contains("cap"), "{field}: {e}");
    }
    // Each size under its cap, the product over the parameter cap.
    let mut v = base.clone();
    v["num_hidden_layers"] = 1024.into();
    v["hidden_size"] = (1 << 17).into();
    v["intermediate_size"] = (1 << 18).into();
    let e = ModelConfig::from_json(&v.to_string(), "config.json")
        .unwrap_err()
        .to_string();
    assert!(e.contains("parameters exceed"), "{e}");
}

#[test]
fn bad_config_is_refused_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    copy_checkpoint(&golden_dir("qwen3-tiny"), tmp.path());
    let p = tmp.path().join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["num_attention_heads"] = (-4).into();
    std::fs::write(&p, v.to_string()).unwrap();
    let e = load_err(tmp.path());
    assert!(
        e.contains("config.json") && e.contains("num_attention_heads"),
        "{e}"
    );
}

#[test]
fn ids_at_or_above_vocab_are_refused() {
    let model = Model::load(&golden_dir("llama-tiny"), DType::F32, &Device::Cpu).unwrap();
    let ids = TokenIds::new(vec![1, 2, 3, 384, 5, 6], 2, 3).unwrap();
    match model.nll(&ids) {
        Err(ModelError::TokenOutOfRange {
            id,
            row,
            position,
            vocab_size,
        }) => {
            assert_eq!((id, row, position, vocab_size), (384, 1, 0, 384));
        }
        other => panic!("expected TokenOutOfRange, got {:?}", other.map(|_| ())),
    }
    let e = model.loss_and_grads(&ids).err().unwrap().to_string();
    assert!(e.contains("384") && e.contains("vocab_size"), "{e}");
    assert!(TokenIds::new(vec![1, 2, 3], 1, 1).is_err());
    assert!(TokenIds::new(vec![1, 2, 3], 2, 2).is_err());
}

/// A Hugging Face cache snapshot is made of symlinks into its blob store: config, index and
/// shards behind symlinks still load (the caps apply to the files they point to).
#[test]
fn a_checkpoint_of_symlinks_like_a_hugging_face_snapshot_loads() {
    let sharded = sharded_copy();
    let snapshot = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(sharded.path()).unwrap() {
        let e = e.unwrap();
        std::os::unix::fs::symlink(e.path(), snapshot.path().join(e.file_name())).unwrap();
    }
    assert!(snapshot.path().join("config.json").is_symlink());
    assert!(snapshot
        .path()
        .join("model.safetensors.index.json")
        .is_symlink());
    Model::load(snapshot.path(), DType::F32, &Device::Cpu).unwrap();
}
