// Kernels that check the emulator itself (tests/cuda_backend.rs,
// `the_emulator_shuffles_threads_and_fails_divergent_barriers`); built into the emulator only.
#include "common.cuh"

// Global thread ids in the order the threads got here.
KERNEL void emu_arrival_order(int* order, int* count) {
    order[atomicAdd(count, 1)] = blockIdx.x * blockDim.x + threadIdx.x;
}

// Half of each warp waits at __syncthreads, the other half at a shuffle that needs the whole
// warp: neither can ever be released.
KERNEL void emu_divergent_barrier(int* out) {
    if ((threadIdx.x & 31) < 16) {
        __syncthreads();
    } else {
        out[threadIdx.x] = __shfl_sync(FULL_MASK, (int)threadIdx.x, 0);
    }
}

// Block 0 writes its shared cell; every block reads its own: only block 0's holds a value,
// the others' are undefined (NaN in the emulator, whichever block ran before).
KERNEL void emu_static_shared_per_block(float* out) {
    __shared__ float cell;
    if (blockIdx.x == 0 && threadIdx.x == 0) cell = 1.0f;
    __syncthreads();
    if (threadIdx.x == 0) out[blockIdx.x] = cell;
}

// The upper half of each warp exits; the lower half reads lane 0 with a mask naming the
// whole warp: well defined (a mask may name lanes that have exited).
KERNEL void emu_shuffle_naming_exited_lanes(int* out) {
    if ((threadIdx.x & 31) >= 16) return;
    out[threadIdx.x] = __shfl_sync(FULL_MASK, (int)threadIdx.x, 0);
}

// The same half reads 8 lanes down: lanes 8–15 read exited lanes, undefined on a GPU.
KERNEL void emu_shuffle_reading_exited_lanes(int* out) {
    if ((threadIdx.x & 31) >= 16) return;
    out[threadIdx.x] = __shfl_down_sync(0xffffu, (int)threadIdx.x, 8);
}
