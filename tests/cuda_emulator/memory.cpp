#include "memory.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "device.h"

namespace emu {
namespace {

constexpr size_t PAGE = 4096;
constexpr int FRESH_BYTE = 0xff;

struct Mapping {
    char* base;
    size_t length;
    size_t bytes;
};

struct Table {
    std::mutex lock;
    std::unordered_map<void*, Mapping> live;
    size_t used = 0;
};

Table& table() {
    static Table t;
    return t;
}

thread_local const Doing* doing = nullptr;
struct sigaction previous_action;

void report(int sig, siginfo_t* info, void* context) {
    if (doing == nullptr) {
        // Not ours: as if this handler were not there.
        if (previous_action.sa_flags & SA_SIGINFO) {
            previous_action.sa_sigaction(sig, info, context);
        } else if (previous_action.sa_handler == SIG_DFL) {
            signal(sig, SIG_DFL);  // the access faults again, and the process ends as usual
        } else if (previous_action.sa_handler != SIG_IGN) {
            previous_action.sa_handler(sig);
        }
        return;
    }
    char line[512];
    int n = std::snprintf(line, sizeof line,
                          "CUDA emulator: invalid memory access at %p in %s %s", info->si_addr,
                          doing->what, doing->name);
    if (current != nullptr && n > 0 && n < (int)sizeof line) {
        n += std::snprintf(line + n, sizeof line - n, ", block (%u,%u,%u) thread (%u,%u,%u)",
                           current->block_idx.x, current->block_idx.y, current->block_idx.z,
                           current->thread_idx.x, current->thread_idx.y, current->thread_idx.z);
    }
    if (n > 0 && n < (int)sizeof line) {
        n += std::snprintf(line + n, sizeof line - n,
                           ": past the end of a buffer, into a freed one, or outside any\n");
    }
    if (n > 0) (void)!write(2, line, std::strlen(line));
    signal(SIGABRT, SIG_DFL);
    abort();
}

void install_report() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction action {};
        action.sa_sigaction = report;
        action.sa_flags = SA_SIGINFO | SA_ONSTACK;  // a fiber's stack overflow faults too
        sigemptyset(&action.sa_mask);
        sigaction(SIGSEGV, &action, &previous_action);
    });
}

}  // namespace

void* allocate(size_t bytes, size_t limit) {
    install_report();
    const size_t length = (bytes + PAGE - 1) / PAGE * PAGE + PAGE;
    Table& t = table();
    {
        std::lock_guard<std::mutex> g(t.lock);
        if (bytes > limit - t.used) return nullptr;
        t.used += bytes;
    }
    void* base = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        std::lock_guard<std::mutex> g(t.lock);
        t.used -= bytes;
        return nullptr;
    }
    char* guard = static_cast<char*>(base) + length - PAGE;
    mprotect(guard, PAGE, PROT_NONE);
    char* p = guard - bytes;
    std::memset(p, FRESH_BYTE, bytes);
    std::lock_guard<std::mutex> g(t.lock);
    t.live[p] = {static_cast<char*>(base), length, bytes};
    return p;
}

bool release(void* p) {
    Table& t = table();
    Mapping m;
    {
        std::lock_guard<std::mutex> g(t.lock);
        auto it = t.live.find(p);
        if (it == t.live.end()) return false;
        m = it->second;
        t.used -= m.bytes;
        t.live.erase(it);
    }
    munmap(m.base, m.length);
    return true;
}

size_t allocated() {
    Table& t = table();
    std::lock_guard<std::mutex> g(t.lock);
    return t.used;
}

Doing::Doing(const char* what, const char* name) : what(what), name(name), previous_(doing) {
    install_report();
    doing = this;
}

Doing::~Doing() { doing = previous_; }

}  // namespace emu
