"""LoRA fixtures for crates/pigment/tests/lora.rs: random rank-4 LoRAs for tests/fixtures/models/tiny-sd1
in the layouts found in the wild, and txt2img references of the pipeline whose weights were
changed by the definition W += scale * (alpha / rank) * up @ down (Hu et al. 2021; for a conv,
up[out, r] @ down[r, in*kh*kw] reshaped to the weight, as kohya and diffusers fuse it).

The reference applies that formula in torch by module name rather than through diffusers'
load_lora_weights (REFERENCE-NOTES: under transformers 5 its text-encoder path warns and is
not a trustworthy reference). The module list below is written once and used both to name the
file keys (kohya: dots -> underscores, `lora_unet_` / `lora_te_`; PEFT: `unet.` / `text_encoder.`,
lora_A / lora_B; legacy: attention-processor `to_q_lora.down.weight`) and to change the weights.

Writes tests/fixtures/lora/{kohya,peft,legacy,sd2_shaped}.safetensors, cases.json and
outputs.safetensors (`<id>.latents`, `<id>.image` uint8 HxWx3).

Run from the repo root after make_tiny_models.py: python tools/reference/make_lora_fixtures.py
"""

import json
import os

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
from safetensors.torch import save_file

MODEL = os.path.join("tests", "fixtures", "models", "tiny-sd1")
OUT = os.path.join("tests", "fixtures", "lora")
RANK = 4

# (component, module) pairs; text-encoder modules at transformers' full `text_model.` path.
ATTN = ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
        "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0"]
TE = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2"]
KOHYA_MODULES = (
    [("unet", f"down_blocks.0.attentions.0.transformer_blocks.0.{m}") for m in ATTN]
    + [("unet", "mid_block.attentions.0.transformer_blocks.0.attn1.to_q"),
       ("unet", "down_blocks.0.attentions.0.proj_in"),          # 1x1 conv
       ("unet", "down_blocks.0.resnets.0.conv1"),               # 3x3 conv (LoCon)
       ("unet", "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj")]
    + [("te", f"text_model.encoder.layers.0.{m}") for m in TE]
)
PEFT_MODULES = (
    [("unet", f"up_blocks.1.attentions.0.transformer_blocks.0.{m}") for m in ATTN]
    + [("unet", "mid_block.attentions.0.transformer_blocks.0.attn1.to_q"),  # also in kohya: sums
       ("unet", "up_blocks.1.attentions.0.proj_out"),
       ("unet", "up_blocks.0.resnets.1.conv2"),
       ("unet", "mid_block.attentions.0.transformer_blocks.0.ff.net.2")]
    + [("te", f"text_model.encoder.layers.1.{m}") for m in TE]
)
LEGACY_MODULES = (
    [("unet", f"down_blocks.1.attentions.1.transformer_blocks.0.{m}") for m in ATTN]
    + [("te", f"text_model.encoder.layers.2.self_attn.{m}") for m in ["q_proj", "v_proj"]]
)

PROMPT = "a red star above a small green square"


def load_pipe():
    pipe = StableDiffusionPipeline.from_pretrained(MODEL, torch_dtype=torch.float32, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    return pipe


def module_of(pipe, component, name):
    if component == "unet":
        return pipe.unet.get_submodule(name)
    # transformers 5's CLIPTextModel has no `text_model` level; LoRA files still name it.
    return pipe.text_encoder.get_submodule(name.removeprefix("text_model."))


def random_lora(pipe, modules, gen, with_alpha):
    """{(component, module): (down, up, alpha or None)} with shapes from the model."""
    out = {}
    for i, (component, name) in enumerate(modules):
        w = module_of(pipe, component, name).weight
        if w.dim() == 4:
            down = torch.randn(RANK, w.shape[1], w.shape[2], w.shape[3], generator=gen) * 0.3
            up = torch.randn(w.shape[0], RANK, 1, 1, generator=gen) * 0.3
        else:
            down = torch.randn(RANK, w.shape[1], generator=gen) * 0.3
            up = torch.randn(w.shape[0], RANK, generator=gen) * 0.3
        # Random alpha, except every third module (missing alpha means alpha = rank).
        alpha = float(torch.rand(1, generator=gen) * 7 + 1) if with_alpha and i % 3 else None
        out[(component, name)] = (down, up, alpha)
    return out


def kohya_keys(lora):
    t = {}
    for (component, name), (down, up, alpha) in lora.items():
        stem = ("lora_unet_" if component == "unet" else "lora_te_") + name.replace(".", "_")
        t[stem + ".lora_down.weight"] = down
        t[stem + ".lora_up.weight"] = up
        if alpha is not None:
            t[stem + ".alpha"] = torch.tensor(alpha)
    # LDM-named keys of an old converter: Pigment must report them, not apply or drop them.
    t["lora_unet_input_blocks_1_1_proj_in.lora_down.weight"] = torch.zeros(RANK, 16, 1, 1)
    t["lora_unet_input_blocks_1_1_proj_in.lora_up.weight"] = torch.zeros(16, RANK, 1, 1)
    return t


def peft_keys(lora):
    t = {}
    for (component, name), (down, up, alpha) in lora.items():
        stem = ("unet." if component == "unet" else "text_encoder.") + name
        t[stem + ".lora_A.weight"] = down
        t[stem + ".lora_B.weight"] = up
        if alpha is not None:
            t[stem + ".alpha"] = torch.tensor(alpha)
    return t


def legacy_keys(lora):
    t = {}
    for (component, name), (down, up, alpha) in lora.items():
        assert alpha is None
        if component == "unet":
            # `...attn1.to_q` -> `...attn1.processor.to_q_lora`; `to_out.0` -> `to_out_lora`.
            cut = name.index(".attn") + len(".attn1")
            attn, proj = name[:cut], name[cut + 1:].replace("to_out.0", "to_out")
            stem = f"unet.{attn}.processor.{proj}_lora"
            t[stem + ".down.weight"] = down
            t[stem + ".up.weight"] = up
        else:
            stem = f"text_encoder.{name}.lora_linear_layer"
            t[stem + ".down.weight"] = down
            t[stem + ".up.weight"] = up
    return t


def apply(pipe, lora, scale):
    """The definition: W += scale * (alpha / rank) * (up @ down) reshaped to W."""
    with torch.no_grad():
        for (component, name), (down, up, alpha) in lora.items():
            w = module_of(pipe, component, name).weight
            rank = down.shape[0]
            factor = scale * (alpha if alpha is not None else rank) / rank
            delta = up.reshape(up.shape[0], -1) @ down.reshape(rank, -1)
            w += factor * delta.reshape(w.shape)


def run(pipe, seed):
    with torch.no_grad():
        latents = pipe(prompt=[PROMPT], num_inference_steps=4, guidance_scale=7.5, width=64, height=64,
                       generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
        image = pipe.image_processor.postprocess(image, output_type="np")
    return latents.contiguous(), torch.from_numpy((image * 255).round().astype(np.uint8)).contiguous()


def main():
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator("cpu").manual_seed(1234)
    pipe = load_pipe()
    loras = {
        "kohya": random_lora(pipe, KOHYA_MODULES, gen, True),
        "peft": random_lora(pipe, PEFT_MODULES, gen, True),
        "legacy": random_lora(pipe, LEGACY_MODULES, gen, False),
    }
    save_file(kohya_keys(loras["kohya"]), os.path.join(OUT, "kohya.safetensors"))
    save_file(peft_keys(loras["peft"]), os.path.join(OUT, "peft.safetensors"))
    save_file(legacy_keys(loras["legacy"]), os.path.join(OUT, "legacy.safetensors"))
    # An SD2 LoRA's cross-attention key projection reads 1024-wide text embeddings, SD1 768 (here 32).
    sd2 = {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight":
            torch.randn(RANK, 1024, generator=gen),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight":
            torch.randn(16, RANK, generator=gen),
    }
    save_file(sd2, os.path.join(OUT, "sd2_shaped.safetensors"))

    cases = [
        dict(id="kohya", loras=[["kohya.safetensors", 0.8]]),
        dict(id="peft", loras=[["peft.safetensors", 1.0]]),
        dict(id="legacy", loras=[["legacy.safetensors", 1.0]]),
        dict(id="two", loras=[["kohya.safetensors", 0.8], ["peft.safetensors", -0.5]]),
        dict(id="base", loras=[]),
    ]
    tensors = {}
    for c in cases:
        c.update(prompt=PROMPT, steps=4, cfg=7.5, seed=42, width=64, height=64, sampler="euler")
        pipe = load_pipe()
        for file, scale in c["loras"]:
            apply(pipe, loras[file.split(".")[0]], scale)
        latents, image = run(pipe, c["seed"])
        tensors[c["id"] + ".latents"] = latents
        tensors[c["id"] + ".image"] = image
        print(c["id"], float(latents.abs().mean()))
    save_file(tensors, os.path.join(OUT, "outputs.safetensors"))
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)


if __name__ == "__main__":
    main()
