#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compilers from PyPI (nvcc and NVRTC; no GPU or driver needed)
# into the venv $CUDA_VENV (default target/cuda-venv) unless they are there, and prints the
# shell lines that point fiedler's build and tests at them:
#
#     eval "$(scripts/cuda-compilers.sh)"
#
# NVCC makes build.rs compile every kernel into the fatbin (sm_80, sm_90, compute_80 PTX),
# failing on any error or warning; LD_LIBRARY_PATH lets tests/cuda_kernels.rs load NVRTC, and
# FIEDLER_REQUIRE_NVRTC=1 makes that test fail instead of skipping when it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${CUDA_VENV:-target/cuda-venv}
home() { echo "$venv"/lib/python3*/site-packages/nvidia/cu13; }
if [ ! -x "$(home)/bin/nvcc" ] || [ ! -e "$(home)/lib/libnvrtc.so.13" ]; then
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check nvidia-cuda-nvcc==13.0.88 \
        nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 \
        nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 >&2
fi
cu=$(cd "$(home)" && pwd)
"$cu/bin/nvcc" --version | tail -1 >&2
echo "export NVCC='$cu/bin/nvcc'"
echo "export LD_LIBRARY_PATH='$cu/lib'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
echo "export FIEDLER_REQUIRE_NVRTC=1"
