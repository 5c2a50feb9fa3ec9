"""Whole text-to-image runs of diffusers' StableDiffusionPipeline on the tiny models, for every
sampler Pigment offers, as parity fixtures for crates/pigment/tests/txt2img_parity.rs.

Writes tests/fixtures/txt2img/cases.json (the request of each case) and
tests/fixtures/txt2img/outputs.safetensors (per case: `<id>.image` uint8 HxWx3 per image, as the
PIL images diffusers returns, and `<id>.latents` the final latents before VAE decoding).

Run from the repo root after make_tiny_models.py: python tools/reference/make_txt2img_fixtures.py
"""

import json
import os
import sys

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_common import schedulers  # noqa: E402

MODELS = os.path.join("tests", "fixtures", "models")
OUT = os.path.join("tests", "fixtures", "txt2img")

SAMPLERS = schedulers("ddpm", "ddim", "euler", "euler_a", "heun", "dpmpp_2m", "dpmpp_2m_sde", "lcm")
# diffusers 0.42's EulerAncestralDiscreteScheduler has no Karras option (it ignores the key).
KARRAS = ["euler", "heun", "dpmpp_2m", "dpmpp_2m_sde"]


def cases():
    out = []
    for model in ["tiny-sd1", "tiny-sd2"]:
        for sampler in SAMPLERS:
            out.append(dict(model=model, sampler=sampler, karras=False))
        for sampler in KARRAS:
            out.append(dict(model=model, sampler=sampler, karras=True))
    base = dict(model="tiny-sd1", sampler="euler", karras=False)
    out += [
        dict(base, negative="blurry, ugly", seed=7),
        dict(base, batch=2, seed=3, prompt="two blue circles"),
        dict(base, clip_skip=2),
        dict(base, cfg=1.0),
        dict(base, width=128, height=64, sampler="dpmpp_2m"),
        dict(base, sampler="ddim", eta=0.5),
        dict(model="tiny-sd2", sampler="euler_a", karras=False, negative="text", width=64, height=96),
        # Guidance rescale (Lin et al. 2023) as diffusers' rescale_noise_cfg, on epsilon and on
        # v-prediction (the case the paper made it for).
        dict(base, guidance_rescale=0.7, cfg=9.0),
        dict(model="tiny-sd2", sampler="ddim", karras=False, guidance_rescale=0.5, seed=11),
    ]
    defaults = dict(prompt="a red star above a small green square", negative="", steps=5, cfg=7.5,
                    seed=42, width=64, height=64, batch=1, clip_skip=1, eta=0.0,
                    guidance_rescale=0.0)
    result = []
    for i, c in enumerate(out):
        c = {**defaults, **c}
        c["id"] = f"case{i:02d}"
        result.append(c)
    return result


def main():
    os.makedirs(OUT, exist_ok=True)
    pipes = {}
    for name, variant in [("tiny-sd1", None), ("tiny-sd2", "fp16")]:
        pipe = StableDiffusionPipeline.from_pretrained(
            os.path.join(MODELS, name), torch_dtype=torch.float32, variant=variant, safety_checker=None
        )
        pipe.set_progress_bar_config(disable=True)
        pipes[name] = (pipe, dict(pipe.scheduler.config))
    tensors = {}
    all_cases = cases()
    for c in all_cases:
        pipe, base_config = pipes[c["model"]]
        cls, extra = SAMPLERS[c["sampler"]]
        kwargs = dict(extra)
        if c["karras"]:
            kwargs["use_karras_sigmas"] = True
        # Build from the pipeline's ORIGINAL config each time (REFERENCE-NOTES: keys leak otherwise).
        pipe.scheduler = cls.from_config(base_config, **kwargs)
        call = dict(
            prompt=[c["prompt"]],
            negative_prompt=[c["negative"]] if c["negative"] else None,
            num_inference_steps=c["steps"],
            guidance_scale=c["cfg"],
            guidance_rescale=c["guidance_rescale"],
            width=c["width"],
            height=c["height"],
            num_images_per_prompt=c["batch"],
            generator=torch.Generator("cpu").manual_seed(c["seed"]),
            output_type="latent",
        )
        if c["clip_skip"] > 1:
            # diffusers' own clip_skip path reaches for `text_encoder.text_model`, which
            # transformers 5 removed; compute the same thing (penultimate-or-earlier hidden state
            # through the final layer norm, encode_prompt's formula) and pass the embeddings in.
            embeds = []
            for text in [c["prompt"], c["negative"]]:
                ids = pipe.tokenizer(text, padding="max_length", max_length=77, truncation=True,
                                     return_tensors="pt").input_ids
                with torch.no_grad():
                    out = pipe.text_encoder(ids, output_hidden_states=True)
                    hidden = out.hidden_states[-c["clip_skip"]]
                    embeds.append(pipe.text_encoder.final_layer_norm(hidden))
            call.pop("prompt")
            call.pop("negative_prompt")
            call["prompt_embeds"], call["negative_prompt_embeds"] = embeds
        if c["sampler"] == "ddim":
            call["eta"] = c["eta"]
        with torch.no_grad():
            latents = pipe(**call).images
            image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
            image = pipe.image_processor.postprocess(image, output_type="np")
        tensors[c["id"] + ".latents"] = latents.contiguous()
        tensors[c["id"] + ".image"] = torch.from_numpy((image * 255).round().astype(np.uint8)).contiguous()
        print(c["id"], c["model"], c["sampler"], "karras" if c["karras"] else "", float(latents.abs().mean()))
    save_file(tensors, os.path.join(OUT, "outputs.safetensors"))
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(all_cases, f, indent=1)


if __name__ == "__main__":
    main()
