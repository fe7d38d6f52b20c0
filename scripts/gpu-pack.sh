#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh runs on a GPU machine that has no Rust toolchain: the
# release `fiedler` binary, the CUDA test executables and the CUDA criterion benchmark, with the kernels compiled by nvcc
# (fatbin: SASS for sm_80 and sm_90, compute_80 PTX), stripped, in target/gpu-bundle/.
#
#   scripts/gpu-pack.sh            # then carry target/gpu-bundle (see README, "GPU check")
#
# nvcc: $NVCC, $CUDA_HOME/bin/nvcc, nvcc on PATH, or the pinned PyPI wheels in $CUDA_VENV
# (default target/cuda-venv, where scripts/cuda-compilers.sh installs them). Without nvcc the
# bundle still works, compiling the kernels at run time with NVRTC (its KERNELS file says which).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${CUDA_VENV:-target/cuda-venv}
wheel_home=$(echo "$venv"/lib/python3*/site-packages/nvidia/cu13)
if [ -z "${NVCC:-}${CUDA_HOME:-}" ] && ! command -v nvcc >/dev/null && [ -x "$wheel_home/bin/nvcc" ]; then
    export CUDA_HOME="$wheel_home"
fi

tests=(cuda_backend cuda_kernels)
cargo build --release --bin fiedler
test_args=()
for t in "${tests[@]}"; do test_args+=(--test "$t"); done
# The executables' paths, from cargo's own report.
cargo test --release --no-run "${test_args[@]}"
mapfile -t executables < <(cargo test --release --no-run "${test_args[@]}" --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*/deps/[^"]*"' | sed 's/"executable":"\(.*\)"/\1/')
if [ "${#executables[@]}" -ne "${#tests[@]}" ]; then
    echo "expected ${#tests[@]} test executables, cargo reported: ${executables[*]}" >&2
    exit 1
fi

# The criterion benchmark of the CUDA ops and batched Fiedler vectors.
bench=$(cargo bench --no-run --bench cuda --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*/deps/[^"]*"' | sed 's/"executable":"\(.*\)"/\1/')
[ -n "$bench" ] || { echo "cargo bench --no-run --bench cuda reported no executable" >&2; exit 1; }

bundle=target/gpu-bundle
rm -rf "$bundle"
mkdir -p "$bundle"
cp target/release/fiedler "$bundle/"
for exe in "${executables[@]}"; do
    name=$(basename "$exe")
    cp "$exe" "$bundle/${name%-*}"
done
cp "$bench" "$bundle/cuda_bench"
strip --strip-debug "$bundle"/*
if grep -q kernels_prebuilt "$(ls -td target/release/build/fiedler-*/output | head -1)" 2>/dev/null; then
    echo "kernels: nvcc fatbin (sm_80, sm_90, compute_80 PTX)" > "$bundle/KERNELS"
else
    echo "kernels: NVRTC at run time (no nvcc at build time)" > "$bundle/KERNELS"
fi
git rev-parse HEAD > "$bundle/COMMIT" 2>/dev/null || true

ls -l "$bundle"
cat "$bundle/KERNELS"
du -sh "$bundle"
echo "carry: $bundle   (then: scripts/gpu-check.sh $bundle)"
