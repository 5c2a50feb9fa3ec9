"""Times torch's fused CPU attention (scaled_dot_product_attention, f32) on SD1.5's 64x64-latent
self-attention, the shape `cargo run -p pigment --example attention_bench` times: batch 2,
4096 tokens, 8 heads of 40; GFLOP/s = 4 B H L^2 D / median of 3 runs after a warm-up. Also its
memory beyond inputs and output, as the Pigment example measures it (VmHWM during one call,
reset first, minus the RSS before and the output's bytes).

python tools/bench/attention_bench.py [tokens heads head_dim batch] [--threads N] [--json]
"""

import json
import sys
import time

import torch

from proc_memory import reset_peak_rss, status_bytes


def main():
    argv = sys.argv[1:]
    threads, numbers = 2, []
    args = iter(argv)
    for a in args:
        if a == "--threads":
            threads = int(next(args))
        elif a.isdigit():
            numbers.append(int(a))
    tokens, heads, head_dim, batch = (numbers + [4096, 8, 40, 2][len(numbers):])[:4]
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    shape = (batch, heads, tokens, head_dim)
    q, k, v = torch.randn(shape), torch.randn(shape), torch.randn(shape)
    flops = 4.0 * batch * heads * tokens * tokens * head_dim
    sdpa = torch.nn.functional.scaled_dot_product_attention
    with torch.no_grad():
        # Memory first, before the timed runs leave freed buffers for it to reuse.
        extra = None
        before = status_bytes("VmRSS:")
        if reset_peak_rss() and before is not None:
            out = sdpa(q, k, v)
            peak = status_bytes("VmHWM:")
            if peak is not None:
                extra = max(0.0, peak - before - out.numel() * 4)
            del out
        sdpa(q, k, v)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            sdpa(q, k, v)
            times.append(time.perf_counter() - t)
        median = sorted(times)[1]
    report = {
        "tokens": tokens, "heads": heads, "head_dim": head_dim, "batch": batch,
        "threads": torch.get_num_threads(), "gflop": flops / 1e9,
        "fused": {"seconds": median, "gflops": flops / median / 1e9},
        "extra_bytes": extra, "torch": torch.__version__,
    }
    if "--json" in argv:
        print(json.dumps(report))
    else:
        print(f"sdpa: {median:.3f} s, {flops / median / 1e9:.1f} GFLOP/s"
              + ("" if extra is None else f"; {extra / 1e6:.2f} MB beyond inputs and output"))


if __name__ == "__main__":
    main()
