#!/usr/bin/env bash
# Build a `pigment` binary with CUDA (for an H100: compute capability 9.0) on a machine that
# has neither a GPU nor a CUDA toolkit, and pack it into .gpu/pigment.xz for the GPU machine.
#
#   tools/gpu/build_cuda.sh [CUDA_SDK]      (run from the repository root)
#
# CUDA_SDK (argument or env; default ../cuda-sdk) is a folder OUTSIDE the repository where the
# CUDA 13.0 compiler, headers and link-time libraries are installed from PyPI wheels. The GPU
# machine's driver supports CUDA 13.0 at most, so the toolkit must be 13.0.x.
# CARGO_TARGET_DIR defaults to ../target-cuda (kept apart from the shared target/).
# The binary is built without the `embedded-model` feature (~16 MB smaller): run it with
# `--model models/builtin` or from the repository root.
# FROM_HEAD=1 builds the last commit (a `git archive` of HEAD in $CUDA_SDK/src) instead of the
# working tree: for a checkout where others' unfinished edits do not compile.
set -euo pipefail

repo=$(git rev-parse --show-toplevel)
cd "$repo"
CUDA_SDK=${1:-${CUDA_SDK:-../cuda-sdk}}
mkdir -p "$CUDA_SDK"
CUDA_SDK=$(cd "$CUDA_SDK" && pwd)
case "$CUDA_SDK/" in "$repo"/*) echo "CUDA_SDK must be outside the repository" >&2; exit 1;; esac
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/../target-cuda}
PYTHON=${PYTHON:-python3}

# 1. The toolkit from PyPI (CUDA 13 wheels all install under nvidia/cu13/{bin,include,lib,nvvm}).
site=$CUDA_SDK/py
cuda_home=$site/nvidia/cu13
if [ ! -x "$cuda_home/bin/nvcc" ] || [ ! -e "$cuda_home/lib/libcublas.so.13" ]; then
    echo "== installing the CUDA 13.0 toolkit wheels into $site"
    "$PYTHON" -m pip install -q --no-deps --target "$site" \
        'nvidia-cuda-nvcc==13.0.*' 'nvidia-cuda-crt==13.0.*' 'nvidia-nvvm==13.0.*' \
        'nvidia-cuda-runtime==13.0.*' 'nvidia-cuda-cccl==13.0.*' 'nvidia-cuda-nvrtc==13.0.*' \
        'nvidia-cublas==13.0.*' 'nvidia-curand==10.4.*'
fi
"$cuda_home/bin/nvcc" --version | tail -2

# 2. Link-time libraries: unversioned names for -l, and a stub libcuda (the real one is the
#    driver's, on the GPU machine). The stub exports every driver function cudarc declares; its
#    soname is libcuda.so.1, so the binary asks for the driver's library at run time.
lib=$cuda_home/lib
for pair in cublas:13 cublasLt:13 curand:10 nvrtc:13 cudart:13; do
    name=${pair%%:*}; ver=${pair##*:}
    [ -e "$lib/lib$name.so.$ver" ] || { echo "missing $lib/lib$name.so.$ver" >&2; exit 1; }
    ln -sf "lib$name.so.$ver" "$lib/lib$name.so"
done
mkdir -p "$lib/stubs"
if [ ! -e "$lib/stubs/libcuda.so" ]; then
    echo "== generating the libcuda stub"
    cargo fetch -q
    bindings=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs | tail -1)
    grep -oE 'pub unsafe fn cu[A-Za-z0-9_]+' "$bindings" | awk '{print $4}' | sort -u |
        sed 's/.*/int &(void) { return 999; }/' >"$lib/stubs/libcuda_stub.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$lib/stubs/libcuda.so" "$lib/stubs/libcuda_stub.c"
fi

# 3. Build.
export CUDA_HOME=$cuda_home CUDA_PATH=$cuda_home CUDA_ROOT=$cuda_home
export NVCC=$cuda_home/bin/nvcc PATH=$cuda_home/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH=$lib:$lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
src=$repo
if [ "${FROM_HEAD:-0}" = 1 ]; then
    src=$CUDA_SDK/src
    rm -rf "$src" && mkdir -p "$src"
    git archive HEAD | tar -x -C "$src"
    echo "== building HEAD $(git rev-parse --short HEAD) from $src"
fi
echo "== cargo build (target dir $CARGO_TARGET_DIR, compute cap $CUDA_COMPUTE_CAP)"
(cd "$src" && cargo build --release -p pigment-cli --no-default-features --features cuda)

# 4. Pack: stripped, xz-compressed, into the ignored folder .gpu/.
bin=$CARGO_TARGET_DIR/release/pigment
grep -qxF '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
mkdir -p .gpu
strip -o .gpu/pigment "$bin"
echo "== shared libraries the binary needs:"
readelf -d .gpu/pigment | grep NEEDED
xz -T0 -9 -f .gpu/pigment
ls -l .gpu/pigment.xz
