//! Loops compiled for the widest vector unit the CPU has, chosen at run time: the crate is
//! built for baseline x86-64 (SSE2), where LLVM vectorises 4 floats at a time.
//!
//! No fused multiply-adds are enabled, so every path rounds alike and results do not depend
//! on the CPU.

/// `vectorised!(fn name(args) => inner)` defines `name`, which calls the `#[inline(always)]`
/// function `inner` compiled for AVX-512 or AVX2 when the CPU has them. (A closure passed to
/// a `#[target_feature]` function is not reliably compiled with its features: it need not be
/// inlined there.)
macro_rules! vectorised {
    (fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $inner:path) => {
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                #[allow(clippy::too_many_arguments)]
                fn avx512($($arg: $ty),*) {
                    $inner($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                fn avx2($($arg: $ty),*) {
                    $inner($($arg),*)
                }
                if is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    return unsafe { avx512($($arg),*) };
                }
                if is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $inner($($arg),*)
        }
    };
}
pub(crate) use vectorised;

/// Lanes of a sum kept in eight interleaved partial sums: the compiler keeps them in vector
/// registers, where one running sum would be a chain of dependent adds.
pub(crate) const LANES: usize = 8;

/// The total of eight partial sums and the remainder's sum, added pairwise.
#[inline(always)]
pub(crate) fn total(lanes: [f64; LANES], tail: f64) -> f64 {
    let l = lanes;
    (((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))) + tail
}
