"""Runs `pigment bench` and tools/bench/diffusers_bench.py on the same machine, one after the
other, with the same thread count, architecture and shapes, and writes BENCHMARKS.md: the
side-by-side table with time and memory ratios, the machine, the commit, the date and the exact
commands.

CPU (the default): the CPU table at the top of BENCHMARKS.md (lscpu for the machine). GPU
(`--device cuda`, `--dtype f32|f16|bf16`): one subsection per dtype inside BENCHMARKS.md's GPU
section (nvidia-smi for the machine), between marker comments, so that a CPU run keeps the GPU
section and a GPU run keeps the CPU table and the other dtypes' subsections. `--section-out FILE`
merges the same subsection into FILE as well (the GPU machine's copy comes back from there);
`--merge FILE` copies the GPU subsections of such a FILE into --out and runs nothing.

Run from the repo root, with the Python that has torch + diffusers, and a release build of the
CLI (`cargo build --release -p pigment-cli`; `--features cuda` for the GPU):
    python tools/bench/side_by_side.py --arch sd15 --threads 2
    python tools/bench/side_by_side.py --device cuda --dtype f16 --pigment /tmp/pigment
    python tools/bench/side_by_side.py --merge path/to/BENCHMARKS-gpu.md
Small check of the scripts themselves (seconds, numbers meaningless):
    python tools/bench/side_by_side.py --arch tiny --sizes 64,32 --steps 2 --out /tmp/B.md
"""

import argparse
import datetime
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time

GPU_BEGIN = "<!-- gpu-benchmarks: begin (tools/bench/side_by_side.py --device cuda writes below) -->"
GPU_END = "<!-- gpu-benchmarks: end -->"
GPU_HEADING = """## GPU: Pigment vs diffusers on the same GPU

Each subsection is one `tools/bench/side_by_side.py --device cuda --dtype ...` run: both engines
on the same GPU, one after the other, with the same random-weight architecture and shapes."""
RUN_RE = re.compile(r"<!-- gpu-run (\S+) -->\n.*?<!-- /gpu-run \1 -->\n?", re.S)
RUN_ORDER = ["f32", "f32-tf32", "f16", "bf16"]


class EngineFailed(Exception):
    pass


def run_json(cmd, env, timeout=None):
    """Runs `cmd`, passing its stderr through as it comes (progress), and returns the JSON
    document on its stdout. EngineFailed with the last lines of stderr when it fails, prints
    no JSON, or runs past `timeout` seconds (then it is killed)."""
    print("+", " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        raise EngineFailed(f"could not start {cmd[0]}: {e}")
    out, err_lines = [], []

    def pump_out():
        out.append(proc.stdout.read())

    def pump_err():
        for line in iter(proc.stderr.readline, b""):
            text = line.decode(errors="replace")
            err_lines.append(text)
            sys.stderr.write("  " + text)
            sys.stderr.flush()

    threads = [threading.Thread(target=pump_out, daemon=True), threading.Thread(target=pump_err, daemon=True)]
    for t in threads:
        t.start()
    start = time.monotonic()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        for t in threads:
            t.join(5)
        raise EngineFailed(f"killed after {time.monotonic() - start:.0f} s (time limit {timeout:.0f} s); "
                           f"last output: {''.join(err_lines[-3:]).strip()}")
    for t in threads:
        t.join(30)
    print(f"  ({time.monotonic() - start:.1f} s)", file=sys.stderr, flush=True)
    tail = "".join(err_lines[-8:]).strip()
    if proc.returncode != 0:
        raise EngineFailed(f"exit status {proc.returncode}: {tail}")
    try:
        return json.loads(out[0] if out else b"")
    except json.JSONDecodeError:
        raise EngineFailed(f"no JSON report on stdout: {tail}")


def sh(cmd):
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return ""


def cpu_machine():
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


# Kept under its old name: the CPU table's machine line.
machine = cpu_machine


def gpu_machine(ref=None):
    """The GPU from nvidia-smi (name, memory, driver, SM clock limit, power limit), else from
    the diffusers report."""
    query = "name,memory.total,driver_version,clocks.max.sm,power.limit"
    rows = sh(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"]).splitlines()
    if rows:
        gpus = []
        for r in rows:
            f = [x.strip() for x in r.split(",")]
            if len(f) == 5:
                gpus.append(f"{f[0]} ({f[1]}, driver {f[2]}, max SM clock {f[3]}, power limit {f[4]})")
            else:
                gpus.append(r.strip())
        text = "; ".join(gpus)
    else:
        text = (ref or {}).get("device_name") or "unknown GPU (no nvidia-smi)"
    cpu = sh(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"]).strip()
    return f"{text}; host CPU: {cpu or 'unknown'}, {os.cpu_count()} logical CPUs"


def gib(b):
    return "-" if b is None else f"{b / 2**30:.2f}"


def ratio(a, b):
    return "-" if not a or not b else f"{a / b:.2f}"


def cpu_table(pig, ref):
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


# Kept under its old name.
table = cpu_table


def gpu_table(pig, ref):
    """The GPU rows: either engine may be missing (None) when it failed; the other's rows stay."""
    pig_rows = {(r["component"], r["size"]): r for r in (pig or {}).get("rows", [])}
    ref_rows = {(r["component"], r["size"]): r for r in (ref or {}).get("rows", [])}
    keys = list(pig_rows) + [k for k in ref_rows if k not in pig_rows]
    lines = [
        "| component | size | batch | GFLOP | Pigment ms | diffusers ms | time ratio (P/d) | Pigment TFLOP/s | diffusers TFLOP/s | Pigment peak GPU GiB | diffusers peak GPU GiB | GPU memory ratio (P/d) | diffusers max allocated GiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    fmt = lambda x, spec: "-" if x is None else format(x, spec)
    for key in keys:
        p, d = pig_rows.get(key, {}), ref_rows.get(key, {})
        flops = p.get("flops")
        p_s, d_s = p.get("median_s"), d.get("median_s")
        rate = lambda s: flops / s / 1e12 if flops and s else None
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            key[0], key[1] or "-", p.get("batch", d.get("batch", "-")), fmt(flops and flops / 1e9, ".1f"),
            fmt(p_s and p_s * 1e3, ".1f"), fmt(d_s and d_s * 1e3, ".1f"), ratio(p_s, d_s),
            fmt(rate(p_s), ".1f"), fmt(rate(d_s), ".1f"),
            gib(p.get("peak_device_bytes")), gib(d.get("peak_device_bytes")),
            ratio(p.get("peak_device_bytes"), d.get("peak_device_bytes")), gib(d.get("max_allocated_bytes")),
        ))
    return "\n".join(lines)


def commit_line(override=None):
    if override:
        return override
    commit = sh(["git", "rev-parse", "HEAD"]) or "unknown (no git here)"
    if sh(["git", "status", "--porcelain", "--untracked-files=no"]):
        commit += " (with uncommitted changes)"
    return commit


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def show(cmd):
    """A command as the reader would type it: the Python interpreter as `python`."""
    shown = ["python" if i == 0 and os.path.basename(c).startswith("python") else c for i, c in enumerate(cmd)]
    return " ".join(shlex.quote(c) for c in shown)


# ---- BENCHMARKS.md: the CPU part on top, the GPU section (between markers) below ----

def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def write(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def split_gpu(text):
    """(the text before the GPU section, {run key: subsection text}) of a BENCHMARKS.md."""
    begin, end = text.find(GPU_BEGIN), text.find(GPU_END)
    if begin < 0 or end < begin:
        return text, {}
    block = text[begin:end]
    runs = {m.group(1): m.group(0).rstrip("\n") + "\n" for m in RUN_RE.finditer(block)}
    return text[:begin].rstrip("\n") + "\n", runs


def join_gpu(before, runs):
    if not runs:
        return before
    keys = sorted(runs, key=lambda k: (RUN_ORDER.index(k) if k in RUN_ORDER else len(RUN_ORDER), k))
    body = "\n".join(runs[k] for k in keys)
    return f"{before.rstrip()}\n\n{GPU_BEGIN}\n{GPU_HEADING}\n\n{body}{GPU_END}\n"


def merge_runs(path, runs):
    """Puts `runs` ({key: subsection}) into the GPU section of `path`, replacing those with the
    same key and keeping everything else."""
    before, old = split_gpu(read(path))
    if not before.strip():
        before = "# Benchmarks: Pigment vs diffusers on the same machine\n"
    write(path, join_gpu(before, {**old, **runs}))


def write_cpu(path, text):
    """Writes the CPU part, keeping the GPU section already in `path`."""
    _, runs = split_gpu(read(path))
    write(path, join_gpu(text, runs))


def gpu_section(args, key, pig, ref, pig_cmd, ref_cmd, failures, env_note):
    some = pig or ref or {}
    dtype = args.dtype
    tf32 = "on (--tf32)" if args.tf32 else "off (full f32 matmuls and convolutions on both)"
    versions = (ref or {}).get("versions", {})
    failed = "".join(f"\n- **{who} failed**: {why}" for who, why in failures)
    loads = []
    if pig:
        loads.append(f"Pigment {pig['load_s']:.2f} s ({gib(pig.get('loaded_device_bytes'))} GiB on the GPU after)")
    if ref:
        loads.append(f"diffusers {ref['load_s']:.2f} s ({gib(ref.get('loaded_device_bytes'))} GiB)")
    warm = some.get("warmup", "?")
    return f"""<!-- gpu-run {key} -->
### {dtype}{' with TF32' if args.tf32 else ''}: {(ref or {}).get('device_name') or 'GPU'}

- Date: {now()}
- Commit: {commit_line(args.commit)}
- Machine: {gpu_machine(ref)}
- Model: {args.arch}, random weights made in memory from the config (Pigment fills them on the CPU and uploads them, diffusers fills them on the GPU); Pigment {(pig or {}).get('dtype', dtype)}, diffusers {(ref or {}).get('dtype', dtype)}{'; TF32 ' + tf32 if dtype == 'f32' else ''}
- diffusers {versions.get('diffusers', '?')}, torch {versions.get('torch', '?')} (CUDA {versions.get('cuda', '?')}, cuDNN {versions.get('cudnn', '?')}); Pigment on candle's CUDA backend (cuBLAS; convolutions as im2col + GEMM, no cuDNN)
- Load / build: {', '.join(loads) or '-'}{failed}

Medians of {args.repeats} timed runs after {warm} untimed warm-up run(s) per component (the whole
generation: {args.full_repeats} run, not warmed up, after the components). Each timer starts and
stops after a device synchronize. Time ratio below 1: Pigment is faster. GFLOP: Pigment's count
of the actual config (crates/pigment/src/bench/flops.rs), the same for both engines. Peak GPU:
the device's total - free memory (CUDA context, weights and workspaces included) at its highest
while the component ran: sampled every millisecond by Pigment (its pool returns freed memory at
each synchronize), read after the timed runs for PyTorch (its caching allocator, emptied before
each component, keeps what it grew); diffusers max allocated: PyTorch's own tensor peak.{env_note}

{gpu_table(pig, ref)}

Commands (from the repo root):

```
{show(pig_cmd)}
{show(ref_cmd)}
```
<!-- /gpu-run {key} -->
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pigment", default=os.path.join("target", "release", "pigment"))
    p.add_argument("--python", default=sys.executable, help="the Python that runs diffusers_bench.py")
    p.add_argument("--arch", default="sd15")
    p.add_argument("--sizes", default="512,256")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--skip-full", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--full-repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--device", default="cpu", help="cpu, or cuda[:N] for the GPU section")
    p.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"], help="both engines' dtype")
    p.add_argument("--pigment-dtype", default=None, help="CPU: Pigment only in another dtype (f16)")
    p.add_argument("--tf32", action="store_true", help="GPU, f32: TF32 matmuls in both engines")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs per component (default 1)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds for both engines together; each gets its share and is killed past it")
    p.add_argument("--commit", default=None, help="the commit line, where the tree has no git")
    p.add_argument("--out", default="BENCHMARKS.md")
    p.add_argument("--section-out", default=None, help="GPU: also merge this run's subsection into FILE")
    p.add_argument("--memory", action="store_true",
                   help="CPU: also run Pigment's memory rows (low-memory 512 generations with f32 and f16 weights, a tiled 2048 decode)")
    p.add_argument("--kernels", action="store_true",
                   help="CPU: also the kernels section (every SD1.5 conv shape and the attention against PyTorch, the FMA peak; tools/bench/kernels.py)")
    p.add_argument("--examples", default=os.path.join("target", "release", "examples"),
                   help="where the release examples conv_bench, attention_bench and peak_flops are (--kernels)")
    p.add_argument("--kernel-rounds", type=int, default=3, help="--kernels: rounds of each engine, alternating")
    p.add_argument("--merge", default=None, metavar="FILE",
                   help="copy the GPU subsections of FILE into --out; runs nothing")
    args = p.parse_args()

    if args.merge:
        _, runs = split_gpu(read(args.merge))
        if not runs:
            sys.exit(f"{args.merge}: no GPU subsections (<!-- gpu-run KEY --> ... ) in it")
        merge_runs(args.out, runs)
        print(f"merged {', '.join(runs)} from {args.merge} into {args.out}", file=sys.stderr)
        return
    if not os.path.exists(args.pigment):
        sys.exit(f"{args.pigment} not found: build it with `cargo build --release -p pigment-cli` or pass --pigment PATH")
    gpu = args.device != "cpu"

    common = ["--arch", args.arch, "--sizes", args.sizes, "--steps", str(args.steps),
              "--repeats", str(args.repeats), "--full-repeats", str(args.full_repeats)]
    if args.skip_full:
        common.append("--skip-full")
    extra = []
    if gpu:
        extra += ["--device", args.device]
        if args.tf32:
            extra.append("--tf32")
        if args.warmup is not None:
            extra += ["--warmup", str(args.warmup)]
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    pig_dtype = args.pigment_dtype or args.dtype
    pig_cmd = [args.pigment, "bench", *common, *extra, "--dtype", pig_dtype, "--json"]
    ref_cmd = [args.python, os.path.join("tools", "bench", "diffusers_bench.py"), *common, *extra,
               "--threads", str(args.threads), "--json"]
    if gpu or args.dtype != "f32":
        ref_cmd[-1:-1] = ["--dtype", args.dtype]

    if not gpu:
        try:
            pig = run_json(pig_cmd, env)
            ref = run_json(ref_cmd, env)
            memory = memory_rows(args, env) if args.memory else []
        except EngineFailed as e:
            sys.exit(f"benchmark failed: {e}")
        kernels_md = ""
        if args.kernels:
            import kernels

            unet = next((r for r in pig["rows"] if r["component"] == "unet" and r["size"] == 512), None)
            result = kernels.measure(args.examples, args.python, args.threads, args.kernel_rounds, 5, env)
            kernels_md = "\n" + kernels.markdown(result, args.threads, args.kernel_rounds, show,
                                                  unet and unet["gflops_per_s"])
        write_cpu(args.out, cpu_markdown(args, pig, ref, pig_cmd, ref_cmd) + memory_markdown(memory, ref, pig)
                  + kernels_md)
        print(f"wrote {args.out}", file=sys.stderr)
        return

    # GPU: either engine may fail or run out of time; the subsection is written with what came.
    deadline = time.monotonic() + args.timeout if args.timeout else None
    results, failures = {}, []
    for i, (who, cmd) in enumerate((("Pigment", pig_cmd), ("diffusers", ref_cmd))):
        limit = None
        if deadline:
            limit = max(10.0, (deadline - time.monotonic()) / (2 - i))
        try:
            results[who] = run_json(cmd, env, timeout=limit)
        except EngineFailed as e:
            print(f"{who} failed: {e}", file=sys.stderr, flush=True)
            failures.append((who, str(e).replace("\n", " ")[:600]))
    pig, ref = results.get("Pigment"), results.get("diffusers")
    if pig and ref and pig.get("threads") != ref.get("threads"):
        print(f"warning: Pigment ran {pig.get('threads')} threads, diffusers {ref.get('threads')}", file=sys.stderr)
    key = args.dtype + ("-tf32" if args.tf32 and args.dtype == "f32" else "")
    env_note = f"\nCPU threads: Pigment {(pig or {}).get('threads', '?')}, PyTorch {(ref or {}).get('threads', '?')}."
    section = gpu_section(args, key, pig, ref, pig_cmd, ref_cmd, failures, env_note)
    for path in filter(None, (args.out, args.section_out)):
        merge_runs(path, {key: section})
        print(f"wrote the {key} GPU subsection into {path}", file=sys.stderr)
    print(section)
    if failures:
        sys.exit(1)


def memory_commands(args):
    """Pigment's memory rows: (what, target, command). A target is ("GiB", limit) or
    ("of diffusers", fraction of diffusers' whole f32 generation peak in the same run)."""
    base = [args.pigment, "bench", "--arch", args.arch, "--repeats", "1", "--json"]
    f16 = base + ["--weights", "f16", "--vae-tiling", "on"]
    generation = ["--sizes", "512", "--steps", str(args.steps), "--components", "text_encoder", "--low-memory"]
    return [
        (f"whole {args.steps}-step 512x512 generation, f32 weights, --low-memory", ("of diffusers", 0.6),
         base + ["--vae-tiling", "off"] + generation),
        (f"whole {args.steps}-step 512x512 generation, f16 weights, --low-memory", ("GiB", 3e9 / 2**30),
         f16 + generation),
        ("2048x2048 VAE decode, tiled (UNet and text encoder held in f16 beside it)", ("GiB", 4e9 / 2**30),
         f16 + ["--sizes", "2048", "--components", "vae_decode", "--skip-full", "--warmup", "0"]),
    ]


def memory_rows(args, env):
    rows = []
    for what, target, cmd in memory_commands(args):
        report = run_json(cmd, env)
        row = report["rows"][-1]
        rows.append((what, target, report, row, cmd))
    return rows


def memory_markdown(rows, ref, pig):
    if not rows:
        return ""
    ref_peak = next((r.get("peak_rss_bytes") for r in ref["rows"] if r["component"] == "generation"), None)
    lines = ["| run | seconds | RSS after build GiB | peak RSS GiB | target GiB |", "| --- | ---: | ---: | ---: | ---: |"]
    for what, (kind, value), report, row, _ in rows:
        if kind == "GiB":
            target = f"< {value:.2f}"
        elif ref_peak:
            target = f"< {gib(value * ref_peak)} ({value:.0%} of diffusers' {gib(ref_peak)})"
        else:
            target = f"{value:.0%} of diffusers' f32 generation (not measured in this run)"
        lines.append(f"| {what} | {row['median_s']:.1f} | {gib(report['loaded_rss_bytes'])} | "
                     f"{gib(row['peak_rss_bytes'])} | {target} |")
    cmds = "\n".join(show(cmd) for *_, cmd in rows)
    return f"""
## Memory (Pigment's low-memory modes)

Peak RSS (VmHWM, weights included) of the memory-saving modes. `--low-memory` loads (here:
builds) the text encoder, the UNet and the VAE only when the run reaches each and frees each
after, so one component is held at a time; `--weights f16` holds the UNet's and text encoder's
weights in f16 (widened per layer in each forward); `--vae-tiling on` decodes in tiles.
Targets: issue 6 (f32: at most 60% of diffusers' whole f32 generation above; f16: 3 GB; tiled
2048 decode: 4 GB), in GiB. For scale: Pigment's RSS with the whole f32 model built is
{gib(pig['loaded_rss_bytes'])} GiB.

{chr(10).join(lines)}

```
{cmds}
```
"""


def cpu_markdown(args, pig, ref, pig_cmd, ref_cmd):
    if pig["threads"] != ref["threads"]:
        print(f"warning: Pigment ran {pig['threads']} threads, diffusers {ref['threads']}", file=sys.stderr)
    versions = ref.get("versions", {})
    return f"""# Benchmarks: Pigment vs diffusers on the same machine

Written by `tools/bench/side_by_side.py`; both engines ran one after the other in this run.

- Date: {now()}
- Commit: {commit_line(args.commit)}
- Machine: {cpu_machine()}
- Threads: Pigment {pig['threads']}, PyTorch {ref['threads']}
- Model: {args.arch}, random weights made in memory from the config; Pigment {pig['dtype']}, diffusers {ref['dtype']}
- diffusers {versions.get('diffusers', '?')}, torch {versions.get('torch', '?')}
- Load / build: Pigment {pig['load_s']:.2f} s ({gib(pig['loaded_rss_bytes'])} GiB RSS after), diffusers {ref['load_s']:.2f} s ({gib(ref['loaded_rss_bytes'])} GiB)

Medians of {pig['repeats']} timed runs after {pig.get('warmup', '?')} untimed warm-up run(s) per component ({args.full_repeats} run for the whole generation, not warmed up). Time ratio below 1:
Pigment is faster. GFLOP: convolutions, matmuls and attention products of the actual config,
counted by crates/pigment/src/bench/flops.rs (the same count for both engines). Peak RSS: the
process's VmHWM while the component ran, weights included, reset before each component. The
UNet runs at batch 2 (classifier-free guidance); the whole generation is {args.steps} Euler steps
at guidance 7.5 and the first size, text encoding and VAE decode included.

{cpu_table(pig, ref)}

Commands (from the repo root, environment RAYON_NUM_THREADS={args.threads} OMP_NUM_THREADS={args.threads}):

```
{show(pig_cmd)}
{show(ref_cmd)}
```
"""


if __name__ == "__main__":
    main()
