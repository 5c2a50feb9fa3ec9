"""Gradients of the UNet's and the VAE's training losses in PyTorch, for Pigment's backward-pass
parity tests (crates/pigment/tests/training_gradients.rs).

Forward parity (make_unet_vae_fixtures.py) does not show that training is right: a wrong
backward of any op (a convolution's weight gradient, group norm, attention, GELU) still lowers
the loss, only slower. Here diffusers' UNet2DConditionModel and AutoencoderKL, small but with
every block kind the built-in model uses, get the losses of Pigment's training stages on fixed
inputs, and every parameter's gradient is written:

- UNet: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps with SD's scaled-linear betas, epsilon
  target, per-sample MSE weighted by min(SNR_t, 5) / SNR_t (diffusers' train_text_to_image.py
  `--snr_gamma 5`), mean over the batch;
- VAE: z = mean + exp(logvar / 2) eps, L1 reconstruction over every pixel value plus
  1e-6 * (per-image KL) / (C H W) (crates/pigment/src/train/vae.rs).

Writes tests/fixtures/train/grad/{unet,vae}/ (diffusers folders: config.json and the weights)
and {unet,vae}.safetensors (gradients as `grad.NAME`, inputs by name, the loss as `loss`).

Run from the repository root: python tools/reference/make_training_grad_fixtures.py
"""

import json
import os

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from safetensors.torch import save_file

OUT = os.path.join("tests", "fixtures", "train", "grad")
SNR_GAMMA = 5.0
KL_WEIGHT = 1e-6


def randn(shape, gen, scale=1.0):
    return torch.randn(shape, generator=gen) * scale


def perturb_weights(model, gen):
    """diffusers zero-initialises no layer, but norms start at exactly 1 / 0: give every
    parameter a random offset so a gradient that ignores a scale or shift shows."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(randn(p.shape, gen, 0.1))


def write(name, model, inputs, loss):
    loss.backward()
    model.save_pretrained(os.path.join(OUT, name), safe_serialization=True)
    tensors = {f"grad.{n}": p.grad.detach().contiguous() for n, p in model.named_parameters()}
    tensors.update({k: v.contiguous() for k, v in inputs.items()})
    tensors["loss"] = loss.detach().reshape(1)
    save_file(tensors, os.path.join(OUT, f"{name}.safetensors"))
    print(name, "loss", float(loss), "parameters", sum(p.numel() for p in model.parameters()))


def unet_case(gen):
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16, 24),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        attention_head_dim=2,
        cross_attention_dim=12,
        norm_num_groups=8,
    )
    perturb_weights(unet, gen)
    scheduler = DDPMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        num_train_timesteps=1000,
    )
    timesteps = torch.tensor([3, 180, 640, 999])
    latents = randn((4, 4, 8, 8), gen)
    noise = randn((4, 4, 8, 8), gen)
    context = randn((4, 7, 12), gen)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    pred = unet(noisy, timesteps, encoder_hidden_states=context).sample
    abar = scheduler.alphas_cumprod[timesteps].double()
    snr = abar / (1 - abar)
    weights = (torch.minimum(snr, torch.full_like(snr, SNR_GAMMA)) / snr).float()
    per_sample = ((pred - noise) ** 2).flatten(1).mean(1)
    loss = (per_sample * weights).mean()
    inputs = {
        "latents": latents,
        "noise": noise,
        "context": context,
        "timesteps": timesteps.to(torch.int64),
    }
    write("unet", unet, inputs, loss)


def vae_case(gen):
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )
    perturb_weights(vae, gen)
    images = torch.rand((2, 3, 16, 16), generator=gen) * 2 - 1
    posterior = vae.encode(images).latent_dist
    noise = randn(posterior.mean.shape, gen)
    z = posterior.mean + posterior.std * noise
    decoded = vae.decode(z).sample
    reconstruction = (decoded - images).abs().mean()
    kl = 0.5 * (posterior.mean**2 + posterior.var - 1 - posterior.logvar).flatten(1).sum(1)
    pixels = images[0].numel()
    loss = reconstruction + KL_WEIGHT * kl.mean() / pixels
    write("vae", vae, {"images": images, "noise": noise}, loss)


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(2024)
    unet_case(gen)
    vae_case(gen)


if __name__ == "__main__":
    main()
