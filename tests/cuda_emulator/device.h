// The CUDA C++ that kernels/*.cu use, for a host C++ compiler: the emulator compiles every
// kernel file with this header force-included (`-include device.h`), so the very kernels
// nvcc builds run on the CPU, one block at a time, each CUDA thread a fiber (runtime.cpp).
//
// What it models: thread and block indices, `__shared__` memory per block (static, and the
// launch's dynamic size through `dynamic_shared<T>()`; both hold NaN bytes when a block starts,
// as what a GPU leaves there is undefined), `__syncthreads`,
// the warp shuffles (a warp-wide exchange), atomics, and the rounding intrinsics. It runs
// the threads of a block in turn between barriers, so code that reads another thread's
// write without a barrier in between reads the old value, as a real GPU may; a barrier or
// shuffle that not every live thread of its block (or warp) reaches fails the launch, and so
// does a shuffle that breaks CUDA's mask rules (a lane left out of its own mask, live lanes
// of one mask passing different ones, a lane read that does not take part).
#pragma once

#include <math.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace emu {

// One CUDA thread of the block being run.
struct Thread {
    dim3 thread_idx, block_idx, block_dim, grid_dim;
};

// The thread the emulator runs on this OS thread (each OS thread runs its own launches).
extern thread_local Thread* current;

void syncthreads();
// Every live lane of the caller's warp passes `bits`; each gets lane `src`'s (its own when
// `src` is outside the warp). `mask` names the lanes taking part, as CUDA asks (each lane's
// own, the same mask on every live lane it names, `src` one of them), else the launch fails.
uint64_t warp_exchange(uint64_t bits, int src, uint32_t mask);
// The running block's dynamic shared memory.
void* dynamic_shared_memory();
// Fills the static `__shared__` variable at `p` with NaN bytes if the running block has not
// yet: the emulator's build puts a call after each declaration (tests/common/cuda_emulator.rs).
void fresh_shared(void* p, size_t bytes);

template <typename T>
T shuffle(T v, int src, uint32_t mask) {
    static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable<T>::value,
                  "a shuffle moves at most 8 bytes");
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    const uint64_t got = warp_exchange(bits, src, mask);
    T out;
    std::memcpy(&out, &got, sizeof(T));
    return out;
}

template <typename To, typename From>
To bit_cast(From v) {
    static_assert(sizeof(To) == sizeof(From), "same size");
    To out;
    std::memcpy(&out, &v, sizeof(To));
    return out;
}

}  // namespace emu

#define threadIdx (emu::current->thread_idx)
#define blockIdx (emu::current->block_idx)
#define blockDim (emu::current->block_dim)
#define gridDim (emu::current->grid_dim)

#define __global__
#define __host__
// `static`: each kernel file is its own translation unit, as under nvcc, so helpers of the
// same name in two files stay apart.
#define __device__ static
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
// Per block. Blocks run one after another on an OS thread; launches on other OS threads
// (parallel tests) get their own copy. A block's first thread to reach the declaration fills
// it with NaN bytes (`fresh_shared`), so nothing of the previous block shows through.
#define __shared__ static thread_local

inline void __syncthreads() { emu::syncthreads(); }

// kernels/common.cuh's accessor of `extern __shared__` memory, which has no host C++ form.
#define DYNAMIC_SHARED_DEFINED
template <typename T>
T* dynamic_shared() {
    return static_cast<T*>(emu::dynamic_shared_memory());
}

template <typename T>
T __shfl_sync(unsigned mask, T v, int src) {
    return emu::shuffle(v, src & 31, mask);
}

template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta) {
    const int src = (int)(threadIdx.x & 31) + (int)delta;
    return emu::shuffle(v, src < 32 ? src : -1, mask);
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
    return emu::shuffle(v, (int)(threadIdx.x & 31) ^ lane_mask, mask);
}

// One fiber runs at a time, so an atomic is a plain read-modify-write.
template <typename T>
T atomicAdd(T* address, T v) {
    const T old = *address;
    *address = old + v;
    return old;
}

// Round to nearest, never contracted into an FMA: the emulator is built with
// -ffp-contract=off, so plain arithmetic already is.
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }

inline float __int_as_float(int v) { return emu::bit_cast<float>(v); }
inline float __int_as_float(unsigned v) { return emu::bit_cast<float>(v); }
inline double __longlong_as_double(long long v) { return emu::bit_cast<double>(v); }
inline long long __double_as_longlong(double v) { return emu::bit_cast<long long>(v); }

// CUDA's integer min/max (its float ones are fminf/fmaxf, as on the host).
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }

using std::isfinite;
using std::isnan;
