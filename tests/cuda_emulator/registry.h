// Kernels by name, for cuModuleGetFunction. The emulator's build appends one `Registrar` per
// kernel to each kernel file; a launch hands the kernel its arguments as CUDA does, an
// array of pointers to each.
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>

namespace emu {

struct Kernel {
    const char* name;
    void (*fn)();
    void (*invoke)(void (*fn)(), void** params);
};

void register_kernel(Kernel kernel);
const Kernel* find_kernel(const char* name);

template <typename... A, std::size_t... I>
void call(void (*fn)(A...), void** params, std::index_sequence<I...>) {
    fn(*static_cast<std::remove_reference_t<A>*>(params[I])...);
}

struct Registrar {
    template <typename... A>
    Registrar(const char* name, void (*fn)(A...)) {
        register_kernel({name, reinterpret_cast<void (*)()>(fn), [](void (*f)(), void** params) {
                             call(reinterpret_cast<void (*)(A...)>(f), params,
                                  std::index_sequence_for<A...>{});
                         }});
    }
};

}  // namespace emu
