#!/usr/bin/env bash
# Train the built-in model's UNet on a CUDA GPU for about TRAIN_SECONDS, with the binary that
# tools/gpu/build_cuda.sh packed into .gpu/pigment.xz. Run from the repository root on the GPU
# machine (carry `.gpu`):
#
#   tools/gpu/train_on_device.sh
#
# Inputs:  .gpu/pigment.xz; models/builtin (text encoder + CLIP, and the VAE the UNet trains on:
#          the shipped one is the recipe's f = 2 VAE; VAE_DIR=DIR trains on another).
# Env:     TRAIN_SECONDS (default 360), BATCH (128), LR (8e-4), SEED (0), OUT (default gpu-out);
#          SMOKE=0 skips the 4-step generation before training (~20 s on a fresh machine);
#          COMPARE_CONV_BACKWARD=1 also times candle's own conv backward (45 s of the budget);
#          INIT (a .safetensors of the recipe's UNet, e.g. the shipped
#          models/builtin/unet/diffusion_pytorch_model.safetensors: training continues from those
#          weights with a fresh optimiser, so GPU windows add up across sessions);
#          for a dry run on a machine without a GPU: PIGMENT_BIN=target/debug/pigment DEVICE=cpu.
# Outputs in $OUT (at most 8 files come back from the device): train.log (everything printed),
#          smoke.png, sample.png (the new model), loss.jsonl, timing.txt (step time, and the
#          timing run's `--profile-steps` split of it by phase), unet.safetensors and
#          unet_config.json (the EMA UNet, f16, as exported; the rest of the export is the
#          shipped text encoder, VAE and CLIP, unchanged).
# The script ends within TRAIN_SECONDS + 150 s: training is sized from a measured step time
# and time-boxed; if it must be stopped, the newest checkpoint is exported instead.
set -uo pipefail
# shellcheck source=tools/gpu/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TRAIN_SECONDS=${TRAIN_SECONDS:-360}
BATCH=${BATCH:-128}
LR=${LR:-8e-4}
SEED=${SEED:-0}
INIT=${INIT:-}
OUT=${OUT:-$PWD/gpu-out}
VAE_DIR=${VAE_DIR:-models/builtin/vae}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"

main() {
    local start=$SECONDS
    local init_args=()
    if [ -n "$INIT" ]; then
        [ -f "$INIT" ] || die "INIT=$INIT is not a file"
        init_args=(--init "$INIT")
    fi
    # Everything must be done by this many seconds after the start (30 s kept for the end).
    local finish_by=$((start + TRAIN_SECONDS + 150 - 30))
    [ -f Cargo.toml ] && [ -d models/builtin ] || die "run from the repository root (no models/builtin here)"
    echo "== $(date -u) train_on_device: TRAIN_SECONDS=$TRAIN_SECONDS BATCH=$BATCH LR=$LR SEED=$SEED OUT=$OUT"

    # 1. The binary.
    if [ -n "${PIGMENT_BIN:-}" ]; then
        PIGMENT=$PIGMENT_BIN
    else
        [ -f .gpu/pigment.xz ] || die ".gpu/pigment.xz is missing: run tools/gpu/build_cuda.sh and carry .gpu"
        local bin_dir=/tmp/pigment-gpu
        mkdir -p "$bin_dir"
        xz -dc .gpu/pigment.xz >"$bin_dir/pigment" || die "cannot unpack .gpu/pigment.xz"
        chmod +x "$bin_dir/pigment"
        PIGMENT=$bin_dir/pigment
    fi

    # 2. Shared libraries: cuBLAS, cuRAND, NVRTC and the CUDA runtime from the Python
    #    environment's nvidia-* wheels; libcuda.so.1 from the driver.
    local py=python3 dirs
    command -v "$py" >/dev/null || die "no python3 on PATH"
    dirs=$(cuda_library_path "$py")
    export LD_LIBRARY_PATH=$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "== shared libraries of the binary:"
    ldd "$PIGMENT" | grep -E 'cuda|cublas|curand|nvrtc|not found'
    if ldd "$PIGMENT" | grep -q 'not found'; then
        die "the binary's libraries above marked 'not found' are missing: find them with \
\`find / -name 'libNAME.so*'\` and add their folder to LD_LIBRARY_PATH"
    fi
    nvidia-smi -L || echo "WARNING: nvidia-smi failed"

    # 3. Smoke test: the shipped built-in model generates on CUDA.
    local t0=$SECONDS
    if [ "${SMOKE:-1}" = 1 ]; then
        echo "== smoke: generate on $DEVICE"
        if "$PIGMENT" generate "a red circle" --model models/builtin --device "$DEVICE" --steps 4 \
            --seed 1 --force --out "$OUT/smoke.png"; then
            echo "smoke OK in $((SECONDS - t0)) s"
        else
            echo "WARNING: SMOKE TEST FAILED (generate on $DEVICE); trying training anyway"
        fi
    else
        echo "== smoke test skipped (SMOKE=0)"
    fi

    # 4. The work folder: clip/ = text encoder + CLIP vision tower and projections (one file),
    #    vae/ = the VAE the UNet trains on.
    local work=/tmp/pigment-work
    rm -rf "$work" && mkdir -p "$work/clip" "$work/vae"
    if [ ! -f "$VAE_DIR/diffusion_pytorch_model.safetensors" ] || [ ! -f "$VAE_DIR/config.json" ]; then
        die "$VAE_DIR has no VAE (config.json + diffusion_pytorch_model.safetensors)"
    fi
    cp "$VAE_DIR/config.json" "$VAE_DIR/diffusion_pytorch_model.safetensors" "$work/vae/" || die "cannot copy the VAE"
    echo "VAE: $VAE_DIR ($(sha256sum "$VAE_DIR/diffusion_pytorch_model.safetensors" | cut -c1-16))"
    cp models/builtin/clip/config.json "$work/clip/config.json"
    # Plain Python (no safetensors package needed): the two files' headers merged, data appended.
    "$py" - "$work/clip/model.safetensors" <<'PY' || die "cannot assemble clip/model.safetensors"
import json, struct, sys

def read(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        return header, f.read()

text, text_data = read("models/builtin/text_encoder/model.safetensors")
rest, rest_data = read("models/builtin/clip/model.safetensors")
text.pop("__metadata__", None)
rest.pop("__metadata__", None)
assert text and all(k.startswith("text_model.") for k in text), "text encoder keys must be text_model.*"
assert not set(text) & set(rest), "text encoder and clip share keys"
header, blobs, offset = {}, [], 0
for table, data in ((rest, rest_data), (text, text_data)):
    for name, info in sorted(table.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, end = info["data_offsets"]
        blobs.append(data[begin:end])
        header[name] = {**info, "data_offsets": [offset, offset + end - begin]}
        offset += end - begin
raw = json.dumps(header, separators=(",", ":")).encode()
raw += b" " * (-len(raw) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))
print(f"clip/model.safetensors: {len(text)} text + {len(rest)} vision/projection tensors, {offset} bytes")
PY

    # 5. Step time from a throwaway run: 5 warm-up steps, then 20 timed.
    local scratch=/tmp/pigment-scratch
    rm -rf "$scratch" && mkdir -p "$scratch" && cp -r "$work/clip" "$work/vae" "$scratch/"
    echo "== timing: 25 throwaway steps, batch $BATCH"
    t0=$SECONDS
    "$PIGMENT" train unet "${init_args[@]}" --device "$DEVICE" --work "$scratch" --steps 25 --batch "$BATCH" --lr "$LR" \
        --seed "$SEED" --checkpoint-every 0 --profile-steps || die "the timing run failed (see above)"
    local scratch_wall=$((SECONDS - t0))
    # Where the steps' time goes (the means include the first steps' kernel compilation; the
    # waits for the GPU after each phase make the step time below a little pessimistic).
    echo "step profile (timing run): $(cat "$scratch/unet/step_profile.txt")" | tee -a "$OUT/timing.txt"
    read -r step_time startup < <("$py" - "$scratch/unet/loss.jsonl" "$scratch_wall" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert len(recs) >= 25, f"only {len(recs)} steps logged"
step = (recs[24]["elapsed_secs"] - recs[4]["elapsed_secs"]) / 20
startup = max(0.0, float(sys.argv[2]) - recs[24]["elapsed_secs"])
print(f"{step:.6f} {startup:.1f}")
PY
    ) || die "cannot read the timing run's loss log"
    [ -n "${step_time:-}" ] || die "no step time measured"

    # 5a. The same 25 steps with candle's own conv2d backward (PIGMENT_CUDA_CONV_BACKWARD=candle)
    #     instead of Pigment's GEMM one, for the record (ops/conv2d_train.rs); 45 s at most,
    #     taken from training, so only with COMPARE_CONV_BACKWARD=1.
    if [ "$DEVICE" != cpu ] && [ "${COMPARE_CONV_BACKWARD:-0}" = 1 ]; then
        rm -rf "$scratch/unet"
        if PIGMENT_CUDA_CONV_BACKWARD=candle timeout 45 "$PIGMENT" train unet "${init_args[@]}" \
            --device "$DEVICE" --work "$scratch" --steps 25 --batch "$BATCH" --lr "$LR" --seed "$SEED" \
            --checkpoint-every 0 >/dev/null 2>&1; then
            "$py" - "$scratch/unet/loss.jsonl" "$step_time" <<'PY' | tee -a "$OUT/timing.txt"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
step = (recs[24]["elapsed_secs"] - recs[4]["elapsed_secs"]) / 20
print(f"conv backward: pigment's GEMMs {float(sys.argv[2]):.4f} s/step, candle's {step:.4f} s/step")
PY
        else
            echo "WARNING: the timing run with candle's conv backward failed or passed 45 s"
        fi
    fi

    # 5b. Parity: 3 steps of batch 8 on the CPU and on $DEVICE from the same seed must log the
    #     same losses up to TF32 rounding (step 1 checks the forward pass, steps 2-3 the
    #     gradients and the update). One micro-batch on both: the CPU's default of two draws
    #     other noise for the same items, so its losses are not comparable.
    if [ "$DEVICE" != cpu ]; then
        local dev
        for dev in cpu "$DEVICE"; do
            rm -rf "/tmp/pigment-parity-$dev" && mkdir -p "/tmp/pigment-parity-$dev"
            cp -r "$work/clip" "$work/vae" "/tmp/pigment-parity-$dev/"
            "$PIGMENT" train unet "${init_args[@]}" --device "$dev" --work "/tmp/pigment-parity-$dev" --steps 3 \
                --batch 8 --lr "$LR" --seed "$SEED" --checkpoint-every 0 --micro-batches 1 >/dev/null 2>&1 ||
                echo "WARNING: parity run on $dev failed"
        done
        "$py" - "/tmp/pigment-parity-cpu/unet/loss.jsonl" "/tmp/pigment-parity-$DEVICE/unet/loss.jsonl" <<'PY' ||
import json, sys
a, b = ([json.loads(l)["loss"] for l in open(p) if l.strip()] for p in sys.argv[1:3])
assert len(a) == len(b) == 3, f"steps logged: cpu {len(a)}, gpu {len(b)}"
worst = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b))
print("parity losses cpu", [round(x, 6) for x in a], "gpu", [round(y, 6) for y in b], f"max rel diff {worst:.2e}")
sys.exit(0 if worst < 1e-2 else 1)
PY
            echo "WARNING: ********** CPU and GPU training losses differ (see above) **********"
    fi
    local left=$((finish_by - SECONDS - 25)) # 25 s: export, sample, packing
    local budget=$TRAIN_SECONDS
    [ "$left" -lt "$budget" ] && budget=$left
    local steps
    steps=$("$py" -c "import math; print(max(1, math.floor(($budget - $startup) / $step_time)))")
    local every=$(((steps + 7) / 8))
    {
        echo "step_time_s=$step_time batch=$BATCH samples_per_s=$("$py" -c "print(round($BATCH / $step_time, 1))")"
        echo "startup_s=$startup timing_run_wall_s=$scratch_wall train_budget_s=$budget steps=$steps"
    } | tee -a "$OUT/timing.txt"

    # 6. The run, time-boxed; GPU use logged every 20 s.
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader -l 20 2>/dev/null | sed 's/^/gpu: /' &
    local smi=$!
    local box=$((finish_by - SECONDS - 25))
    echo "== training: $steps steps, batch $BATCH, lr $LR, checkpoint every $every (time box $box s)"
    t0=$SECONDS
    timeout --signal=TERM "$box" "$PIGMENT" train unet "${init_args[@]}" --device "$DEVICE" --work "$work" --steps "$steps" \
        --batch "$BATCH" --lr "$LR" --seed "$SEED" --checkpoint-every "$every"
    local rc=$?
    kill "$smi" 2>/dev/null
    echo "training exit $rc after $((SECONDS - t0)) s"
    if [ "$rc" -ne 0 ]; then
        # Stopped or failed: write the weights of the newest checkpoint (a run whose total is
        # that checkpoint's step trains nothing more and saves its EMA weights).
        local last
        last=$(ls -d "$work/unet/checkpoints"/*/ 2>/dev/null | sed 's#/$##; s#.*[^0-9]\([0-9][0-9]*\)$#\1#' | sort -n | tail -1)
        [ -n "$last" ] || die "training failed before its first checkpoint"
        echo "WARNING: finishing from the checkpoint at step $((10#$last))"
        "$PIGMENT" train unet "${init_args[@]}" --device "$DEVICE" --work "$work" --steps "$((10#$last))" \
            --batch "$BATCH" --lr "$LR" --seed "$SEED" --checkpoint-every "$every" ||
            die "cannot write the weights from the newest checkpoint"
    fi
    cp "$work/unet/loss.jsonl" "$OUT/loss.jsonl"

    # 7. Export (f16) and check every file is under 16 MiB (the library's size limit per file).
    local export=/tmp/pigment-export
    rm -rf "$export"
    "$PIGMENT" train export --work "$work" --out "$export" || die "export failed"
    find "$export" -type f -printf '%s %p\n' | sort -k2
    if [ -n "$(find "$export" -type f -size +16777215c)" ]; then
        echo "WARNING: ********** an exported file is 16 MiB or larger **********"
    fi
    cp "$export/unet/diffusion_pytorch_model.safetensors" "$OUT/unet.safetensors"
    cp "$export/unet/config.json" "$OUT/unet_config.json"
    "$PIGMENT" generate "a red circle" --model "$export" --device "$DEVICE" --steps 20 --seed 1 \
        --force --out "$OUT/sample.png" || echo "WARNING: sampling the new model failed"
    ls -l "$OUT"
    echo "== done in $((SECONDS - start)) s (limit $((TRAIN_SECONDS + 150)) s)"
}

main "$@" 2>&1 | tee "$OUT/train.log"
exit "${PIPESTATUS[0]}"
