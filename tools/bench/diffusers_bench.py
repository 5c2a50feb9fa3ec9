"""The reference side of `pigment bench`: the same measurements with diffusers on PyTorch.

Same architectures (configs written out from the published diffusers config.json files, as in
crates/pigment/src/bench/arch.rs), random weights made in memory (no download; the same
uniform +-1/sqrt(fan_in) range, norm weights 1, biases 0), f32, the same shapes, the same
thread count (torch.set_num_threads), the median of --repeats runs, and the peak RSS of each
component (VmHWM, reset through /proc/self/clear_refs before each). Prints the JSON report with
the field names of `pigment bench --json` (tools/bench/side_by_side.py reads both); FLOPs are
left to Pigment's count (null here), since both run the same shapes.

Run from the repo root (the CLIP tokenizer is read from tests/fixtures/models/tiny-sd1):
    python tools/bench/diffusers_bench.py --arch sd15 --sizes 512,256 --threads 2 --json
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


def status_bytes(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@torch.no_grad()
def fill_random(model, seed):
    """Pigment's rule: rank-1 `*.weight` = 1 (norms), `*.bias` = 0, the rest uniform in
    +-1/sqrt(fan_in). Applied after `to_empty` on a model built on the meta device, so that no
    default initialisation runs (it costs more than the benchmark's setup should)."""
    gen = torch.Generator().manual_seed(seed)
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


def build_empty(cls, *args, **kwargs):
    with torch.device("meta"):
        model = cls(*args, **kwargs)
    return model.to_empty(device="cpu")


def build(arch, seed):
    a = ARCHS[arch]
    text_config = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **a["text"])
    text_encoder = fill_random(build_empty(CLIPTextModel, text_config), seed + 1)
    # Non-parameter buffers left uninitialised by to_empty.
    for name, buf in text_encoder.named_buffers():
        if name.endswith("position_ids"):
            buf.copy_(torch.arange(buf.shape[-1]).expand_as(buf))
    unet = fill_random(build_empty(UNet2DConditionModel, **a["unet"]), seed + 2)
    vae = fill_random(build_empty(AutoencoderKL, **a["vae"]), seed + 3)
    return text_encoder.eval(), unet.eval(), vae.eval(), a


def timed(repeats, work):
    reset = reset_peak_rss()
    runs = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        out = work()
        runs.append(time.perf_counter() - start)
        del out
    return runs, (status_bytes("VmHWM:") if reset else None)


def row(component, size, batch, runs, peak):
    return dict(component=component, size=size, batch=batch, runs_s=runs,
                median_s=statistics.median(runs), flops=None, gflops_per_s=None, peak_rss_bytes=peak)


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
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    torch.set_num_threads(args.threads)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)

    start = time.perf_counter()
    log(f"building {args.arch} with random weights (f32)")
    text_encoder, unet, vae, a = build(args.arch, args.seed)
    tokenizer = CLIPTokenizer.from_pretrained(args.tokenizer, model_max_length=77)
    load_s = time.perf_counter() - start
    loaded_rss = status_bytes("VmRSS:")
    rows = []
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        log("measuring text encoder")
        ids = tokenizer(PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        runs, peak = timed(args.repeats, lambda: text_encoder(ids)[0])
        rows.append(row("text_encoder", 0, 1, runs, peak))
        hidden = a["text"]["hidden_size"]
        context = torch.randn(2, 77, hidden, generator=gen)
        for size in sizes:
            side = size // 8
            log(f"measuring UNet at {size}x{size}, batch 2")
            sample = torch.randn(2, 4, side, side, generator=gen)
            runs, peak = timed(args.repeats, lambda: unet(sample, 500, encoder_hidden_states=context).sample)
            rows.append(row("unet", size, 2, runs, peak))
            log(f"measuring VAE decode at {size}x{size}")
            latents = torch.randn(1, 4, side, side, generator=gen)
            runs, peak = timed(args.repeats, lambda: vae.decode(latents).sample)
            rows.append(row("vae_decode", size, 1, runs, peak))
        if not args.skip_full and args.steps > 0:
            size = sizes[0]
            log(f"measuring whole generation at {size}x{size}, {args.steps} steps")
            pipe = StableDiffusionPipeline(
                vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                scheduler=EulerDiscreteScheduler(prediction_type=a["prediction_type"], **SCHEDULER),
                safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            )
            pipe.set_progress_bar_config(disable=True)
            runs, peak = timed(args.full_repeats, lambda: pipe(
                PROMPT, num_inference_steps=args.steps, guidance_scale=7.5, height=size, width=size,
                output_type="np", generator=torch.Generator().manual_seed(0)).images)
            rows.append(row("generation", size, 1, runs, peak))

    import diffusers
    report = dict(engine="diffusers", model=f"{args.arch} (random weights)", dtype="f32", device="cpu",
                  threads=torch.get_num_threads(), repeats=max(1, args.repeats), load_s=load_s,
                  loaded_rss_bytes=loaded_rss, rows=rows,
                  versions=dict(torch=torch.__version__, diffusers=diffusers.__version__))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"diffusers bench · {report['model']} · f32 · {report['threads']} threads · load {load_s:.2f} s")
        for r in rows:
            peak = "-" if r["peak_rss_bytes"] is None else f"{r['peak_rss_bytes'] / 2**30:.2f}"
            print(f"{r['component']:<14} {r['size'] or '-':>6} {r['batch']:>5} {r['median_s']:>10.3f} {peak:>13}")


if __name__ == "__main__":
    main()
