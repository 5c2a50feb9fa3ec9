"""Tiled VAE fixtures: diffusers' AutoencoderKL with enable_tiling() on the tiny-sd1 VAE.

writes tests/fixtures/vae_tiling/tiled_tiny-sd1.safetensors:
- latents [1, 4, 14, 12] (torch.manual_seed(3) randn) and their tiled decode `decoded`
  [1, 3, 112, 96]: the tiny VAE's tile is sample_size = 64 pixels = 8 latent cells, so this is a
  3 x 2 grid of overlapping tiles with blended seams;
- `image` [1, 3, 112, 96] (f16-exact values in [-1, 1]) and its tiled encode: `mean`, `logvar`.

Run from the repo root:
    python tools/reference/make_vae_tiling_fixtures.py
"""

import os

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

OUT = os.path.join("tests", "fixtures", "vae_tiling")


def image():
    """Smooth gradients plus a hard-edged square, rounded to f16 so both sides read it exactly."""
    y = torch.arange(112, dtype=torch.float32).view(1, 1, 112, 1)
    x = torch.arange(96, dtype=torch.float32).view(1, 1, 1, 96)
    c = torch.arange(3, dtype=torch.float32).view(1, 3, 1, 1)
    img = torch.sin(0.07 * (c + 1) * y) * torch.cos(0.05 * x + c)
    img[:, :, 40:70, 30:60] = 0.8
    return img.half().float()


def main():
    os.makedirs(OUT, exist_ok=True)
    vae = AutoencoderKL.from_pretrained(
        os.path.join("tests", "fixtures", "models", "tiny-sd1", "vae"), torch_dtype=torch.float32
    )
    vae.enable_tiling()
    assert vae.tile_sample_min_size == 64 and vae.tile_latent_min_size == 8
    torch.manual_seed(3)
    latents = torch.randn(1, 4, 14, 12)
    img = image()
    with torch.no_grad():
        decoded = vae.decode(latents).sample
        dist = vae.encode(img).latent_dist
    tensors = {
        "latents": latents,
        "decoded": decoded,
        "image": img.half(),
        "mean": dist.mean,
        "logvar": dist.logvar,
    }
    path = os.path.join(OUT, "tiled_tiny-sd1.safetensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    print("wrote", path, {k: tuple(v.shape) for k, v in tensors.items()})


if __name__ == "__main__":
    main()
