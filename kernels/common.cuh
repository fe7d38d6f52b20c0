// Shared by every kernel file; compiles under nvcc and NVRTC alike. NVRTC has no host
// headers (no <stdint.h>, <math.h> macros or INFINITY), so this header uses none.
#pragma once

#define NEG_INF_F __int_as_float(0xff800000)
#define FULL_MASK 0xffffffffu

// Every kernel is launched from Rust by name: no C++ name mangling.
#define KERNEL extern "C" __global__

// The launch's dynamic shared memory, as T (the host sets its size at launch). The CUDA
// emulator's device.h defines its own.
#ifndef DYNAMIC_SHARED_DEFINED
template <typename T>
__device__ __forceinline__ T* dynamic_shared() {
    extern __shared__ double2 dynamic_shared_memory[];
    return reinterpret_cast<T*>(dynamic_shared_memory);
}
#endif

// Grid-stride loop over 0..n.
#define FOR_EACH(i, n) \
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += blockDim.x * gridDim.x)

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(FULL_MASK, v, offset);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1)
        v = fmaxf(v, __shfl_down_sync(FULL_MASK, v, offset));
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets
// the result. `scratch` holds 32 values; the call ends with a barrier so it can be reused.
template <typename T>
__device__ T block_sum(T v, T* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    const int warps = blockDim.x >> 5;
    T total = lane < warps ? scratch[lane] : T(0);
    total = warp_sum(total);
    total = __shfl_sync(FULL_MASK, total, 0);
    __syncthreads();
    return total;
}

__device__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_max(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    const int warps = blockDim.x >> 5;
    float m = lane < warps ? scratch[lane] : NEG_INF_F;
    m = warp_max(m);
    m = __shfl_sync(FULL_MASK, m, 0);
    __syncthreads();
    return m;
}
