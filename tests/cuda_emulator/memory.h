// Device memory of the emulator, in host memory that faults where a GPU would read garbage.
#pragma once

#include <cstddef>
#include <cstdint>

namespace emu {

// Maps `bytes` (at most `limit` in all) ending right before an inaccessible page (so the
// start is aligned to any element size `bytes` is a multiple of), filled with all-ones bytes (NaN as f32 and f64, -1 as integers), as stale pool memory
// on a GPU holds anything. A kernel that reads past the end faults, as does one that touches
// a freed buffer (unmapped), and a read of memory nobody wrote gives NaN. Null when the limit
// or the host's memory runs out.
void* allocate(size_t bytes, size_t limit);
// False for a pointer `allocate` did not return.
bool release(void* p);
size_t allocated();

// What the calling OS thread does, for the report of an access that faults meanwhile
// (which then ends the process with that report instead of a bare segmentation fault).
class Doing {
public:
    // `what`, then `name` when there is one ("kernel", "softmax_fwd").
    explicit Doing(const char* what, const char* name = "");
    ~Doing();
    Doing(const Doing&) = delete;
    Doing& operator=(const Doing&) = delete;

    const char* what;
    const char* name;

private:
    const Doing* previous_;
};

}  // namespace emu
