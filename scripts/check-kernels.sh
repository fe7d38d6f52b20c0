#!/usr/bin/env bash
# Compiles every CUDA kernel without a GPU, under both compilers, failing on any error or
# warning: nvcc for sm_80 and sm_90 (+ compute_80 PTX, exactly as build.rs does) and NVRTC
# for sm_80 and sm_90 (tests/cuda_kernels.rs, with FIEDLER_REQUIRE_CUDA=1 so it cannot skip).
#
# Uses the pinned CUDA 13.0 PyPI wheels in $CUDA_VENV (default /work/cuda-venv), installing
# them there if the venv is missing (needs pip access to PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${CUDA_VENV:-/work/cuda-venv}
if [ ! -x "$venv/bin/pip" ]; then
    python3 -m venv "$venv"
fi
home=$(echo "$venv"/lib/python3*/site-packages/nvidia/cu13)
if [ ! -x "$home/bin/nvcc" ] || [ ! -e "$home/lib/libnvrtc.so.13" ]; then
    "$venv/bin/pip" install -q nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 \
        nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
        nvidia-cuda-nvrtc==13.0.88
    home=$(echo "$venv"/lib/python3*/site-packages/nvidia/cu13)
fi
"$home/bin/nvcc" --version | tail -2

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for src in kernels/*.cu; do
    "$home/bin/nvcc" -fatbin -O3 -std=c++17 -Werror all-warnings -Ikernels \
        -gencode 'arch=compute_80,code=[sm_80,compute_80]' -gencode arch=compute_90,code=sm_90 \
        -o "$out/$(basename "$src" .cu).fatbin" "$src"
    echo "nvcc: $src compiles for sm_80, sm_90 (+ compute_80 PTX)"
done
LD_LIBRARY_PATH="$home/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" FIEDLER_REQUIRE_CUDA=1 \
    cargo test --release --test cuda_kernels -- --nocapture
