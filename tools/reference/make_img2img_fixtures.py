"""Whole image-to-image (SDEdit, Meng et al. 2021) runs of diffusers'
StableDiffusionImg2ImgPipeline on the tiny models, as parity fixtures for
crates/pigment/tests/img2img_parity.rs.

Writes, under tests/fixtures/img2img/:
- init.png: a 64x64 init image drawn deterministically here (gradients and shapes, numpy only);
- cases.json: the request of each case;
- outputs.safetensors: per case `<id>.image` (uint8 HxWx3 per image, as the PIL images diffusers
  returns) and `<id>.latents` (the final latents before VAE decoding).

Run from the repo root after make_tiny_models.py: python tools/reference/make_img2img_fixtures.py
"""

import json
import os
import sys

import numpy as np
import torch
from diffusers import StableDiffusionImg2ImgPipeline
from diffusers.utils import load_image
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_common import init_image, schedulers  # noqa: E402

MODELS = os.path.join("tests", "fixtures", "models")
OUT = os.path.join("tests", "fixtures", "img2img")

SAMPLERS = schedulers("ddim", "euler", "euler_a", "heun", "dpmpp_2m")


def cases():
    out = []
    for sampler in SAMPLERS:
        for strength in [0.3, 0.75, 1.0]:
            out.append(dict(model="tiny-sd1", sampler=sampler, strength=strength))
    for sampler in ["euler_a", "dpmpp_2m", "heun"]:
        out.append(dict(model="tiny-sd2", sampler=sampler, strength=0.75))
    out += [
        dict(model="tiny-sd1", sampler="euler", strength=0.5, seed=7, negative="blurry"),
        dict(model="tiny-sd1", sampler="dpmpp_2m", strength=0.6, steps=10, batch=2, seed=3),
    ]
    defaults = dict(prompt="a red star above a small green square", negative="", steps=5, cfg=7.5,
                    seed=42, batch=1)
    result = []
    for i, c in enumerate(out):
        c = {**defaults, **c}
        c["id"] = f"case{i:02d}"
        result.append(c)
    return result


def main():
    os.makedirs(OUT, exist_ok=True)
    init_path = os.path.join(OUT, "init.png")
    init_image().save(init_path)
    image = load_image(init_path)
    pipes = {}
    for name, variant in [("tiny-sd1", None), ("tiny-sd2", "fp16")]:
        pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
            os.path.join(MODELS, name), torch_dtype=torch.float32, variant=variant,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        pipes[name] = (pipe, dict(pipe.scheduler.config))
    tensors = {}
    all_cases = cases()
    for c in all_cases:
        pipe, base_config = pipes[c["model"]]
        cls, extra = SAMPLERS[c["sampler"]]
        # Build from the pipeline's ORIGINAL config each time (REFERENCE-NOTES: keys leak otherwise).
        pipe.scheduler = cls.from_config(base_config, **extra)
        with torch.no_grad():
            latents = pipe(
                prompt=[c["prompt"]],
                image=image,
                strength=c["strength"],
                negative_prompt=[c["negative"]] if c["negative"] else None,
                num_inference_steps=c["steps"],
                guidance_scale=c["cfg"],
                num_images_per_prompt=c["batch"],
                generator=torch.Generator("cpu").manual_seed(c["seed"]),
                output_type="latent",
            ).images
            decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
            decoded = pipe.image_processor.postprocess(decoded, output_type="np")
        tensors[c["id"] + ".latents"] = latents.contiguous()
        tensors[c["id"] + ".image"] = torch.from_numpy((decoded * 255).round().astype(np.uint8)).contiguous()
        print(c["id"], c["model"], c["sampler"], c["strength"], float(latents.abs().mean()))
    save_file(tensors, os.path.join(OUT, "outputs.safetensors"))
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(all_cases, f, indent=1)


if __name__ == "__main__":
    main()
