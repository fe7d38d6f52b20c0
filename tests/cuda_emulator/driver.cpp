// libcuda.so for a machine without a GPU: the part of the CUDA driver API that fiedler's
// backend (through cudarc) calls, with "device" memory in host memory and every launch, copy
// and memset done at once on the calling thread, except that an asynchronous copy to the host
// lands only when a stream, event or the context is synchronised (as a GPU's may), the host
// bytes holding 0xFF (NaN) until then. Kernels are
// found by name among the emulated ones (runtime.cpp), whatever image a module is loaded
// from; device memory is emulated in memory.cpp. Calls outside this subset are absent: cudarc then panics naming the symbol, which
// the backend turns into an error. A kernel fault can be injected (FIEDLER_CUDA_EMULATOR_FAULT,
// below): the context is then lost, as a GPU's is.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "memory.h"
#include "runtime.h"

#define API extern "C" __attribute__((visibility("default")))

namespace {

// The CUresult values used here (cuda.h).
enum Result : int {
    SUCCESS = 0,
    INVALID_VALUE = 1,
    OUT_OF_MEMORY = 2,
    INVALID_DEVICE = 101,
    INVALID_HANDLE = 400,
    NOT_FOUND = 500,
    NOT_SUPPORTED = 801,
    ILLEGAL_ADDRESS = 700,
    LAUNCH_FAILED = 719,
};

using DevicePtr = unsigned long long;

// 8 GiB, or FIEDLER_CUDA_EMULATOR_MIB: out-of-memory paths can be reached.
size_t total_memory() {
    static const size_t bytes = [] {
        const char* v = std::getenv("FIEDLER_CUDA_EMULATOR_MIB");
        const long long mib = v ? std::atoll(v) : 0;
        return mib > 0 ? size_t(mib) << 20 : size_t(8) << 30;
    }();
    return bytes;
}

// 132 multiprocessors, or FIEDLER_CUDA_EMULATOR_SMS: launches sized by the SM count then
// give each block more work (grid-stride loops).
int sm_count() {
    static const int n = [] {
        const char* v = std::getenv("FIEDLER_CUDA_EMULATOR_SMS");
        const int parsed = v ? std::atoi(v) : 0;
        return parsed > 0 ? parsed : 132;
    }();
    return n;
}

// Memory pools (stream-ordered allocation), or none with FIEDLER_CUDA_EMULATOR_POOLS=0, as
// on devices without them: allocations then go through cuMemAlloc, which refuses 0 bytes.
bool has_pools() {
    static const bool pools = [] {
        const char* v = std::getenv("FIEDLER_CUDA_EMULATOR_POOLS");
        return !(v && std::strcmp(v, "0") == 0);
    }();
    return pools;
}

constexpr const char* NAME = "fiedler CUDA emulator (CPU)";

// A kernel fault, injected: FIEDLER_CUDA_EMULATOR_FAULT=NAME makes the first launch of kernel
// NAME fault, NAME:N its N-th. As on a GPU (an out-of-bounds access, say) the launch itself
// succeeds, since kernels run asynchronously, and the context is lost from then on: every
// call that uses it returns CUDA_ERROR_ILLEGAL_ADDRESS, and the emulated cuBLAS fails too
// (`emu_context_error`). A real process must end to use CUDA again; here it is the test's
// child process, which ends.
struct Fault {
    std::string kernel;
    long long launch = 1;
};

const Fault* injected_fault() {
    static const Fault* fault = []() -> const Fault* {
        const char* v = std::getenv("FIEDLER_CUDA_EMULATOR_FAULT");
        if (!v || !*v) return nullptr;
        auto* f = new Fault{v};
        const size_t colon = f->kernel.find(':');
        if (colon != std::string::npos) {
            f->launch = std::atoll(f->kernel.c_str() + colon + 1);
            f->kernel.resize(colon);
        }
        return f;
    }();
    return fault;
}

std::atomic<int> lost{SUCCESS};
std::atomic<long long> faulting_kernel_launches{0};

// Whether this launch of `kernel` is the injected fault (counting the launches of its kernel).
bool faults(const char* kernel) {
    const Fault* f = injected_fault();
    return f && f->kernel == kernel && ++faulting_kernel_launches == f->launch;
}

// The error of a lost context: every call below that uses the context starts with it.
#define UNLESS_LOST                          \
    if (const int error = lost.load()) return error;

Result allocate(DevicePtr* out, size_t bytes) {
    if (!out) return INVALID_VALUE;
    void* p = bytes == 0 ? nullptr : emu::allocate(bytes, total_memory());
    if (bytes != 0 && !p) return OUT_OF_MEMORY;
    *out = reinterpret_cast<DevicePtr>(p);
    return SUCCESS;
}

Result release(DevicePtr p) {
    return p == 0 || emu::release(reinterpret_cast<void*>(p)) ? SUCCESS : INVALID_VALUE;
}

// Handles for contexts, streams, pools and modules: distinct non-null pointers.
int context_tag, pool_tag, module_tag;

struct Event {
    std::chrono::steady_clock::time_point at;
    bool recorded = false;
    void* stream = nullptr;  // where it was last recorded
};

void* addr(DevicePtr p) { return reinterpret_cast<void*>(p); }

// Asynchronous copies to the host, not landed yet: each its stream, its destination and the
// source's bytes as they were when the copy was enqueued (in stream order, later work on the
// source does not reach it). A read of the destination before its stream is synchronised
// sees 0xFF bytes — whatever other streams (other tests' backends, on other threads) do.
struct PendingCopy {
    void* stream;
    void* dst;
    std::vector<unsigned char> bytes;
};
std::mutex pending_lock;
std::vector<PendingCopy> pending;

void defer_copy_to_host(void* stream, void* dst, const void* src, size_t n) {
    const auto* from = static_cast<const unsigned char*>(src);
    PendingCopy copy{stream, dst, std::vector<unsigned char>(from, from + n)};
    std::memset(dst, 0xFF, n);
    std::lock_guard<std::mutex> guard(pending_lock);
    pending.push_back(std::move(copy));
}

// The pending copies of `stream` land (the null stream is one more stream: fiedler's are
// non-blocking, which the legacy stream does not wait for); of every stream with `all` (a
// context's synchronisation).
void land_copies(void* stream, bool all = false) {
    std::lock_guard<std::mutex> guard(pending_lock);
    std::vector<PendingCopy> left;
    for (auto& copy : pending) {
        if (all || copy.stream == stream)
            std::memcpy(copy.dst, copy.bytes.data(), copy.bytes.size());
        else
            left.push_back(std::move(copy));
    }
    pending = std::move(left);
}

void land_all_copies() { land_copies(nullptr, true); }

const char* error_name(int r) {
    switch (r) {
        case SUCCESS: return "CUDA_SUCCESS";
        case INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
        case OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
        case INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
        case INVALID_HANDLE: return "CUDA_ERROR_INVALID_HANDLE";
        case NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
        case NOT_SUPPORTED: return "CUDA_ERROR_NOT_SUPPORTED";
        case ILLEGAL_ADDRESS: return "CUDA_ERROR_ILLEGAL_ADDRESS";
        case LAUNCH_FAILED: return "CUDA_ERROR_LAUNCH_FAILED";
        default: return nullptr;
    }
}

}  // namespace

// The lost context's error, or 0: the emulated cuBLAS (linked against this library) asks.
API int emu_context_error() { return lost.load(); }

// Initialisation and the device.

API int cuInit(unsigned) { return SUCCESS; }

API int cuDriverGetVersion(int* v) {
    *v = 13000;
    return SUCCESS;
}

API int cuDeviceGetCount(int* n) {
    *n = 1;
    return SUCCESS;
}

API int cuDeviceGet(int* device, int ordinal) {
    if (ordinal != 0) return INVALID_DEVICE;
    *device = 0;
    return SUCCESS;
}

API int cuDeviceGetName(char* name, int len, int) {
    if (len <= 0) return INVALID_VALUE;
    std::snprintf(name, (size_t)len, "%s", NAME);
    return SUCCESS;
}

API int cuDeviceTotalMem_v2(size_t* bytes, int) {
    *bytes = total_memory();
    return SUCCESS;
}

API int cuDeviceGetAttribute(int* value, int attribute, int) {
    switch (attribute) {
        case 1: *value = 1024; break;                 // max threads per block
        case 2: *value = 1024; break;                 // max block dim x
        case 3: case 4: *value = 64; break;           // max block dim y, z
        case 5: *value = 0x7fffffff; break;           // max grid dim x
        case 6: case 7: *value = 65535; break;        // max grid dim y, z
        case 8: *value = 48 << 10; break;             // shared memory per block
        case 10: *value = 32; break;                  // warp size
        case 16: *value = sm_count(); break;            // multiprocessors
        case 39: *value = 2048; break;                // threads per multiprocessor
        case 75: *value = 9; break;                   // compute capability
        case 76: *value = 0; break;
        case 97: *value = 227 << 10; break;           // opt-in shared memory per block
        case 115: *value = has_pools(); break;        // memory pools
        default: *value = 0;
    }
    return SUCCESS;
}

API int cuDeviceGetDefaultMemPool(void** pool, int) {
    if (!has_pools()) return NOT_SUPPORTED;
    *pool = &pool_tag;
    return SUCCESS;
}

// The pool's attributes change nothing here: memory is freed at once.
API int cuMemPoolSetAttribute(void*, int, void*) { return SUCCESS; }

// Contexts: one, always current.

API int cuDevicePrimaryCtxRetain(void** ctx, int) {
    *ctx = &context_tag;
    return SUCCESS;
}

API int cuDevicePrimaryCtxRelease_v2(int) { return SUCCESS; }
API int cuCtxSetCurrent(void*) { return SUCCESS; }

API int cuCtxGetCurrent(void** ctx) {
    *ctx = &context_tag;
    return SUCCESS;
}

API int cuCtxGetDevice(int* device) {
    *device = 0;
    return SUCCESS;
}

API int cuCtxSynchronize() {
    UNLESS_LOST
    land_all_copies();
    return SUCCESS;
}

// Streams: work runs when enqueued, so there is never anything to wait for.

API int cuStreamCreate(void** stream, unsigned) {
    UNLESS_LOST
    *stream = new char;
    return SUCCESS;
}

API int cuStreamCreateWithPriority(void** stream, unsigned flags, int) {
    return cuStreamCreate(stream, flags);
}

API int cuStreamDestroy_v2(void* stream) {
    UNLESS_LOST
    land_copies(stream);  // its work completes, as on a GPU
    delete static_cast<char*>(stream);
    return SUCCESS;
}

API int cuStreamSynchronize(void* stream) {
    UNLESS_LOST
    land_copies(stream);
    return SUCCESS;
}

// Idle, so its copies have landed.
API int cuStreamQuery(void* stream) {
    UNLESS_LOST
    land_copies(stream);
    return SUCCESS;
}
API int cuStreamWaitEvent(void*, void*, unsigned) {
    UNLESS_LOST
    return SUCCESS;
}

// Events time the host's work between two records.

API int cuEventCreate(void** event, unsigned) {
    UNLESS_LOST
    *event = new Event{std::chrono::steady_clock::now()};
    return SUCCESS;
}

API int cuEventDestroy_v2(void* event) {
    UNLESS_LOST
    delete static_cast<Event*>(event);
    return SUCCESS;
}

API int cuEventRecord(void* event, void* stream) {
    UNLESS_LOST
    *static_cast<Event*>(event) = Event{std::chrono::steady_clock::now(), true, stream};
    return SUCCESS;
}

API int cuEventRecordWithFlags(void* event, void* stream, unsigned) {
    return cuEventRecord(event, stream);
}

// The event's stream lands its copies (those enqueued after the record too: the emulator
// does not order them); an event never recorded waits for nothing.
void land_before(const Event& e) {
    if (e.recorded) land_copies(e.stream);
}

API int cuEventSynchronize(void* event) {
    UNLESS_LOST
    land_before(*static_cast<Event*>(event));
    return SUCCESS;
}

API int cuEventQuery(void* event) {
    UNLESS_LOST
    land_before(*static_cast<Event*>(event));
    return SUCCESS;
}

API int cuEventElapsedTime_v2(float* ms, void* start, void* end) {
    UNLESS_LOST
    const auto d = static_cast<Event*>(end)->at - static_cast<Event*>(start)->at;
    *ms = std::chrono::duration<float, std::milli>(d).count();
    return SUCCESS;
}

API int cuEventElapsedTime(float* ms, void* start, void* end) {
    return cuEventElapsedTime_v2(ms, start, end);
}

// Memory.

// As the driver: no empty allocations, but an empty stream-ordered one (cudarc's null slice).
API int cuMemAlloc_v2(DevicePtr* p, size_t bytes) {
    UNLESS_LOST
    return bytes == 0 ? INVALID_VALUE : allocate(p, bytes);
}

API int cuMemAllocAsync(DevicePtr* p, size_t bytes, void*) {
    UNLESS_LOST
    return has_pools() ? allocate(p, bytes) : NOT_SUPPORTED;
}
API int cuMemFree_v2(DevicePtr p) {
    UNLESS_LOST
    return release(p);
}

API int cuMemFreeAsync(DevicePtr p, void*) {
    UNLESS_LOST
    return has_pools() ? release(p) : NOT_SUPPORTED;
}

// Page-locked host memory is plain host memory here: every copy is a memcpy. Not counted
// against the device's memory.
API int cuMemHostAlloc(void** p, size_t bytes, unsigned) {
    UNLESS_LOST
    emu::Doing doing("cuMemHostAlloc");
    if (!p) return INVALID_VALUE;
    *p = std::malloc(bytes == 0 ? 1 : bytes);
    return *p ? SUCCESS : OUT_OF_MEMORY;
}

// Also after the context is lost: cudarc frees its pinned buffers when they are dropped.
API int cuMemFreeHost(void* p) {
    std::free(p);
    return SUCCESS;
}

API int cuMemGetInfo_v2(size_t* free, size_t* total) {
    UNLESS_LOST
    *free = total_memory() - emu::allocated();
    *total = total_memory();
    return SUCCESS;
}

API int cuMemcpyHtoD_v2(DevicePtr dst, const void* src, size_t n) {
    UNLESS_LOST
    emu::Doing doing("cuMemcpyHtoD");
    std::memcpy(addr(dst), src, n);
    return SUCCESS;
}

API int cuMemcpyDtoH_v2(void* dst, DevicePtr src, size_t n) {
    UNLESS_LOST
    emu::Doing doing("cuMemcpyDtoH");
    land_copies(nullptr);  // the legacy stream's work before it
    std::memcpy(dst, addr(src), n);
    return SUCCESS;
}

API int cuMemcpyDtoD_v2(DevicePtr dst, DevicePtr src, size_t n) {
    UNLESS_LOST
    emu::Doing doing("cuMemcpyDtoD");
    std::memmove(addr(dst), addr(src), n);
    return SUCCESS;
}

API int cuMemcpyHtoDAsync_v2(DevicePtr dst, const void* src, size_t n, void*) {
    return cuMemcpyHtoD_v2(dst, src, n);
}

API int cuMemcpyDtoHAsync_v2(void* dst, DevicePtr src, size_t n, void* stream) {
    UNLESS_LOST
    emu::Doing doing("cuMemcpyDtoHAsync");
    defer_copy_to_host(stream, dst, addr(src), n);
    return SUCCESS;
}

API int cuMemcpyDtoDAsync_v2(DevicePtr dst, DevicePtr src, size_t n, void*) {
    return cuMemcpyDtoD_v2(dst, src, n);
}

API int cuMemsetD8_v2(DevicePtr dst, unsigned char v, size_t n) {
    UNLESS_LOST
    emu::Doing doing("cuMemsetD8");
    std::memset(addr(dst), v, n);
    return SUCCESS;
}

API int cuMemsetD8Async(DevicePtr dst, unsigned char v, size_t n, void*) {
    return cuMemsetD8_v2(dst, v, n);
}

API int cuMemsetD32_v2(DevicePtr dst, unsigned v, size_t n) {
    UNLESS_LOST
    emu::Doing doing("cuMemsetD32");
    auto* p = static_cast<unsigned*>(addr(dst));
    for (size_t i = 0; i < n; ++i) p[i] = v;
    return SUCCESS;
}

API int cuMemsetD32Async(DevicePtr dst, unsigned v, size_t n, void*) {
    return cuMemsetD32_v2(dst, v, n);
}

// Modules and launches.

API int cuModuleLoadData(void** module, const void*) {
    UNLESS_LOST
    *module = &module_tag;
    return SUCCESS;
}

API int cuModuleUnload(void*) {
    UNLESS_LOST
    return SUCCESS;
}

API int cuModuleGetFunction(void** function, void*, const char* name) {
    UNLESS_LOST
    const emu::Kernel* k = emu::find_kernel(name);
    if (!k) return NOT_FOUND;
    *function = const_cast<emu::Kernel*>(k);
    return SUCCESS;
}

namespace {

// Per function, the most dynamic shared memory a launch may ask for: 48 KB unless raised
// (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) up to the opt-in 227 KB, as on sm_90.
// The emulator does not know a kernel's static shared memory, so it counts it as none: it
// may run fiedler_graphs_shared on a graph of 236–240 nodes, which an H100 sends to the
// dense kernel.
constexpr int DEFAULT_DYNAMIC_SHARED = 48 << 10;
constexpr int OPT_IN_SHARED = 227 << 10;
std::mutex dynamic_limits_lock;
std::map<const void*, int> dynamic_limits;

int dynamic_limit(const void* function) {
    std::lock_guard<std::mutex> guard(dynamic_limits_lock);
    const auto it = dynamic_limits.find(function);
    return it == dynamic_limits.end() ? DEFAULT_DYNAMIC_SHARED : it->second;
}

}  // namespace

API int cuFuncSetAttribute(void* function, int attribute, int value) {
    if (!function) return INVALID_HANDLE;
    if (attribute != 8) return INVALID_VALUE;  // only MAX_DYNAMIC_SHARED_SIZE_BYTES
    if (value < 0 || value > OPT_IN_SHARED) return INVALID_VALUE;
    std::lock_guard<std::mutex> guard(dynamic_limits_lock);
    dynamic_limits[function] = value;
    return SUCCESS;
}

API int cuFuncGetAttribute(int* value, int attribute, void* function) {
    if (!function) return INVALID_HANDLE;
    switch (attribute) {
        case 1: *value = 0; break;  // static shared memory: not known here
        case 8: *value = dynamic_limit(function); break;
        default: return INVALID_VALUE;
    }
    return SUCCESS;
}

API int cuLaunchKernel(void* function, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                       unsigned by, unsigned bz, unsigned shared_bytes, void*, void** params,
                       void** extra) {
    if (!function) return INVALID_HANDLE;
    // `extra` packs arguments another way, which fiedler does not use.
    if (extra != nullptr || shared_bytes > (unsigned)dynamic_limit(function)) return INVALID_VALUE;
    UNLESS_LOST
    const auto& kernel = *static_cast<const emu::Kernel*>(function);
    if (faults(kernel.name)) {
        std::fprintf(stderr, "CUDA emulator: kernel %s faults (FIEDLER_CUDA_EMULATOR_FAULT)\n",
                     kernel.name);
        lost = ILLEGAL_ADDRESS;
        return SUCCESS;
    }
    emu::Doing doing("kernel", kernel.name);
    const std::string error =
        emu::launch(kernel, {gx, gy, gz}, {bx, by, bz}, shared_bytes, params);
    if (error.empty()) return SUCCESS;
    std::fprintf(stderr, "CUDA emulator: %s\n", error.c_str());
    return LAUNCH_FAILED;
}

// Errors.

API int cuGetErrorName(int r, const char** name) {
    *name = error_name(r);
    return *name ? SUCCESS : INVALID_VALUE;
}

API int cuGetErrorString(int r, const char** text) { return cuGetErrorName(r, text); }
