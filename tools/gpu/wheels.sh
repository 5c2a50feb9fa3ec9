#!/usr/bin/env bash
# Downloads, here (where pip reaches PyPI), the wheels the GPU machine lacks for
# tools/bench/diffusers_bench.py: diffusers 0.42.1 and those of its requirements that the
# machine's image does not hold (.library/device/KINDS.md lists the image's packages; it has
# torch, transformers, huggingface-hub 1.33, safetensors 0.8, numpy, regex, requests, filelock,
# pillow). They land in the repo's ignored folder .whl/ (one version of each, no deps pulled);
# tools/gpu/bench_on_device.sh installs them there into /tmp/site.
#
# Run from the repo root:  bash tools/gpu/wheels.sh
# Needs: python3 with pip, unzip (only for the requirements listing), network.
set -euo pipefail

WHL=.whl
# name==version of each wheel to carry. importlib_metadata is a declared requirement of
# diffusers (Python 3.12 uses the standard library's importlib.metadata instead, but pip's
# metadata says so and it is 25 kB).
WHEELS=(diffusers==0.42.1 importlib_metadata==8.7.0)

if [ ! -d .git ] || [ ! -f Cargo.toml ]; then
  echo "run from the repo root (no .git or Cargo.toml here: $PWD)" >&2
  exit 1
fi
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p "$WHL"

PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for spec in "${WHEELS[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$TMP" "$spec"
done
# One version of each package: a second one would stop the whole install there.
rm -f "$WHL"/*.whl

# diffusers' wheel is 6.4 MB; three pipeline folders the benchmark never imports (the
# deprecated pipelines, PAG, LTX-2: 0.9 MB compressed) are left out, and RECORD is written anew
# so that pip installs the smaller wheel as it would the original. diffusers imports its
# pipelines lazily, so StableDiffusionPipeline does not reach them (checked by running
# tools/bench/diffusers_bench.py --arch tiny against the slimmed wheel).
python3 - "$TMP" "$WHL" <<'PY'
import base64, glob, hashlib, os, shutil, sys, zipfile

tmp, out = sys.argv[1], sys.argv[2]
DROP = ("diffusers/pipelines/deprecated/", "diffusers/pipelines/pag/", "diffusers/pipelines/ltx2/")
for path in glob.glob(os.path.join(tmp, "*.whl")):
    dst = os.path.join(out, os.path.basename(path))
    if not os.path.basename(path).startswith("diffusers-"):
        shutil.copy(path, dst)
        continue
    zin = zipfile.ZipFile(path)
    record = next(n for n in zin.namelist() if n.endswith(".dist-info/RECORD"))
    rows, dropped = [], 0
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        for info in zin.infolist():
            if info.filename.startswith(DROP):
                dropped += 1
                continue
            if info.filename == record:
                continue
            data = zin.read(info)
            zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append(f"{info.filename},sha256={digest},{len(data)}")
        rows.append(f"{record},,")
        zout.writestr(record, "\n".join(rows) + "\n")
    print(f"{os.path.basename(path)}: {os.path.getsize(path)} -> {os.path.getsize(dst)} bytes ({dropped} files left out)")
PY

echo "wheels in $WHL:"
ls -l "$WHL"
if command -v unzip >/dev/null; then
  echo "diffusers' requirements (all but those above are in the GPU image, KINDS.md):"
  unzip -p "$WHL"/diffusers-*.whl '*/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' || true
fi
total=$(du -cb "$WHL"/*.whl | tail -1 | cut -f1)
echo "total: $total bytes ($(( total / 1024 )) KiB)"
if [ "$total" -ge $(( 6 * 1024 * 1024 )) ]; then
  echo "more than 6 MB: too much to carry for a benchmark" >&2
  exit 1
fi
