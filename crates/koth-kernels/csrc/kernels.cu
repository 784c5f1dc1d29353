// koth's own CUDA kernels: the memory-bound steps of scoring and training, fused.
//
// Every kernel reduces in a fixed order (warp shuffles, then one warp over the block's partials;
// no atomics), so a result is bit-identical from run to run on the same device, and each row is
// computed from that row alone, so a row's result does not depend on the rows beside it.
//
// Rounding follows transformers in half precision: where PyTorch rounds an intermediate to the
// activation dtype (the normalised RMSNorm input, SiLU's output, each RoPE product), we round it
// too (`rnd<T>`); everything else is f32.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <limits.h>

namespace {

template <typename T> __device__ __forceinline__ float to_f(T x);
template <> __device__ __forceinline__ float to_f<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }
template <> __device__ __forceinline__ float to_f<__half>(__half x) { return __half2float(x); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }

// x rounded to T's precision, back in f32.
template <typename T> __device__ __forceinline__ float rnd(float x) { return to_f<T>(from_f<T>(x)); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Combine two (max, sum of exp(x - max)) pairs.
__device__ __forceinline__ void lse_merge(float &m, float &s, float m2, float s2) {
    float mm = fmaxf(m, m2);
    if (mm == -INFINITY) {
        s = 0.f;
        m = mm;
        return;
    }
    s = s * expf(m - mm) + s2 * expf(m2 - mm);
    m = mm;
}

// Block-wide log-sum-exp of per-thread (m, s); every thread gets the result. blockDim.x is a
// multiple of 32 and at most 1024.
__device__ float block_lse(float m, float s) {
    __shared__ float sm[32], ss[32];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        float s2 = __shfl_xor_sync(0xffffffffu, s, o);
        lse_merge(m, s, m2, s2);
    }
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    if (lane == 0) {
        sm[warp] = m;
        ss[warp] = s;
    }
    __syncthreads();
    if (warp == 0) {
        m = lane < warps ? sm[lane] : -INFINITY;
        s = lane < warps ? ss[lane] : 0.f;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float m2 = __shfl_xor_sync(0xffffffffu, m, o);
            float s2 = __shfl_xor_sync(0xffffffffu, s, o);
            lse_merge(m, s, m2, s2);
        }
        if (lane == 0) {
            sm[0] = m;
            ss[0] = s;
        }
    }
    __syncthreads();
    float r = sm[0] + logf(ss[0]);
    __syncthreads();
    return r;
}

// Per-thread running (max, sum) over x.
__device__ __forceinline__ void lse_push(float &m, float &s, float x) {
    if (x > m) {
        s = s * expf(m - x) + 1.f;
        m = x;
    } else {
        s += expf(x - m);
    }
}

// The row's log-sum-exp over `v` logits. 16-byte loads when the row allows them.
template <typename T>
__device__ float row_lse(const T *__restrict__ x, int v) {
    float m = -INFINITY, s = 0.f;
    constexpr int kVec = 16 / sizeof(T);
    bool aligned = (reinterpret_cast<uintptr_t>(x) % 16 == 0) && (v % kVec == 0);
    if (aligned) {
        const uint4 *xv = reinterpret_cast<const uint4 *>(x);
        int nv = v / kVec;
        for (int i = threadIdx.x; i < nv; i += blockDim.x) {
            uint4 pack = xv[i];
            const T *e = reinterpret_cast<const T *>(&pack);
#pragma unroll
            for (int j = 0; j < kVec; ++j) lse_push(m, s, to_f<T>(e[j]));
        }
    } else {
        for (int i = threadIdx.x; i < v; i += blockDim.x) lse_push(m, s, to_f<T>(x[i]));
    }
    return block_lse(m, s);
}

// nll[r] = logsumexp(logits[r, :]) - logits[r, target[r]], all in f32 from the stored logits.
template <typename T>
__global__ void ce_fwd(const T *__restrict__ logits, int64_t ld, int v, const uint32_t *__restrict__ targets,
                       float *__restrict__ nll) {
    int64_t row = blockIdx.x;
    const T *x = logits + row * ld;
    float lse = row_lse(x, v);
    if (threadIdx.x == 0) nll[row] = lse - to_f<T>(x[targets[row]]);
}

// In place: logits[r, j] <- (softmax(logits[r])_j - [j == target[r]]) * grad[r], in T.
// `out` may be `logits` itself (the gradient written in place).
template <typename T>
__global__ void ce_bwd(const T *logits, T *out, int64_t ld, int v, const uint32_t *__restrict__ targets,
                       const float *__restrict__ grad) {
    int64_t row = blockIdx.x;
    const T *x = logits + row * ld;
    T *y = out + row * ld;
    float lse = row_lse(x, v);
    float g = grad[row];
    uint32_t t = targets[row];
    __syncthreads();
    for (int i = threadIdx.x; i < v; i += blockDim.x) {
        float p = expf(to_f<T>(x[i]) - lse);
        y[i] = from_f<T>((p - (i == (int)t ? 1.f : 0.f)) * g);
    }
}

// The loss and its gradient in one pass over a chunk of logits, for the hand-written backward:
// nll[r] = logsumexp(logits[r]) - logits[r, t], then logits[r, j] <- (softmax_j - [j == t]) * g
// in place. x[t] is read by every thread before any thread writes the row.
template <typename T>
__global__ void ce_fwd_bwd(T *logits, int64_t ld, int v, const uint32_t *__restrict__ targets, float g,
                           float *__restrict__ nll) {
    int64_t row = blockIdx.x;
    T *x = logits + row * ld;
    float lse = row_lse(x, v);
    uint32_t t = targets[row];
    float xt = to_f<T>(x[t]);
    __syncthreads();
    if (threadIdx.x == 0) nll[row] = lse - xt;
    for (int i = threadIdx.x; i < v; i += blockDim.x) {
        float p = expf(to_f<T>(x[i]) - lse);
        x[i] = from_f<T>((p - (i == (int)t ? 1.f : 0.f)) * g);
    }
}

// The embedding's gradient: row uniq[u] of `out` (zero-filled by the caller) is the sum, in f32
// and in the given order, of the rows dy[order[j]] for j in [offsets[u], offsets[u + 1]). One
// block per distinct token id; no atomics, so the sum's order is fixed by the host's sort.
template <typename T>
__global__ void embed_bwd(const T *__restrict__ dy, const int32_t *__restrict__ order,
                          const int32_t *__restrict__ offsets, const uint32_t *__restrict__ uniq, int cols,
                          T *__restrict__ out) {
    int u = blockIdx.x;
    int s = offsets[u], e = offsets[u + 1];
    T *o = out + (int64_t)uniq[u] * cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float acc = 0.f;
        for (int j = s; j < e; ++j) acc += to_f<T>(dy[(int64_t)order[j] * cols + c]);
        o[c] = from_f<T>(acc);
    }
}

// The sum of squares of one row of `cols`, in f32, by the calling warp (every lane gets it).
template <typename T>
__device__ __forceinline__ float row_sum_squares(const T *__restrict__ xr, int cols, int lane) {
    float ss = 0.f;
    for (int i = lane; i < cols; i += 32) {
        float a = to_f<T>(xr[i]);
        ss += a * a;
    }
    return warp_sum(ss);
}

// RMSNorm over rows of `cols`: one warp per row. y = round(w * round(x * rstd)); rstd (f32, one
// per row) is kept for the backward when the pointer is not null.
template <typename T>
__global__ void rmsnorm_fwd(const T *__restrict__ x, const T *__restrict__ w, T *__restrict__ y,
                            float *__restrict__ rstd_out, int64_t rows, int cols, float eps) {
    int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const T *xr = x + row * cols;
    float r = rsqrtf(row_sum_squares(xr, cols, lane) / cols + eps);
    T *yr = y + row * cols;
    for (int i = lane; i < cols; i += 32) {
        float n = rnd<T>(to_f<T>(xr[i]) * r);
        yr[i] = from_f<T>(to_f<T>(w[i]) * n);
    }
    if (rstd_out != nullptr && lane == 0) rstd_out[row] = r;
}

// Qwen3.5's zero-centred RMSNorm: y = round((x * rstd) * (1 + w)), all in f32 and rounded once
// (transformers' Qwen3_5RMSNorm); one warp per row.
template <typename T>
__global__ void rmsnorm_centered_fwd(const T *__restrict__ x, const T *__restrict__ w, T *__restrict__ y,
                                     int64_t rows, int cols, float eps) {
    int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const T *xr = x + row * cols;
    float r = 1.f / sqrtf(row_sum_squares(xr, cols, lane) / cols + eps);
    T *yr = y + row * cols;
    for (int i = lane; i < cols; i += 32) yr[i] = from_f<T>((to_f<T>(xr[i]) * r) * (1.f + to_f<T>(w[i])));
}

// The residual add and the RMSNorm after it, in one pass, for the calling warp's row: sum =
// round(x + d) (the new residual stream, as the activation dtype's add rounds it), then y = the
// norm of the stored sum, computed exactly as the one-step kernel computes it (each lane re-reads
// only the elements it wrote): zero-centred as rmsnorm_centered_fwd, plain as rmsnorm_fwd.
template <typename T, bool Centered>
__device__ __forceinline__ void add_rmsnorm_row(const T *__restrict__ x, const T *__restrict__ d,
                                                const T *__restrict__ w, T *__restrict__ sum, T *__restrict__ y,
                                                int64_t rows, int cols, float eps) {
    int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const T *xr = x + row * cols, *dr = d + row * cols;
    T *sr = sum + row * cols;
    for (int i = lane; i < cols; i += 32) sr[i] = from_f<T>(__fadd_rn(to_f<T>(xr[i]), to_f<T>(dr[i])));
    __syncwarp();
    float ms = row_sum_squares(sr, cols, lane) / cols + eps;
    T *yr = y + row * cols;
    if (Centered) {
        float r = 1.f / sqrtf(ms);
        for (int i = lane; i < cols; i += 32) yr[i] = from_f<T>((to_f<T>(sr[i]) * r) * (1.f + to_f<T>(w[i])));
    } else {
        float r = rsqrtf(ms);
        for (int i = lane; i < cols; i += 32) yr[i] = from_f<T>(to_f<T>(w[i]) * rnd<T>(to_f<T>(sr[i]) * r));
    }
}

// Qwen3.5's residual add + zero-centred RMSNorm. One warp per row.
template <typename T>
__global__ void add_rmsnorm_centered_fwd(const T *__restrict__ x, const T *__restrict__ d, const T *__restrict__ w,
                                         T *__restrict__ sum, T *__restrict__ y, int64_t rows, int cols, float eps) {
    add_rmsnorm_row<T, true>(x, d, w, sum, y, rows, cols, eps);
}

// The dense decoders' residual add + RMSNorm (llama, qwen2, qwen3). One warp per row.
template <typename T>
__global__ void add_rmsnorm_fwd(const T *__restrict__ x, const T *__restrict__ d, const T *__restrict__ w,
                                T *__restrict__ sum, T *__restrict__ y, int64_t rows, int cols, float eps) {
    add_rmsnorm_row<T, false>(x, d, w, sum, y, rows, cols, eps);
}

// dx for RMSNorm, and per-block partial sums of dw (f32 [gridDim.x, cols]) reduced afterwards by
// `sum_rows` in a fixed order. Each block takes a fixed contiguous range of rows.
template <typename T>
__global__ void rmsnorm_bwd(const T *__restrict__ x, const T *__restrict__ w, const T *__restrict__ dy,
                            const float *__restrict__ rstd, T *__restrict__ dx, float *__restrict__ dw_part,
                            int64_t rows, int cols, int64_t rows_per_block) {
    // dw partials live in shared memory: cols floats per warp would not fit for wide rows, so
    // each warp accumulates its columns' share in registers-free fashion through shared memory.
    extern __shared__ float acc[];  // [cols]
    int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) acc[i] = 0.f;
    __syncthreads();
    int64_t start = (int64_t)blockIdx.x * rows_per_block;
    int64_t end = min(rows, start + rows_per_block);
    // Warps take rows round-robin, but accumulate dw one warp at a time so the order is fixed.
    for (int64_t base = start; base < end; base += warps) {
        int64_t row = base + warp;
        float dot = 0.f, r = 0.f;
        if (row < end) {
            r = rstd[row];
            const T *xr = x + row * cols;
            const T *dyr = dy + row * cols;
            for (int i = lane; i < cols; i += 32) dot += to_f<T>(dyr[i]) * to_f<T>(w[i]) * to_f<T>(xr[i]);
            dot = warp_sum(dot);
            float c = dot * r * r * r / cols;
            T *dxr = dx + row * cols;
            for (int i = lane; i < cols; i += 32) {
                float dn = to_f<T>(dyr[i]) * to_f<T>(w[i]);
                dxr[i] = from_f<T>(dn * r - to_f<T>(xr[i]) * c);
            }
        }
        for (int k = 0; k < warps; ++k) {
            __syncthreads();
            int64_t rk = base + k;
            if (warp == k && rk < end) {
                const T *xr = x + rk * cols;
                const T *dyr = dy + rk * cols;
                float rr = rstd[rk];
                for (int i = lane; i < cols; i += 32)
                    acc[i] += to_f<T>(dyr[i]) * rnd<T>(to_f<T>(xr[i]) * rr);
            }
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < cols; i += blockDim.x) dw_part[(int64_t)blockIdx.x * cols + i] = acc[i];
}

// out[c] = sum over p of part[p, c], p in order.
template <typename T>
__global__ void sum_rows(const float *__restrict__ part, int parts, int cols, T *__restrict__ out) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float s = 0.f;
    for (int p = 0; p < parts; ++p) s += part[(int64_t)p * cols + c];
    out[c] = from_f<T>(s);
}

// RoPE (rotate_half convention) on rows of D values (D even, at most 256), one warp per
// (token, head) row; lane holds the pairs (i, i + D/2) for i = lane + 32 k, so a rotation never
// leaves its lane. Optionally RMSNorm with gain w first (qwen3's q/k norm). cos/sin are
// [T, D/2] in T. `sign` is +1 forward, -1 for the backward (the transpose of a rotation is the
// rotation by -angle).
template <typename T>
__global__ void norm_rope(const T *__restrict__ x, const T *__restrict__ w, const T *__restrict__ cos_t,
                          const T *__restrict__ sin_t, T *__restrict__ y, int64_t rows, int heads, int seq,
                          int d, float eps, float sign) {
    int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    int half = d / 2;
    int pos = (int)((row / heads) % seq);
    const T *xr = x + row * d;
    float a[4], b[4];
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        int i = lane + 32 * k;
        a[k] = i < half ? to_f<T>(xr[i]) : 0.f;
        b[k] = i < half ? to_f<T>(xr[i + half]) : 0.f;
        ss += a[k] * a[k] + b[k] * b[k];
    }
    if (w != nullptr) {
        ss = warp_sum(ss);
        float r = rsqrtf(ss / d + eps);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            int i = lane + 32 * k;
            if (i < half) {
                a[k] = rnd<T>(to_f<T>(w[i]) * rnd<T>(a[k] * r));
                b[k] = rnd<T>(to_f<T>(w[i + half]) * rnd<T>(b[k] * r));
            }
        }
    }
    T *yr = y + row * d;
    const T *cr = cos_t + (int64_t)pos * half;
    const T *sr = sin_t + (int64_t)pos * half;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        int i = lane + 32 * k;
        if (i < half) {
            float c = to_f<T>(cr[i]), s = sign * to_f<T>(sr[i]);
            // first half: a*cos - b*sin ; second half: b*cos + a*sin (each product rounded, as
            // PyTorch computes q*cos + rotate_half(q)*sin in the activation dtype).
            yr[i] = from_f<T>(rnd<T>(a[k] * c) + rnd<T>(-b[k] * s));
            yr[i + half] = from_f<T>(rnd<T>(b[k] * c) + rnd<T>(a[k] * s));
        }
    }
}

__device__ __forceinline__ float sigmoidf(float g) { return 1.f / (1.f + expf(-g)); }

// y = round(round(silu(g)) * u)
template <typename T>
__global__ void swiglu_fwd(const T *__restrict__ g, const T *__restrict__ u, T *__restrict__ y, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float gv = to_f<T>(g[i]);
        float a = rnd<T>(gv * sigmoidf(gv));
        y[i] = from_f<T>(a * to_f<T>(u[i]));
    }
}

template <typename T>
__global__ void swiglu_bwd(const T *__restrict__ g, const T *__restrict__ u, const T *__restrict__ dy,
                           T *__restrict__ dg, T *__restrict__ du, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float gv = to_f<T>(g[i]), uv = to_f<T>(u[i]), d = to_f<T>(dy[i]);
        float s = sigmoidf(gv);
        float silu = rnd<T>(gv * s);
        du[i] = from_f<T>(d * silu);
        dg[i] = from_f<T>(d * uv * s * (1.f + gv * (1.f - s)));
    }
}

// One AdamW step over many tensors in one launch: tensor j has n[j] elements; params (f32
// master), grads (f32), m, v (f32), and optionally the model-dtype copy of the params to refresh.
struct AdamTensor {
    float *p;
    const void *g;  // f32, or the model dtype T (the hand-written backward's gradients)
    float *m;
    float *v;
    void *model;  // T*, may be null
    int64_t n;
    float decay;  // 1 when weight decay applies to this tensor, else 0
    float pad;
};

template <typename T, typename G>
__global__ void adamw_multi(const AdamTensor *__restrict__ ts, int count, float lr, float beta1, float beta2,
                            float eps, float wd, float bc1, float bc2_sqrt, float gscale) {
    int j = blockIdx.y;
    if (j >= count) return;
    AdamTensor t = ts[j];
    const G *grad = reinterpret_cast<const G *>(t.g);
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < t.n; i += (int64_t)gridDim.x * blockDim.x) {
        float g = to_f<G>(grad[i]) * gscale;
        float m = beta1 * t.m[i] + (1.f - beta1) * g;
        float v = beta2 * t.v[i] + (1.f - beta2) * g * g;
        t.m[i] = m;
        t.v[i] = v;
        float p = t.p[i];
        if (t.decay != 0.f) p *= 1.f - lr * wd;
        p -= (m / (sqrtf(v) / bc2_sqrt + eps)) * (lr / bc1);
        t.p[i] = p;
        if (t.model != nullptr) reinterpret_cast<T *>(t.model)[i] = from_f<T>(p);
    }
}

// The squared L2 norm of many tensors (a global gradient norm) in two launches: block (x, j)
// sums the squares of its grid-strided share of tensor j into part[j * gridDim.x + x]; then one
// block adds the partials in index order, in double. Fixed order throughout, so the norm is
// bit-identical from run to run.
struct SumSqTensor {
    const void *x;
    int64_t n;
};

__device__ float block_sum(float v) {
    __shared__ float sw[32];
    v = warp_sum(v);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    if (lane == 0) sw[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? sw[lane] : 0.f;
        v = warp_sum(v);
        if (lane == 0) sw[0] = v;
    }
    __syncthreads();
    float r = sw[0];
    __syncthreads();
    return r;
}

template <typename T>
__global__ void sumsq_multi(const SumSqTensor *__restrict__ ts, int count, float *__restrict__ part) {
    int j = blockIdx.y;
    if (j >= count) return;
    SumSqTensor t = ts[j];
    const T *x = reinterpret_cast<const T *>(t.x);
    float acc = 0.f;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < t.n; i += (int64_t)gridDim.x * blockDim.x) {
        float v = to_f<T>(x[i]);
        acc = fmaf(v, v, acc);
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) part[(int64_t)j * gridDim.x + blockIdx.x] = acc;
}

// out[0] = sum of part[0..n) in double, in a fixed order; one block of 1024 threads.
__global__ void sum_parts_f64(const float *__restrict__ part, int64_t n, float *__restrict__ out) {
    __shared__ double sd[1024];
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += (double)part[i];
    sd[threadIdx.x] = acc;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) sd[threadIdx.x] += sd[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[0] = (float)sd[0];
}

// The gated delta rule for scoring, as transformers' recurrence (torch_recurrent_gated_delta_rule
// with q/k L2-normalised in f32 and q scaled by 1/sqrt(dk)): per value head a state S [dk, dv]
// starts at zero and for every token
//     S <- exp(g) S;  S <- S + k (beta (v - S^T k))^T;  o = S^T q.
// Column j of S depends only on column j: v_j, and the shared q, k, g, beta. So the state is
// split by column, never reduced across columns: a group of P lanes owns one column, lane p
// holding rows 32p .. 32p + 31 (kGdrRows of them, in registers), and the two dot products
// per token are P-lane shuffle sums in a fixed order. Deterministic, exact in f32 up to rounding.
//
// q, k and v are read where the short convolution wrote them: token (b, t) of the packed
// [B, T, ld] activations holds q (Hk heads of dk) at channel 0, k at Hk*dk, v (Hv heads of dv)
// at 2*Hk*dk; value head h reads key head h / (Hv / Hk). g (log decay) is f32 [B, T, Hv], beta
// [B, T, Hv] in T. Tokens are staged kGdrTile at a time in shared memory; the next tile's loads
// are issued into registers before the current tile is computed, so their latency hides behind
// it. out: [B, T, Hv, dv] in T (the f32 result rounded once).
constexpr int kGdrRows = 32;   // state rows per lane
// Shared-memory stride of a lane's 32 rows: 4 floats of padding put the P lanes of a column on
// different banks, so each lane reads its rows as 16-byte vectors without conflicts.
constexpr int kGdrLane = kGdrRows + 4;
constexpr int kGdrCols = 32;   // state columns per block
constexpr int kGdrTile = 16;   // tokens staged in shared memory at a time
constexpr int kGdrChunk = 64;  // tokens between the state checkpoints the backward starts from

__device__ __forceinline__ float group_sum(float v, int lanes) {
    for (int o = lanes / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// The next tile's loads, held in registers while the current tile is computed. A block has
// exactly dpad = 32 * P threads, so thread `tid` loads channel `tid` of q and k for each of the
// tile's tokens (qk[u]: q for u < kGdrTile, k after; token u % kGdrTile), and column tid % 32 of
// v for tokens tid / 32 + u * P. Stored to shared memory at [u][tid] (q/k) and [token][column]
// (v), the layouts gdr_fwd reads.
template <typename T, int P>
struct GdrTileRegs {
    float qk[2 * kGdrTile];
    float v[kGdrTile / P];
    float g, beta;
};

template <typename T, int P>
__device__ __forceinline__ void gdr_load(GdrTileRegs<T, P> &r, const T *__restrict__ qkv, int64_t ld,
                                         const float *__restrict__ g, const T *__restrict__ beta, int b, int Tn,
                                         int t0, int Hk, int hk, int Hv, int h, int dk, int dv, int c0) {
    const int tid = threadIdx.x;
    const int tt = min(kGdrTile, Tn - t0);
    // Every index below is a constant offset from one row pointer per token.
    const T *tile = qkv + ((int64_t)b * Tn + t0) * ld;
    const bool channel = tid < dk;
#pragma unroll
    for (int i = 0; i < kGdrTile; ++i) {
        const T *row = tile + i * ld + hk * dk + tid;
        const bool in = channel && i < tt;
        r.qk[i] = in ? to_f<T>(row[0]) : 0.f;
        r.qk[kGdrTile + i] = in ? to_f<T>(row[Hk * dk]) : 0.f;
    }
    const int c = tid % kGdrCols, col = c0 + c;
    const T *vcol = tile + 2 * Hk * dk + h * dv + col;
#pragma unroll
    for (int u = 0; u < kGdrTile / P; ++u) {
        const int i = tid / kGdrCols + u * P;
        r.v[u] = (i < tt && col < dv) ? to_f<T>(vcol[i * ld]) : 0.f;
    }
    r.g = 0.f;
    r.beta = 0.f;
    if (tid < tt) {
        int64_t off = ((int64_t)b * Tn + t0 + tid) * Hv + h;
        r.g = g[off];
        r.beta = to_f<T>(beta[off]);
    }
}

// With `normalize` 0, q and k are taken as they are (already normalised and scaled: the training
// op). `out` may be null (only the checkpoints wanted). `ckpt`, when not null, receives the state
// before every kGdrChunk-th token: [block][chunk][row][thread] (see gdr_bwd). P (lanes per
// column) is a template argument so that every shared-memory offset and lane index is a
// compile-time constant; blocks are kGdrCols * P threads.
template <typename T, int P>
__global__ void gdr_fwd(const T *__restrict__ qkv, int64_t ld, const float *__restrict__ g,
                        const T *__restrict__ beta, T *__restrict__ out, int Tn, int Hk, int Hv, int dk, int dv,
                        float eps, float q_scale, int normalize, float *__restrict__ ckpt) {
    extern __shared__ float sh[];
    constexpr int dpad = P * kGdrRows, nthreads = kGdrCols * P, stride = P * kGdrLane;
    float *sqk = sh;                          // [2][tile][stride]: q rows, then k rows, padded
    float *sv = sqk + 2 * kGdrTile * stride;  // [tile][cols]
    float *sg = sv + kGdrTile * kGdrCols;     // [tile]
    float *sb = sg + kGdrTile;                // [tile]
    const int h = blockIdx.x % Hv, b = blockIdx.x / Hv;
    const int hk = h / (Hv / Hk);
    const int c0 = blockIdx.y * kGdrCols;
    const int tid = threadIdx.x, p = tid % P, cl = tid / P, col = c0 + cl;
    const int warp = tid / 32, lane = tid % 32, warps = nthreads / 32;
    float s[kGdrRows];
#pragma unroll
    for (int r = 0; r < kGdrRows; ++r) s[r] = 0.f;
    static_assert(nthreads == dpad, "one thread per padded key channel");
    GdrTileRegs<T, P> regs;
    gdr_load<T, P>(regs, qkv, ld, g, beta, b, Tn, 0, Hk, hk, Hv, h, dk, dv, c0);
    const int nchunks = (Tn + kGdrChunk - 1) / kGdrChunk;
    const size_t state_floats = (size_t)kGdrRows * nthreads;
    const size_t blk = (size_t)blockIdx.x * gridDim.y + blockIdx.y;
    for (int t0 = 0; t0 < Tn; t0 += kGdrTile) {
        const int tt = min(kGdrTile, Tn - t0);
        if (ckpt != nullptr && t0 % kGdrChunk == 0) {
            float *ck = ckpt + (blk * nchunks + t0 / kGdrChunk) * state_floats;
#pragma unroll
            for (int r = 0; r < kGdrRows; ++r) ck[(size_t)r * nthreads + tid] = s[r];
        }
        __syncthreads();  // the previous tile is done with shared memory
#pragma unroll
        for (int u = 0; u < 2 * kGdrTile; ++u) sqk[u * stride + (tid / kGdrRows) * kGdrLane + tid % kGdrRows] = regs.qk[u];
#pragma unroll
        for (int u = 0; u < kGdrTile / P; ++u) sv[tid + u * nthreads] = regs.v[u];
        if (tid < kGdrTile) {
            sg[tid] = regs.g;
            sb[tid] = regs.beta;
        }
        __syncthreads();
        if (t0 + kGdrTile < Tn) gdr_load<T, P>(regs, qkv, ld, g, beta, b, Tn, t0 + kGdrTile, Hk, hk, Hv, h, dk, dv, c0);
        // L2-normalise every q and k row of the tile in f32 (q then scaled), one warp per row.
        for (int row = warp; normalize && row < 2 * kGdrTile; row += warps) {
            float *x = sqk + row * stride + lane;  // channel 32 j + lane at x[j * kGdrLane]
            float ss = 0.f;
#pragma unroll
            for (int j = 0; j < P; ++j) ss = fmaf(x[j * kGdrLane], x[j * kGdrLane], ss);
            ss = warp_sum(ss);
            float inv = 1.f / sqrtf(ss + eps);
            bool is_q = row < kGdrTile;
#pragma unroll
            for (int j = 0; j < P; ++j) {
                float y = x[j * kGdrLane] * inv;
                x[j * kGdrLane] = is_q ? y * q_scale : y;
            }
        }
        __syncthreads();
        for (int i = 0; i < tt; ++i) {
            // This lane's 32 rows of q and k, as 16-byte vectors.
            const float4 *qq = reinterpret_cast<const float4 *>(sqk + i * stride + p * kGdrLane);
            const float4 *kk = reinterpret_cast<const float4 *>(sqk + (kGdrTile + i) * stride + p * kGdrLane);
            const float decay = expf(sg[i]);
            float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
#pragma unroll
            for (int r = 0; r < kGdrRows; r += 4) {
                const float4 k4 = kk[r / 4];
                s[r] *= decay;
                s[r + 1] *= decay;
                s[r + 2] *= decay;
                s[r + 3] *= decay;
                a0 = fmaf(s[r], k4.x, a0);
                a1 = fmaf(s[r + 1], k4.y, a1);
                a2 = fmaf(s[r + 2], k4.z, a2);
                a3 = fmaf(s[r + 3], k4.w, a3);
            }
            const float ks = group_sum((a0 + a1) + (a2 + a3), P);
            const float delta = sb[i] * (sv[i * kGdrCols + cl] - ks);
            a0 = a1 = a2 = a3 = 0.f;
#pragma unroll
            for (int r = 0; r < kGdrRows; r += 4) {
                const float4 k4 = kk[r / 4], q4 = qq[r / 4];
                s[r] = fmaf(k4.x, delta, s[r]);
                s[r + 1] = fmaf(k4.y, delta, s[r + 1]);
                s[r + 2] = fmaf(k4.z, delta, s[r + 2]);
                s[r + 3] = fmaf(k4.w, delta, s[r + 3]);
                a0 = fmaf(s[r], q4.x, a0);
                a1 = fmaf(s[r + 1], q4.y, a1);
                a2 = fmaf(s[r + 2], q4.z, a2);
                a3 = fmaf(s[r + 3], q4.w, a3);
            }
            const float o = group_sum((a0 + a1) + (a2 + a3), P);
            if (p == 0 && col < dv && out != nullptr) out[(((int64_t)b * Tn + t0 + i) * Hv + h) * dv + col] = from_f<T>(o);
        }
    }
}

// The gated delta rule's backward (f32), per state column as the forward: for each chunk of
// kGdrChunk tokens from the last, the state is reloaded from the forward's checkpoint and
// stepped through the chunk, each token's incoming state kept in `scratch` ([block][token of
// chunk][row][thread]); then the tokens are walked backwards with the state's gradient ds in
// registers:
//     ds += do_j q;  dq += do_j s_t;  dd = k . ds;  dk += d ds - beta dd s_a;  dbeta += dd (v_j - u);
//     dv_j = beta dd;  ds_a = ds - beta dd k;  dg += s_a . ds_a;  ds = exp(g) ds_a
// (s_a = exp(g) s_{t-1}, u = k . s_a, d = beta (v_j - u), s_t = s_a + d k). dv is the column's
// own; dq, dk, dbeta and dg sum over columns: over the block's 32 columns through shared memory
// in column order, then over column blocks and the value heads of a key head by gdr_reduce_*,
// in index order. No atomics: the gradients are bit-identical from run to run.
// packed: [B, T, ld] f32 with q at channel 0, k at Hk*dk, v at 2*Hk*dk (q, k already normalised
// and scaled). dpacked: the same layout; this kernel writes its v channels.
// part_q, part_k: [B, T, Hv, ncb, dk]; part_b, part_g: [B, T, Hv, ncb].
template <int P>
__global__ void gdr_bwd(const float *__restrict__ packed, int64_t ld, const float *__restrict__ g,
                        const float *__restrict__ beta, const float *__restrict__ dout,
                        const float *__restrict__ ckpt, float *__restrict__ scratch, float *__restrict__ dpacked,
                        float *__restrict__ part_q, float *__restrict__ part_k, float *__restrict__ part_b,
                        float *__restrict__ part_g, int Tn, int Hk, int Hv, int dk, int dv) {
    extern __shared__ float sh[];
    constexpr int dpad = P * kGdrRows, nthreads = kGdrCols * P, stride = P * kGdrLane;
    // The column partials: column cl's channel 32 j + r at [cl][j][r] with rows of 33, so that
    // the 32 lanes of a warp (its columns and their lanes) write to 32 different banks.
    constexpr int red_lane = kGdrRows + 1, red_row = P * red_lane;
    float *sq = sh;                            // [stride]: q, lane blocks padded as in gdr_fwd
    float *sk = sq + stride;                   // [stride]
    float *red_q = sk + stride;                // [cols][red_row]
    float *red_k = red_q + kGdrCols * red_row; // [cols][red_row]
    float *red_b = red_k + kGdrCols * red_row; // [cols]
    float *red_g = red_b + kGdrCols;           // [cols]
    float *sv = red_g + kGdrCols;              // [cols]
    float *sdo = sv + kGdrCols;                // [cols]
    float *sgb = sdo + kGdrCols;               // [2]: g, beta
    const int h = blockIdx.x % Hv, b = blockIdx.x / Hv;
    const int hk = h / (Hv / Hk);
    const int ncb = gridDim.y, cb = blockIdx.y, c0 = cb * kGdrCols;
    const int tid = threadIdx.x, p = tid % P, cl = tid / P, col = c0 + cl;
    const int nchunks = (Tn + kGdrChunk - 1) / kGdrChunk;
    const size_t state_floats = (size_t)kGdrRows * nthreads;
    const size_t blk = (size_t)blockIdx.x * ncb + cb;
    float *my_scratch = scratch + blk * kGdrChunk * state_floats;
    const int vd = 2 * Hk * dk;
    auto stage = [&](int t) {
        const float *row = packed + ((int64_t)b * Tn + t) * ld;
        for (int e = tid; e < dpad; e += nthreads) {
            const int at = (e / kGdrRows) * kGdrLane + e % kGdrRows;
            sq[at] = e < dk ? row[hk * dk + e] : 0.f;
            sk[at] = e < dk ? row[Hk * dk + hk * dk + e] : 0.f;
        }
        for (int e = tid; e < kGdrCols; e += nthreads) {
            bool in = c0 + e < dv;
            sv[e] = in ? row[vd + h * dv + c0 + e] : 0.f;
            sdo[e] = in ? dout[(((int64_t)b * Tn + t) * Hv + h) * dv + c0 + e] : 0.f;
        }
        if (tid == 0) {
            int64_t o = ((int64_t)b * Tn + t) * Hv + h;
            sgb[0] = g[o];
            sgb[1] = beta[o];
        }
    };
    float s[kGdrRows], ds[kGdrRows];
#pragma unroll
    for (int r = 0; r < kGdrRows; ++r) ds[r] = 0.f;
    for (int c = nchunks - 1; c >= 0; --c) {
        const int tb = c * kGdrChunk, te = min(Tn, tb + kGdrChunk);
        const float *ck = ckpt + (blk * nchunks + c) * state_floats;
#pragma unroll
        for (int r = 0; r < kGdrRows; ++r) s[r] = ck[(size_t)r * nthreads + tid];
        for (int t = tb; t < te; ++t) {
            __syncthreads();
            stage(t);
            __syncthreads();
            float *sc = my_scratch + (size_t)(t - tb) * state_floats;
            const float a = expf(sgb[0]);
            float acc = 0.f;
#pragma unroll
            for (int r = 0; r < kGdrRows; ++r) {
                sc[(size_t)r * nthreads + tid] = s[r];
                s[r] *= a;
                acc = fmaf(s[r], sk[p * kGdrLane + r], acc);
            }
            const float u = group_sum(acc, P);
            const float d = sgb[1] * (sv[cl] - u);
#pragma unroll
            for (int r = 0; r < kGdrRows; ++r) s[r] = fmaf(sk[p * kGdrLane + r], d, s[r]);
        }
        for (int t = te - 1; t >= tb; --t) {
            __syncthreads();
            stage(t);
            __syncthreads();
            const float *sc = my_scratch + (size_t)(t - tb) * state_floats;
            const float a = expf(sgb[0]), bt = sgb[1];
            float acc = 0.f;
#pragma unroll
            for (int r = 0; r < kGdrRows; ++r) {
                s[r] = a * sc[(size_t)r * nthreads + tid];  // s_a
                acc = fmaf(s[r], sk[p * kGdrLane + r], acc);
            }
            const float u = group_sum(acc, P);
            const float vj = sv[cl], doj = sdo[cl];
            const float d = bt * (vj - u);
            float dd_acc = 0.f;
#pragma unroll
            for (int r = 0; r < kGdrRows; ++r) {
                const int i = p * kGdrLane + r;
                ds[r] = fmaf(doj, sq[i], ds[r]);
                red_q[cl * red_row + p * red_lane + r] = doj * fmaf(sk[i], d, s[r]);
                dd_acc = fmaf(sk[i], ds[r], dd_acc);
            }
            const float dd = group_sum(dd_acc, P);
            const float bdd = bt * dd;
            float dg_acc = 0.f;
#pragma unroll
            for (int r = 0; r < kGdrRows; ++r) {
                const int i = p * kGdrLane + r;
                red_k[cl * red_row + p * red_lane + r] = d * ds[r] - bdd * s[r];
                const float dsa = ds[r] - bdd * sk[i];
                dg_acc = fmaf(s[r], dsa, dg_acc);
                ds[r] = a * dsa;
            }
            const float dgc = group_sum(dg_acc, P);
            if (p == 0) {
                red_b[cl] = dd * (vj - u);
                red_g[cl] = dgc;
                if (col < dv) dpacked[((int64_t)b * Tn + t) * ld + vd + h * dv + col] = bdd;
            }
            __syncthreads();
            const int64_t prow = (((int64_t)b * Tn + t) * Hv + h) * ncb + cb;
            for (int e = tid; e < dk; e += nthreads) {
                float aq = 0.f, ak = 0.f;
                const int at = (e / kGdrRows) * red_lane + e % kGdrRows;
                for (int cc = 0; cc < kGdrCols; ++cc) {
                    aq += red_q[cc * red_row + at];
                    ak += red_k[cc * red_row + at];
                }
                part_q[prow * dk + e] = aq;
                part_k[prow * dk + e] = ak;
            }
            if (tid == 0) {
                float ab = 0.f, ag = 0.f;
                for (int cc = 0; cc < kGdrCols; ++cc) {
                    ab += red_b[cc];
                    ag += red_g[cc];
                }
                part_b[prow] = ab;
                part_g[prow] = ag;
            }
        }
    }
}

// dq and dk into dpacked: for key head hk, the sum over its value heads and their column blocks,
// in index order.
__global__ void gdr_reduce_qk(const float *__restrict__ part_q, const float *__restrict__ part_k,
                              float *__restrict__ dpacked, int64_t ld, int64_t n, int Hk, int Hv, int dk, int ncb) {
    const int rep = Hv / Hk;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += (int64_t)gridDim.x * blockDim.x) {
        int d = (int)(idx % dk);
        int hk = (int)((idx / dk) % Hk);
        int64_t bt = idx / ((int64_t)dk * Hk);
        float aq = 0.f, ak = 0.f;
        for (int i = 0; i < rep; ++i) {
            for (int cb = 0; cb < ncb; ++cb) {
                int64_t prow = (bt * Hv + hk * rep + i) * ncb + cb;
                aq += part_q[prow * dk + d];
                ak += part_k[prow * dk + d];
            }
        }
        dpacked[bt * ld + hk * dk + d] = aq;
        dpacked[bt * ld + (int64_t)Hk * dk + hk * dk + d] = ak;
    }
}

// dbeta and dg: the sum over column blocks, in order. n = B * T * Hv.
__global__ void gdr_reduce_bg(const float *__restrict__ part_b, const float *__restrict__ part_g,
                              float *__restrict__ dbeta, float *__restrict__ dg, int64_t n, int ncb) {
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += (int64_t)gridDim.x * blockDim.x) {
        float ab = 0.f, ag = 0.f;
        for (int cb = 0; cb < ncb; ++cb) {
            ab += part_b[idx * ncb + cb];
            ag += part_g[idx * ncb + cb];
        }
        dbeta[idx] = ab;
        dg[idx] = ag;
    }
}

// The short causal convolution of the gated DeltaNet, then SiLU, as transformers' torch
// fallback computes it: per channel c of x [B, T, C], y_t = sum_j w[c, j] x[t - (K-1) + j]
// (zeros before the sequence), each product and sum rounded in f32 in tap order (no FMA: the
// same as the composite's separate multiply and add), rounded to T, then SiLU in f32, rounded
// again.
template <typename T>
__global__ void conv_silu(const T *__restrict__ x, const T *__restrict__ w, T *__restrict__ y, int64_t n, int Tn,
                          int C, int K) {
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += (int64_t)gridDim.x * blockDim.x) {
        int c = (int)(idx % C);
        int64_t bt = idx / C;
        int t = (int)(bt % Tn);
        float acc = 0.f;
        for (int j = 0; j < K; ++j) {
            int back = K - 1 - j;
            float xv = t - back >= 0 ? to_f<T>(x[idx - (int64_t)back * C]) : 0.f;
            float term = __fmul_rn(xv, to_f<T>(w[(int64_t)c * K + j]));
            acc = j == 0 ? term : __fadd_rn(acc, term);
        }
        float a = rnd<T>(acc);
        y[idx] = from_f<T>(a / (1.f + expf(-a)));
    }
}

// Qwen3.5's gated RMSNorm: y = round(round(round(x * rsqrt(mean(x^2) + eps)) * w) * silu(z)), the
// normalisation and the gate in f32; one warp per row of `cols`.
template <typename T>
__global__ void gated_rmsnorm(const T *__restrict__ x, const T *__restrict__ z, const T *__restrict__ w,
                              T *__restrict__ y, int64_t rows, int cols, float eps) {
    int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const T *xr = x + row * cols, *zr = z + row * cols;
    T *yr = y + row * cols;
    float inv = 1.f / sqrtf(row_sum_squares(xr, cols, lane) / (float)cols + eps);
    for (int c = lane; c < cols; c += 32) {
        float n = rnd<T>(to_f<T>(xr[c]) * inv);
        n = rnd<T>(n * to_f<T>(w[c]));
        float zv = to_f<T>(zr[c]);
        yr[c] = from_f<T>(n * (zv / (1.f + expf(-zv))));
    }
}

// Qwen3.5's gated attention, q or k: each (token, head) row gets the zero-centred RMSNorm
// (x * rstd * (1 + w) in f32, rounded once, as rmsnorm_centered_fwd), then RoPE on its first
// `rot` dims (rotate_half within them; cos/sin [T, rot/2]), the other dims passed through. Rows
// are read `ld` elements apart (q is the first half of every head of q_proj's [query | gate]
// output, so no copy precedes this) and written contiguous, [B, T, H, D] as cuDNN takes them.
// Each RoPE product is rounded to T and their sum rounded again, as PyTorch computes
// `q * cos + rotate_half(q) * sin` in the activation dtype. One warp per row; the normalised row
// is staged in shared memory, so a dim's partner (i +- rot/2) may sit in any lane.
template <typename T>
__global__ void centered_norm_rope(const T *__restrict__ x, int64_t ld, const T *__restrict__ w,
                                   const T *__restrict__ cos_t, const T *__restrict__ sin_t, T *__restrict__ y,
                                   int64_t rows, int heads, int seq, int d, int rot, float eps) {
    __shared__ float staged[8][256];  // 8 warps per block, d <= 256
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t row = (int64_t)blockIdx.x * 8 + warp;
    if (row >= rows) return;
    const T *xr = x + row * ld;
    const float r = 1.f / sqrtf(row_sum_squares(xr, d, lane) / d + eps);
    float *nb = staged[warp];
    for (int i = lane; i < d; i += 32) nb[i] = rnd<T>((to_f<T>(xr[i]) * r) * (1.f + to_f<T>(w[i])));
    __syncwarp();
    const int half = rot / 2, pos = (int)((row / heads) % seq);
    const T *cr = cos_t + (int64_t)pos * half, *sr = sin_t + (int64_t)pos * half;
    T *yr = y + row * d;
    for (int i = lane; i < d; i += 32) {
        float v = nb[i];
        if (i < half) {
            v = rnd<T>(v * to_f<T>(cr[i])) + rnd<T>(-nb[i + half] * to_f<T>(sr[i]));
        } else if (i < rot) {
            v = rnd<T>(v * to_f<T>(cr[i - half])) + rnd<T>(nb[i - half] * to_f<T>(sr[i - half]));
        }
        yr[i] = from_f<T>(v);
    }
}

// The gated attention's output gate: y[r, c] = round(out[r, c] * round(sigmoid(gate[r * ld + c]))),
// the sigmoid in f32 (transformers: `attn_output * torch.sigmoid(gate)` in the activation dtype).
// out and y are [rows, cols] contiguous; gate rows are `ld` apart (the second half of every head
// of q_proj's output, read in place).
template <typename T>
__global__ void sigmoid_gate(const T *__restrict__ out, const T *__restrict__ gate, int64_t ld, T *__restrict__ y,
                             int64_t rows, int cols) {
    const int64_t n = rows * cols;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = idx / cols;
        const int c = (int)(idx % cols);
        const float g = to_f<T>(gate[r * ld + c]);
        y[idx] = from_f<T>(to_f<T>(out[idx]) * rnd<T>(1.f / (1.f + expf(-g))));
    }
}

// Qwen3.5's gated DeltaNet gates, per (token, value head) of [n / hv, hv]: the log decay
// g = -(softplus(a + dt_bias) * exp(A_log)) in f32 (softplus(x) = max(x, 0) + log(1 + exp(-|x|)),
// op for op as koth-model's `deltanet::gates`), and beta = sigmoid(b) in f32 rounded to T. One
// kernel where the composite takes a dozen launches over these small tensors.
template <typename T>
__global__ void delta_gates(const T *__restrict__ a, const T *__restrict__ bv, const float *__restrict__ a_log,
                            const float *__restrict__ dt_bias, float *__restrict__ g, T *__restrict__ beta, int64_t n,
                            int hv) {
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += (int64_t)gridDim.x * blockDim.x) {
        const int h = (int)(idx % hv);
        const float x = to_f<T>(a[idx]) + dt_bias[h];
        const float softplus = fmaxf(x, 0.f) + logf(1.f + expf(-fabsf(x)));
        g[idx] = -(softplus * expf(a_log[h]));
        beta[idx] = from_f<T>(1.f / (1.f + expf(-to_f<T>(bv[idx]))));
    }
}

// f32 bits as an int that orders like Rust's f32::total_cmp (so a NaN sorts the same way as on
// the host).
__device__ __forceinline__ int total_order_key(float v) {
    int b = __float_as_int(v);
    return b ^ (int)(((unsigned)(b >> 31)) >> 1);
}

// The MoE router's top-k: for each row of `probs` [rows, E] (f32), the indices of its k largest
// values, largest first, the lower index first among equal ones (total_cmp order): exactly
// koth-model's `plan::top_k_experts`, which the host ran before. One warp per row; k rounds,
// each a warp argmax over the experts not yet chosen (lane l holds experts l, l + 32, ...; E at
// most 1024). No atomics: the same choice on every run.
__global__ void router_topk(const float *__restrict__ probs, int64_t rows, int E, int k,
                            uint32_t *__restrict__ chosen) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + warp;
    if (row >= rows) return;
    const float *p = probs + row * E;
    unsigned taken = 0;  // bit j: expert lane + 32 j already chosen
    for (int r = 0; r < k; ++r) {
        int best = INT_MIN, bi = INT_MAX;
        for (int j = 0; lane + 32 * j < E; ++j) {
            if ((taken >> j) & 1u) continue;
            const int key = total_order_key(p[lane + 32 * j]);
            // Ascending experts per lane: a tie keeps the earlier (lower) one.
            if (key > best || bi == INT_MAX) {
                best = key;
                bi = lane + 32 * j;
            }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const int ok = __shfl_xor_sync(0xffffffffu, best, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (oi != INT_MAX && (bi == INT_MAX || ok > best || (ok == best && oi < bi))) {
                best = ok;
                bi = oi;
            }
        }
        if (lane == (bi & 31)) taken |= 1u << (bi >> 5);
        if (lane == 0) chosen[row * k + r] = (uint32_t)bi;
    }
}

// The MoE block's output for scoring: out[t, c] = the sum of token t's k weighted expert outputs,
// rows pos[t, 0..k) of y [R, H] (ascending: the order of the grouped list, expert by expert),
// each product y * w and each running sum rounded to T, in that order. That is what
// `zeros.index_add(rows, y * w)` computes on the host (one id after another), but with one thread
// per output element: candle's CUDA index_add gives each column one thread that walks every
// routed row (131,072 of them per layer at B=8, T=2048, top-8), sequentially.
// Products and sums are explicitly rounded (__fmul_rn / __fadd_rn): no fused multiply-add. A
// position outside y's R rows makes the element NaN rather than a read out of bounds.
template <typename T>
__global__ void moe_combine(const T *__restrict__ y, const T *__restrict__ w, const uint32_t *__restrict__ pos,
                            T *__restrict__ out, int64_t r, int64_t n, int k, int h) {
    const int64_t total = n * h;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = idx / h;
        const int c = (int)(idx % h);
        float acc = 0.f;
        for (int j = 0; j < k; ++j) {
            const int64_t p = pos[t * k + j];
            if (p >= r) {  // not a row of y: the caller's error, shown, never read
                acc = NAN;
                break;
            }
            const float term = rnd<T>(__fmul_rn(to_f<T>(y[p * h + c]), to_f<T>(w[p])));
            acc = rnd<T>(__fadd_rn(acc, term));
        }
        out[idx] = from_f<T>(acc);
    }
}

int check(cudaError_t e) { return e == cudaSuccess ? 0 : (int)e; }

// The largest gridDim.y: multi-tensor launches put one tensor per blockIdx.y and split beyond it.
constexpr int kMaxGridY = 65535;

int grid_for(int64_t n, int threads) {
    int64_t blocks = (n + threads - 1) / threads;
    return (int)(blocks > 65535 * 8 ? 65535 * 8 : blocks);
}

}  // namespace

#define KOTH_DISPATCH(dtype, ...)                                      \
    switch (dtype) {                                                   \
        case 0: { using T = float; __VA_ARGS__; break; }               \
        case 1: { using T = __nv_bfloat16; __VA_ARGS__; break; }       \
        case 2: { using T = __half; __VA_ARGS__; break; }              \
        default: return -1;                                            \
    }

extern "C" {

const char *koth_cuda_error_string(int code) { return cudaGetErrorString((cudaError_t)code); }

// The runtime API launches on the calling thread's current device: make it candle's.
int koth_use_device(int ordinal) { return check(cudaSetDevice(ordinal)); }

int koth_ce_fwd(int dtype, const void *logits, int64_t rows, int64_t ld, int v, const uint32_t *targets,
                float *nll, void *stream) {
    if (rows == 0) return 0;
    KOTH_DISPATCH(dtype, ce_fwd<T><<<(unsigned)rows, 1024, 0, (cudaStream_t)stream>>>(
                             (const T *)logits, ld, v, targets, nll));
    return check(cudaGetLastError());
}

int koth_ce_bwd(int dtype, const void *logits, void *out, int64_t rows, int64_t ld, int v,
                const uint32_t *targets, const float *grad, void *stream) {
    if (rows == 0) return 0;
    KOTH_DISPATCH(dtype, ce_bwd<T><<<(unsigned)rows, 1024, 0, (cudaStream_t)stream>>>(
                             (const T *)logits, (T *)out, ld, v, targets, grad));
    return check(cudaGetLastError());
}

int koth_ce_fwd_bwd(int dtype, void *logits, int64_t rows, int64_t ld, int v, const uint32_t *targets, float g,
                    float *nll, void *stream) {
    if (rows == 0) return 0;
    KOTH_DISPATCH(dtype, ce_fwd_bwd<T><<<(unsigned)rows, 1024, 0, (cudaStream_t)stream>>>(
                             (T *)logits, ld, v, targets, g, nll));
    return check(cudaGetLastError());
}

int koth_embed_bwd(int dtype, const void *dy, const int32_t *order, const int32_t *offsets, const uint32_t *uniq,
                   int n_uniq, int cols, void *out, void *stream) {
    if (n_uniq == 0) return 0;
    KOTH_DISPATCH(dtype, embed_bwd<T><<<(unsigned)n_uniq, 256, 0, (cudaStream_t)stream>>>(
                             (const T *)dy, order, offsets, uniq, cols, (T *)out));
    return check(cudaGetLastError());
}

int koth_rmsnorm_fwd(int dtype, const void *x, const void *w, void *y, float *rstd, int64_t rows, int cols,
                     float eps, void *stream) {
    if (rows == 0) return 0;
    unsigned blocks = (unsigned)((rows + 7) / 8);
    KOTH_DISPATCH(dtype, rmsnorm_fwd<T><<<blocks, 256, 0, (cudaStream_t)stream>>>(
                             (const T *)x, (const T *)w, (T *)y, rstd, rows, cols, eps));
    return check(cudaGetLastError());
}

int koth_rmsnorm_centered_fwd(int dtype, const void *x, const void *w, void *y, int64_t rows, int cols, float eps,
                              void *stream) {
    if (rows == 0) return 0;
    unsigned blocks = (unsigned)((rows + 7) / 8);
    KOTH_DISPATCH(dtype, rmsnorm_centered_fwd<T><<<blocks, 256, 0, (cudaStream_t)stream>>>(
                             (const T *)x, (const T *)w, (T *)y, rows, cols, eps));
    return check(cudaGetLastError());
}

// dw_part must hold parts * cols floats, parts = ceil(rows / rows_per_block).
int koth_rmsnorm_bwd(int dtype, const void *x, const void *w, const void *dy, const float *rstd, void *dx,
                     void *dw, float *dw_part, int64_t rows, int cols, int64_t rows_per_block, void *stream) {
    if (rows == 0) return 0;
    int parts = (int)((rows + rows_per_block - 1) / rows_per_block);
    size_t smem = (size_t)cols * sizeof(float);
    KOTH_DISPATCH(dtype, {
        if (smem > 48 * 1024) {
            cudaFuncSetAttribute(rmsnorm_bwd<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        }
        rmsnorm_bwd<T><<<parts, 256, smem, (cudaStream_t)stream>>>(
            (const T *)x, (const T *)w, (const T *)dy, rstd, (T *)dx, dw_part, rows, cols, rows_per_block);
        sum_rows<T><<<(cols + 255) / 256, 256, 0, (cudaStream_t)stream>>>(dw_part, parts, cols, (T *)dw);
    });
    return check(cudaGetLastError());
}

int koth_norm_rope(int dtype, const void *x, const void *w, const void *cos_t, const void *sin_t, void *y,
                   int64_t rows, int heads, int seq, int head_dim, float eps, float sign, void *stream) {
    if (rows == 0) return 0;
    if (head_dim % 2 != 0 || head_dim > 256) return -2;
    unsigned blocks = (unsigned)((rows + 7) / 8);
    KOTH_DISPATCH(dtype, norm_rope<T><<<blocks, 256, 0, (cudaStream_t)stream>>>(
                             (const T *)x, (const T *)w, (const T *)cos_t, (const T *)sin_t, (T *)y, rows,
                             heads, seq, head_dim, eps, sign));
    return check(cudaGetLastError());
}

int koth_swiglu_fwd(int dtype, const void *g, const void *u, void *y, int64_t n, void *stream) {
    if (n == 0) return 0;
    KOTH_DISPATCH(dtype, swiglu_fwd<T><<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>(
                             (const T *)g, (const T *)u, (T *)y, n));
    return check(cudaGetLastError());
}

int koth_swiglu_bwd(int dtype, const void *g, const void *u, const void *dy, void *dg, void *du, int64_t n,
                    void *stream) {
    if (n == 0) return 0;
    KOTH_DISPATCH(dtype, swiglu_bwd<T><<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>(
                             (const T *)g, (const T *)u, (const T *)dy, (T *)dg, (T *)du, n));
    return check(cudaGetLastError());
}

// `tensors` is a device array of `count` AdamTensor records (p, g, m, v, model, n); the gradients
// are f32, or of the model dtype when `grads_in_model_dtype`.
int koth_adamw_multi(int dtype, int grads_in_model_dtype, const void *tensors, int count, int64_t max_n,
                     float lr, float beta1, float beta2, float eps, float wd, float bc1, float bc2_sqrt, float gscale,
                     void *stream) {
    if (count == 0) return 0;
    int64_t bx = (max_n + 255) / 256;
    if (bx > 1024) bx = 1024;
    // One tensor per blockIdx.y, at most kMaxGridY of them per launch.
    for (int j0 = 0; j0 < count; j0 += kMaxGridY) {
        int n = count - j0 < kMaxGridY ? count - j0 : kMaxGridY;
        const AdamTensor *ts = (const AdamTensor *)tensors + j0;
        dim3 grid((unsigned)bx, (unsigned)n);
        if (grads_in_model_dtype) {
            KOTH_DISPATCH(dtype, adamw_multi<T, T><<<grid, 256, 0, (cudaStream_t)stream>>>(
                                     ts, n, lr, beta1, beta2, eps, wd, bc1, bc2_sqrt, gscale));
        } else {
            KOTH_DISPATCH(dtype, adamw_multi<T, float><<<grid, 256, 0, (cudaStream_t)stream>>>(
                                     ts, n, lr, beta1, beta2, eps, wd, bc1, bc2_sqrt, gscale));
        }
    }
    return check(cudaGetLastError());
}

// `tensors`: a device array of `count` SumSqTensor records of one dtype; `part` holds
// count * blocks_per_tensor floats; out[0] receives the sum of every element's square.
int koth_sumsq_multi(int dtype, const void *tensors, int count, int blocks_per_tensor, float *part, float *out,
                     void *stream) {
    if (count == 0 || blocks_per_tensor <= 0) return -1;
    for (int j0 = 0; j0 < count; j0 += kMaxGridY) {
        int n = count - j0 < kMaxGridY ? count - j0 : kMaxGridY;
        dim3 grid((unsigned)blocks_per_tensor, (unsigned)n);
        KOTH_DISPATCH(dtype, sumsq_multi<T><<<grid, 256, 0, (cudaStream_t)stream>>>(
                                 (const SumSqTensor *)tensors + j0, n, part + (int64_t)j0 * blocks_per_tensor));
    }
    sum_parts_f64<<<1, 1024, 0, (cudaStream_t)stream>>>(part, (int64_t)count * blocks_per_tensor, out);
    return check(cudaGetLastError());
}

int koth_sumsq_record_bytes() { return (int)sizeof(SumSqTensor); }

// See gdr_fwd. dk at most 256 (8 lanes of 32 rows per column).
static int gdr_lanes(int dk) {
    int P = 1;
    while (P * kGdrRows < dk) P *= 2;
    return P;
}

// Runs the statement with `P` a constant: the lanes per column the delta-rule kernels are
// instantiated for.
#define KOTH_GDR_LANES(lanes, ...)                                   \
    switch (lanes) {                                                 \
        case 1: { constexpr int P = 1; __VA_ARGS__; break; }         \
        case 2: { constexpr int P = 2; __VA_ARGS__; break; }         \
        case 4: { constexpr int P = 4; __VA_ARGS__; break; }         \
        case 8: { constexpr int P = 8; __VA_ARGS__; break; }         \
        default: return -2;                                          \
    }

// The scratch sizes (in floats) of the backward for a shape: sizes[0] the checkpoints,
// sizes[1] the per-chunk states, sizes[2] each of part_q and part_k, sizes[3] each of part_b and
// part_g.
int koth_gdr_bwd_sizes(int batch, int seq, int Hv, int dk, int dv, int64_t *sizes) {
    if (dk <= 0 || dk > 8 * kGdrRows) return -2;
    int64_t P = gdr_lanes(dk), ncb = (dv + kGdrCols - 1) / kGdrCols, blocks = (int64_t)batch * Hv * ncb;
    int64_t state = (int64_t)kGdrRows * kGdrCols * P;
    sizes[0] = blocks * ((seq + kGdrChunk - 1) / kGdrChunk) * state;
    sizes[1] = blocks * kGdrChunk * state;
    sizes[2] = (int64_t)batch * seq * Hv * ncb * dk;
    sizes[3] = (int64_t)batch * seq * Hv * ncb;
    return 0;
}

int koth_gdr_fwd(int dtype, const void *qkv, int64_t ld, const float *g, const void *beta, void *out, int batch,
                 int seq, int Hk, int Hv, int dk, int dv, float eps, float q_scale, int normalize, float *ckpt,
                 void *stream) {
    if (batch == 0 || seq == 0 || dv == 0) return 0;
    if (dk <= 0 || dk > 8 * kGdrRows) return -2;
    if (Hk <= 0 || Hv % Hk != 0) return -3;
    const int lanes = gdr_lanes(dk);
    size_t smem = sizeof(float) * ((size_t)2 * kGdrTile * lanes * kGdrLane + kGdrTile * kGdrCols + 2 * kGdrTile);
    dim3 grid((unsigned)(batch * Hv), (unsigned)((dv + kGdrCols - 1) / kGdrCols));
    KOTH_DISPATCH(dtype, KOTH_GDR_LANES(lanes, {
        if (smem > 48 * 1024)
            cudaFuncSetAttribute(gdr_fwd<T, P>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        gdr_fwd<T, P><<<grid, kGdrCols * P, smem, (cudaStream_t)stream>>>(
            (const T *)qkv, ld, g, (const T *)beta, (T *)out, seq, Hk, Hv, dk, dv, eps, q_scale, normalize, ckpt);
    }));
    return check(cudaGetLastError());
}

// See gdr_bwd; the buffers are sized by koth_gdr_bwd_sizes, `ckpt` filled by koth_gdr_fwd.
int koth_gdr_bwd(const float *packed, int64_t ld, const float *g, const float *beta, const float *dout,
                 const float *ckpt, float *scratch, float *dpacked, float *part_q, float *part_k, float *part_b,
                 float *part_g, float *dbeta, float *dg, int batch, int seq, int Hk, int Hv, int dk, int dv,
                 void *stream) {
    if (batch == 0 || seq == 0 || dv == 0) return 0;
    if (dk <= 0 || dk > 8 * kGdrRows) return -2;
    if (Hk <= 0 || Hv % Hk != 0) return -3;
    const int lanes = gdr_lanes(dk), ncb = (dv + kGdrCols - 1) / kGdrCols;
    size_t smem =
        sizeof(float) * ((size_t)2 * lanes * kGdrLane + (size_t)2 * kGdrCols * lanes * (kGdrRows + 1) + 4 * kGdrCols + 2);
    dim3 grid((unsigned)(batch * Hv), (unsigned)ncb);
    KOTH_GDR_LANES(lanes, {
        if (smem > 48 * 1024)
            cudaFuncSetAttribute(gdr_bwd<P>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        gdr_bwd<P><<<grid, kGdrCols * P, smem, (cudaStream_t)stream>>>(packed, ld, g, beta, dout, ckpt, scratch,
                                                                         dpacked, part_q, part_k, part_b, part_g, seq,
                                                                         Hk, Hv, dk, dv);
    });
    int64_t nqk = (int64_t)batch * seq * Hk * dk;
    gdr_reduce_qk<<<grid_for(nqk, 256), 256, 0, (cudaStream_t)stream>>>(part_q, part_k, dpacked, ld, nqk, Hk, Hv, dk,
                                                                         ncb);
    int64_t nbg = (int64_t)batch * seq * Hv;
    gdr_reduce_bg<<<grid_for(nbg, 256), 256, 0, (cudaStream_t)stream>>>(part_b, part_g, dbeta, dg, nbg, ncb);
    return check(cudaGetLastError());
}

int koth_conv_silu(int dtype, const void *x, const void *w, void *y, int batch, int seq, int C, int K, void *stream) {
    int64_t n = (int64_t)batch * seq * C;
    if (n == 0) return 0;
    KOTH_DISPATCH(dtype, conv_silu<T><<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>(
                             (const T *)x, (const T *)w, (T *)y, n, seq, C, K));
    return check(cudaGetLastError());
}

int koth_gated_rmsnorm(int dtype, const void *x, const void *z, const void *w, void *y, int64_t rows, int cols,
                       float eps, void *stream) {
    if (rows == 0) return 0;
    unsigned blocks = (unsigned)((rows + 7) / 8);
    KOTH_DISPATCH(dtype, gated_rmsnorm<T><<<blocks, 256, 0, (cudaStream_t)stream>>>(
                             (const T *)x, (const T *)z, (const T *)w, (T *)y, rows, cols, eps));
    return check(cudaGetLastError());
}

int koth_centered_norm_rope(int dtype, const void *x, int64_t ld, const void *w, const void *cos_t,
                            const void *sin_t, void *y, int64_t rows, int heads, int seq, int d, int rot,
                            float eps, void *stream) {
    if (rows == 0) return 0;
    if (d <= 0 || d > 256 || rot < 0 || rot > d || rot % 2 != 0 || ld < d || heads <= 0 || seq <= 0) return -2;
    unsigned blocks = (unsigned)((rows + 7) / 8);
    KOTH_DISPATCH(dtype, centered_norm_rope<T><<<blocks, 256, 0, (cudaStream_t)stream>>>(
                             (const T *)x, ld, (const T *)w, (const T *)cos_t, (const T *)sin_t, (T *)y, rows,
                             heads, seq, d, rot, eps));
    return check(cudaGetLastError());
}

int koth_sigmoid_gate(int dtype, const void *out, const void *gate, int64_t ld, void *y, int64_t rows, int cols,
                      void *stream) {
    int64_t n = rows * cols;
    if (n == 0) return 0;
    if (ld < cols) return -2;
    KOTH_DISPATCH(dtype, sigmoid_gate<T><<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>(
                             (const T *)out, (const T *)gate, ld, (T *)y, rows, cols));
    return check(cudaGetLastError());
}

int koth_delta_gates(int dtype, const void *a, const void *b, const float *a_log, const float *dt_bias, float *g,
                     void *beta, int64_t n, int hv, void *stream) {
    if (n == 0) return 0;
    if (hv <= 0 || n % hv != 0) return -2;
    KOTH_DISPATCH(dtype, delta_gates<T><<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>(
                             (const T *)a, (const T *)b, a_log, dt_bias, g, (T *)beta, n, hv));
    return check(cudaGetLastError());
}

int koth_router_topk(const float *probs, int64_t rows, int E, int k, uint32_t *chosen, void *stream) {
    if (rows == 0 || k == 0) return 0;
    if (E <= 0 || E > 1024 || k > E) return -2;
    unsigned blocks = (unsigned)((rows + 7) / 8);
    router_topk<<<blocks, 256, 0, (cudaStream_t)stream>>>(probs, rows, E, k, chosen);
    return check(cudaGetLastError());
}

int koth_moe_combine(int dtype, const void *y, const void *w, const uint32_t *pos, void *out, int64_t r, int64_t n,
                     int k, int h, void *stream) {
    const int64_t total = n * h;
    if (total == 0) return 0;
    if (k <= 0) return -2;
    KOTH_DISPATCH(dtype, moe_combine<T><<<grid_for(total, 256), 256, 0, (cudaStream_t)stream>>>(
                             (const T *)y, (const T *)w, pos, (T *)out, r, n, k, h));
    return check(cudaGetLastError());
}

int koth_add_rmsnorm_centered_fwd(int dtype, const void *x, const void *d, const void *w, void *sum, void *y,
                                  int64_t rows, int cols, float eps, void *stream) {
    if (rows == 0) return 0;
    unsigned blocks = (unsigned)((rows + 7) / 8);
    KOTH_DISPATCH(dtype, add_rmsnorm_centered_fwd<T><<<blocks, 256, 0, (cudaStream_t)stream>>>(
                             (const T *)x, (const T *)d, (const T *)w, (T *)sum, (T *)y, rows, cols, eps));
    return check(cudaGetLastError());
}

int koth_add_rmsnorm_fwd(int dtype, const void *x, const void *d, const void *w, void *sum, void *y, int64_t rows,
                         int cols, float eps, void *stream) {
    if (rows == 0) return 0;
    unsigned blocks = (unsigned)((rows + 7) / 8);
    KOTH_DISPATCH(dtype, add_rmsnorm_fwd<T><<<blocks, 256, 0, (cudaStream_t)stream>>>(
                             (const T *)x, (const T *)d, (const T *)w, (T *)sum, (T *)y, rows, cols, eps));
    return check(cudaGetLastError());
}

int koth_adam_record_bytes() { return (int)sizeof(AdamTensor); }

// The memory pool's host functions have nothing a host emulation could check
// (crates/koth-kernels-emu compiles this file with KOTH_EMULATE).
#ifndef KOTH_EMULATE
// Hand the memory the default pool holds but no allocation uses back to the driver, so that
// another process (the PyTorch reference of `koth bench --torch`) can have it.
int koth_mem_release(int device) {
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) return (int)e;
    e = cudaDeviceSynchronize();
    if (e != cudaSuccess) return (int)e;
    cudaMemPool_t pool;
    e = cudaDeviceGetDefaultMemPool(&pool, device);
    if (e != cudaSuccess) return (int)e;
    return check(cudaMemPoolTrimTo(pool, 0));
}

// High-water mark of the bytes allocated from the device's default memory pool (where candle's
// stream-ordered allocations and the cuDNN workspaces come from): the analogue of PyTorch's
// max_memory_allocated. `reset` starts a new measurement.
int koth_mem_peak(int device, uint64_t *used_high, int reset) {
    cudaMemPool_t pool;
    cudaError_t e = cudaDeviceGetDefaultMemPool(&pool, device);
    if (e != cudaSuccess) return (int)e;
    unsigned long long v = 0;
    e = cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &v);
    if (e != cudaSuccess) return (int)e;
    *used_high = (uint64_t)v;
    if (reset) {
        unsigned long long zero = 0;
        e = cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero);
        if (e != cudaSuccess) return (int)e;
    }
    return 0;
}
#endif  // KOTH_EMULATE

}  // extern "C"
