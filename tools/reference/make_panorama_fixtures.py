"""MultiDiffusion panoramas (Bar-Tal et al. 2023) from diffusers' StableDiffusionPanoramaPipeline on
tiny-sd1, as parity fixtures for crates/pigment/tests/panorama_parity.rs.

diffusers' __call__ calls `get_views(height, width)` with its defaults (window_size=64, stride=8,
in latent cells; the pixel size is divided by a hard-coded 8). The tiny models' VAE factor is 8
too, so wrapping get_views to pass this case's window and stride gives the reference for any
window: that is what this script does.

Writes tests/fixtures/panorama/cases.json (the request of each case) and
tests/fixtures/panorama/outputs.safetensors (per case: `<id>.image` uint8 HxWx3 as the PIL image
diffusers returns, `<id>.latents` the final latents before VAE decoding).

Run from the repo root after make_tiny_models.py: python tools/reference/make_panorama_fixtures.py
"""

import json
import os
import sys

import numpy as np
import torch
from diffusers import (
    StableDiffusionPanoramaPipeline,
    StableDiffusionPipeline,
)
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_common import schedulers  # noqa: E402

MODEL = os.path.join("tests", "fixtures", "models", "tiny-sd1")
OUT = os.path.join("tests", "fixtures", "panorama")

SAMPLERS = schedulers("euler", "ddim", "dpmpp_2m", "euler_a", "heun")


def cases():
    out = []
    for height, width in [(64, 192), (128, 128)]:
        for sampler in ["euler", "ddim", "dpmpp_2m"]:
            out.append(dict(sampler=sampler, height=height, width=width))
    # Several views per UNet call: the same numbers for these samplers, one scheduler per batch.
    out[-1]["view_batch"] = 4
    out[1]["view_batch"] = 2
    # Latents only (the images would pass the size budget): noise drawn per view batch in
    # diffusers' order (Euler a), and Heun's two-stage state kept per view batch.
    out.append(dict(sampler="euler_a", height=64, width=192, image=False))
    out.append(dict(sampler="heun", height=64, width=192, view_batch=2, image=False))
    # Circular padding: wrapped views, decoded with decode_latents_with_padding. (Its image takes
    # the place of case01's in the size budget.)
    out[1]["image"] = False
    out.append(dict(sampler="euler", height=64, width=192, circular=True))
    out.append(dict(sampler="dpmpp_2m", height=64, width=192, view_batch=3, circular=True, image=False))
    defaults = dict(prompt="a red star above a small green square", negative="", steps=5, cfg=7.5,
                    seed=42, window=8, stride=4, view_batch=1, image=True,
                    circular=False)
    result = []
    for i, c in enumerate(out):
        c = {**defaults, **c}
        c["id"] = f"case{i:02d}"
        result.append(c)
    return result


def main():
    os.makedirs(OUT, exist_ok=True)
    sd = StableDiffusionPipeline.from_pretrained(MODEL, torch_dtype=torch.float32, safety_checker=None)
    pipe = StableDiffusionPanoramaPipeline(**sd.components, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    base_config = dict(sd.scheduler.config)
    original_get_views = pipe.get_views
    tensors = {}
    all_cases = cases()
    for c in all_cases:
        cls, extra = SAMPLERS[c["sampler"]]
        # Build from the pipeline's ORIGINAL config each time (REFERENCE-NOTES: keys leak otherwise).
        pipe.scheduler = cls.from_config(base_config, **extra)

        def get_views(height, width, window_size=64, stride=8, circular_padding=False, c=c):
            return original_get_views(height, width, window_size=c["window"], stride=c["stride"],
                                      circular_padding=circular_padding)

        pipe.get_views = get_views
        with torch.no_grad():
            latents = pipe(
                prompt=[c["prompt"]],
                negative_prompt=[c["negative"]] if c["negative"] else None,
                num_inference_steps=c["steps"],
                guidance_scale=c["cfg"],
                height=c["height"],
                width=c["width"],
                view_batch_size=c["view_batch"],
                circular_padding=c["circular"],
                generator=torch.Generator("cpu").manual_seed(c["seed"]),
                output_type="latent",
            ).images
            if c["circular"]:
                image = pipe.decode_latents_with_padding(latents)
            else:
                image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
            image = pipe.image_processor.postprocess(image, output_type="np")
        tensors[c["id"] + ".latents"] = latents.contiguous()
        if c["image"]:
            tensors[c["id"] + ".image"] = torch.from_numpy((image[0] * 255).round().astype(np.uint8)).contiguous()
        print(c["id"], c["sampler"], c["height"], c["width"], len(get_views(c["height"], c["width"], circular_padding=c["circular"])), "views",
              float(latents.abs().mean()))
    save_file(tensors, os.path.join(OUT, "outputs.safetensors"))
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(all_cases, f, indent=1)


if __name__ == "__main__":
    main()
