"""Whole InstructPix2Pix runs (Brooks et al. 2022) of diffusers'
StableDiffusionInstructPix2PixPipeline, as parity fixtures for
crates/pigment/tests/pix2pix_parity.rs.

The model is tiny-sd1 with its unet replaced by a tiny 8-channel UNet (noisy latents + image
latents), built here and saved (f16) as tests/fixtures/pix2pix/unet8/; the test assembles a
model folder from tiny-sd1's other parts by path, as the inpainting fixtures do.

Writes, under tests/fixtures/pix2pix/:
- init.png: the 64x64 init image of the img2img fixtures;
- unet8/: config.json and diffusion_pytorch_model.safetensors of the 8-channel UNet;
- cases.json and outputs.safetensors: per case `<id>.latents` (final latents) and
  `<id>.image` (uint8 HxWx3 per image, as the PIL images diffusers returns).

Cases cover Euler a (the scheduler of timbrooks/instruct-pix2pix), Euler, DDIM and DPM++ 2M
with image guidance 1.5 and 1.0 and text guidance 7.5 and 1.0, plus the corners of diffusers'
`do_classifier_free_guidance = guidance_scale > 1 and image_guidance_scale >= 1`.

Run from the repo root after make_tiny_models.py: python tools/reference/make_pix2pix_fixtures.py
"""

import json
import os
import sys
import shutil
import tempfile

import numpy as np
import torch
from diffusers import (
    StableDiffusionInstructPix2PixPipeline,
    UNet2DConditionModel,
)
from diffusers.utils import load_image
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_common import init_image, schedulers  # noqa: E402

MODELS = os.path.join("tests", "fixtures", "models")
OUT = os.path.join("tests", "fixtures", "pix2pix")

SAMPLERS = schedulers("ddim", "euler", "euler_a", "dpmpp_2m")


def unet8(seed):
    """As make_inpaint_fixtures.py's 9-channel UNet, taking 8 input channels; noise on every
    parameter so each layer matters, rounded through f16."""
    torch.manual_seed(seed)
    model = UNet2DConditionModel(
        sample_size=8,
        in_channels=8,
        out_channels=4,
        block_out_channels=[8, 8, 16],
        down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        layers_per_block=1,
        attention_head_dim=4,
        cross_attention_dim=32,
        norm_num_groups=8,
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * (0.05 if p.dim() == 1 else 0.02))
            p.copy_(p.half().float())
    return model


def cases():
    out = []
    for sampler in ["euler_a", "euler", "ddim", "dpmpp_2m"]:
        for image_cfg, cfg in [(1.5, 7.5), (1.0, 7.5), (1.5, 1.0)]:
            out.append(dict(sampler=sampler, image_cfg=image_cfg, cfg=cfg))
    out += [
        # image_guidance_scale < 1 turns all guidance off in diffusers.
        dict(sampler="euler", image_cfg=0.5, cfg=7.5),
        dict(sampler="euler_a", image_cfg=2.0, cfg=5.0, batch=2, seed=3, negative="blurry"),
    ]
    defaults = dict(prompt="make it winter", negative="", steps=5, seed=42, batch=1)
    return [{**defaults, **c, "id": f"case{i:02d}"} for i, c in enumerate(out)]


def main():
    os.makedirs(OUT, exist_ok=True)
    init_image().save(os.path.join(OUT, "init.png"))
    image = load_image(os.path.join(OUT, "init.png"))
    unet_dir = os.path.join(OUT, "unet8")
    shutil.rmtree(unet_dir, ignore_errors=True)
    unet8(31).half().save_pretrained(unet_dir, safe_serialization=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "tiny-sd1-pix2pix")
        shutil.copytree(os.path.join(MODELS, "tiny-sd1"), folder, ignore=shutil.ignore_patterns("unet"))
        shutil.copytree(unet_dir, os.path.join(folder, "unet"))
        pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
            folder, torch_dtype=torch.float32, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    assert pipe.unet.config.in_channels == 8
    base_config = dict(pipe.scheduler.config)
    tensors = {}
    all_cases = cases()
    for c in all_cases:
        cls, extra = SAMPLERS[c["sampler"]]
        # Build from the pipeline's ORIGINAL config each time (REFERENCE-NOTES: keys leak otherwise).
        pipe.scheduler = cls.from_config(base_config, **extra)
        with torch.no_grad():
            latents = pipe(
                prompt=[c["prompt"]],
                image=image,
                negative_prompt=[c["negative"]] if c["negative"] else None,
                num_inference_steps=c["steps"],
                guidance_scale=c["cfg"],
                image_guidance_scale=c["image_cfg"],
                num_images_per_prompt=c["batch"],
                generator=torch.Generator("cpu").manual_seed(c["seed"]),
                output_type="latent",
            ).images
            decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
            decoded = pipe.image_processor.postprocess(decoded, output_type="np")
        tensors[c["id"] + ".latents"] = latents.contiguous()
        tensors[c["id"] + ".image"] = torch.from_numpy((decoded * 255).round().astype(np.uint8)).contiguous()
        print(c["id"], c["sampler"], c["image_cfg"], c["cfg"], float(latents.abs().mean()))
    save_file(tensors, os.path.join(OUT, "outputs.safetensors"))
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(all_cases, f, indent=1)


if __name__ == "__main__":
    main()
