//! The streaming loader holds the model in host memory at most once: every byte allocated while
//! a sharded checkpoint loads is counted (a counting global allocator, on the loading thread
//! only), and the peak must stay within the model's own bytes plus a little bookkeeping. Reading
//! a shard whole (the loader before streaming) would add the largest shard on top; staging
//! bf16 through f32 would add twice the largest tensor.
//!
//! One test in this binary: the allocator's counters are global.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use koth_model::{DType, Device, Model, ModelConfig, Placement};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static TRACKED: Cell<bool> = const { Cell::new(false) };
}

fn tracked() -> bool {
    TRACKED.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && tracked() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if tracked() {
            CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        }
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && tracked() {
            CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
            let now = CURRENT.fetch_add(new_size, Ordering::SeqCst) + new_size;
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak bytes allocated on this thread (net of what it freed) while `f` runs, and its result.
fn peak_during<T>(f: impl FnOnce() -> T) -> (usize, T) {
    CURRENT.store(0, Ordering::SeqCst);
    PEAK.store(0, Ordering::SeqCst);
    TRACKED.with(|t| t.set(true));
    let out = f();
    TRACKED.with(|t| t.set(false));
    (PEAK.load(Ordering::SeqCst), out)
}

#[test]
fn a_sharded_checkpoint_loads_with_the_model_held_once() {
    // About 9 MiB in f32: a 4 MiB embedding, a 1 MiB head, four layers of ~1 MiB.
    let config = ModelConfig::from_json(
        &serde_json::json!({
            "model_type": "qwen3",
            "vocab_size": 4096,
            "hidden_size": 256,
            "intermediate_size": 256,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 64,
            "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0,
            "hidden_act": "silu",
            "tie_word_embeddings": true,
        })
        .to_string(),
        "memory",
    )
    .unwrap();
    for dtype in [DType::F32, DType::BF16] {
        let model = Model::init(&config, 3, dtype, &Device::Cpu).unwrap();
        let model_bytes = config.parameter_count() as usize * dtype.size_in_bytes();
        let largest = 4096 * 256 * dtype.size_in_bytes();
        let tmp = tempfile::tempdir().unwrap();
        // Shards of at most 1.5 MiB: the embedding alone, then one or two layers each.
        model.save_with_shard_limit(tmp.path(), 3 << 19).unwrap();
        let shards = std::fs::read_dir(tmp.path())
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                n.to_string_lossy().ends_with(".safetensors")
            })
            .count();
        assert!(shards >= 4, "{shards} shards");
        let placement = Placement::cut(4, &[Device::Cpu, Device::Cpu], &[2]).unwrap();
        let (peak, loaded) =
            peak_during(|| Model::load_placed(tmp.path(), dtype, placement).unwrap());
        assert_eq!(loaded.dtype(), dtype);
        assert!(
            peak >= model_bytes,
            "{dtype:?}: the model is {model_bytes} bytes, only {peak} were allocated"
        );
        // Bookkeeping (names, maps, headers, the index) is a few KiB; a shard read whole, or
        // the largest tensor staged twice, would be ≥ 1 MiB more.
        let slack = 256 << 10;
        assert!(
            peak <= model_bytes + slack,
            "{dtype:?}: loading allocated {peak} bytes at peak for a {model_bytes}-byte model \
             (largest tensor {largest})"
        );
        drop(loaded);
    }
}
