// Kernels that check the emulator itself (tests/emulator.rs): barriers, shuffles, shared memory
// across warps, and the two faults it must report rather than run through.
#include <cuda_runtime.h>
#include <stdint.h>

namespace {

// out[i] = the sum of in[] over the block, by shuffles and one shared-memory pass: every
// thread must see every other thread's value, so a wrongly released barrier shows.
__global__ void block_total(const float *in, float *out) {
    __shared__ float warp_sums[32];
    float v = in[blockIdx.x * blockDim.x + threadIdx.x];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
    __syncthreads();
    float t = 0.f;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) t += warp_sums[w];
    out[blockIdx.x * blockDim.x + threadIdx.x] = t;
}

// Lane 0 waits at __syncthreads while its warp's other lanes shuffle: a hang on a GPU.
__global__ void divergent_shuffle(float *out) {
    float v = 1.f;
    if (threadIdx.x % 32 == 0) {
        __syncthreads();
    } else {
        v = __shfl_xor_sync(0xffffffffu, v, 1);
    }
    out[threadIdx.x] = v;
}

// Writes one float past the dynamic shared memory it was given.
__global__ void shared_overrun(int n) {
    extern __shared__ float buf[];
    if (threadIdx.x == 0) buf[n] = 1.f;
}

}  // namespace

extern "C" {

int koth_emu_block_total(const float *in, float *out, int blocks, int threads) {
    block_total<<<blocks, threads>>>(in, out);
    return (int)cudaGetLastError();
}

int koth_emu_divergent_shuffle(float *out) {
    divergent_shuffle<<<1, 64>>>(out);
    return (int)cudaGetLastError();
}

int koth_emu_shared_overrun(int n) {
    shared_overrun<<<1, 32, n * sizeof(float)>>>(n);
    return (int)cudaGetLastError();
}

int koth_emu_too_many_threads() {
    block_total<<<1, 2048>>>(nullptr, nullptr);
    return (int)cudaGetLastError();
}

}  // extern "C"
