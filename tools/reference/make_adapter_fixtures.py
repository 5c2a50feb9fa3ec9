"""Adapter fixtures for crates/pigment/tests/adapters_*.rs and crates/pigment-cli/tests/adapters.rs,
on tests/fixtures/models/tiny-sd1 (run make_tiny_models.py and make_lora_fixtures.py first).

1. LCM-LoRA: a random LoRA in the key layout of the published LCM-LoRAs (kohya names,
   `lora_unet_<module>.lora_down.weight` / `.lora_up.weight` / `.alpha`) on every module an
   LCM-LoRA adapts: attention projections, proj_in / proj_out, the feed-forwards, the resnets'
   convs (3x3: LoCon) and time_emb_proj, the down/upsampler convs. Loaded with diffusers'
   `load_lora_weights` (PEFT backend) and run with `LCMScheduler`, 4 steps, guidance 1.5.
2. A hypernetwork in AUTOMATIC1111's file layout (what `Hypernetwork.save` in
   modules/hypernetworks/hypernetwork.py of stable-diffusion-webui writes with torch.save:
   `{width: (state_dict_k, state_dict_v), 'layer_structure': ..., 'activation_func': ...}`).
   The reference is a PORT of that file's `HypernetworkModule.forward`
   (`x + linear(x) * multiplier`, linear = Sequential of Linear / activation / LayerNorm /
   Dropout built from the metadata, eval mode so dropout is off) and of `apply_hypernetworks`
   (context_k = h_k(context), context_v = h_v(context) for the context's width, hypernetworks
   chained), installed as a diffusers attention processor on every UNet attention (A1111 patches
   the LDM CrossAttention.forward, so self-attention, whose context is its own input, is
   included). Strength 0.7.
3. A copy of tests/fixtures/lora/kohya.safetensors pickled with torch.save (`style.pt`), to
   check LoRAs in .pt files and `<lora:style:0.8>` against tests/fixtures/lora's `kohya` case.

5. LoHa (LyCORIS `hada_w1_a`, ...): `loras/loha.safetensors`, the reference applying A1111's
   network_hada.py definition to the weights in torch (diffusers does not load LoHa files).
4. Bad input: `loras/rank_mismatch.safetensors` (up and down ranks differ) and
   `hypernetworks/sd2_only.pt` (only a 1024-wide MLP pair: made for SD2).

Writes tests/fixtures/adapters/{loras/{lcm.safetensors, style.pt, rank_mismatch.safetensors,
loha.safetensors},
hypernetworks/{sketch.pt, sd2_only.pt}, cases.json, outputs.safetensors}.

Run from the repo root: python tools/reference/make_adapter_fixtures.py
"""

import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import EulerDiscreteScheduler, LCMScheduler, StableDiffusionPipeline
from safetensors.torch import load_file, save_file

MODEL = os.path.join("tests", "fixtures", "models", "tiny-sd1")
OUT = os.path.join("tests", "fixtures", "adapters")
PROMPT = "a red star above a small green square"

# Suffixes of the modules the LCM-LoRA training script (diffusers'
# examples/consistency_distillation/train_lcm_distill_lora_sd_wds.py) adapts.
LCM_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
               "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj"]
LCM_RANK = 4
LOHA_RANK = 2
LOHA_SCALE = 0.9
LOHA_MODULES = ["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
                "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v",
                "mid_block.attentions.0.proj_in",  # 1x1 conv
                "up_blocks.1.resnets.0.conv1"]  # 3x3 conv


def load_pipe(scheduler):
    pipe = StableDiffusionPipeline.from_pretrained(MODEL, torch_dtype=torch.float32, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = scheduler.from_config(pipe.scheduler.config)
    return pipe


def run(pipe, seed, steps, cfg):
    with torch.no_grad():
        latents = pipe(prompt=[PROMPT], num_inference_steps=steps, guidance_scale=cfg, width=64, height=64,
                       generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
        image = pipe.image_processor.postprocess(image, output_type="np")
    return latents.contiguous(), torch.from_numpy((image * 255).round().astype(np.uint8)).contiguous()


def lcm_lora(unet, gen):
    t = {}
    for name, module in unet.named_modules():
        if not any(name == s or name.endswith("." + s) for s in LCM_TARGETS):
            continue
        if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        w = module.weight
        stem = "lora_unet_" + name.replace(".", "_")
        if w.dim() == 4:
            t[stem + ".lora_down.weight"] = torch.randn(LCM_RANK, w.shape[1], w.shape[2], w.shape[3], generator=gen) * 0.2
            t[stem + ".lora_up.weight"] = torch.randn(w.shape[0], LCM_RANK, 1, 1, generator=gen) * 0.2
        else:
            t[stem + ".lora_down.weight"] = torch.randn(LCM_RANK, w.shape[1], generator=gen) * 0.2
            t[stem + ".lora_up.weight"] = torch.randn(w.shape[0], LCM_RANK, generator=gen) * 0.2
        t[stem + ".alpha"] = torch.tensor(2.0)
    return t


# ---- Port of AUTOMATIC1111 stable-diffusion-webui modules/hypernetworks/hypernetwork.py ----

ACTIVATIONS = {"linear": torch.nn.Identity, "relu": torch.nn.ReLU, "leakyrelu": torch.nn.LeakyReLU,
               "elu": torch.nn.ELU, "swish": torch.nn.Hardswish, "tanh": torch.nn.Tanh,
               "sigmoid": torch.nn.Sigmoid}


class HypernetworkModule(torch.nn.Module):
    """HypernetworkModule of hypernetwork.py (the layer list and forward; init replaced by the
    random weights below)."""

    def __init__(self, dim, layer_structure, activation_func, add_layer_norm, activate_output,
                 dropout_structure):
        super().__init__()
        linears = []
        for i in range(len(layer_structure) - 1):
            linears.append(torch.nn.Linear(int(dim * layer_structure[i]), int(dim * layer_structure[i + 1])))
            if activation_func == "linear" or activation_func is None or (
                    i >= len(layer_structure) - 2 and not activate_output):
                pass
            else:
                linears.append(ACTIVATIONS[activation_func]())
            if add_layer_norm:
                linears.append(torch.nn.LayerNorm(int(dim * layer_structure[i + 1])))
            if dropout_structure is not None and dropout_structure[i + 1] > 0:
                linears.append(torch.nn.Dropout(p=dropout_structure[i + 1]))
        self.linear = torch.nn.Sequential(*linears)
        self.multiplier = 1.0

    def forward(self, x):
        return x + self.linear(x) * (self.multiplier if not self.training else 1)


def apply_hypernetworks(hypernetworks, context):
    """apply_hypernetworks / apply_single_hypernetwork of hypernetwork.py."""
    context_k = context
    context_v = context
    for layers in hypernetworks:
        pair = layers.get(context_k.shape[2], None)
        if pair is None:
            continue
        context_k = pair[0](context_k)
        context_v = pair[1](context_v)
    return context_k, context_v


class HypernetworkAttnProcessor:
    """diffusers' AttnProcessor2_0 with the keys and values read from the hypernetwork-transformed
    contexts, as A1111's patched CrossAttention.forward does."""

    def __init__(self, hypernetworks):
        self.hypernetworks = hypernetworks

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        context_k, context_v = apply_hypernetworks(self.hypernetworks, context)
        b = hidden_states.shape[0]
        q = attn.to_q(hidden_states)
        k = attn.to_k(context_k)
        v = attn.to_v(context_v)
        head_dim = q.shape[-1] // attn.heads
        q, k, v = (t.view(b, -1, attn.heads, head_dim).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(b, -1, attn.heads * head_dim)
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor


def random_hypernetwork(gen, sizes, layer_structure=(1, 2, 1)):
    """A hypernetwork as A1111's Hypernetwork.save writes it, with noticeable random weights."""
    meta = dict(layer_structure=list(layer_structure), activation_func="relu", is_layer_norm=True,
                weight_initialization="Normal", use_dropout=True, dropout_structure=[0, 0.3, 0],
                activate_output=False, last_layer_dropout=False)
    layers = {}
    state = {}
    for size in sizes:
        pair = []
        for _ in range(2):
            m = HypernetworkModule(size, meta["layer_structure"], meta["activation_func"], meta["is_layer_norm"],
                                   meta["activate_output"], meta["dropout_structure"])
            with torch.no_grad():
                for pname, p in m.named_parameters():
                    noise = torch.randn(p.shape, generator=gen)
                    if p.dim() == 2:
                        p.copy_(noise * 0.3)
                    elif pname.endswith("weight"):  # a LayerNorm's gain
                        p.copy_(1.0 + noise * 0.2)
                    else:
                        p.copy_(noise * 0.2)
            m.eval()
            pair.append(m)
        layers[size] = tuple(pair)
        state[size] = (pair[0].state_dict(), pair[1].state_dict())
    state.update(step=0, name="sketch", sd_checkpoint=None, sd_checkpoint_name=None, **meta)
    return layers, state


def main():
    os.makedirs(os.path.join(OUT, "loras"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "hypernetworks"), exist_ok=True)
    gen = torch.Generator("cpu").manual_seed(2024)
    tensors = {}
    cases = []

    # 1. LCM-LoRA through diffusers' own loader, LCM sampler, 4 steps, guidance 1.5.
    pipe = load_pipe(LCMScheduler)
    lcm = lcm_lora(pipe.unet, gen)
    lcm_path = os.path.join(OUT, "loras", "lcm.safetensors")
    save_file(lcm, lcm_path)
    pipe.load_lora_weights(os.path.join(OUT, "loras"), weight_name="lcm.safetensors", adapter_name="lcm")
    pipe.set_adapters(["lcm"], adapter_weights=[1.0])
    case = dict(id="lcm_lora", lora=["lcm.safetensors", 1.0], sampler="lcm", steps=4, cfg=1.5, seed=7)
    latents, image = run(pipe, case["seed"], case["steps"], case["cfg"])
    tensors["lcm_lora.latents"], tensors["lcm_lora.image"] = latents, image
    cases.append(case)
    # The same run without the LoRA, so the test can show the LoRA changed something.
    base = load_pipe(LCMScheduler)
    tensors["lcm_base.latents"], _ = run(base, case["seed"], case["steps"], case["cfg"])
    print("lcm", float((tensors["lcm_lora.latents"] - tensors["lcm_base.latents"]).abs().max()))

    # 2. Hypernetwork at strength 0.7 (widths 16 and 32: self-attention of both block widths and
    # the 32-wide cross-attention context).
    layers, state = random_hypernetwork(gen, [16, 32])
    torch.save(state, os.path.join(OUT, "hypernetworks", "sketch.pt"))
    for pair in layers.values():
        for m in pair:
            m.multiplier = 0.7
    pipe = load_pipe(EulerDiscreteScheduler)
    pipe.unet.set_attn_processor(HypernetworkAttnProcessor([layers]))
    case = dict(id="hypernet", hypernetwork=["sketch", 0.7], sampler="euler", steps=4, cfg=7.5, seed=42)
    tensors["hypernet.latents"], tensors["hypernet.image"] = run(pipe, case["seed"], case["steps"], case["cfg"])
    cases.append(case)
    # One hypernetwork module's forward on known input, for a unit-level check.
    x = torch.randn(2, 3, 32, generator=gen)
    tensors["hypernet_module.input"] = x
    with torch.no_grad():
        tensors["hypernet_module.k"] = layers[32][0](x)
        tensors["hypernet_module.v"] = layers[32][1](x)

    # 3. The kohya LoRA of tests/fixtures/lora pickled as a .pt.
    kohya = load_file(os.path.join("tests", "fixtures", "lora", "kohya.safetensors"))
    torch.save(kohya, os.path.join(OUT, "loras", "style.pt"))

    # 4. Bad input: a LoRA whose up factor's rank (3) differs from its down factor's (4), and a
    # hypernetwork made for SD2 (only 1024-wide MLPs), which fits no width of an SD1 model.
    bad = torch.Generator("cpu").manual_seed(99)
    stem = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    save_file({stem + ".lora_down.weight": torch.randn(4, 32, generator=bad),
               stem + ".lora_up.weight": torch.randn(16, 3, generator=bad)},
              os.path.join(OUT, "loras", "rank_mismatch.safetensors"))
    _, sd2_state = random_hypernetwork(bad, [1024], layer_structure=(1, 0.01, 1))  # kept small
    torch.save(sd2_state, os.path.join(OUT, "hypernetworks", "sd2_only.pt"))

    # 5. LoHa (LyCORIS): a random LoHa in kohya/LyCORIS names on attention projections, a 1x1 and
    # a 3x3 conv; the reference applies A1111's definition (extensions-builtin/Lora/network_hada.py:
    # updown = (w1a @ w1b) * (w2a @ w2b) reshaped to the weight, times multiplier * alpha / dim
    # with dim = w1b.shape[0]) to the weights in torch, then runs the ordinary pipeline.
    lg = torch.Generator("cpu").manual_seed(5150)
    pipe = load_pipe(EulerDiscreteScheduler)
    loha = {}
    for i, name in enumerate(LOHA_MODULES):
        w = pipe.unet.get_submodule(name).weight
        cols = w[0].numel()
        f = {k: torch.randn(shape, generator=lg) * 0.3 for k, shape in
             [("hada_w1_a", (w.shape[0], LOHA_RANK)), ("hada_w1_b", (LOHA_RANK, cols)),
              ("hada_w2_a", (w.shape[0], LOHA_RANK)), ("hada_w2_b", (LOHA_RANK, cols))]}
        stem = "lora_unet_" + name.replace(".", "_")
        for k, v in f.items():
            loha[f"{stem}.{k}"] = v.reshape(v.shape[0], *w.shape[1:]) if k.endswith("_b") and w.dim() == 4 else v
        alpha = 2.0 if i % 2 else None  # missing alpha: scale 1
        if alpha is not None:
            loha[stem + ".alpha"] = torch.tensor(alpha)
        scale = LOHA_SCALE * (alpha / LOHA_RANK if alpha is not None else 1.0)
        with torch.no_grad():
            updown = (f["hada_w1_a"] @ f["hada_w1_b"]) * (f["hada_w2_a"] @ f["hada_w2_b"])
            w += scale * updown.reshape(w.shape)
    save_file(loha, os.path.join(OUT, "loras", "loha.safetensors"))
    case = dict(id="loha", lora=["loha.safetensors", LOHA_SCALE], sampler="euler", steps=4, cfg=7.5, seed=42)
    tensors["loha.latents"], tensors["loha.image"] = run(pipe, case["seed"], case["steps"], case["cfg"])
    cases.append(case)

    for c in cases:
        c.update(prompt=PROMPT, width=64, height=64)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, "outputs.safetensors"))
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
