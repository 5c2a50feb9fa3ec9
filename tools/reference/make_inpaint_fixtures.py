"""Whole inpainting runs of diffusers' StableDiffusionInpaintPipeline, as parity fixtures for
crates/pigment/tests/inpaint_parity.rs, for both kinds of model:
- a tiny dedicated inpainting UNet (in_channels 9: noisy latents + mask + masked-image latents),
  built here and saved (f16) as tests/fixtures/inpaint/unet9/; the test assembles a model folder
  from tiny-sd1 with only its unet replaced by this one (the other parts are not copied, to keep
  the fixtures small);
- tiny-sd1 itself (in_channels 4: the known region is blended back after every step).

Writes, under tests/fixtures/inpaint/:
- init.png: the 64x64 init image of the img2img fixtures;
- mask.png: an RGB mask (white and a light green = repaint; black and a dark orange = keep),
  so the luma conversion (PIL's "L") and the binarization at 0.5 are exercised;
- mask_blur4.png: that mask as luma, blurred as AUTOMATIC1111's mask blur 4 does
  (cv2.GaussianBlur, kernel 2 * int(2.5 * 4 + 0.5) + 1, sigma 4), for Pigment's --mask-blur;
- unet9/: config.json and diffusion_pytorch_model.safetensors of the 9-channel UNet;
- cases.json and outputs.safetensors: per case `<id>.latents` (final latents) and, where the
  case's `image` is true, `<id>.image` (uint8 HxWx3 per image, as the PIL images diffusers
  returns).

Run from the repo root after make_tiny_models.py: python tools/reference/make_inpaint_fixtures.py
"""

import json
import os
import sys
import shutil
import tempfile

import numpy as np
import torch
from diffusers import (
    StableDiffusionInpaintPipeline,
    UNet2DConditionModel,
)
from diffusers.utils import load_image
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_common import init_image, schedulers  # noqa: E402

MODELS = os.path.join("tests", "fixtures", "models")
OUT = os.path.join("tests", "fixtures", "inpaint")

SAMPLERS = schedulers("ddim", "euler", "euler_a", "heun", "dpmpp_2m")


def mask_image():
    """RGB on purpose: white disc and light-green bar (luma >= 128: repaint), dark-orange
    block (luma < 128: keep) on black. Edges are off the 8-pixel grid."""
    y, x = np.mgrid[0:64, 0:64]
    m = np.zeros((64, 64, 3), np.uint8)
    m[(x - 22) ** 2 + (y - 24) ** 2 < 150] = [255, 255, 255]
    m[44:59, 5:50] = [100, 200, 150]  # luma 164
    m[3:20, 45:62] = [200, 100, 50]  # luma 124
    return Image.fromarray(m)


def write_blurred_mask(sigma):
    import cv2  # only here: the pipeline runs need no OpenCV

    luma = np.array(mask_image().convert("L"))
    k = 2 * int(2.5 * sigma + 0.5) + 1
    Image.fromarray(cv2.GaussianBlur(luma, (k, k), sigma)).save(os.path.join(OUT, f"mask_blur{sigma}.png"))


def unet9(seed):
    """As make_tiny_models.py's SD1 UNet, smaller, taking 9 input channels; noise on every
    parameter so each layer matters, rounded through f16."""
    torch.manual_seed(seed)
    model = UNet2DConditionModel(
        sample_size=8,
        in_channels=9,
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
    for sampler in ["euler", "ddim", "dpmpp_2m"]:
        for strength in [1.0, 0.75]:
            out.append(dict(model="unet9", sampler=sampler, strength=strength))
    for sampler in ["euler", "ddim"]:
        for strength in [1.0, 0.75]:
            out.append(dict(model="tiny-sd1", sampler=sampler, strength=strength))
    out += [
        dict(model="unet9", sampler="euler", strength=0.75, cfg=1.0, seed=5),
        dict(model="tiny-sd1", sampler="euler", strength=0.75, batch=2, seed=3, negative="blurry"),
        # Latents only (the fixtures stay small): samplers that draw noise after the
        # masked-image VAE sample, and Heun's doubled timesteps in the blend.
        dict(model="tiny-sd1", sampler="euler_a", strength=0.75, image=False),
        dict(model="tiny-sd1", sampler="heun", strength=0.75, image=False),
        dict(model="unet9", sampler="euler_a", strength=1.0, image=False),
        dict(model="unet9", sampler="heun", strength=0.75, image=False),
    ]
    defaults = dict(prompt="a red star above a small green square", negative="", steps=5, cfg=7.5,
                    seed=42, batch=1, image=True)
    return [{**defaults, **c, "id": f"case{i:02d}"} for i, c in enumerate(out)]


def load_pipe(folder):
    pipe = StableDiffusionInpaintPipeline.from_pretrained(
        folder, torch_dtype=torch.float32, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe, dict(pipe.scheduler.config)


def main():
    os.makedirs(OUT, exist_ok=True)
    init_image().save(os.path.join(OUT, "init.png"))
    mask_image().save(os.path.join(OUT, "mask.png"))
    write_blurred_mask(4)
    image = load_image(os.path.join(OUT, "init.png"))
    mask = load_image(os.path.join(OUT, "mask.png"))
    unet_dir = os.path.join(OUT, "unet9")
    shutil.rmtree(unet_dir, ignore_errors=True)
    unet9(21).half().save_pretrained(unet_dir, safe_serialization=True)
    pipes = {"tiny-sd1": load_pipe(os.path.join(MODELS, "tiny-sd1"))}
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "tiny-sd1-inpaint")
        shutil.copytree(os.path.join(MODELS, "tiny-sd1"), folder, ignore=shutil.ignore_patterns("unet"))
        shutil.copytree(unet_dir, os.path.join(folder, "unet"))
        pipes["unet9"] = load_pipe(folder)
    assert pipes["unet9"][0].unet.config.in_channels == 9
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
                mask_image=mask,
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
        if c["image"]:
            tensors[c["id"] + ".image"] = torch.from_numpy((decoded * 255).round().astype(np.uint8)).contiguous()
        print(c["id"], c["model"], c["sampler"], c["strength"], float(latents.abs().mean()))
    save_file(tensors, os.path.join(OUT, "outputs.safetensors"))
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(all_cases, f, indent=1)


if __name__ == "__main__":
    main()
