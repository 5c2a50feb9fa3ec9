#!/usr/bin/env bash
# The GPU rows of BENCHMARKS.md: Pigment (the CUDA binary tools/gpu/build_cuda.sh packed into
# .gpu/pigment.xz) against diffusers on PyTorch, on the same GPU, same random-weight SD1.5
# architecture and shapes (UNet batch 2 at 512 and 256, VAE decode, text encoder, one whole
# 20-step generation at 512 per engine), once per dtype (f16, then f32 without TF32), through
# tools/bench/side_by_side.py. Run from the repository root on the GPU machine, carrying
# `.gpu` (the binary) and `.whl` (tools/gpu/wheels.sh: diffusers, which the machine lacks):
#
#   bash tools/gpu/bench_on_device.sh
#
# Env:     BENCH_SECONDS (default 200: the whole script ends within it; each dtype gets an equal
#          share of what is left, each engine half of that, and an engine past its share is
#          killed, its rows left empty), DTYPES ("f16 f32"), REPEATS (3), ARCH (sd15),
#          SIZES (512,256), STEPS (20), BENCH_COMMIT (the commit line; the device's copy of the
#          tree has no git), OUT (default gpu-out); PIGMENT_BIN to use a binary already unpacked,
#          PYTHON (python3); for a dry run of the script on a machine without a GPU:
#          BENCH_DEVICE=cpu ARCH=tiny SIZES=64,32 STEPS=2 PIGMENT_BIN=target/debug/pigment (then
#          side_by_side.py writes the CPU table, in a scratch copy of the tree).
# Outputs in $OUT: BENCHMARKS-gpu.md (the GPU subsections, ready for
#          `python tools/bench/side_by_side.py --merge BENCHMARKS-gpu.md` at home), BENCHMARKS.md
#          (the device copy's whole file, CPU table kept), bench.log (everything printed).
set -uo pipefail
# shellcheck source=tools/gpu/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BENCH_SECONDS=${BENCH_SECONDS:-200}
# f16 first: it is the faster run, and what it leaves over goes to the slower f32 run.
DTYPES=${DTYPES:-f16 f32}
REPEATS=${REPEATS:-3}
ARCH=${ARCH:-sd15}
SIZES=${SIZES:-512,256}
STEPS=${STEPS:-20}
OUT=${OUT:-$PWD/gpu-out}
BENCH_DEVICE=${BENCH_DEVICE:-cuda}
mkdir -p "$OUT"

main() {
    local start=$SECONDS
    # Everything must be done by then; 8 s kept for writing and listing at the end.
    local finish_by=$((start + BENCH_SECONDS - 8))
    [ -f Cargo.toml ] && [ -f tools/bench/side_by_side.py ] || die "run from the repository root"
    echo "== $(date -u) bench_on_device: BENCH_SECONDS=$BENCH_SECONDS DTYPES='$DTYPES' REPEATS=$REPEATS ARCH=$ARCH SIZES=$SIZES STEPS=$STEPS OUT=$OUT"
    nvidia-smi -L || echo "WARNING: nvidia-smi failed"
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.max.sm,power.limit \
        --format=csv 2>/dev/null
    # Whatever else holds GPU memory would be counted in both engines' "peak GPU" figures.
    nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv 2>/dev/null

    # 1. diffusers (and importlib_metadata) from the carried wheels, into /tmp/site.
    local py=${PYTHON:-python3}
    command -v "$py" >/dev/null || die "no python3 on PATH"
    if ls .whl/*.whl >/dev/null 2>&1; then
        ls -l .whl/*.whl
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl || die "pip could not install .whl/*.whl into /tmp/site"
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    else
        echo "WARNING: no .whl/*.whl (tools/gpu/wheels.sh, carry .whl): using whatever diffusers $py has"
    fi
    "$py" - "$BENCH_DEVICE" <<'PY' || echo "WARNING: ********** torch/diffusers/transformers do not import or see no GPU (above): the diffusers rows will be missing; Pigment's are still measured **********"
import sys
import torch, transformers, diffusers
print(f"python torch {torch.__version__} (CUDA {torch.version.cuda}), diffusers {diffusers.__version__} "
      f"from {diffusers.__file__}, transformers {transformers.__version__}")
if sys.argv[1] != "cpu":
    assert torch.cuda.is_available(), "torch sees no CUDA device"
    print(f"torch sees {torch.cuda.get_device_name(0)}, {torch.cuda.mem_get_info()[1] / 2**30:.1f} GiB")
PY

    # 2. The binary.
    local pigment
    if [ -n "${PIGMENT_BIN:-}" ]; then
        pigment=$PIGMENT_BIN
    else
        [ -f .gpu/pigment.xz ] || die ".gpu/pigment.xz is missing: run tools/gpu/build_cuda.sh and carry .gpu"
        mkdir -p /tmp/pigment-bench
        xz -dc .gpu/pigment.xz >/tmp/pigment-bench/pigment || die "cannot unpack .gpu/pigment.xz"
        chmod +x /tmp/pigment-bench/pigment
        pigment=/tmp/pigment-bench/pigment
    fi

    # 3. Shared libraries, found as tools/gpu/train_on_device.sh finds them: cuBLAS, cuRAND,
    #    NVRTC and the CUDA runtime from the Python environment's nvidia-* wheels; libcuda.so.1
    #    from the driver.
    local dirs
    dirs=$(cuda_library_path "$py")
    export LD_LIBRARY_PATH=$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    ldd "$pigment" | grep -E 'cuda|cublas|curand|nvrtc|not found'
    if ldd "$pigment" | grep -q 'not found'; then
        die "the binary's libraries marked 'not found' above are missing: add their folder to LD_LIBRARY_PATH"
    fi
    "$pigment" --version 2>/dev/null || true

    # 4. One side-by-side run per dtype, each within its share of the time left.
    local commit_args=()
    [ -n "${BENCH_COMMIT:-}" ] && commit_args=(--commit "$BENCH_COMMIT")
    commit_args+=(--device "$BENCH_DEVICE")
    local n=0 dtype
    for dtype in $DTYPES; do n=$((n + 1)); done
    local i=0 failed=0
    for dtype in $DTYPES; do
        local left=$((finish_by - SECONDS))
        local share=$((left / (n - i)))
        i=$((i + 1))
        if [ "$share" -lt 20 ]; then
            echo "WARNING: skipping $dtype: only $left s left"
            failed=1
            continue
        fi
        echo "== $(date -u +%T) $dtype: $share s for both engines ($left s left)"
        # The outer timeout is a backstop: side_by_side.py kills an engine past its share itself.
        timeout --kill-after=5 "$((share + 10))" "$py" tools/bench/side_by_side.py --dtype "$dtype" \
            --pigment "$pigment" --python "$py" --arch "$ARCH" --sizes "$SIZES" --steps "$STEPS" \
            --repeats "$REPEATS" --full-repeats 1 --timeout "$share" "${commit_args[@]}" \
            --out BENCHMARKS.md --section-out "$OUT/BENCHMARKS-gpu.md" >/dev/null
        local rc=$?
        [ "$rc" -ne 0 ] && { echo "WARNING: $dtype run exit $rc (the subsection says which engine failed)"; failed=1; }
    done

    cp BENCHMARKS.md "$OUT/BENCHMARKS.md" 2>/dev/null
    if [ -f "$OUT/BENCHMARKS-gpu.md" ]; then
        echo "== $OUT/BENCHMARKS-gpu.md:"
        cat "$OUT/BENCHMARKS-gpu.md"
    else
        echo "WARNING: no GPU subsection was written"
        failed=1
    fi
    ls -l "$OUT"
    echo "== done in $((SECONDS - start)) s (limit $BENCH_SECONDS s)"
    return "$failed"
}

main "$@" 2>&1 | tee "$OUT/bench.log"
exit "${PIPESTATUS[0]}"
