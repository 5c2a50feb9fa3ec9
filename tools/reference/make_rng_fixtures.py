"""Reference values of PyTorch's CPU generator, for crates/pigment/tests/rng_parity.rs.

Run from the repository root:  python tools/reference/make_rng_fixtures.py
Writes tests/fixtures/rng/torch_randn.json.

Every value is stored as its exact bit pattern (float32 as a u32, float64 as a u64) so the Rust
test can demand bit-for-bit equality. Each case is a sequence of calls on ONE generator made with
torch.Generator("cpu").manual_seed(seed), so the state carried between calls (the mt19937
position and the cached second Box-Muller normal) is checked as well.

torch.randn on CPU takes two code paths (aten/src/ATen/native/cpu/DistributionTemplates.h):
numel >= 16 uses the vectorised normal_fill, smaller tensors go element by element through
at::normal_distribution<double>. The shapes below straddle that boundary.

The float32 normal_fill differs by CPU kernel: the AVX2 and AVX512 kernels use avx_mathfun's
log/sincos polynomials, the DEFAULT kernel the C library's logf/cosf/sinf (they differ in the
last bit). The script runs itself twice, with ATEN_CPU_CAPABILITY=avx2 and =default, and stores
both ("avx" and "scalar"), each with the capability torch reported.
"""

import json
import os
import struct
import subprocess
import sys

import torch

OUT = os.path.join("tests", "fixtures", "rng", "torch_randn.json")

SEEDS = [0, 1, 42, 2**32 + 5, 2**64 - 2**40 + 12345]
SHAPES = [[1], [3], [8], [15], [16], [17], [31], [100], [1000], [1, 4, 8, 8]]
# Big tensors cost fixture size; keep them to a few seeds.
BIG_SHAPE_SEEDS = {0, 42}


def f32_bits(t):
    return [struct.unpack("<I", struct.pack("<f", v))[0] for v in t.flatten().tolist()]


def f64_bits(t):
    return [struct.unpack("<Q", struct.pack("<d", v))[0] for v in t.flatten().tolist()]


def call(gen, op, shape):
    if op == "randn":
        return {"op": op, "shape": shape, "bits": f32_bits(torch.randn(shape, generator=gen, dtype=torch.float32))}
    if op == "randn_f64":
        return {"op": op, "shape": shape, "bits": f64_bits(torch.randn(shape, generator=gen, dtype=torch.float64))}
    if op == "rand":
        return {"op": op, "shape": shape, "bits": f32_bits(torch.rand(shape, generator=gen, dtype=torch.float32))}
    if op == "rand_f64":
        return {"op": op, "shape": shape, "bits": f64_bits(torch.rand(shape, generator=gen, dtype=torch.float64))}
    raise ValueError(op)


def make_cases(scalar_subset):
    """All cases, or (scalar_subset) the few that exercise the float normal_fill kernel."""
    torch.set_num_threads(1)
    cases = []
    # One fresh generator per (seed, shape).
    for seed in SEEDS:
        for shape in SHAPES:
            numel = 1
            for d in shape:
                numel *= d
            if numel >= 100 and seed not in BIG_SHAPE_SEEDS:
                continue
            if scalar_subset and (numel < 16 or numel > 256 or seed not in BIG_SHAPE_SEEDS):
                continue
            gen = torch.Generator("cpu").manual_seed(seed)
            cases.append({"name": f"randn seed={seed} shape={shape}", "seed": seed, "calls": [call(gen, "randn", shape)]})

    # An ancestral sampler's order on one generator: the initial latents, then per-step noise,
    # mixed with small tensors so the cached Box-Muller normal crosses calls (a small call
    # leaves one cached; a large call neither uses nor clears it; the next small call uses it).
    seq = [
        ("randn", [1, 4, 8, 8]),
        ("randn", [3]),
        ("randn", [1, 4, 8, 8]),
        ("randn", [1]),
        ("randn", [2, 4, 5, 7]),
        ("randn", [5]),
        ("randn", [17]),
        ("randn", [2]),
        ("randn_f64", [3]),
        ("randn_f64", [20]),
        ("randn_f64", [1]),
        ("randn", [1]),
        ("rand", [10]),
        ("rand", [40]),
        ("rand_f64", [6]),
        ("randn", [1, 4, 8, 8]),
    ]
    for seed in [0] if scalar_subset else [0, 1234]:
        gen = torch.Generator("cpu").manual_seed(seed)
        cases.append({"name": f"sampler sequence seed={seed}", "seed": seed, "calls": [call(gen, op, shape) for op, shape in seq]})

    return cases


def run_child(capability, scalar_subset):
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability)
    arg = "--child-scalar" if scalar_subset else "--child"
    out = subprocess.run([sys.executable, __file__, arg], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main():
    if sys.argv[1:2] in (["--child"], ["--child-scalar"]):
        cases = make_cases(sys.argv[1] == "--child-scalar")
        json.dump({"cpu_capability": torch.backends.cpu.get_cpu_capability(), "cases": cases}, sys.stdout)
        return
    doc = {
        "torch_version": torch.__version__,
        "avx": run_child("avx2", False),
        "scalar": run_child("default", True),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    for k in ("avx", "scalar"):
        print(f"{k}: {len(doc[k]['cases'])} cases, torch capability {doc[k]['cpu_capability']}")
    print(f"wrote {OUT}: {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
