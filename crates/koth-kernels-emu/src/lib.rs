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

use std::ffi::{c_int, c_void};

/// The dtype codes of `KOTH_DISPATCH` in kernels.cu.
pub const F32: c_int = 0;
pub const BF16: c_int = 1;
pub const F16: c_int = 2;

/// The kernels' C entry points (kernels.cu's `extern "C"` block), with host pointers.
#[allow(clippy::too_many_arguments)]
pub mod ffi {
    use super::*;

    extern "C" {
        pub fn koth_ce_fwd(
            dtype: c_int,
            logits: *const c_void,
            rows: i64,
            ld: i64,
            v: c_int,
            targets: *const u32,
            nll: *mut f32,
            stream: *mut c_void,
        ) -> c_int;
        pub fn koth_ce_fwd_bwd(
            dtype: c_int,
            logits: *mut c_void,
            rows: i64,
            ld: i64,
            v: c_int,
            targets: *const u32,
            g: f32,
            nll: *mut f32,
            stream: *mut c_void,
        ) -> c_int;
        pub fn koth_ce_bwd(
            dtype: c_int,
            logits: *const c_void,
            out: *mut c_void,
            rows: i64,
            ld: i64,
            v: c_int,
            targets: *const u32,
            grad: *const f32,
            stream: *mut c_void,
        ) -> c_int;
        pub fn koth_embed_bwd(
            dtype: c_int,
            dy: *const c_void,
            order: *const i32,
            offsets: *const i32,
            uniq: *const u32,
            n_uniq: c_int,
            cols: c_int,
            out: *mut c_void,
            stream: *mut c_void,
        ) -> c_int;
        pub fn koth_rmsnorm_bwd(
            dtype: c_int,
            x: *const c_void,
            w: *const c_void,
            dy: *const c_void,
            rstd: *const f32,
            dx: *mut c_void,
            dw: *mut c_void,
            dw_part: *mut f32,
            rows: i64,
            cols: c_int,
            rows_per_block: i64,
            stream: *mut c_void,
        ) -> c_int;
        pub fn koth_norm_rope(
            dtype: c_int,
            x: *const c_void,
            w: *const c_void,
            cos_t: *const c_void,
            sin_t: *const c_void,
            y: *mut c_void,
            rows: i64,
            heads: c_int,
            seq: c_int,
            head_dim: c_int,
            eps: f32,
            sign: f32,
            stream: *mut c_void,
        ) -> c_int;
        pub fn koth_swiglu_bwd(
            dtype: c_int,
            g: *const c_void,
            u: *const c_void,
            dy: *const c_void,
            dg: *mut c_void,
            du: *mut c_void,
            n: i64,
            stream: *mut c_void,
        ) -> c_int;
        pub fn koth_adam_record_bytes() -> c_int;
        pub fn koth_adamw_multi(
            dtype: c_int,
            grads_in_model_dtype: c_int,
            tensors: *const c_void,
            count: c_int,
            max_n: i64,
            lr: f32,
            beta1: f32,
            beta2: f32,
            eps: f32,
            wd: f32,
            bc1: f32,
            bc2_sqrt: f32,
            gscale: f32,
            stream: *mut c_void,
        ) -> c_int;
        pub fn koth_centered_norm_rope(
            dtype: c_int,
            x: *const c_void,
            ld: i64,
            w: *const c_void,
            cos_t: *const c_void,
            sin_t: *const c_void,
            y: *mut c_void,
            rows: i64,
            heads: c_int,
            seq: c_int,
            d: c_int,
            rot: c_int,
            eps: f32,
            stream: *mut c_void,
        ) -> c_int;
        pub fn koth_delta_gates(
            dtype: c_int,
            a: *const c_void,
            b: *const c_void,
            a_log: *const f32,
            dt_bias: *const f32,
            g: *mut f32,
            beta: *mut c_void,
            n: i64,
            hv: c_int,
            stream: *mut c_void,
        ) -> c_int;
        pub fn koth_sigmoid_gate(
            dtype: c_int,
            out: *const c_void,
            gate: *const c_void,
            ld: i64,
            y: *mut c_void,
            rows: i64,
            cols: c_int,
            stream: *mut c_void,
        ) -> c_int;
        pub fn koth_rmsnorm_fwd(
            dtype: c_int,
            x: *const c_void,
            w: *const c_void,
            y: *mut c_void,
            rstd: *mut f32,
            rows: i64,
            cols: c_int,
            eps: f32,
            stream: *mut c_void,
        ) -> c_int;
        pub fn koth_rmsnorm_centered_fwd(
            dtype: c_int,
            x: *const c_void,
            w: *const c_void,
            y: *mut c_void,
            rows: i64,
            cols: c_int,
            eps: f32,
            stream: *mut c_void,
        ) -> c_int;
        pub fn koth_swiglu_fwd(
            dtype: c_int,
            g: *const c_void,
            u: *const c_void,
            y: *mut c_void,
            n: i64,
            stream: *mut c_void,
        ) -> c_int;
        pub fn koth_sumsq_record_bytes() -> c_int;
        pub fn koth_sumsq_multi(
            dtype: c_int,
            tensors: *const c_void,
            count: c_int,
            blocks_per_tensor: c_int,
            part: *mut f32,
            out: *mut f32,
            stream: *mut c_void,
        ) -> c_int;
        pub fn koth_gdr_bwd_sizes(
            batch: c_int,
            seq: c_int,
            hv: c_int,
            dk: c_int,
            dv: c_int,
            sizes: *mut i64,
        ) -> c_int;
        pub fn koth_gdr_fwd(
            dtype: c_int,
            qkv: *const c_void,
            ld: i64,
            g: *const f32,
            beta: *const c_void,
            out: *mut c_void,
            batch: c_int,
            seq: c_int,
            hk: c_int,
            hv: c_int,
            dk: c_int,
            dv: c_int,
            eps: f32,
            q_scale: f32,
            normalize: c_int,
            ckpt: *mut f32,
            stream: *mut c_void,
        ) -> c_int;
        pub fn koth_gdr_bwd(
            packed: *const f32,
            ld: i64,
            g: *const f32,
            beta: *const f32,
            dout: *const f32,
            ckpt: *const f32,
            scratch: *mut f32,
            dpacked: *mut f32,
            part_q: *mut f32,
            part_k: *mut f32,
            part_b: *mut f32,
            part_g: *mut f32,
            dbeta: *mut f32,
            dg: *mut f32,
            batch: c_int,
            seq: c_int,
            hk: c_int,
            hv: c_int,
            dk: c_int,
            dv: c_int,
            stream: *mut c_void,
        ) -> c_int;
        pub fn koth_conv_silu(
            dtype: c_int,
            x: *const c_void,
            w: *const c_void,
            y: *mut c_void,
            batch: c_int,
            seq: c_int,
            c: c_int,
            k: c_int,
            stream: *mut c_void,
        ) -> c_int;
        pub fn koth_gated_rmsnorm(
            dtype: c_int,
            x: *const c_void,
            z: *const c_void,
            w: *const c_void,
            y: *mut c_void,
            rows: i64,
            cols: c_int,
            eps: f32,
            stream: *mut c_void,
        ) -> c_int;
    }
}

/// The emulator's own check kernels (`csrc/selftest.cu`, used by `tests/emulator.rs`).
pub mod selftest {
    use std::ffi::c_int;

    extern "C" {
        /// out[i] = the sum of `in` over i's block (blocks of `threads`).
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
