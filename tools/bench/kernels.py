"""The kernels section of BENCHMARKS.md (`side_by_side.py --kernels`): every SD1.5 convolution
shape and the 4096-token attention, Pigment against PyTorch on the same machine, and the
cores' FMA peak the share-of-peak figures divide by.

Pigment: the release examples `conv_bench`, `attention_bench` and `peak_flops` (build them with
`cargo build --release -p pigment --examples`). PyTorch: tools/bench/conv_bench.py and
tools/bench/attention_bench.py. The two engines alternate for `rounds` rounds, and each shape's
figure is the engine's best over the rounds (each round is itself a best of `reps`): on a shared
machine a neighbour's load only ever slows a run down, so the best run is the least disturbed.
"""

import json
import os
import subprocess
import sys


def json_lines(cmd, env):
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def example(examples_dir, name):
    path = os.path.join(examples_dir, name)
    if not os.path.exists(path):
        sys.exit(f"{path} not found: build it with `cargo build --release -p pigment --examples`")
    return path


def measure(examples_dir, python, threads, rounds, reps, env):
    """{'peak': {...}, 'conv': {label: {...}}, 'attention': {'pigment': .., 'torch': ..}, 'commands': [...]}"""
    peak_cmd = [example(examples_dir, "peak_flops"), str(threads), "--json"]
    pig_conv = [example(examples_dir, "conv_bench"), "--json", "--reps", str(reps)]
    ref_conv = [python, os.path.join("tools", "bench", "conv_bench.py"), "--json", "--reps", str(reps)]
    pig_attn = [example(examples_dir, "attention_bench"), "--fused-only", "--json"]
    ref_attn = [python, os.path.join("tools", "bench", "attention_bench.py"), "--threads", str(threads), "--json"]
    peak = json_lines(peak_cmd, env)[0]
    conv, attention = {}, {"pigment": None, "torch": None}
    for _ in range(rounds):
        for row in json_lines(pig_conv, env):
            c = conv.setdefault(row["label"], {"gflop": row["gflop"]})
            c["pigment_ms"] = min(c.get("pigment_ms", float("inf")), row["pigment_ms"])
        for row in json_lines(ref_conv, env):
            c = conv.setdefault(row["label"], {"gflop": row["gflop"]})
            c["torch_ms"] = min(c.get("torch_ms", float("inf")), row["ms"])
        for who, cmd in (("pigment", pig_attn), ("torch", ref_attn)):
            row = json_lines(cmd, env)[0]
            best = attention[who]
            if best is None or row["fused"]["seconds"] < best["fused"]["seconds"]:
                # Memory: the largest seen over the rounds (the conservative figure).
                if best is not None and best.get("extra_bytes") is not None:
                    row["extra_bytes"] = max(row.get("extra_bytes") or 0, best["extra_bytes"])
                attention[who] = row
            elif row.get("extra_bytes") is not None:
                best["extra_bytes"] = max(best.get("extra_bytes") or 0, row["extra_bytes"])
    return {"peak": peak, "conv": conv, "attention": attention,
            "commands": [peak_cmd, pig_conv, ref_conv, pig_attn, ref_attn]}


def markdown(result, threads, rounds, show, unet_gflops=None):
    peak = result["peak"]["peak_gflops"]
    lines = [
        "## Kernels: convolutions and attention",
        "",
        f"Written by `tools/bench/side_by_side.py --kernels` in the same run as the table above "
        f"({threads} threads). The engines alternated for {rounds} rounds; each figure is the "
        "engine's best round (each round a best of several runs), the least disturbed by other load "
        "on a shared machine.",
        "",
        f"**FMA peak of these cores: {peak:.1f} GFLOP/s** ({threads} threads; `examples/peak_flops`: "
        "12 independent FMA chains per thread, "
        + ", ".join(f"{k} {v:.1f}" for k, v in result["peak"].items() if k not in ("threads", "peak_gflops"))
        + ").",
    ]
    if unet_gflops:
        lines.append(
            f"The SD1.5 UNet forward at 512x512 above runs at {unet_gflops:.1f} GFLOP/s on the direct "
            f"convolution's FLOP count: {100 * unet_gflops / peak:.0f}% of this peak (Winograd does "
            "fewer multiplies than it is credited with, so this is the speed a direct-convolution "
            "engine would need to match it)."
        )
    lines += [
        "",
        "Convolutions (f32, SD1.5's shapes: the UNet at batch 2 on 64x64 latents, the VAE at batch 1 "
        "on 512x512 images). GFLOP/s on the direct convolution's count for both engines, so Winograd "
        "(3x3 stride 1, and Pigment's stride-2 split) can pass 100% of the peak. Time ratio below 1: "
        "Pigment is faster.",
        "",
        "| shape | GFLOP | Pigment ms | PyTorch ms | time ratio (P/T) | Pigment GFLOP/s | PyTorch GFLOP/s | Pigment GFLOP/s as % of peak |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, c in result["conv"].items():
        p, t, g = c.get("pigment_ms"), c.get("torch_ms"), c["gflop"]
        lines.append(
            f"| {label} | {g:.2f} | {'-' if p is None else f'{p:.1f}'} | {'-' if t is None else f'{t:.1f}'} | "
            f"{'-' if not (p and t) else f'{p / t:.2f}'} | {'-' if not p else f'{g / p * 1e3:.1f}'} | "
            f"{'-' if not t else f'{g / t * 1e3:.1f}'} | {'-' if not p else f'{100 * g / p * 1e3 / peak:.0f}'} |"
        )
    a_p, a_t = result["attention"]["pigment"], result["attention"]["torch"]

    def mb(row):
        b = (row or {}).get("extra_bytes")
        return "-" if b is None else f"{b / 1e6:.2f} ({b / 1e6 / threads:.2f} per thread)"

    lines += [
        "",
        f"Attention (f32, batch {a_p['batch']}, {a_p['tokens']} tokens, {a_p['heads']} heads of "
        f"{a_p['head_dim']}: SD1.5's 64x64 self-attention; GFLOP = 4 B H L^2 D). Memory: peak RSS "
        "during one call beyond its inputs and output.",
        "",
        "| engine | GFLOP | ms | GFLOP/s | % of peak | memory beyond inputs and output, MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in (("Pigment fused attention", a_p), (f"PyTorch scaled_dot_product_attention ({a_t.get('torch', '')})", a_t)):
        s = row["fused"]["seconds"]
        lines.append(
            f"| {name} | {row['gflop']:.1f} | {s * 1e3:.1f} | {row['fused']['gflops']:.1f} | "
            f"{100 * row['fused']['gflops'] / peak:.0f} | {mb(row)} |"
        )
    lines += ["", "Commands (from the repo root, environment RAYON_NUM_THREADS="
              f"{threads} OMP_NUM_THREADS={threads}):", "", "```"]
    lines += [show(c) for c in result["commands"]]
    lines += ["```", ""]
    return "\n".join(lines)
