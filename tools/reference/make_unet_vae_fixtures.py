"""Reference outputs of diffusers' UNet2DConditionModel and AutoencoderKL for Pigment's parity tests.

Reads the tiny random-weight models in tests/fixtures/models (written by make_tiny_models.py) and
writes tests/fixtures/unet_vae/:
- unet_tiny-sd1.safetensors, unet_tiny-sd2.safetensors: inputs (latents 2x4x8x8, encoder hidden
  states 2x77x32) and UNet outputs at timesteps 981 and 500.25, with random ControlNet-style
  down/mid residuals, and (tiny-sd1 only) with an attention hook (see HookedProcessor).
- tiny-x/: a third tiny UNet (config + f16 weights) covering what SD1/SD2 leave out: 9 input
  channels, per-block layers_per_block, transformer_layers_per_block 2, only_cross_attention,
  time_cond_proj_dim (LCM), time_embedding_dim, scale_shift resnets, a non-multiple-of-2 latent
  size (forces upsample_size), cross_attention_dim != 32; plus unet_tiny-x.safetensors.
- vae_tiny-sd1.safetensors: encode of a 1x3x64x64 image (latent_dist mean/logvar before the
  scaling factor, and a sample with torch.Generator().manual_seed(0)), decode of a 1x4x8x8 latent.

All reference computation in float32. Run from the repo root:
    python tools/reference/make_unet_vae_fixtures.py
"""

import os
import sys

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tiny_models import perturb  # noqa: E402

MODELS = os.path.join("tests", "fixtures", "models")
OUT = os.path.join("tests", "fixtures", "unet_vae")
TIMESTEPS = {"t981": 981.0, "t500_25": 500.25}


def randn(shape, seed, scale=1.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def down_residual_shapes(unet, sample, timestep, ehs, **kw):
    """Shapes of diffusers' down_block_res_samples: conv_in output, then every down block's outputs."""
    shapes = []
    hooks = [unet.conv_in.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))]
    for block in unet.down_blocks:
        hooks.append(block.register_forward_hook(lambda m, i, o: shapes.extend(tuple(t.shape) for t in o[1])))
    mid = []
    hooks.append(unet.mid_block.register_forward_hook(lambda m, i, o: mid.append(tuple(o.shape))))
    unet(sample, timestep, ehs, **kw)
    for h in hooks:
        h.remove()
    return shapes, mid[0]


class HookedProcessor:
    """A hypernetwork- and prompt-to-prompt-style change to cross-attention, written out in full so
    the Rust AttentionHook can reproduce it: key context = ctx * 0.5, value context = ctx + 0.25,
    and probabilities of batch b, head h multiplied by (1 + h + 0.5 b) (not renormalised, so any
    mix-up of the batch/head axes shows). Self-attention is left as is."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        is_cross = encoder_hidden_states is not None
        ctx = encoder_hidden_states if is_cross else hidden_states
        ctx_k, ctx_v = (ctx * 0.5, ctx + 0.25) if is_cross else (ctx, ctx)
        q, k, v = attn.to_q(hidden_states), attn.to_k(ctx_k), attn.to_v(ctx_v)
        b, heads = q.shape[0], attn.heads
        d = q.shape[-1] // heads
        q, k, v = (t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
        probs = (q @ k.transpose(-1, -2) * d**-0.5).softmax(-1)
        if is_cross:
            factor = 1 + torch.arange(heads)[None, :] + 0.5 * torch.arange(b)[:, None]
            probs = probs * factor[:, :, None, None]
        out = (probs @ v).transpose(1, 2).reshape(b, -1, heads * d)
        return attn.to_out[0](out)


def unet_fixture(name, unet, sample, ehs, extra_inputs=None, hooked=False):
    extra_inputs = extra_inputs or {}
    tensors = {"sample": sample, "encoder_hidden_states": ehs, **extra_inputs}
    kw = {}
    if "timestep_cond" in extra_inputs:
        kw["timestep_cond"] = extra_inputs["timestep_cond"]
    with torch.no_grad():
        for key, t in TIMESTEPS.items():
            tensors[f"out_{key}"] = unet(sample, t, ehs, **kw).sample
        shapes, mid_shape = down_residual_shapes(unet, sample, 981.0, ehs, **kw)
        down = [randn(s, 100 + i, 0.5) for i, s in enumerate(shapes)]
        mid = randn(mid_shape, 99, 0.5)
        for i, r in enumerate(down):
            tensors[f"down_residual_{i}"] = r
        tensors["mid_residual"] = mid
        tensors["out_control_t981"] = unet(
            sample, 981.0, ehs, down_block_additional_residuals=down, mid_block_additional_residual=mid, **kw
        ).sample
        if hooked:
            unet.set_attn_processor(HookedProcessor())
            tensors["out_hooked_t981"] = unet(sample, 981.0, ehs, **kw).sample
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, f"unet_{name}.safetensors"))
    print("wrote", name, {k: tuple(v.shape) for k, v in tensors.items() if k.startswith("out")})


def tiny_x(seed=21):
    """The third UNet: not an SD layout, every field set away from SD1/SD2's values."""
    torch.manual_seed(seed)
    model = UNet2DConditionModel(
        sample_size=8,
        in_channels=9,
        out_channels=4,
        block_out_channels=[8, 16],
        down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
        layers_per_block=[1, 2],
        transformer_layers_per_block=2,
        only_cross_attention=[True, False],
        attention_head_dim=[2, 4],
        cross_attention_dim=24,
        use_linear_projection=True,
        norm_num_groups=4,
        resnet_time_scale_shift="scale_shift",
        time_cond_proj_dim=6,
        time_embedding_dim=40,
        flip_sin_to_cos=False,
        freq_shift=1,
    )
    perturb(model, seed)
    folder = os.path.join(OUT, "tiny-x")
    model.half().save_pretrained(folder, safe_serialization=True)
    return UNet2DConditionModel.from_pretrained(folder, torch_dtype=torch.float32)


def vae_fixture(name):
    vae = AutoencoderKL.from_pretrained(os.path.join(MODELS, name, "vae"), torch_dtype=torch.float32)
    image = torch.rand((1, 3, 64, 64), generator=torch.Generator().manual_seed(31)) * 2 - 1
    latents = randn((1, 4, 8, 8), 32)
    with torch.no_grad():
        dist = vae.encode(image).latent_dist
        sample = dist.sample(generator=torch.Generator().manual_seed(0))
        decoded = vae.decode(latents).sample
    tensors = {
        "image": image,
        "mean": dist.mean,
        "logvar": dist.logvar,
        "sample_seed0": sample,
        "latents": latents,
        "decoded": decoded,
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, f"vae_{name}.safetensors"))
    print("wrote vae", name)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(2)
    sample = randn((2, 4, 8, 8), 1)
    ehs = randn((2, 77, 32), 2)
    sd1 = UNet2DConditionModel.from_pretrained(os.path.join(MODELS, "tiny-sd1", "unet"), torch_dtype=torch.float32)
    unet_fixture("tiny-sd1", sd1, sample, ehs, hooked=True)
    sd2 = UNet2DConditionModel.from_pretrained(
        os.path.join(MODELS, "tiny-sd2", "unet"), torch_dtype=torch.float32, variant="fp16"
    )
    unet_fixture("tiny-sd2", sd2, sample, ehs)
    x = tiny_x()
    unet_fixture(
        "tiny-x",
        x,
        randn((2, 9, 7, 9), 3),
        randn((2, 5, 24), 4),
        extra_inputs={"timestep_cond": randn((2, 6), 5)},
    )
    vae_fixture("tiny-sd1")


if __name__ == "__main__":
    main()
