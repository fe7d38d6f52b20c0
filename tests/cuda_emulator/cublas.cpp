// libcublas.so beside the emulated driver: the handle calls and the strided batched GEMMs
// fiedler's backend makes, computed on the host when called (column-major, as cuBLAS). Each
// entry is summed in order in the type of the data, as cuBLAS's non-tensor kernels do
// (their order differs; the tests' bounds allow for that). With TF32 allowed,
// f32 operands are first rounded to TF32's 10-bit mantissa, as tensor cores read them.
// Once the emulated context is lost (an injected kernel fault, driver.cpp) every call fails.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#define API extern "C" __attribute__((visibility("default")))

namespace {

enum Status : int { SUCCESS = 0, INVALID_VALUE = 7, EXECUTION_FAILED = 13, INTERNAL_ERROR = 14 };
enum Operation : int { OP_N = 0, OP_T = 1, OP_C = 2 };
constexpr int TF32_TENSOR_OP_MATH = 3;

struct Handle {
    void* stream = nullptr;
    int math_mode = 0;
};

// Round to nearest even at 10 mantissa bits (13 dropped); infinities and NaN pass.
float to_tf32(float x) {
    uint32_t bits;
    std::memcpy(&bits, &x, 4);
    if ((bits & 0x7f800000u) != 0x7f800000u) {
        bits += 0xfffu + ((bits >> 13) & 1u);
        bits &= ~0x1fffu;
    }
    std::memcpy(&x, &bits, 4);
    return x;
}

// C = α·op(A)·op(B) + β·C per batch entry. Each column of C is built as a sum over l of
// op(A)'s column l times op(B)[l, j], so every entry is still summed in order of l while the
// loop over rows vectorises.
template <typename T, typename Round>
Status gemm(int transa, int transb, int m, int n, int k, const T* alpha, const T* a, int lda,
            long long stride_a, const T* b, int ldb, long long stride_b, const T* beta, T* c,
            int ldc, long long stride_c, int batch, bool rounds, Round round) {
    if (m < 0 || n < 0 || k < 0 || batch < 0 || transa == OP_C || transb == OP_C)
        return INVALID_VALUE;
    // cuBLAS checks the leading dimensions even where a size of 0 leaves nothing to read.
    const auto at_least = [](int rows) { return rows > 1 ? rows : 1; };
    if (lda < at_least(transa == OP_N ? m : k) || ldb < at_least(transb == OP_N ? k : n) ||
        ldc < at_least(m))
        return INVALID_VALUE;
    // With no terms (k = 0) C = β·C, but cuBLAS does not promise to write C then: its
    // batched products have returned without touching it (pytorch/pytorch#31421). The
    // emulator takes that reading, so a caller relying on C being zeroed fails its tests.
    if (k == 0) return SUCCESS;
    std::vector<T> packed, column((size_t)m);
    for (int s = 0; s < batch; ++s) {
        const T* as = a + s * stride_a;
        const T* bs = b + s * stride_b;
        T* cs = c + s * stride_c;
        // op(A) column-major: as stored, or packed (transposed, or rounded to TF32).
        const T* op_a = as;
        long long ld_a = lda;
        if (transa != OP_N || rounds) {
            packed.resize((size_t)m * k);
            for (int l = 0; l < k; ++l)
                for (int i = 0; i < m; ++i)
                    packed[i + (size_t)l * m] =
                        round(transa == OP_N ? as[i + (long long)l * lda] : as[l + (long long)i * lda]);
            op_a = packed.data();
            ld_a = m;
        }
        for (int j = 0; j < n; ++j) {
            T* __restrict sum = column.data();
            std::fill(column.begin(), column.end(), T(0));
            for (int l = 0; l < k; ++l) {
                const T y = round(transb == OP_N ? bs[l + (long long)j * ldb] : bs[j + (long long)l * ldb]);
                const T* __restrict x = op_a + l * ld_a;
                for (int i = 0; i < m; ++i) sum[i] += x[i] * y;
            }
            T* out = cs + (long long)j * ldc;
            // β = 0 leaves C unread, as in cuBLAS (it may hold anything, NaN included).
            for (int i = 0; i < m; ++i)
                out[i] = *beta == T(0) ? *alpha * sum[i] : *alpha * sum[i] + *beta * out[i];
        }
    }
    return SUCCESS;
}

}  // namespace

// The emulated driver's lost-context error, or 0 (driver.cpp; this library links against it).
extern "C" int emu_context_error();

API int cublasCreate_v2(void** handle) {
    if (emu_context_error()) return INTERNAL_ERROR;
    *handle = new Handle;
    return SUCCESS;
}

// cuBLAS documents no error for a lost context here; it frees its workspace through the
// driver, which then fails, and the emulator takes the pessimistic reading: an error status.
API int cublasDestroy_v2(void* handle) {
    if (emu_context_error()) return INTERNAL_ERROR;
    delete static_cast<Handle*>(handle);
    return SUCCESS;
}

API int cublasSetStream_v2(void* handle, void* stream) {
    static_cast<Handle*>(handle)->stream = stream;
    return SUCCESS;
}

API int cublasGetStream_v2(void* handle, void** stream) {
    *stream = static_cast<Handle*>(handle)->stream;
    return SUCCESS;
}

API int cublasSetMathMode(void* handle, int mode) {
    static_cast<Handle*>(handle)->math_mode = mode;
    return SUCCESS;
}

API int cublasGetMathMode(void* handle, int* mode) {
    *mode = static_cast<Handle*>(handle)->math_mode;
    return SUCCESS;
}

API int cublasSgemmStridedBatched(void* handle, int transa, int transb, int m, int n, int k,
                                  const float* alpha, const float* a, int lda, long long stride_a,
                                  const float* b, int ldb, long long stride_b, const float* beta,
                                  float* c, int ldc, long long stride_c, int batch) {
    if (emu_context_error()) return EXECUTION_FAILED;
    if ((static_cast<Handle*>(handle)->math_mode & 0xf) == TF32_TENSOR_OP_MATH)
        return gemm(transa, transb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c,
                    ldc, stride_c, batch, true, to_tf32);
    return gemm(transa, transb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc,
                stride_c, batch, false, [](float x) { return x; });
}

API int cublasDgemmStridedBatched(void*, int transa, int transb, int m, int n, int k,
                                  const double* alpha, const double* a, int lda,
                                  long long stride_a, const double* b, int ldb,
                                  long long stride_b, const double* beta, double* c, int ldc,
                                  long long stride_c, int batch) {
    if (emu_context_error()) return EXECUTION_FAILED;
    return gemm(transa, transb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc,
                stride_c, batch, false, [](double x) { return x; });
}
