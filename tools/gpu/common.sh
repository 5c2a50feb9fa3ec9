# Sourced by the GPU-machine scripts (train_on_device.sh, bench_on_device.sh).

# die MESSAGE: print it as FATAL on stderr and stop the script.
die() {
    echo "FATAL: $*" >&2
    exit 1
}

# cuda_library_path PYTHON prints the folders that hold the CUDA libraries a `--features cuda`
# pigment links (cuBLAS, cuBLASLt, cuRAND, NVRTC and the runtime from the Python environment's
# nvidia-* wheels; libcuda.so.1 from the driver), colon-separated, without repeats.
cuda_library_path() {
    local py=$1 dirs="" d lib found
    for d in $("$py" -c 'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null) /opt/torch; do
        [ -d "$d" ] || continue
        while IFS= read -r lib; do
            dirs="$dirs:$(dirname "$lib")"
        done < <(find "$d" \( -name 'libcublas.so.*' -o -name 'libcublasLt.so.*' -o -name 'libcurand.so.*' \
            -o -name 'libnvrtc.so.*' -o -name 'libcudart.so.*' \) 2>/dev/null)
    done
    for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/cuda/lib64; do
        [ -e "$d/libcuda.so.1" ] && dirs="$dirs:$d"
    done
    if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 ' && ! echo "$dirs" | grep -q nvidia/lib; then
        # Not in the loader's cache nor the usual folders: look for the driver's library.
        found=$(timeout 20 find /usr /lib /lib64 /opt -name 'libcuda.so.1' 2>/dev/null | grep -v stubs | head -1)
        [ -n "$found" ] && dirs="$dirs:$(dirname "$found")"
    fi
    echo "$dirs" | tr ':' '\n' | awk 'NF && !seen[$0]++' | paste -sd: -
}
