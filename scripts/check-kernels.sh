#!/usr/bin/env bash
# Compiles every CUDA kernel without a GPU, under both compilers, failing on any error or
# warning: nvcc for sm_80 and sm_90 (+ compute_80 PTX, exactly as build.rs does) and NVRTC
# for sm_80 and sm_90 (tests/cuda_kernels.rs, required so it cannot skip). The compilers are
# the pinned CUDA 13.0 PyPI wheels of scripts/cuda-compilers.sh ($CUDA_VENV).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/cuda-compilers.sh)"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for src in kernels/*.cu; do
    "$NVCC" -fatbin -O3 -std=c++17 -Werror all-warnings -Ikernels \
        -gencode 'arch=compute_80,code=[sm_80,compute_80]' -gencode arch=compute_90,code=sm_90 \
        -o "$out/$(basename "$src" .cu).fatbin" "$src"
    echo "nvcc: $src compiles for sm_80, sm_90 (+ compute_80 PTX)"
done
cargo test --release --test cuda_kernels -- --nocapture
