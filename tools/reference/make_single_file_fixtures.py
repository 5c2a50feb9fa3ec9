"""Convert the tiny diffusers folders into the original LDM single-file layout, and verify them.

Writes tests/fixtures/single_file/:
- tiny-sd1.safetensors: CompVis layout (`model.diffusion_model.*`, `first_stage_model.*`,
  `cond_stage_model.transformer.text_model.*`), VAE mid attention stored as 1x1 conv weights as
  real SD1 files have them, plus the int64 `embeddings.position_ids` buffer real files carry.
- tiny-sd1.ckpt: the same state dict, `torch.save({"state_dict": sd, "global_step": 1})`
  (zip + pickle), with the position_ids buffer as a float tensor (some real files have that).
- tiny-sd2.safetensors: Stability layout with the OpenCLIP text tower (`cond_stage_model.model.*`:
  fused `in_proj_weight`, `ln_1`, `mlp.c_fc`, `positional_embedding`, ...) and one extra, random,
  last resblock: SD2 conditions on the penultimate layer, so loaders drop it. VAE attention as
  linear weights (some converted files have them so) to cover both forms.
- legacy-small.pt + legacy-small.safetensors: a few tensors saved with torch's legacy (non-zip)
  serialisation, and the same tensors as safetensors, to test the legacy reader.

The diffusers -> LDM maps below are the inverse of diffusers' loaders/single_file_utils.py
(convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint, convert_open_clip_checkpoint).
Every file is then loaded back by diffusers' own single-file loader
(`StableDiffusionPipeline.from_single_file(path, config=<tiny folder>, local_files_only=True)`)
and every tensor of every component is checked equal to the folder's.

Why `config=<folder>` and not `original_config=<yaml>`: an LDM yaml has no field for the UNet's or
VAE's GroupNorm group count (the tiny models use 8; diffusers assumes 32, which does not divide
16 channels) and cannot state tiny-sd2's per-block head counts [2, 2, 4] (`num_heads` is one
number, `num_head_channels` gives [2, 4, 4]), so the yaml path cannot build these models.

All weights stay f16, exactly the folder's values. Run from the repo root:
python tools/reference/make_single_file_fixtures.py
"""

import json
import os
import re

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file, save_file

MODELS = os.path.join("tests", "fixtures", "models")
OUT = os.path.join("tests", "fixtures", "single_file")

RESNET_TO_LDM = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
]
UNET_TOP_TO_LDM = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
VAE_ATTN_TO_LDM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def load_component(folder, name):
    sub = os.path.join(folder, name)
    for f in sorted(os.listdir(sub)):
        if f.endswith(".safetensors"):
            return load_file(os.path.join(sub, f))
    raise FileNotFoundError(sub)


def config(folder, name):
    with open(os.path.join(folder, name, "config.json")) as f:
        return json.load(f)


def resnet_to_ldm(rest):
    for new, old in RESNET_TO_LDM:
        if rest.startswith(new + "."):
            return old + rest[len(new) :]
    raise KeyError(rest)


def unet_to_ldm(sd, cfg):
    lpb = cfg["layers_per_block"]
    has_attn = {i: t.startswith("CrossAttn") for i, t in enumerate(cfg["up_block_types"])}
    out = {}
    for key, value in sd.items():
        top = key.rsplit(".", 1)
        if top[0] in UNET_TOP_TO_LDM:
            new = UNET_TOP_TO_LDM[top[0]] + "." + top[1]
        elif m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            b, j, rest = int(m[1]), int(m[2]), m[3]
            new = f"input_blocks.{1 + b * (lpb + 1) + j}.0.{resnet_to_ldm(rest)}"
        elif m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
            b, j, rest = int(m[1]), int(m[2]), m[3]
            new = f"input_blocks.{1 + b * (lpb + 1) + j}.1.{rest}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            b, rest = int(m[1]), m[2]
            new = f"input_blocks.{1 + b * (lpb + 1) + lpb}.0.op.{rest}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
            new = f"middle_block.{2 * int(m[1])}.{resnet_to_ldm(m[2])}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
            new = f"middle_block.1.{m[1]}"
        elif m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            b, j, rest = int(m[1]), int(m[2]), m[3]
            new = f"output_blocks.{b * (lpb + 1) + j}.0.{resnet_to_ldm(rest)}"
        elif m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
            b, j, rest = int(m[1]), int(m[2]), m[3]
            new = f"output_blocks.{b * (lpb + 1) + j}.1.{rest}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            b, rest = int(m[1]), m[2]
            slot = 2 if has_attn[b] else 1
            new = f"output_blocks.{b * (lpb + 1) + lpb}.{slot}.conv.{rest}"
        else:
            raise KeyError(key)
        out["model.diffusion_model." + new] = value
    return out


def vae_to_ldm(sd, cfg, conv_attention):
    n = len(cfg["block_out_channels"])
    out = {}
    for key, value in sd.items():
        new = key.replace("conv_norm_out", "norm_out")
        if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            new = f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            new = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            level = n - 1 - int(m[1])
            new = f"decoder.up.{level}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            new = f"decoder.up.{n - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", key):
            new = f"{m[1]}.mid.attn_1.{VAE_ATTN_TO_LDM[m[2]]}.{m[3]}"
            if conv_attention and m[2] != "group_norm" and m[3] == "weight":
                value = value[:, :, None, None]
        out["first_stage_model." + new] = value
    return out


def strip_text_prefix(sd):
    return {k[len("text_model.") :] if k.startswith("text_model.") else k: v for k, v in sd.items()}


def clip_to_ldm(sd, position_ids_dtype):
    out = {"cond_stage_model.transformer.text_model." + k: v for k, v in strip_text_prefix(sd).items()}
    positions = sd_positions(out)
    out["cond_stage_model.transformer.text_model.embeddings.position_ids"] = (
        torch.arange(positions).unsqueeze(0).to(position_ids_dtype)
    )
    return out


def sd_positions(sd):
    key = next(k for k in sd if k.endswith("position_embedding.weight"))
    return sd[key].shape[0]


def clip_to_open_clip(sd, seed):
    """transformers CLIPTextModel -> OpenCLIP text tower, plus one random last resblock."""
    sd = strip_text_prefix(sd)
    p = "cond_stage_model.model."
    out = {
        p + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
        p + "positional_embedding": sd["embeddings.position_embedding.weight"],
        p + "ln_final.weight": sd["final_layer_norm.weight"],
        p + "ln_final.bias": sd["final_layer_norm.bias"],
    }
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")})
    names = {
        "layer_norm1": "ln_1",
        "layer_norm2": "ln_2",
        "self_attn.out_proj": "attn.out_proj",
        "mlp.fc1": "mlp.c_fc",
        "mlp.fc2": "mlp.c_proj",
    }
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"{p}transformer.resblocks.{i}."
        for new, old in names.items():
            for kind in ("weight", "bias"):
                out[f"{dst}{old}.{kind}"] = sd[f"{src}{new}.{kind}"]
        for kind in ("weight", "bias"):
            parts = [sd[f"{src}self_attn.{x}_proj.{kind}"] for x in "qkv"]
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(parts, dim=0)
    # The extra last block: same shapes as block 0, random values (loaders must drop it).
    g = torch.Generator().manual_seed(seed)
    last = len(layers)
    for key in [k for k in out if k.startswith(f"{p}transformer.resblocks.0.")]:
        value = out[key]
        noise = (torch.randn(value.shape, generator=g) * 0.02).to(value.dtype)
        out[key.replace("resblocks.0.", f"resblocks.{last}.")] = noise
    hidden = sd["final_layer_norm.weight"].shape[0]
    out[p + "text_projection"] = (torch.randn(hidden, hidden, generator=g) * 0.02).half()
    out[p + "logit_scale"] = torch.tensor(4.6052, dtype=torch.float16)
    return out


def convert(name, vae_conv_attention, text):
    folder = os.path.join(MODELS, name)
    sd = {}
    sd.update(unet_to_ldm(load_component(folder, "unet"), config(folder, "unet")))
    sd.update(vae_to_ldm(load_component(folder, "vae"), config(folder, "vae"), vae_conv_attention))
    sd.update(text(load_component(folder, "text_encoder")))
    for k, v in sd.items():
        assert v.dtype in (torch.float16, torch.int64), (k, v.dtype)
    return {k: v.contiguous() for k, v in sd.items()}


def verify(path, folder, variant):
    """Load with diffusers' single-file loader and compare every tensor with the folder's."""
    ref = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32, variant=variant, safety_checker=None)
    pipe = StableDiffusionPipeline.from_single_file(
        path, config=folder, local_files_only=True, torch_dtype=torch.float32, safety_checker=None
    )
    for component in ("unet", "vae", "text_encoder"):
        want = getattr(ref, component).state_dict()
        got = getattr(pipe, component).state_dict()
        assert set(want) == set(got), (component, set(want) ^ set(got))
        for k in want:
            assert torch.equal(want[k], got[k]), (path, component, k)
    assert pipe.scheduler.config.prediction_type == ref.scheduler.config.prediction_type
    print("verified", path, "against", folder, f"({sum(len(getattr(ref, c).state_dict()) for c in ('unet', 'vae', 'text_encoder'))} tensors)")


def legacy_small():
    """A few tensors in torch's legacy (pre-1.6, non-zip) format, with their expected values."""
    g = torch.Generator().manual_seed(7)
    base = torch.randn(6, 4, generator=g)
    tensors = {
        "weight_f16": torch.randn(3, 5, generator=g).half(),
        "weight_f32": torch.randn(2, 3, 4, generator=g),
        "shared_view": base[2:4],  # a view at an offset into a storage shared with `base`
        "base": base,
        "ids": torch.arange(7).unsqueeze(0),
    }
    torch.save({"state_dict": tensors, "global_step": 875000}, os.path.join(OUT, "legacy-small.pt"),
               _use_new_zipfile_serialization=False)
    save_file({k: v.clone().contiguous() for k, v in tensors.items()}, os.path.join(OUT, "legacy-small.safetensors"))


def main():
    os.makedirs(OUT, exist_ok=True)
    sd1 = convert("tiny-sd1", True, lambda te: clip_to_ldm(te, torch.int64))
    save_file(sd1, os.path.join(OUT, "tiny-sd1.safetensors"), metadata={"format": "pt"})
    sd1_ckpt = dict(sd1)
    key = "cond_stage_model.transformer.text_model.embeddings.position_ids"
    sd1_ckpt[key] = sd1_ckpt[key].half()
    torch.save({"state_dict": sd1_ckpt, "global_step": 1}, os.path.join(OUT, "tiny-sd1.ckpt"))
    sd2 = convert("tiny-sd2", False, lambda te: clip_to_open_clip(te, 21))
    save_file(sd2, os.path.join(OUT, "tiny-sd2.safetensors"), metadata={"format": "pt"})
    legacy_small()

    verify(os.path.join(OUT, "tiny-sd1.safetensors"), os.path.join(MODELS, "tiny-sd1"), None)
    verify(os.path.join(OUT, "tiny-sd1.ckpt"), os.path.join(MODELS, "tiny-sd1"), None)
    verify(os.path.join(OUT, "tiny-sd2.safetensors"), os.path.join(MODELS, "tiny-sd2"), "fp16")


if __name__ == "__main__":
    main()
