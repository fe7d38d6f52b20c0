#!/usr/bin/env bash
# Runs every CUDA test and the CUDA benchmarks from prebuilt executables (scripts/gpu-pack.sh),
# on a machine with an NVIDIA GPU and no Rust toolchain. Run from the repository root:
#
#   scripts/gpu-check.sh [BUNDLE]        # BUNDLE defaults to target/gpu-bundle; without
#                                        # one, executables are looked up in target/release
#   scripts/gpu-check.sh --sanitize [BUNDLE]
#                                        # the CUDA tests under compute-sanitizer instead
#
# Logs go to target/gpu-check/ (target/gpu-sanitize/), one per step; SUMMARY lists each step's
# status. When $OUT is set (a lent GPU machine, which brings back only a few files),
# $OUT/gpu-check/ ($OUT/gpu-sanitize/) gets SUMMARY and all.log, every step's log one after
# the other, brought up to date as each step ends: a run cut off by the machine's time limit
# still brings back the steps it finished. Budget: under 8 minutes on one H100, 4 for --sanitize (each step has its own
# timeout).
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

mode=check
if [ "${1:-}" = "--sanitize" ]; then
    mode=sanitize
    shift
fi
bundle=${1:-target/gpu-bundle}
find_exe() { # name → path: the bundle's copy, else the newest target/release/deps/name-*
    if [ -x "$bundle/$1" ]; then echo "$bundle/$1"; return; fi
    if [ -x "target/release/$1" ]; then echo "target/release/$1"; return; fi
    ls -t target/release/deps/"$1"-* 2>/dev/null | grep -v '\.d$' | head -1
}
fiedler=$(find_exe fiedler)
cuda_backend=$(find_exe cuda_backend)
cuda_kernels=$(find_exe cuda_kernels)
cuda_bench=$(find_exe cuda_bench)

logs=target/gpu-$mode
rm -rf "$logs"
mkdir -p "$logs"
summary="$logs/SUMMARY"
: > "$summary"

# CUDA 13 libraries: the driver's libcuda is on the loader path; cuBLAS and NVRTC may live in
# the toolkit or in pip wheels (e.g. the PyTorch venv).
libdirs=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
    /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib \
    /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib; do
    [ -d "$d" ] && libdirs="$libdirs:$d"
done
# Any CUDA 13 library the loader still cannot see: look for it under /usr and /opt.
for lib in libcublas.so.13 libcublasLt.so.13 libnvrtc.so.13; do
    if ! ldconfig -p 2>/dev/null | grep -q "$lib" && ! ls ${libdirs//:/ } 2>/dev/null | grep -q "^$lib\$"; then
        found=$(timeout 30 find /usr /opt -maxdepth 9 -name "$lib" 2>/dev/null | head -1)
        [ -n "$found" ] && libdirs="$libdirs:$(dirname "$found")"
    fi
done
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}$libdirs"
# Tests fail (rather than skip) when CUDA does not work, and find the repo and binary here.
export FIEDLER_REQUIRE_CUDA=1 FIEDLER_REPO=$repo FIEDLER_BIN=$repo/$fiedler
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-$repo/target/gpu-check-cache}

{
    echo "== $(date -u) on $(hostname)"
    echo "commit: $(cat "$bundle/COMMIT" 2>/dev/null || git rev-parse HEAD 2>/dev/null)"
    cat "$bundle/KERNELS" 2>/dev/null
    echo "fiedler: $fiedler"; echo "cuda_backend: $cuda_backend"; echo "cuda_kernels: $cuda_kernels"; echo "cuda_bench: $cuda_bench"
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    ldconfig -p 2>/dev/null | grep -E 'libcuda\.so|libnvrtc\.so|libcublas(Lt)?\.so' || true
    for d in ${LD_LIBRARY_PATH//:/ }; do ls "$d" 2>/dev/null | grep -E '^lib(nvrtc|cublas|cublasLt)\.so' | sed "s|^|$d/|"; done
} > "$logs/environment.log" 2>&1
cat "$logs/environment.log"

# What the lent machine brings back: SUMMARY and every finished step's log, kept current.
publish() {
    [ -n "${OUT:-}" ] || return 0
    mkdir -p "$OUT/gpu-$mode"
    cp "$summary" "$OUT/gpu-$mode/SUMMARY"
    for log in "$logs"/environment.log $(ls "$logs"/*.log | grep -v /environment.log); do
        echo "===== $(basename "$log" .log)"
        cat "$log"
    done > "$OUT/gpu-$mode/all.log"
}
publish

failed=0
step() { # name timeout_s command...: runs one step, logs it, records PASS/FAIL
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    echo "== $name"
    timeout --kill-after=10 "$limit" "$@" > "$logs/$name.log" 2>&1
    local rc=$?
    local status=PASS
    if [ $rc -eq 124 ]; then
        status="FAIL (timed out)"
    elif [ $rc -ne 0 ]; then
        status="FAIL (exit $rc)"
    fi
    [ $rc -ne 0 ] && failed=1
    printf '%-28s %-28s %4ss\n' "$name" "$status" $((SECONDS - start)) | tee -a "$summary"
    tail -n 25 "$logs/$name.log"
    publish
}

sanitize() { # tool timeout_s test-filter...: the CUDA backend tests under compute-sanitizer
    local tool=$1 limit=$2; shift 2
    step "sanitize-$tool" "$limit" "$sanitizer" --tool "$tool" --error-exitcode 9 \
        --target-processes application-only --print-limit 20 \
        "$cuda_backend" --test-threads=1 "$@"
}

if [ "$mode" = sanitize ]; then
    # What the CUDA emulator cannot see, on the real device: out-of-bounds and misaligned
    # accesses (memcheck), shared-memory races (racecheck), reads of device memory no op
    # wrote (initcheck: trace buffers are not zero-filled) and barrier misuse (synccheck).
    # Tests that start `fiedler` processes, or run a full-size model, are left out: the
    # sanitizer slows every launch.
    sanitizer=$(command -v compute-sanitizer ||
        ls /usr/local/cuda*/bin/compute-sanitizer /opt/nvidia/*/compute-sanitizer 2>/dev/null | head -1)
    if [ -z "$sanitizer" ] || [ -z "$cuda_backend" ]; then
        echo "sanitize: no compute-sanitizer or no cuda_backend executable" | tee -a "$summary"
        failed=1
    else
        sanitize memcheck 90 --skip explain_device --skip eval_device --skip bench_device \
            --skip the_emulator --skip out_of_device_memory --skip tf32_trace
        # The kernels that share memory within a block.
        sanitize racecheck 60 attention layernorm head_mean fiedler shared_memory cosine
        sanitize initcheck 60 trace_on_cuda lrp_on_cuda scores_on_cuda fiedler relevance_rows head_rows
        sanitize synccheck 30 attention layernorm head_mean fiedler shared_memory cosine
    fi
fi

[ "$mode" = check ] && [ -n "$cuda_kernels" ] && step kernels-nvrtc 40 "$cuda_kernels" --test-threads=1 --nocapture
if [ "$mode" = check ] && [ -n "$cuda_backend" ]; then
    step backend-fatbin 90 "$cuda_backend" --test-threads=1 --nocapture
    step backend-nvrtc 70 env FIEDLER_KERNELS=nvrtc "$cuda_backend" --test-threads=1 --nocapture
fi
if [ "$mode" = check ] && [ -n "$fiedler" ]; then
    step explain-cuda 30 "$fiedler" explain --device cuda --model tests/fixtures/clip \
        --image tests/fixtures/images/catdog.png --text "a photo of a cat" --text "a dog" \
        --method all --out "$(mktemp -d)/explain-cuda"
    # LXMERT's session brings back a reduced trace (head means, Fiedler vectors solved on the
    # GPU): every method on the bundled model.
    step explain-cuda-lxmert 30 "$fiedler" explain --device cuda --model models/lxmert-synth \
        --regions examples/regions/shapes-4.safetensors --question "what color is the triangle?" \
        --method all --out "$(mktemp -d)/explain-cuda-lxmert"
    step bench-clip-vit-b16 90 "$fiedler" bench --device cuda --size vit-b16 \
        --batch 1,16,64 --method dsmi-grad,chefer,raw-attn,transformer-attribution --repeats 3
    # The methods whose backward or LRP pass stops at the last layer, and whose reads at one
    # row (Grad-CAM's head rows) leave the GPU instead of the per-head maps.
    step bench-clip-last-layer 40 "$fiedler" bench --device cuda --size vit-b16 \
        --batch 16,64 --method grad-cam,partial-lrp --repeats 3
    step bench-clip-tf32 60 "$fiedler" bench --device cuda --tf32 --size vit-b16 \
        --batch 16,64 --method dsmi-grad,chefer,raw-attn --repeats 3
    step bench-lxmert-base 50 "$fiedler" bench --device cuda --size lxmert-base \
        --batch 1,16,64 --method dsmi-grad,chefer,partial-lrp --repeats 3
    step bench-vilt-b32 40 "$fiedler" bench --device cuda --size vilt-b32 \
        --batch 1,16,64 --method dsmi-grad,chefer --repeats 2
    # The perturbation benchmark (every method, four tests, nine steps): its perturbed
    # forwards take the stack a step leaves whole as given and run the last cross layer at
    # [CLS] only.
    step bench-lxmert-eval 60 "$fiedler" bench --device cuda --size lxmert-base --eval \
        --batch 16,64 --eval-samples 64 --text-tokens 20
    step bench-fiedler 40 "$fiedler" bench --device cuda --size fiedler \
        --nodes 36,196,577 --batch 64,512 --repeats 3 --stages
    # Convergence checks on one thread while the block waits, as before 2026-11-28: the A/B
    # of running them beside the next Lanczos step on a warp of their own (the default).
    step bench-fiedler-inline-checks 40 env FIEDLER_GRAPH_CHECKS=inline "$fiedler" bench \
        --device cuda --size fiedler --nodes 36,196,577 --batch 512 --repeats 3 --stages
    # Each graph's operator packed in shared memory (one block per SM at 196 nodes) instead
    # of read from L2/memory at every Lanczos step: the A/B of fiedler_graphs_shared.
    step bench-fiedler-shared 30 env FIEDLER_GRAPH_KERNEL=shared "$fiedler" bench \
        --device cuda --size fiedler --nodes 36,196 --batch 512 --repeats 3 --stages
    # At most K graphs resident per SM (the default is every graph at once, one block each):
    # fewer at a time may keep their operators in L2. The sweep finds the best K.
    step bench-fiedler-resident 45 bash -c 'for k in 1 2 3; do
        echo "== FIEDLER_GRAPH_RESIDENT=$k"
        FIEDLER_GRAPH_RESIDENT=$k "$0" bench --device cuda --size fiedler --nodes 196,577 \
            --batch 512 --repeats 3 --stages || exit
    done' "$fiedler"
    step bench-clip-release 40 env FIEDLER_CUDA_MEMORY=release "$fiedler" bench \
        --device cuda --size vit-b16 --batch 64 --method dsmi-grad --repeats 3
    # Downloads straight into pageable memory, as before 2026-11-28: the A/B of landing them
    # in a page-locked buffer (the default), where the copies to the host were 4.5% of
    # CLIP's and 17% of LXMERT's device time.
    step bench-clip-pageable 40 env FIEDLER_CUDA_DOWNLOADS=pageable "$fiedler" bench \
        --device cuda --size vit-b16 --batch 64 --method dsmi-grad --repeats 3
    step bench-lxmert-pageable 40 env FIEDLER_CUDA_DOWNLOADS=pageable "$fiedler" bench \
        --device cuda --size lxmert-base --batch 64 --method dsmi-grad --repeats 3
    # Device time per op (kernels, cuBLAS products, zero fills, copies to the host) at the
    # batch the targets name: where the next speed-up is.
    step profile-clip-b64 60 env FIEDLER_CUDA_PROFILE=1 "$fiedler" bench --device cuda \
        --size vit-b16 --batch 64 --method dsmi-grad,raw-attn --repeats 1
    # The same with TF32 products, the faster of the two at batch 64 (834 against 395 expl/s
    # on the H200): what is left once the products shrink, and how much of the trace the
    # device is idle (device time in all against the trace's wall time).
    step profile-clip-tf32-b64 40 env FIEDLER_CUDA_PROFILE=1 "$fiedler" bench --device cuda \
        --tf32 --size vit-b16 --batch 64 --method dsmi-grad --repeats 1
    # At batch 1, where per-call overhead (launches, cuBLAS calls, copies) is what is left.
    step profile-clip-b1 30 env FIEDLER_CUDA_PROFILE=1 "$fiedler" bench --device cuda \
        --size vit-b16 --batch 1 --method dsmi-grad --repeats 1
    step profile-lxmert-b64 40 env FIEDLER_CUDA_PROFILE=1 "$fiedler" bench --device cuda \
        --size lxmert-base --batch 64 --method dsmi-grad --repeats 1
fi
# Criterion: per-op GPU times at ViT-B/16 batch-64 sizes, Fiedler batches of 256 graphs.
[ "$mode" = check ] && [ -n "$cuda_bench" ] && step bench-ops 60 "$cuda_bench" --bench
# The numbers the targets name, pulled out of the logs so that SUMMARY alone shows them:
# Fiedler graphs/s at n = 196 (each A/B and K of the sweep), CLIP and LXMERT dsmi-grad at
# batch 64 (and their A/Bs), and CLIP chefer, grad-cam and partial-lrp at batch 64.
[ "$mode" = check ] && {
    echo "== key numbers (Fiedler: nodes graphs ms graphs/s on-device-graphs/s [stages]; CLIP: method batch … expl/s …)"
    for log in bench-fiedler bench-fiedler-inline-checks bench-fiedler-shared \
        bench-fiedler-resident; do
        [ -f "$logs/$log.log" ] || continue
        grep -E '^== FIEDLER_GRAPH_RESIDENT|^ +196 ' "$logs/$log.log" | sed "s/^/$log: /"
    done
    for log in bench-clip-vit-b16 bench-clip-tf32 bench-clip-release bench-clip-pageable \
        bench-lxmert-base bench-lxmert-pageable; do
        [ -f "$logs/$log.log" ] || continue
        grep -E '^dsmi-grad +64 ' "$logs/$log.log" | sed "s/^/$log: /"
    done
    # What the relevance rows (chefer), Grad-CAM's head rows and the passes that stop at
    # the last layer (grad-cam, partial-lrp) made of batch 64.
    [ -f "$logs/bench-lxmert-eval.log" ] &&
        grep -E '^ +(16|64) ' "$logs/bench-lxmert-eval.log" | sed "s/^/bench-lxmert-eval: /"
    for log in bench-clip-vit-b16 bench-clip-last-layer; do
        [ -f "$logs/$log.log" ] || continue
        grep -E '^(chefer|grad-cam|partial-lrp) +64 ' "$logs/$log.log" | sed "s/^/$log: /"
    done
} >> "$summary"
echo "== summary ($logs/SUMMARY)"
cat "$summary"
publish
exit $failed
