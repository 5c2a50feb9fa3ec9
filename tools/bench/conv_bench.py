"""Time torch's CPU f32 conv2d on Stable Diffusion 1.5's conv shapes, with 2 threads, to compare
with `cargo run -p pigment --example conv_bench` (same shapes, same GFLOP/s formula).

Run from the repo root: python tools/bench/conv_bench.py [--reps N] [--only LABEL-PART] [--json]
(--json: one JSON object per shape, {"label", "gflop", "ms"}, for kernels_side_by_side.py).
"""

import json

import sys
import time

import torch
import torch.nn.functional as F

# (label, batch, in channels, out channels, height, width, kernel, stride, padding):
# the UNet at batch 2 (64x64 latents) and the VAE decoder at batch 1 (512x512 image).
SHAPES = [
    ("unet 320@64 3x3", 2, 320, 320, 64, 64, 3, 1, 1),
    ("unet 640@32 3x3", 2, 640, 640, 32, 32, 3, 1, 1),
    ("unet 1280@16 3x3", 2, 1280, 1280, 16, 16, 3, 1, 1),
    ("unet 1280@8 3x3", 2, 1280, 1280, 8, 8, 3, 1, 1),
    ("unet 320@64 down s2", 2, 320, 320, 64, 64, 3, 2, 1),
    ("unet 640@32 down s2", 2, 640, 640, 32, 32, 3, 2, 1),
    ("unet 1280@16 down s2", 2, 1280, 1280, 16, 16, 3, 2, 1),
    ("unet 640->320@64 1x1", 2, 640, 320, 64, 64, 1, 1, 0),
    ("vae 512@64 3x3", 1, 512, 512, 64, 64, 3, 1, 1),
    ("vae 512@128 3x3", 1, 512, 512, 128, 128, 3, 1, 1),
    ("vae 256@256 3x3", 1, 256, 256, 256, 256, 3, 1, 1),
    ("vae 128@512 3x3", 1, 128, 128, 512, 512, 3, 1, 1),
    # The VAE encoder's Downsample2D: F.pad(x, (0, 1, 0, 1)) then a conv with padding 0; the
    # height/width are the padded input's, as the conv sees it (the timing includes the pad, as
    # in diffusers, while pigment's example times the conv on a padded input).
    ("vae enc 128@512 down s2", 1, 128, 128, 513, 513, 3, 2, 0),
    ("vae enc 256@256 down s2", 1, 256, 256, 257, 257, 3, 2, 0),
    ("vae enc 512@128 down s2", 1, 512, 512, 129, 129, 3, 2, 0),
]


# GroupNorm(32) + SiLU shapes: (label, batch, channels, height, width)
NORM_SHAPES = [
    ("unet gn+silu 320@64", 2, 320, 64, 64),
    ("vae gn+silu 128@512", 1, 128, 512, 512),
]


def gflop(b, cin, cout, h, w, k, s, p):
    ho = (h + 2 * p - k) // s + 1
    wo = (w + 2 * p - k) // s + 1
    return 2.0 * b * cout * ho * wo * cin * k * k / 1e9


def arg(name, default):
    """The value after `name` on the command line, or `default`."""
    if name in sys.argv[:-1]:
        return sys.argv[sys.argv.index(name) + 1]
    return default


def main():
    reps = int(arg("--reps", "3"))
    as_json = "--json" in sys.argv
    only = arg("--only", "")
    torch.set_num_threads(2)
    torch.manual_seed(0)
    if not as_json:
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    with torch.no_grad():
        for label, b, cin, cout, h, w, k, s, p in SHAPES:
            if only not in label:
                continue
            conv = torch.nn.Conv2d(cin, cout, k, stride=s, padding=p)
            if "enc" in label:
                # diffusers' Downsample2D(padding=0): pad right and bottom by one, then conv.
                x = torch.randn(b, cin, h - 1, w - 1)

                def run():
                    return conv(F.pad(x, (0, 1, 0, 1)))

            else:
                x = torch.randn(b, cin, h, w)

                def run():
                    return conv(x)

            run()  # warm-up
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                run()
                times.append(time.perf_counter() - t)
            best = min(times)
            g = gflop(b, cin, cout, h, w, k, s, p)
            if as_json:
                print(json.dumps({"label": label, "gflop": g, "ms": best * 1e3}), flush=True)
                continue
            print(f"{label:24s} {best * 1e3:9.1f} ms {g / best:7.1f} GFLOP/s")
        for label, b, c, h, w in NORM_SHAPES:
            if only not in label or as_json:
                continue
            x = torch.randn(b, c, h, w)
            norm = torch.nn.GroupNorm(32, c, eps=1e-6)
            act = torch.nn.SiLU()
            act(norm(x))
            times = []
            for _ in range(3):
                t = time.perf_counter()
                act(norm(x))
                times.append(time.perf_counter() - t)
            print(f"{label:24s} {min(times) * 1e3:9.1f} ms")


if __name__ == "__main__":
    main()
