"""Build a full-size Stable Diffusion pipeline (SD1.5 or SD2.1 architecture) with random weights,
for memory and speed measurements without downloading anything.

    python tools/bench/make_random_sd.py sd15 OUT_DIR [--fp16]
    python tools/bench/make_random_sd.py sd21 OUT_DIR [--fp16]

Configs are those of the public v1-5 / 2-1 diffusers folders (UNet, VAE, CLIP text), written out
here because the hub is unreachable.
"""

import argparse

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "reference"))
from make_tiny_models import write_clip_vocab  # noqa: E402


def build(kind):
    sd2 = kind == "sd21"
    text = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=1024 if sd2 else 768,
        intermediate_size=4096 if sd2 else 3072,
        num_hidden_layers=23 if sd2 else 12,
        num_attention_heads=16 if sd2 else 12,
        max_position_embeddings=77,
        hidden_act="gelu" if sd2 else "quick_gelu",
        projection_dim=512 if sd2 else 768,
    )
    unet = UNet2DConditionModel(
        sample_size=96 if sd2 else 64,
        cross_attention_dim=1024 if sd2 else 768,
        attention_head_dim=[5, 10, 20, 20] if sd2 else 8,
        use_linear_projection=sd2,
        upcast_attention=sd2,
    )
    vae = AutoencoderKL(
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[128, 256, 512, 512],
        layers_per_block=2,
        sample_size=768 if sd2 else 512,
    )
    sched = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
        set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction" if sd2 else "epsilon",
    )
    return CLIPTextModel(text), unet, vae, sched


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["sd15", "sd21"])
    ap.add_argument("out")
    ap.add_argument("--fp16", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(0)
    te, unet, vae, sched = build(a.kind)
    with tempfile.TemporaryDirectory() as tmp:
        write_clip_vocab(tmp)
        tok = CLIPTokenizer(os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt"),
                            model_max_length=77, pad_token="!" if a.kind == "sd21" else "<|endoftext|>")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if a.fp16:
        pipe = pipe.to(torch.float16)
    pipe.save_pretrained(a.out, safe_serialization=True)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
