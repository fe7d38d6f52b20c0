// What the fake driver (driver.cpp) asks of the runtime (runtime.cpp).
#pragma once

#include <string>

#include "device.h"
#include "registry.h"

namespace emu {

// Runs every block of the launch before returning: an empty string, or why it failed. Each
// block gets `shared_bytes` of dynamic shared memory, filled with NaN bytes when it starts.
std::string launch(const Kernel& kernel, dim3 grid, dim3 block, size_t shared_bytes,
                   void** params);

}  // namespace emu
