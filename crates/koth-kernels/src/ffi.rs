// The C entry points of `csrc/` (kernels.cu's and sdpa.cpp's `extern "C"` blocks): device
// buffers as u64 addresses, streams as raw CUstream handles. One declaration for both users:
// `cuda.rs` (the product, through candle's CUDA storage) and crates/koth-kernels-emu (the same
// kernels compiled for the host, whose tests call these very declarations with host addresses),
// so a declaration that does not match its C definition fails those tests. Included with
// `include!`, hence no inner doc comments.
use std::ffi::{c_char, c_int, c_void};
extern "C" {
    pub fn koth_cuda_error_string(code: c_int) -> *const c_char;
    pub fn koth_use_device(ordinal: c_int) -> c_int;
    pub fn koth_sdpa_last_error() -> *const c_char;
    pub fn koth_sdpa_fwd(
        dtype: c_int,
        b: i64,
        hq: i64,
        hkv: i64,
        t: i64,
        d: i64,
        scale: f32,
        q: u64,
        k: u64,
        v: u64,
        o: u64,
        stats: u64,
        stream: *mut c_void,
    ) -> c_int;
    pub fn koth_sdpa_bwd(
        dtype: c_int,
        b: i64,
        hq: i64,
        hkv: i64,
        t: i64,
        d: i64,
        scale: f32,
        deterministic: c_int,
        q: u64,
        k: u64,
        v: u64,
        o: u64,
        dout: u64,
        stats: u64,
        dq: u64,
        dk: u64,
        dv: u64,
        stream: *mut c_void,
    ) -> c_int;
    pub fn koth_ce_fwd(
        dtype: c_int,
        logits: u64,
        rows: i64,
        ld: i64,
        v: c_int,
        targets: u64,
        nll: u64,
        stream: *mut c_void,
    ) -> c_int;
    pub fn koth_ce_bwd(
        dtype: c_int,
        logits: u64,
        out: u64,
        rows: i64,
        ld: i64,
        v: c_int,
        targets: u64,
        grad: u64,
        stream: *mut c_void,
    ) -> c_int;
    pub fn koth_ce_fwd_bwd(
        dtype: c_int,
        logits: u64,
        rows: i64,
        ld: i64,
        v: c_int,
        targets: u64,
        g: f32,
        nll: u64,
        stream: *mut c_void,
    ) -> c_int;
    pub fn koth_embed_bwd(
        dtype: c_int,
        dy: u64,
        order: u64,
        offsets: u64,
        uniq: u64,
        n_uniq: c_int,
        cols: c_int,
        out: u64,
        stream: *mut c_void,
    ) -> c_int;
    pub fn koth_rmsnorm_fwd(
        dtype: c_int,
        x: u64,
        w: u64,
        y: u64,
        rstd: u64,
        rows: i64,
        cols: c_int,
        eps: f32,
        stream: *mut c_void,
    ) -> c_int;
    pub fn koth_rmsnorm_centered_fwd(
        dtype: c_int,
        x: u64,
        w: u64,
        y: u64,
        rows: i64,
        cols: c_int,
        eps: f32,
        stream: *mut c_void,
    ) -> c_int;
    pub fn koth_rmsnorm_bwd(
        dtype: c_int,
        x: u64,
        w: u64,
        dy: u64,
        rstd: u64,
        dx: u64,
        dw: u64,
        dw_part: u64,
        rows: i64,
        cols: c_int,
        rows_per_block: i64,
        stream: *mut c_void,
    ) -> c_int;
    pub fn koth_norm_rope(
        dtype: c_int,
        x: u64,
        w: u64,
        cos: u64,
        sin: u64,
        y: u64,
        rows: i64,
        heads: c_int,
        seq: c_int,
        head_dim: c_int,
        eps: f32,
        sign: f32,
        stream: *mut c_void,
    ) -> c_int;
    pub fn koth_centered_norm_rope(
        dtype: c_int,
        x: u64,
        ld: i64,
        w: u64,
        cos: u64,
        sin: u64,
        y: u64,
        rows: i64,
        heads: c_int,
        seq: c_int,
        head_dim: c_int,
        rot: c_int,
        eps: f32,
        stream: *mut c_void,
    ) -> c_int;
    pub fn koth_delta_gates(
        dtype: c_int,
        a: u64,
        b: u64,
        a_log: u64,
        dt_bias: u64,
        g: u64,
        beta: u64,
        n: i64,
        hv: c_int,
        stream: *mut c_void,
    ) -> c_int;
    pub fn koth_sigmoid_gate(
        dtype: c_int,
        out: u64,
        gate: u64,
        ld: i64,
        y: u64,
        rows: i64,
        cols: c_int,
        stream: *mut c_void,
    ) -> c_int;
    pub fn koth_swiglu_fwd(
        dtype: c_int,
        g: u64,
        u: u64,
        y: u64,
        n: i64,
        stream: *mut c_void,
    ) -> c_int;
    pub fn koth_swiglu_bwd(
        dtype: c_int,
        g: u64,
        u: u64,
        dy: u64,
        dg: u64,
        du: u64,
        n: i64,
        stream: *mut c_void,
    ) -> c_int;
    pub fn koth_adamw_multi(
        dtype: c_int,
        grads_in_model_dtype: c_int,
        tensors: u64,
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
    pub fn koth_adam_record_bytes() -> c_int;
    pub fn koth_sumsq_multi(
        dtype: c_int,
        tensors: u64,
        count: c_int,
        blocks_per_tensor: c_int,
        part: u64,
        out: u64,
        stream: *mut c_void,
    ) -> c_int;
    pub fn koth_sumsq_record_bytes() -> c_int;
    pub fn koth_gdr_fwd(
        dtype: c_int,
        qkv: u64,
        ld: i64,
        g: u64,
        beta: u64,
        out: u64,
        batch: c_int,
        seq: c_int,
        hk: c_int,
        hv: c_int,
        dk: c_int,
        dv: c_int,
        eps: f32,
        q_scale: f32,
        normalize: c_int,
        ckpt: u64,
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
    pub fn koth_gdr_bwd(
        packed: u64,
        ld: i64,
        g: u64,
        beta: u64,
        dout: u64,
        ckpt: u64,
        scratch: u64,
        dpacked: u64,
        part_q: u64,
        part_k: u64,
        part_b: u64,
        part_g: u64,
        dbeta: u64,
        dg: u64,
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
        x: u64,
        w: u64,
        y: u64,
        batch: c_int,
        seq: c_int,
        channels: c_int,
        width: c_int,
        stream: *mut c_void,
    ) -> c_int;
    pub fn koth_gated_rmsnorm(
        dtype: c_int,
        x: u64,
        z: u64,
        w: u64,
        y: u64,
        rows: i64,
        cols: c_int,
        eps: f32,
        stream: *mut c_void,
    ) -> c_int;
    pub fn koth_router_topk(
        probs: u64,
        rows: i64,
        experts: c_int,
        k: c_int,
        chosen: u64,
        stream: *mut c_void,
    ) -> c_int;
    pub fn koth_moe_combine(
        dtype: c_int,
        y: u64,
        w: u64,
        pos: u64,
        out: u64,
        r: i64,
        n: i64,
        k: c_int,
        h: c_int,
        stream: *mut c_void,
    ) -> c_int;
    pub fn koth_add_rmsnorm_centered_fwd(
        dtype: c_int,
        x: u64,
        d: u64,
        w: u64,
        sum: u64,
        y: u64,
        rows: i64,
        cols: c_int,
        eps: f32,
        stream: *mut c_void,
    ) -> c_int;
    pub fn koth_mem_peak(device: c_int, used_high: *mut u64, reset: c_int) -> c_int;
    pub fn koth_mem_release(device: c_int) -> c_int;
}
