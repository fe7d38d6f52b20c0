// Runs a kernel launch on the calling OS thread: block after block, and within a block every
// CUDA thread as a fiber with its own stack. A fiber runs until it reaches a barrier
// (`__syncthreads`, or either half of a warp shuffle). A warp runs until its live lanes all
// wait at `__syncthreads` (a shuffle releases them when every live lane has reached it), then
// the next warp; when no warp can go on, the block is released if every live thread waits at
// `__syncthreads`. Anything else is a divergent barrier, which fails the launch with the
// threads' states.
//
// A GPU promises no order among blocks, nor among threads between barriers, so a kernel whose
// results depend on one is wrong. The emulator runs blocks, the warps of a block and the lanes
// of a warp in a shuffled order (seeded by FIEDLER_CUDA_EMULATOR_SEED, 1 by default,
// so that a run repeats), which makes such a dependence show as results that differ from the
// CPU's. FIEDLER_CUDA_EMULATOR_ORDER=in-order runs them in index order instead.
#include <sys/mman.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "device.h"
#include "registry.h"
#include "runtime.h"

#if !defined(__x86_64__)
#error "the CUDA emulator switches fibers with x86-64 code"
#endif

// Saves the callee-saved registers, the SSE and x87 control words and the stack pointer
// (into *save), then resumes the context whose stack pointer is `load` (System V x86-64).
extern "C" void emu_switch(void** save, void* load);
asm(R"(
    .text
    .p2align 4
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");

namespace emu {

thread_local Thread* current = nullptr;

namespace {

enum class Wait : uint8_t { Run, Barrier, Shuffle, Done };

// Shuffled index orders (splitmix64; Fisher–Yates).
class Order {
public:
    // `stream` sets this generator apart from others of the same seed.
    explicit Order(uint64_t stream) {
        const char* order = std::getenv("FIEDLER_CUDA_EMULATOR_ORDER");
        const char* seed = std::getenv("FIEDLER_CUDA_EMULATOR_SEED");
        in_order_ = order && std::strcmp(order, "in-order") == 0;
        state_ = (seed ? std::strtoull(seed, nullptr, 10) : 1) ^ (stream << 32);
    }

    // 0..n in this run's order.
    const std::vector<uint32_t>& of(size_t n) {
        indices_.resize(n);
        for (size_t i = 0; i < n; ++i) indices_[i] = (uint32_t)i;
        if (!in_order_)
            for (size_t i = n; i > 1; --i) std::swap(indices_[i - 1], indices_[next() % i]);
        return indices_;
    }

private:
    uint64_t next() {
        uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }

    bool in_order_;
    uint64_t state_;
    std::vector<uint32_t> indices_;
};

struct Fiber {
    Thread thread;
    void* sp;
    Wait wait;
    uint32_t mask;  // the lanes its shuffle names
    int src;        // the lane it reads there (-1: its own value)
};

// Kernels keep small arrays on the stack (the Lanczos kernel's are a few KB); the pages are
// only touched as used.
constexpr size_t STACK_BYTES = 256 << 10;
constexpr size_t GUARD_BYTES = 4096;
constexpr size_t MAX_THREADS = 1024;
// The block order lists every block; fiedler's launches stay near 1M blocks at most.
constexpr size_t MAX_BLOCKS = size_t(1) << 28;

class Scheduler {
public:
    ~Scheduler() {
        for (char* s : stacks_) munmap(s, STACK_BYTES + GUARD_BYTES);
    }

    std::string launch(const Kernel& kernel, dim3 grid, dim3 block, size_t shared_bytes,
                       void** params) {
        const size_t threads = (size_t)block.x * block.y * block.z;
        const size_t blocks = (size_t)grid.x * grid.y * grid.z;
        if (threads == 0 || threads > MAX_THREADS || blocks == 0 || blocks > MAX_BLOCKS)
            return "invalid launch shape";
        // A GPU refuses these too (CUDA_ERROR_INVALID_VALUE), however few blocks in all.
        if (block.x > 1024 || block.y > 1024 || block.z > 64 || grid.x > 0x7fffffffu ||
            grid.y > 65535 || grid.z > 65535)
            return "launch dimensions beyond a GPU's limits (block x, y <= 1024, z <= 64; "
                   "grid y, z <= 65535)";
        std::string error = reserve(threads);
        if (!error.empty()) return error;
        shuffle_error_.clear();
        kernel_ = &kernel;
        params_ = params;
        // Doubles: aligned for any type a kernel keeps there.
        dynamic_.resize((shared_bytes + sizeof(double) - 1) / sizeof(double));
        for (const uint32_t b : block_order_.of(blocks)) {
            const dim3 index{b % grid.x, b / grid.x % grid.y, b / (grid.x * grid.y)};
            // What a block finds there is undefined on a GPU: NaN here, so that reading it
            // before writing it shows (static shared variables: `fresh_shared`).
            std::memset(dynamic_.data(), 0xff, dynamic_.size() * sizeof(double));
            ++block_serial_;
            error = run_block(grid, block, index);
            if (!error.empty()) return error;
        }
        return "";
    }

    void park(Wait wait) {
        Fiber* f = running_;
        f->wait = wait;
        emu_switch(&f->sp, home_);
    }

    void* dynamic_shared() { return dynamic_.data(); }

    void fresh_shared(void* p, size_t bytes) {
        uint64_t& filled = shared_filled_[p];
        if (filled == block_serial_) return;
        std::memset(p, 0xff, bytes);
        filled = block_serial_;
    }

    uint64_t exchange(uint64_t bits, int src, uint32_t mask) {
        const size_t tid = running_ - fibers_.data();
        slots_[tid] = bits;
        running_->mask = mask;
        running_->src = src >= 0 && src < 32 ? src : -1;
        park(Wait::Shuffle);
        // `release_shuffle` checked that the lane read takes part.
        const uint64_t got = running_->src >= 0 ? slots_[(tid & ~size_t(31)) + (size_t)src] : bits;
        // Nobody overwrites a slot before every lane has read it.
        park(Wait::Shuffle);
        return got;
    }

private:
    [[noreturn]] static void fiber_main();

    std::string reserve(size_t threads) {
        while (stacks_.size() < threads) {
            void* s = mmap(nullptr, STACK_BYTES + GUARD_BYTES, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (s == MAP_FAILED) return "no memory for the fibers' stacks";
            mprotect(s, GUARD_BYTES, PROT_NONE);  // an overflow faults instead of corrupting
            stacks_.push_back(static_cast<char*>(s));
        }
        fibers_.resize(threads);
        slots_.resize(threads);
        return "";
    }

    // A stack on which emu_switch "returns" into fiber_main with the alignment of a call.
    void* fresh_stack(size_t i) const {
        auto top = reinterpret_cast<uintptr_t>(stacks_[i] + GUARD_BYTES + STACK_BYTES) & ~uintptr_t(15);
        auto* sp = reinterpret_cast<uint64_t*>(top);
        *--sp = 0;                                          // fiber_main's return address
        *--sp = reinterpret_cast<uint64_t>(&fiber_main);   // emu_switch's ret
        for (int r = 0; r < 6; ++r) *--sp = 0;              // rbp rbx r12 r13 r14 r15
        uint32_t mxcsr = 0;
        uint16_t fcw = 0;
        asm volatile("stmxcsr %0" : "=m"(mxcsr));
        asm volatile("fnstcw %0" : "=m"(fcw));
        *--sp = (uint64_t)mxcsr | ((uint64_t)fcw << 32);
        return sp;
    }

    std::string run_block(dim3 grid, dim3 block, dim3 index) {
        const size_t n = fibers_.size();
        for (size_t i = 0; i < n; ++i) {
            Fiber& f = fibers_[i];
            f.thread = {{unsigned(i % block.x), unsigned(i / block.x % block.y),
                         unsigned(i / (block.x * block.y))},
                        index, block, grid};
            f.sp = fresh_stack(i);
            f.wait = Wait::Run;
        }
        // Warp after warp, each run as far as it goes: through its shuffles, up to a
        // `__syncthreads` (or its end). One warp running ahead of the others is a schedule a
        // GPU may pick, and the one that shows a warp overwriting shared memory another has
        // yet to read.
        const size_t warps = (n + 31) / 32;
        for (;;) {
            for (const uint32_t w : warp_order_.of(warps)) {
                const size_t first = (size_t)w * 32, lanes = std::min<size_t>(32, n - first);
                do {
                    for (const uint32_t lane : lane_order_.of(lanes)) {
                        Fiber& f = fibers_[first + lane];
                        if (f.wait != Wait::Run) continue;
                        running_ = &f;
                        current = &f.thread;
                        emu_switch(&home_, f.sp);
                    }
                } while (release_shuffle(first, first + lanes));
                if (!shuffle_error_.empty()) {
                    running_ = nullptr;
                    current = nullptr;
                    return block_name(index) + ": " + shuffle_error_;
                }
            }
            running_ = nullptr;
            current = nullptr;
            bool live = false, all_at_barrier = true;
            for (const Fiber& f : fibers_) {
                if (f.wait == Wait::Done) continue;
                live = true;
                all_at_barrier &= f.wait == Wait::Barrier;
            }
            if (!live) return "";
            if (!all_at_barrier) return divergence(index);
            for (Fiber& f : fibers_)
                if (f.wait == Wait::Barrier) f.wait = Wait::Run;
        }
    }

    // Releases the warp of fibers first..end if its live lanes all wait at a shuffle, which
    // is then held to CUDA's rules (else `shuffle_error_` says which broke, and nothing is
    // released): each lane's mask names its own lane, the lanes it names that have not
    // exited pass the same mask, and the lane it reads is one of those (reading a lane that
    // has exited, does not exist or is not in the mask is undefined). A mask may name lanes
    // that have exited.
    bool release_shuffle(size_t first, size_t end) {
        bool live = false;
        uint32_t waiting = 0;
        for (size_t i = first; i < end; ++i) {
            if (fibers_[i].wait == Wait::Done) continue;
            if (fibers_[i].wait != Wait::Shuffle) return false;
            live = true;
            waiting |= 1u << (i - first);
        }
        if (!live) return false;
        // Nearly always every lane passes one mask; only otherwise are the masks compared.
        bool one_mask = true;
        const uint32_t mask0 = fibers_[first + __builtin_ctz(waiting)].mask;
        for (size_t i = first; i < end; ++i)
            one_mask &= fibers_[i].wait != Wait::Shuffle || fibers_[i].mask == mask0;
        for (size_t i = first; i < end; ++i) {
            if (fibers_[i].wait != Wait::Shuffle) continue;
            const Fiber& f = fibers_[i];
            const size_t lane = i - first;
            std::string broken;
            if (!(f.mask >> lane & 1u)) broken = "its mask leaves out its own lane";
            for (size_t j = 0; j < end - first && broken.empty() && !one_mask; ++j)
                if ((f.mask & waiting) >> j & 1u && fibers_[first + j].mask != f.mask)
                    broken = "lane " + std::to_string(j) + " of its mask passes another mask";
            if (broken.empty() && f.src >= 0 && !((f.mask & waiting) >> f.src & 1u))
                broken = "it reads lane " + std::to_string(f.src) +
                         ", which has exited, does not exist or is not in its mask";
            if (!broken.empty()) {
                char mask[16];
                std::snprintf(mask, sizeof mask, "0x%08x", f.mask);
                shuffle_error_ = "thread " + std::to_string(i) + " shuffles with mask " + mask +
                                 ": " + broken;
                return false;
            }
        }
        for (size_t i = first; i < end; ++i)
            if (fibers_[i].wait == Wait::Shuffle) fibers_[i].wait = Wait::Run;
        return true;
    }

    static std::string block_name(dim3 index) {
        return "block (" + std::to_string(index.x) + "," + std::to_string(index.y) + "," +
               std::to_string(index.z) + ")";
    }

    std::string divergence(dim3 index) const {
        static const char* names[] = {"running", "__syncthreads", "a shuffle", "exited"};
        std::string out = block_name(index) + ": threads wait at different barriers:";
        Wait last = Wait::Run;
        for (size_t i = 0; i < fibers_.size(); ++i) {
            const Wait w = fibers_[i].wait;
            if (i > 0 && w == last) continue;
            out += " from thread " + std::to_string(i) + ", " + names[(int)w] + ";";
            last = w;
        }
        return out;
    }

    Order block_order_{1}, warp_order_{2}, lane_order_{3};
    std::string shuffle_error_;
    std::vector<char*> stacks_;
    std::vector<Fiber> fibers_;
    std::vector<uint64_t> slots_;
    std::vector<double> dynamic_;
    // Blocks started on this OS thread, and per static shared variable the block that last
    // filled it.
    uint64_t block_serial_ = 0;
    std::unordered_map<void*, uint64_t> shared_filled_;
    void* home_ = nullptr;
    Fiber* running_ = nullptr;
    const Kernel* kernel_ = nullptr;
    void** params_ = nullptr;

    friend Scheduler& scheduler();
};

Scheduler& scheduler() {
    static thread_local Scheduler s;
    return s;
}

void Scheduler::fiber_main() {
    Scheduler& s = scheduler();
    s.kernel_->invoke(s.kernel_->fn, s.params_);
    s.park(Wait::Done);
    __builtin_unreachable();  // a finished fiber is never resumed
}

std::map<std::string, Kernel>& kernels() {
    static std::map<std::string, Kernel> k;
    return k;
}

}  // namespace

void syncthreads() { scheduler().park(Wait::Barrier); }

uint64_t warp_exchange(uint64_t bits, int src, uint32_t mask) {
    return scheduler().exchange(bits, src, mask);
}

void* dynamic_shared_memory() { return scheduler().dynamic_shared(); }

void fresh_shared(void* p, size_t bytes) { scheduler().fresh_shared(p, bytes); }

void register_kernel(Kernel kernel) { kernels()[kernel.name] = kernel; }

const Kernel* find_kernel(const char* name) {
    auto it = kernels().find(name);
    return it == kernels().end() ? nullptr : &it->second;
}

std::string launch(const Kernel& kernel, dim3 grid, dim3 block, size_t shared_bytes,
                   void** params) {
    std::string error = scheduler().launch(kernel, grid, block, shared_bytes, params);
    return error.empty() ? error : std::string(kernel.name) + ": " + error;
}

}  // namespace emu
