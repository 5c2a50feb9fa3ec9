"""The reference side of `pigment bench`: the same measurements with diffusers on PyTorch.

Same architectures (configs written out from the published diffusers config.json files, as in
crates/pigment/src/bench/arch.rs), random weights made in memory (no download; the same
uniform +-1/sqrt(fan_in) range, norm weights 1, biases 0), the same shapes, the same
thread count (torch.set_num_threads), the median of --repeats runs, and the peak RSS of each
component (VmHWM, reset through /proc/self/clear_refs before each). Prints the JSON report with
the field names of `pigment bench --json` (tools/bench/side_by_side.py reads both); FLOPs are
left to Pigment's count (null here), since both run the same shapes.

On a GPU (`--device cuda`, `--dtype f32|f16|bf16`): the weights are filled on the GPU, each timer
starts and stops after torch.cuda.synchronize(), each component runs --warmup times untimed
first (default 1: the first call loads kernels and grows the caching allocator), and f32 runs
without TF32 in matmuls and convolutions unless --tf32 (PyTorch's matmul default is off, its
cuDNN convolution default on: both are set explicitly so the run says what it measured). GPU
memory per component: the caching allocator is emptied and its peak reset before each; then
`max_memory_allocated` (PyTorch's tensors) and the device's total - free after the timed runs
(the allocator keeps what it grew, so that is the peak; CUDA context and cuBLAS workspaces
included) as peak_device_bytes, the figure `pigment bench` samples on its side.

Run from the repo root (the CLIP tokenizer is read from tests/fixtures/models/tiny-sd1):
    python tools/bench/diffusers_bench.py --arch sd15 --sizes 512,256 --threads 2 --json
    python tools/bench/diffusers_bench.py --arch sd15 --device cuda --dtype f16 --json
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch

from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from proc_memory import reset_peak_rss, status_bytes

PROMPT = "a photograph of an astronaut riding a horse"

SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    steps_offset=1,
    timestep_spacing="leading",
)


def sd_vae(sample_size):
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[128, 256, 512, 512],
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=sample_size,
    )


SD_BLOCKS = dict(
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    block_out_channels=[320, 640, 1280, 1280],
    layers_per_block=2,
)

ARCHS = {
    # runwayml/stable-diffusion-v1-5
    "sd15": dict(
        text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  hidden_act="quick_gelu", projection_dim=768),
        unet=dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8, **SD_BLOCKS),
        vae=sd_vae(512),
        prediction_type="epsilon",
    ),
    # stabilityai/stable-diffusion-2-1
    "sd21": dict(
        text=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                  hidden_act="gelu", projection_dim=512),
        unet=dict(sample_size=96, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20],
                  use_linear_projection=True, **SD_BLOCKS),
        vae=sd_vae(768),
        prediction_type="v_prediction",
    ),
    # the shape of tests/fixtures/models/tiny-sd1 (tests of the scripts, not timings)
    "tiny": dict(
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                  hidden_act="quick_gelu", projection_dim=32),
        unet=dict(sample_size=8, cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
                  block_out_channels=[16, 32, 32], layers_per_block=2,
                  down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                  up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]),
        vae=dict(sd_vae(64), block_out_channels=[16, 32, 32, 32], layers_per_block=1, norm_num_groups=8),
        prediction_type="epsilon",
    ),
}


@torch.no_grad()
def fill_random(model, gen):
    """Pigment's rule: rank-1 `*.weight` = 1 (norms), `*.bias` = 0, the rest uniform in
    +-1/sqrt(fan_in). Applied after `to_empty` on a model built on the meta device, so that no
    default initialisation runs (it costs more than the benchmark's setup should). `gen` is a
    seeded torch.Generator on the model's device."""
    for name, p in model.named_parameters():
        if p.dim() == 1 and name.endswith("bias"):
            p.zero_()
        elif p.dim() == 1 and name.endswith("weight"):
            p.fill_(1.0)
        else:
            fan_in = max(1, math.prod(p.shape[1:]))
            a = 1.0 / math.sqrt(fan_in)
            p.uniform_(-a, a, generator=gen)
    return model


def build_empty(cls, *args, device="cpu", **kwargs):
    with torch.device("meta"):
        model = cls(*args, **kwargs)
    return model.to_empty(device=device)


def build(arch, seed, device="cpu", dtype=torch.float32):
    """The three models with random weights, filled in f32 on `device` (a CPU generator on the
    CPU, as before; a generator on the GPU there, which is much faster for 1 G parameters),
    then cast to `dtype`."""
    a = ARCHS[arch]
    gen = lambda s: torch.Generator(device=device).manual_seed(s)
    text_config = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **a["text"])
    text_encoder = fill_random(build_empty(CLIPTextModel, text_config, device=device), gen(seed + 1))
    # Non-parameter buffers left uninitialised by to_empty.
    for name, buf in text_encoder.named_buffers():
        if name.endswith("position_ids"):
            buf.copy_(torch.arange(buf.shape[-1], device=buf.device).expand_as(buf))
    unet = fill_random(build_empty(UNet2DConditionModel, device=device, **a["unet"]), gen(seed + 2))
    vae = fill_random(build_empty(AutoencoderKL, device=device, **a["vae"]), gen(seed + 3))
    # (.to() of a diffusers model warns about keep-in-f32 modules even when there are none.)
    models = [(m if dtype == torch.float32 else m.to(dtype)).eval() for m in (text_encoder, unet, vae)]
    return (*models, a)


DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def set_tf32(enabled):
    """TF32 for f32 matmuls and cuDNN convolutions, on or off. PyTorch 2.9+ has the
    fp32_precision switches and refuses a mix of them with the older allow_tf32 flags, so only
    one of the two is used."""
    matmul = torch.backends.cuda.matmul
    conv = getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and conv is not None and hasattr(conv, "fp32_precision"):
        mode = "tf32" if enabled else "ieee"
        matmul.fp32_precision = mode
        conv.fp32_precision = mode
    else:
        matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


class Gpu:
    """The GPU side of the measurements; every method does nothing on the CPU."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def used_bytes(self):
        if not self.cuda:
            return None
        free, total = torch.cuda.mem_get_info(self.device)
        return total - free

    def total_bytes(self):
        return torch.cuda.mem_get_info(self.device)[1] if self.cuda else None

    def reset(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def max_allocated(self):
        return torch.cuda.max_memory_allocated(self.device) if self.cuda else None


def timed(repeats, work, gpu=None, warmup=0):
    """`warmup` untimed runs, then `repeats` timed ones; on a GPU each timer starts and stops
    after a synchronize. Returns (seconds of each run, peak RSS, GPU readings)."""
    gpu = gpu or Gpu("cpu")
    gpu.reset()
    for _ in range(warmup):
        out = work()
        del out
    gpu.sync()
    reset = reset_peak_rss()
    runs = []
    peak_device = None
    for _ in range(max(1, repeats)):
        gpu.sync()
        start = time.perf_counter()
        out = work()
        gpu.sync()
        runs.append(time.perf_counter() - start)
        used = gpu.used_bytes()
        if used is not None:
            peak_device = max(peak_device or 0, used)
        del out
    mem = dict(peak_device_bytes=peak_device, max_allocated_bytes=gpu.max_allocated()) if gpu.cuda else {}
    return runs, (status_bytes("VmHWM:") if reset else None), mem


def row(component, size, batch, runs, peak, mem=None):
    return dict(component=component, size=size, batch=batch, runs_s=runs,
                median_s=statistics.median(runs), flops=None, gflops_per_s=None, peak_rss_bytes=peak,
                **(mem or {}))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="sd15", choices=sorted(ARCHS))
    p.add_argument("--sizes", default="512,256")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--skip-full", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--full-repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", default=os.path.join("tests", "fixtures", "models", "tiny-sd1", "tokenizer"))
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--dtype", default="f32", choices=sorted(DTYPES), help="f16 and bf16 on a GPU only")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed runs of each component first (default 1: on the CPU too, oneDNN builds its kernels and the allocator grows on the first call)")
    p.add_argument("--tf32", action="store_true", help="GPU, f32: allow TF32 in matmuls and convolutions")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    torch.set_num_threads(args.threads)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    device = torch.device(args.device)
    if device.type == "cpu" and args.dtype != "f32":
        sys.exit(f"--dtype {args.dtype}: on the CPU this script measures f32 only; use --device cuda")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit(f"--device {args.device}: this torch ({torch.__version__}) sees no CUDA GPU")
        if device.index is None:  # torch.cuda.set_device and friends want an index
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        set_tf32(args.tf32)
    elif args.tf32:
        sys.exit("--tf32 applies to CUDA devices only")
    gpu = Gpu(device)
    dtype = DTYPES[args.dtype]
    warmup = args.warmup if args.warmup is not None else 1

    start = time.perf_counter()
    log(f"building {args.arch} with random weights ({args.dtype}) on {device}")
    text_encoder, unet, vae, a = build(args.arch, args.seed, device=device, dtype=dtype)
    tokenizer = CLIPTokenizer.from_pretrained(args.tokenizer, model_max_length=77)
    gpu.sync()
    load_s = time.perf_counter() - start
    loaded_rss = status_bytes("VmRSS:")
    loaded_device = gpu.used_bytes()
    rows = []
    gen = torch.Generator().manual_seed(0)
    # Inputs drawn on the CPU (the same values as before on the CPU), then moved.
    on_device = lambda t: t.to(device=device, dtype=dtype)
    with torch.inference_mode():
        log("measuring text encoder")
        ids = tokenizer(PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        ids = ids.to(device)
        runs, peak, mem = timed(args.repeats, lambda: text_encoder(ids)[0], gpu, warmup)
        rows.append(row("text_encoder", 0, 1, runs, peak, mem))
        hidden = a["text"]["hidden_size"]
        context = on_device(torch.randn(2, 77, hidden, generator=gen))
        for size in sizes:
            side = size // 8
            log(f"measuring UNet at {size}x{size}, batch 2")
            sample = on_device(torch.randn(2, 4, side, side, generator=gen))
            runs, peak, mem = timed(args.repeats, lambda: unet(sample, 500, encoder_hidden_states=context).sample,
                                    gpu, warmup)
            rows.append(row("unet", size, 2, runs, peak, mem))
            log(f"measuring VAE decode at {size}x{size}")
            latents = on_device(torch.randn(1, 4, side, side, generator=gen))
            runs, peak, mem = timed(args.repeats, lambda: vae.decode(latents).sample, gpu, warmup)
            rows.append(row("vae_decode", size, 1, runs, peak, mem))
        if not args.skip_full and args.steps > 0:
            size = sizes[0]
            log(f"measuring whole generation at {size}x{size}, {args.steps} steps")
            pipe = StableDiffusionPipeline(
                vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                scheduler=EulerDiscreteScheduler(prediction_type=a["prediction_type"], **SCHEDULER),
                safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            )
            pipe.set_progress_bar_config(disable=True)
            # Not warmed up as a whole (as `pigment bench`): its kernels ran in the rows above.
            runs, peak, mem = timed(args.full_repeats, lambda: pipe(
                PROMPT, num_inference_steps=args.steps, guidance_scale=7.5, height=size, width=size,
                output_type="np", generator=torch.Generator().manual_seed(0)).images, gpu, 0)
            rows.append(row("generation", size, 1, runs, peak, mem))

    import diffusers
    report = dict(engine="diffusers", model=f"{args.arch} (random weights)", dtype=args.dtype,
                  device=str(device), threads=torch.get_num_threads(), repeats=max(1, args.repeats),
                  load_s=load_s, loaded_rss_bytes=loaded_rss, rows=rows,
                  versions=dict(torch=torch.__version__, diffusers=diffusers.__version__))
    if gpu.cuda:
        report.update(warmup=warmup, loaded_device_bytes=loaded_device, device_total_bytes=gpu.total_bytes(),
                      tf32=bool(args.tf32) if dtype == torch.float32 else None,
                      device_name=torch.cuda.get_device_name(device),
                      versions=dict(report["versions"], cuda=torch.version.cuda,
                                    cudnn=torch.backends.cudnn.version()))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"diffusers bench · {report['model']} · {args.dtype} · {device} · {report['threads']} threads · "
              f"load {load_s:.2f} s")
        for r in rows:
            peak = "-" if r["peak_rss_bytes"] is None else f"{r['peak_rss_bytes'] / 2**30:.2f}"
            gpu_peak = r.get("peak_device_bytes")
            gpu_col = "" if gpu_peak is None else f" {gpu_peak / 2**30:>13.2f}"
            print(f"{r['component']:<14} {r['size'] or '-':>6} {r['batch']:>5} {r['median_s']:>10.3f} {peak:>13}{gpu_col}")


if __name__ == "__main__":
    main()
