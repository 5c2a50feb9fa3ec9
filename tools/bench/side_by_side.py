"""Runs `pigment bench` and tools/bench/diffusers_bench.py on the same machine, one after the
other, with the same thread count, architecture and shapes, and writes BENCHMARKS.md: the
side-by-side table with time and memory ratios, the machine (lscpu), the commit, the date and
the exact commands.

Run from the repo root, with the Python that has torch + diffusers first on PATH and a release
build of the CLI (`cargo build --release -p pigment-cli`):
    python tools/bench/side_by_side.py --arch sd15 --threads 2
Small check of the scripts themselves (seconds, numbers meaningless):
    python tools/bench/side_by_side.py --arch tiny --sizes 64,32 --steps 2 --out /tmp/B.md
"""

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys


def run_json(cmd, env):
    print("+", " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, check=True).stdout
    return json.loads(out)


def sh(cmd):
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine():
    fields = {}
    for line in sh(["lscpu"]).splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    flags = fields.get("Flags", "").split()
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return (
        f"{fields.get('Model name', 'unknown CPU')}; {fields.get('CPU(s)', '?')} logical CPUs "
        f"({fields.get('Core(s) per socket', '?')} cores per socket, {fields.get('Thread(s) per core', '?')} threads per core); "
        f"SIMD: {', '.join(simd) or 'none of avx2/fma/avx512'}"
    )


def gib(b):
    return "-" if b is None else f"{b / 2**30:.2f}"


def ratio(a, b):
    return "-" if not a or not b else f"{a / b:.2f}"


def table(pig, ref):
    ref_rows = {(r["component"], r["size"]): r for r in ref["rows"]}
    lines = [
        "| component | size | batch | GFLOP | Pigment s | diffusers s | time ratio (P/d) | Pigment GFLOP/s | diffusers GFLOP/s | Pigment peak RSS GiB | diffusers peak RSS GiB | RSS ratio (P/d) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in pig["rows"]:
        d = ref_rows.get((p["component"], p["size"]), {})
        d_s = d.get("median_s")
        d_rate = p["flops"] / d_s / 1e9 if d_s else None
        lines.append(
            "| {c} | {size} | {b} | {gf:.1f} | {ps:.3f} | {ds} | {tr} | {pr:.1f} | {dr} | {pm} | {dm} | {mr} |".format(
                c=p["component"], size=p["size"] or "-", b=p["batch"], gf=p["flops"] / 1e9,
                ps=p["median_s"], ds="-" if d_s is None else f"{d_s:.3f}", tr=ratio(p["median_s"], d_s),
                pr=p["gflops_per_s"], dr="-" if d_rate is None else f"{d_rate:.1f}",
                pm=gib(p["peak_rss_bytes"]), dm=gib(d.get("peak_rss_bytes")),
                mr=ratio(p["peak_rss_bytes"], d.get("peak_rss_bytes")),
            )
        )
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pigment", default=os.path.join("target", "release", "pigment"))
    p.add_argument("--arch", default="sd15")
    p.add_argument("--sizes", default="512,256")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--skip-full", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--full-repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--pigment-dtype", default="f32", help="f32 (the comparison) or f16 (Pigment only)")
    p.add_argument("--out", default="BENCHMARKS.md")
    args = p.parse_args()
    if not os.path.exists(args.pigment):
        sys.exit(f"{args.pigment} not found: build it with `cargo build --release -p pigment-cli` or pass --pigment PATH")

    common = ["--arch", args.arch, "--sizes", args.sizes, "--steps", str(args.steps),
              "--repeats", str(args.repeats), "--full-repeats", str(args.full_repeats)]
    if args.skip_full:
        common.append("--skip-full")
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    pig_cmd = [args.pigment, "bench", *common, "--dtype", args.pigment_dtype, "--json"]
    ref_cmd = ["python", os.path.join("tools", "bench", "diffusers_bench.py"), *common,
               "--threads", str(args.threads), "--json"]
    pig = run_json(pig_cmd, env)
    ref = run_json(ref_cmd, env)
    if pig["threads"] != ref["threads"]:
        print(f"warning: Pigment ran {pig['threads']} threads, diffusers {ref['threads']}", file=sys.stderr)

    commit = sh(["git", "rev-parse", "HEAD"]) or "unknown"
    if sh(["git", "status", "--porcelain", "--untracked-files=no"]):
        commit += " (with uncommitted changes)"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = ref.get("versions", {})
    text = f"""# Benchmarks: Pigment vs diffusers on the same machine

Written by `tools/bench/side_by_side.py`; both engines ran one after the other in this run.

- Date: {now}
- Commit: {commit}
- Machine: {machine()}
- Threads: Pigment {pig['threads']}, PyTorch {ref['threads']}
- Model: {args.arch}, random weights made in memory from the config; Pigment {pig['dtype']}, diffusers {ref['dtype']}
- diffusers {versions.get('diffusers', '?')}, torch {versions.get('torch', '?')}
- Load / build: Pigment {pig['load_s']:.2f} s ({gib(pig['loaded_rss_bytes'])} GiB RSS after), diffusers {ref['load_s']:.2f} s ({gib(ref['loaded_rss_bytes'])} GiB)

Medians of {pig['repeats']} runs ({args.full_repeats} for the whole generation). Time ratio below 1:
Pigment is faster. GFLOP: convolutions, matmuls and attention products of the actual config,
counted by crates/pigment/src/bench/flops.rs (the same count for both engines). Peak RSS: the
process's VmHWM while the component ran, weights included, reset before each component. The
UNet runs at batch 2 (classifier-free guidance); the whole generation is {args.steps} Euler steps
at guidance 7.5 and the first size, text encoding and VAE decode included.

{table(pig, ref)}

Commands (from the repo root, environment RAYON_NUM_THREADS={args.threads} OMP_NUM_THREADS={args.threads}):

```
{" ".join(shlex.quote(c) for c in pig_cmd)}
{" ".join(shlex.quote(c) for c in ref_cmd)}
```
"""
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
