"""ControlNet (Zhang et al. 2023) parity fixtures: a tiny random ControlNet for tiny-sd1 and runs of
diffusers' ControlNetModel / StableDiffusionControlNetPipeline with it, for
crates/pigment/tests/controlnet_parity.rs and crates/pigment-cli/tests/controlnet.rs.

Run from the repo root after make_tiny_models.py: python tools/reference/make_controlnet_fixtures.py
Needs torch, diffusers, safetensors, numpy, pillow and opencv-python-headless.

Writes tests/fixtures/controlnet/:
- tiny-controlnet/ (config.json + diffusion_pytorch_model.safetensors): ControlNetModel.from_unet
  on tiny-sd1's UNet with small conditioning-embedding channels; then EVERY weight gets noise
  (the zero convolutions included, else the residuals would be zero and test nothing). Stored in
  f16; the references below run in f32 on exactly those f16 values.
- tiny-controlnet.safetensors: the same weights in the original ControlNet single-file layout
  (`control_model.` + LDM UNet names, `input_hint_block.*`, `zero_convs.N.0.*`,
  `middle_block_out.0.*`), checked here by loading it back with diffusers' from_single_file.
- photo.png: a 64x64 picture; control_a.png / control_b.png: control images (the canny edges of
  photo.png made with cv2.Canny(photo, 100, 200) as ControlNet's annotator does, and a second
  drawing).
- forward.safetensors: ControlNetModel.forward inputs and outputs (plain, guess mode,
  global_pool_conditions).
- cases.json + outputs.safetensors: whole pipeline runs (`<id>.latents` before VAE decoding,
  `<id>.image` uint8 HxWx3 as the PIL image).
"""

import json
import os
import sys

import cv2
import numpy as np
import torch
from diffusers import (
    ControlNetModel,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionPipeline,
)
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_common import init_image, schedulers  # noqa: E402

MODEL = os.path.join("tests", "fixtures", "models", "tiny-sd1")
OUT = os.path.join("tests", "fixtures", "controlnet")
SAMPLERS = schedulers("euler", "ddim", "euler_a")
EULER = SAMPLERS["euler"][0]


def build_controlnet(unet):
    torch.manual_seed(1234)
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    with torch.no_grad():
        for name, p in cn.named_parameters():
            if name.startswith("controlnet_down_blocks") or name.startswith("controlnet_mid_block"):
                p.copy_(torch.randn_like(p) * 0.05)
            elif name.startswith("controlnet_cond_embedding.conv_out"):
                p.copy_(torch.randn_like(p) * 0.1)
            else:
                p.add_(torch.randn_like(p) * 0.02)
    # Round to f16 so that the stored (f16) weights are exactly what the references ran with.
    return cn.half().float().eval()


# diffusers name -> original (ControlNet cldm.py / LDM openaimodel.py) name, for the single file.
RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
          ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]


def original_name(name, layers, levels, hint_convs):
    def resnet(rest):
        for new, old in RESNET:
            if rest.startswith(new + "."):
                return old + rest[len(new):]
        raise KeyError(name)

    parts = name.split(".")
    if name.startswith("time_embedding.linear_1."):
        return "time_embed.0." + parts[-1]
    if name.startswith("time_embedding.linear_2."):
        return "time_embed.2." + parts[-1]
    if name.startswith("conv_in."):
        return "input_blocks.0.0." + parts[-1]
    if name.startswith("controlnet_cond_embedding."):
        rest = parts[1:]
        if rest[0] == "conv_in":
            idx = 0
        elif rest[0] == "conv_out":
            idx = 2 * (hint_convs - 1)
        else:
            idx = 2 * (int(rest[1]) + 1)
        return f"input_hint_block.{idx}.{parts[-1]}"
    if name.startswith("controlnet_down_blocks."):
        return f"zero_convs.{parts[1]}.0.{parts[-1]}"
    if name.startswith("controlnet_mid_block."):
        return f"middle_block_out.0.{parts[-1]}"
    if name.startswith("mid_block."):
        kind, i = parts[1], int(parts[2])
        rest = ".".join(parts[3:])
        if kind == "attentions":
            return f"middle_block.1.{rest}"
        return f"middle_block.{2 * i}.{resnet(rest)}"
    if name.startswith("down_blocks."):
        level, kind = int(parts[1]), parts[2]
        per_level = layers + 1
        if kind == "downsamplers":
            return f"input_blocks.{1 + level * per_level + layers}.0.op.{parts[-1]}"
        i = int(parts[3])
        rest = ".".join(parts[4:])
        block = 1 + level * per_level + i
        if kind == "resnets":
            return f"input_blocks.{block}.0.{resnet(rest)}"
        return f"input_blocks.{block}.1.{rest}"
    raise KeyError(name)


def save_single_file(cn, path):
    hint_convs = 2 + 2 * (len(cn.config.conditioning_embedding_out_channels) - 1)
    levels = len(cn.config.block_out_channels)
    out = {}
    for name, t in cn.state_dict().items():
        key = "control_model." + original_name(name, cn.config.layers_per_block, levels, hint_convs)
        out[key] = t.half().contiguous()
    save_file(out, path)
    return out


def check_single_file(cn, path, folder):
    """diffusers' own converter must read the file back into the same weights."""
    loaded = ControlNetModel.from_single_file(path, config=folder, torch_dtype=torch.float32)
    ref = cn.state_dict()
    got = loaded.state_dict()
    assert set(ref) == set(got), set(ref) ^ set(got)
    for k in ref:
        assert torch.equal(ref[k], got[k].float()), k


def control_images():
    photo = init_image()
    edges = cv2.Canny(np.asarray(photo), 100, 200)
    control_a = Image.fromarray(np.stack([edges] * 3, axis=-1))
    y, x = np.mgrid[0:64, 0:64]
    b = np.zeros((64, 64, 3), dtype=np.uint8)
    b[((x - 32) ** 2 + (y - 30) ** 2 < 300) & ((x - 32) ** 2 + (y - 30) ** 2 > 150)] = 255
    b[50:54, 8:56] = (255, 128, 0)
    control_b = Image.fromarray(b)
    return photo, control_a, control_b


def forward_fixture(cn, control_a):
    g = torch.Generator().manual_seed(5)
    sample = torch.randn(2, 4, 8, 8, generator=g)
    ehs = torch.randn(2, 7, 32, generator=g)
    cond = torch.from_numpy(np.asarray(control_a)).permute(2, 0, 1).float().div(255)[None].repeat(2, 1, 1, 1)
    cond[1] = cond[1].flip(-1)
    tensors = dict(sample=sample, encoder_hidden_states=ehs, controlnet_cond=cond)
    with torch.no_grad():
        for tag, kwargs in [("plain", dict(conditioning_scale=0.7)),
                            ("guess", dict(conditioning_scale=0.8, guess_mode=True))]:
            down, mid = cn(sample, 421, encoder_hidden_states=ehs, controlnet_cond=cond,
                           return_dict=False, **kwargs)
            for i, d in enumerate(down):
                tensors[f"{tag}.down.{i}"] = d.contiguous()
            tensors[f"{tag}.mid"] = mid.contiguous()
        cn.register_to_config(global_pool_conditions=True)
        down, mid = cn(sample, 421, encoder_hidden_states=ehs, controlnet_cond=cond,
                       conditioning_scale=0.9, return_dict=False)
        cn.register_to_config(global_pool_conditions=False)
        for i, d in enumerate(down):
            tensors[f"pool.down.{i}"] = d.contiguous()
        tensors["pool.mid"] = mid.contiguous()
    return tensors


def cases():
    base = dict(prompt="a red star above a small green square", negative="", steps=5, cfg=7.5, seed=42,
                width=64, height=64, batch=1, sampler="euler", guess_mode=False)
    one = [dict(image="control_a.png", scale=1.0, start=0.0, end=1.0)]
    two = [dict(image="control_a.png", scale=0.8, start=0.0, end=0.6),
           dict(image="control_b.png", scale=0.5, start=0.4, end=1.0)]
    out = [
        dict(base, units=one),
        dict(base, units=two, sampler="ddim", seed=7),
        dict(base, units=[dict(one[0], scale=0.9)], guess_mode=True, sampler="euler_a", batch=2),
        dict(base, units=[dict(one[0], start=0.2, end=0.8)], cfg=1.0),
        # StableDiffusionControlNetImg2ImgPipeline: photo.png as the init image.
        dict(base, units=[dict(one[0], scale=0.8, start=0.1, end=0.9)], init="photo.png", strength=0.75),
    ]
    for i, c in enumerate(out):
        c["id"] = f"case{i}"
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    base = StableDiffusionPipeline.from_pretrained(MODEL, torch_dtype=torch.float32, safety_checker=None)
    cn = build_controlnet(base.unet)
    folder = os.path.join(OUT, "tiny-controlnet")
    cn.half().save_pretrained(folder, safe_serialization=True)
    cn.float()
    single = os.path.join(OUT, "tiny-controlnet.safetensors")
    save_single_file(cn, single)
    check_single_file(cn, single, folder)

    photo, control_a, control_b = control_images()
    photo.save(os.path.join(OUT, "photo.png"))
    control_a.save(os.path.join(OUT, "control_a.png"))
    control_b.save(os.path.join(OUT, "control_b.png"))
    save_file(forward_fixture(cn, control_a), os.path.join(OUT, "forward.safetensors"))

    scheduler_config = dict(base.scheduler.config)
    tensors = {}
    all_cases = cases()
    for c in all_cases:
        n = len(c["units"])
        controlnet = cn if n == 1 else [cn] * n
        cls_pipe = StableDiffusionControlNetImg2ImgPipeline if "init" in c else StableDiffusionControlNetPipeline
        pipe = cls_pipe(
            vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
            controlnet=controlnet, scheduler=base.scheduler, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        cls, extra = SAMPLERS[c["sampler"]]
        pipe.scheduler = cls.from_config(scheduler_config, **extra)
        images = [Image.open(os.path.join(OUT, u["image"])).convert("RGB") for u in c["units"]]
        pick = (lambda v: v[0]) if n == 1 else (lambda v: v)
        if "init" in c:
            extra_args = dict(image=Image.open(os.path.join(OUT, c["init"])).convert("RGB"),
                              control_image=pick(images), strength=c["strength"])
        else:
            extra_args = dict(image=pick(images))
        with torch.no_grad():
            latents = pipe(
                **extra_args,
                prompt=[c["prompt"]],
                negative_prompt=[c["negative"]] if c["negative"] else None,
                num_inference_steps=c["steps"],
                guidance_scale=c["cfg"],
                width=c["width"],
                height=c["height"],
                num_images_per_prompt=c["batch"],
                generator=torch.Generator("cpu").manual_seed(c["seed"]),
                controlnet_conditioning_scale=pick([u["scale"] for u in c["units"]]),
                control_guidance_start=pick([u["start"] for u in c["units"]]),
                control_guidance_end=pick([u["end"] for u in c["units"]]),
                guess_mode=c["guess_mode"],
                output_type="latent",
            ).images
            image = base.vae.decode(latents / base.vae.config.scaling_factor, return_dict=False)[0]
            image = base.image_processor.postprocess(image, output_type="np")
        tensors[c["id"] + ".latents"] = latents.contiguous()
        tensors[c["id"] + ".image"] = torch.from_numpy((image * 255).round().astype(np.uint8)).contiguous()
        print(c["id"], c["sampler"], n, "units", float(latents.abs().mean()))
    # The ControlNet must matter: case0 with conditioning scale 0 lands elsewhere.
    with torch.no_grad():
        pipe = StableDiffusionControlNetPipeline(
            vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
            controlnet=cn, scheduler=EULER.from_config(scheduler_config), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        c = all_cases[0]
        off = pipe(prompt=[c["prompt"]], image=control_a, num_inference_steps=c["steps"], width=64, height=64,
                   generator=torch.Generator("cpu").manual_seed(c["seed"]), controlnet_conditioning_scale=0.0,
                   output_type="latent").images
        print("case0 latent change from the ControlNet:", float((off - tensors["case0.latents"]).abs().max()))
    save_file(tensors, os.path.join(OUT, "outputs.safetensors"))
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(all_cases, f, indent=1)


if __name__ == "__main__":
    main()
