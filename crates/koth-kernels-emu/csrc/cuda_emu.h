// A host emulation of the small part of CUDA that koth's kernels use, so that
// `koth-kernels/csrc/kernels.cu` compiles for the CPU and the CPU suite can check its
// indexing, lane layouts and reductions against the CPU references.
//
// Each CUDA thread of a block is a fiber (ucontext) on the calling OS thread; blocks run one
// after another. A fiber runs until it reaches a barrier: `__syncthreads` waits for every
// live thread of the block, a warp shuffle for the 32 lanes of its warp (a shuffle is a write
// to the warp's exchange slots, a warp barrier, the read, and a second barrier). The
// scheduler releases a barrier only when all its threads have arrived, and aborts with a
// message when threads are stuck at different barriers (divergent `__syncthreads`, a shuffle
// some lanes never reach), the deadlocks a GPU would hang on or leave undefined.
//
// What this does not model: memory ordering between threads outside barriers, the GPU's
// floating-point contraction (the host build compiles with -ffp-contract=off, so `a * b + c`
// is rounded twice where nvcc would fuse it), `expf`'s last-ulp differences, and timing. It
// checks a kernel's arithmetic and layout; only the GPU checks its speed and races.
#pragma once

#include <ucontext.h>
#include <sys/mman.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// One block runs at a time on a given OS thread, so a function-local static is that block's
// shared memory; thread_local keeps the test threads that launch in parallel apart.
#define __shared__ static thread_local

using std::max;
using std::min;

inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline int __float_as_int(float x) {
    int i;
    std::memcpy(&i, &x, 4);
    return i;
}
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
    unsigned x, y, z;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
struct alignas(16) float4 {
    float x, y, z, w;
};

// bf16 and f16 storage types with CUDA's round-to-nearest-even conversions.
struct __nv_bfloat16 {
    uint16_t bits;
};
inline float __bfloat162float(__nv_bfloat16 h) {
    uint32_t u = (uint32_t)h.bits << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{(uint16_t)((u >> 16) | 0x40u)};  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return __nv_bfloat16{(uint16_t)(u >> 16)};
}
struct __half {
    uint16_t bits;
};
inline float __half2float(__half h) {
    _Float16 v;
    std::memcpy(&v, &h.bits, 2);
    return (float)v;
}
inline __half __float2half_rn(float f) {
    _Float16 v = (_Float16)f;  // IEEE round to nearest even
    __half h;
    std::memcpy(&h.bits, &v, 2);
    return h;
}

typedef void *cudaStream_t;
enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorInvalidConfiguration = 9,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

namespace koth_emu {

// Hopper's limits, which a launch is checked against.
constexpr unsigned kMaxThreads = 1024;
constexpr unsigned kMaxGridYZ = 65535;
constexpr size_t kMaxDynamicShared = 227 * 1024;
constexpr size_t kSharedGuard = 4096;  // bytes past the dynamic shared memory, checked after a block
constexpr size_t kStack = 256 * 1024;  // per fiber

enum class State { Run, AtBlockBarrier, AtWarpBarrier, Done };

struct Fiber {
    ucontext_t ctx;
    State state;
};

struct Block {
    dim3 grid, dim, idx;
    unsigned current = 0;
    std::vector<Fiber> fibers;
    std::vector<uint64_t> exchange;  // one shuffle slot per thread
    std::vector<unsigned char> shared;
    ucontext_t scheduler;
    void (*body)(void *) = nullptr;
    void *body_arg = nullptr;
    const char *what = "";
};

inline thread_local Block *running = nullptr;
inline thread_local cudaError_t last_error = cudaSuccess;
inline thread_local size_t max_dynamic_shared_opt_in = 48 * 1024;

[[noreturn]] inline void fail(const char *why) {
    Block &b = *running;
    std::fprintf(stderr, "cuda emulator: %s (block %u,%u,%u of %u,%u,%u; thread %u of %u)\n", why, b.idx.x, b.idx.y,
                 b.idx.z, b.grid.x, b.grid.y, b.grid.z, b.current, b.dim.x * b.dim.y * b.dim.z);
    std::abort();
}

inline uint3 thread_idx() {
    const Block &b = *running;
    unsigned i = b.current;
    return uint3{i % b.dim.x, (i / b.dim.x) % b.dim.y, i / (b.dim.x * b.dim.y)};
}
inline uint3 block_idx() { return uint3{running->idx.x, running->idx.y, running->idx.z}; }
inline uint3 block_dim() { return uint3{running->dim.x, running->dim.y, running->dim.z}; }
inline uint3 grid_dim() { return uint3{running->grid.x, running->grid.y, running->grid.z}; }

inline void wait_at(State s) {
    Block &b = *running;
    Fiber &f = b.fibers[b.current];
    f.state = s;
    swapcontext(&f.ctx, &b.scheduler);
}

inline void *dynamic_shared() { return running->shared.data(); }

inline void fiber_entry() {
    Block &b = *running;
    b.body(b.body_arg);
    b.fibers[b.current].state = State::Done;  // uc_link returns to the scheduler
}

// Fiber stacks, reserved once per OS thread and reused by every launch.
inline unsigned char *stacks(size_t n) {
    static thread_local unsigned char *base = nullptr;
    static thread_local size_t have = 0;
    if (have < n) {
        if (base != nullptr) munmap(base, have * kStack);
        void *p = mmap(nullptr, n * kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            std::fprintf(stderr, "cuda emulator: cannot map %zu fiber stacks\n", n);
            std::abort();
        }
        base = (unsigned char *)p;
        have = n;
    }
    return base;
}

// Releases the barrier every waiting thread has reached; false when every thread is done.
inline bool release(Block &b) {
    const unsigned n = (unsigned)b.fibers.size();
    bool released = false, live = false;
    for (unsigned w = 0; w * 32 < n; ++w) {
        unsigned lo = w * 32, hi = std::min(n, lo + 32), at_warp = 0, done = 0;
        for (unsigned i = lo; i < hi; ++i) {
            at_warp += b.fibers[i].state == State::AtWarpBarrier;
            done += b.fibers[i].state == State::Done;
        }
        if (at_warp == 0) continue;
        if (at_warp != hi - lo) {
            b.current = lo;
            fail(done > 0 ? "a warp shuffle that some lanes of the warp never reach (they exited)"
                          : "a warp shuffle that some lanes of the warp never reach (they wait at __syncthreads)");
        }
        for (unsigned i = lo; i < hi; ++i) b.fibers[i].state = State::Run;
        released = true;
    }
    if (released) return true;
    for (Fiber &f : b.fibers) live |= f.state != State::Done;
    if (!live) return false;
    for (Fiber &f : b.fibers) {
        if (f.state == State::AtBlockBarrier) f.state = State::Run;
    }
    return true;
}

inline void run_block(Block &b) {
    const unsigned n = b.dim.x * b.dim.y * b.dim.z;
    unsigned char *stack = stacks(n);
    b.fibers.assign(n, Fiber{});
    for (unsigned i = 0; i < n; ++i) {
        Fiber &f = b.fibers[i];
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = stack + (size_t)i * kStack;
        f.ctx.uc_stack.ss_size = kStack;
        f.ctx.uc_link = &b.scheduler;
        makecontext(&f.ctx, fiber_entry, 0);
        f.state = State::Run;
    }
    do {
        for (unsigned i = 0; i < n; ++i) {
            if (b.fibers[i].state != State::Run) continue;
            b.current = i;
            swapcontext(&b.scheduler, &b.fibers[i].ctx);
        }
    } while (release(b));
}

template <typename F>
void call_body(void *f) {
    (*(F *)f)();
}

// Runs `kernel` (a callable that calls the kernel function with its arguments) over the grid.
template <typename F>
void launch(F kernel, dim3 grid, dim3 block, size_t shared = 0, cudaStream_t = nullptr) {
    const unsigned threads = block.x * block.y * block.z;
    if (threads == 0 || threads > kMaxThreads || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
        grid.y > kMaxGridYZ || grid.z > kMaxGridYZ || shared > kMaxDynamicShared ||
        shared > max_dynamic_shared_opt_in) {
        std::fprintf(stderr,
                     "cuda emulator: invalid launch: grid %u,%u,%u, block %u,%u,%u, %zu bytes of dynamic shared "
                     "memory (%zu allowed)\n",
                     grid.x, grid.y, grid.z, block.x, block.y, block.z, shared,
                     std::min(kMaxDynamicShared, max_dynamic_shared_opt_in));
        last_error = cudaErrorInvalidConfiguration;
        max_dynamic_shared_opt_in = 48 * 1024;
        return;
    }
    max_dynamic_shared_opt_in = 48 * 1024;
    Block b;
    b.grid = grid;
    b.dim = block;
    b.exchange.assign(threads, 0);
    b.body = call_body<F>;
    b.body_arg = &kernel;
    Block *outer = running;
    running = &b;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                b.idx = dim3(x, y, z);
                // Shared memory starts as NaN bytes, so a read of a slot nobody wrote shows.
                b.shared.assign(shared + kSharedGuard, 0xff);
                run_block(b);
                for (size_t i = shared; i < shared + kSharedGuard; ++i) {
                    if (b.shared[i] != 0xff) fail("a write past the block's dynamic shared memory");
                }
            }
    running = outer;
}

template <typename T>
T shfl_xor(T v, int lane_mask) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    Block &b = *running;
    const unsigned t = b.current, lane = t % 32, base = t - lane;
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    b.exchange[t] = bits;
    wait_at(State::AtWarpBarrier);
    unsigned src = base + (lane ^ (unsigned)lane_mask);
    if (src >= b.fibers.size()) fail("a shuffle from a lane past the block");
    bits = b.exchange[src];
    wait_at(State::AtWarpBarrier);  // nobody overwrites a slot before every lane has read it
    T out;
    std::memcpy(&out, &bits, sizeof(T));
    return out;
}

}  // namespace koth_emu

#define threadIdx (::koth_emu::thread_idx())
#define blockIdx (::koth_emu::block_idx())
#define blockDim (::koth_emu::block_dim())
#define gridDim (::koth_emu::grid_dim())

inline void __syncthreads() { ::koth_emu::wait_at(::koth_emu::State::AtBlockBarrier); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    if (mask != 0xffffffffu) ::koth_emu::fail("only full-warp __syncwarp is emulated");
    ::koth_emu::wait_at(::koth_emu::State::AtWarpBarrier);
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    if (mask != 0xffffffffu || width != 32) ::koth_emu::fail("only full-warp shuffles are emulated");
    return ::koth_emu::shfl_xor(v, lane_mask);
}

inline cudaError_t cudaGetLastError() {
    cudaError_t e = ::koth_emu::last_error;
    ::koth_emu::last_error = cudaSuccess;
    return e;
}
inline const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        default: return "invalid argument";
    }
}
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
template <typename K>
cudaError_t cudaFuncSetAttribute(K, cudaFuncAttribute attr, int value) {
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) ::koth_emu::max_dynamic_shared_opt_in = (size_t)value;
    return cudaSuccess;
}
