//! koth's CUDA kernels, compiled for the host under a thread-level CUDA emulator.
//!
//! `build.rs` compiles `koth-kernels/csrc/kernels.cu` itself (two pieces of launch syntax
//! rewritten) against `csrc/cuda_emu.h`, where every CUDA thread is a fiber and barriers and
//! warp shuffles are scheduled as on a GPU. The CPU suite (`tests/kernels.rs`) drives the
//! kernels' own C entry points with host buffers and holds their results to koth-model's CPU
//! references, so a kernel's indexing, lane layout and reductions are checked on every CI run,
//! without a GPU. What it cannot check (speed, races, the GPU's `expf` and FMA contraction) is
//! left to `scripts/bench/gpu-run.sh`; see docs/GPU.md.
//!
//! Pointers here are host pointers: each "device" buffer is a slice the caller owns.

use std::ffi::c_int;

/// The dtype codes of `KOTH_DISPATCH` in kernels.cu.
pub const F32: c_int = 0;
pub const BF16: c_int = 1;
pub const F16: c_int = 2;

/// The kernels' C entry points: koth-kernels' own declarations (`koth-kernels/src/ffi.rs`, the
/// ones the product calls), here with host addresses where they say device addresses. The
/// cuDNN and memory-pool entries are declared but absent from the emulated library; nothing
/// here calls them.
#[allow(clippy::too_many_arguments, dead_code)]
pub mod ffi {
    include!("../../koth-kernels/src/ffi.rs");
}

/// The emulator's own check kernels (`csrc/selftest.cu`, used by `tests/emulator.rs`).
pub mod selftest {
    use std::ffi::c_int;

    extern "C" {
        /// `out[i]` = the sum of `input` over the block of i (blocks of `threads`).
        pub fn koth_emu_block_total(
            input: *const f32,
            out: *mut f32,
            blocks: c_int,
            threads: c_int,
        ) -> c_int;
        /// A warp whose lane 0 waits at `__syncthreads` while the others shuffle: aborts.
        pub fn koth_emu_divergent_shuffle(out: *mut f32) -> c_int;
        /// Writes one float past `n` floats of dynamic shared memory: aborts.
        pub fn koth_emu_shared_overrun(n: c_int) -> c_int;
        /// A launch of 2,048 threads per block: refused with a CUDA error code.
        pub fn koth_emu_too_many_threads() -> c_int;
    }
}
