"""Build the tiny random-weight Stable Diffusion pipelines every parity fixture is made from.

Writes diffusers folders tests/fixtures/models/tiny-sd1 and tests/fixtures/models/tiny-sd2:
- tiny-sd1: SD1-like (quick_gelu CLIP, conv proj_in/proj_out, epsilon, pad with <|endoftext|>),
  text encoder stored in the transformers-4 key layout (`text_model.` prefix) and the classic
  vocab.json + merges.txt tokenizer, f16 weights.
- tiny-sd2: SD2-like (gelu CLIP, linear projection, per-block head counts, upcast attention,
  v-prediction, pad with "!" = id 0), text encoder in the transformers-5 layout (no prefix),
  tokenizer as transformers 5 saves it (tokenizer.json only),
  UNet stored only as the `fp16` variant file.

Weights are random with noise added to every tensor (default init leaves some layers inert, which
hides bugs) and rounded to f16 before saving, so the reference and Pigment read identical values.
The token embedding is drawn from a few levels so that git compresses it (it is the largest tensor).

Run from the repo root: python tools/reference/make_tiny_models.py
"""

import gzip
import json
import os
import shutil
import tempfile

import open_clip
import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

OUT = os.path.join("tests", "fixtures", "models")


def write_clip_vocab(folder):
    """vocab.json + merges.txt from OpenAI's BPE file shipped in open_clip (REFERENCE-NOTES.md)."""
    path = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    merges = gzip.open(path).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_unicode = [chr(c) for c in cs]
    vocab = byte_unicode + [v + "</w>" for v in byte_unicode] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({tok: i for i, tok in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.write("\n".join(" ".join(m) for m in merges) + "\n")


def perturb(module, seed):
    """Noise on every parameter so that every layer matters; then round through f16."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("token_embedding.weight"):
                levels = torch.randint(-3, 4, p.shape, generator=g).float() * 0.02
                p.copy_(levels)
                continue
            scale = 0.05 if p.dim() == 1 else 0.02
            p.add_(torch.randn(p.shape, generator=g) * scale)
            p.copy_(p.half().float())


def text_encoder(act, seed):
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=32,
        pad_token_id=1,
        bos_token_id=49406,
        eos_token_id=49407,
    )
    model = CLIPTextModel(cfg)
    perturb(model, seed)
    return model


def vae(seed):
    torch.manual_seed(seed)
    model = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[16, 32, 32, 32],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=0.18215,
    )
    perturb(model, seed)
    return model


def unet_sd1(seed):
    torch.manual_seed(seed)
    model = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=[16, 32, 32],
        down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        layers_per_block=2,
        attention_head_dim=4,
        cross_attention_dim=32,
        norm_num_groups=8,
    )
    perturb(model, seed)
    return model


def unet_sd2(seed):
    torch.manual_seed(seed)
    model = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=[16, 32, 32],
        down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        layers_per_block=1,
        attention_head_dim=[2, 2, 4],
        use_linear_projection=True,
        upcast_attention=True,
        cross_attention_dim=32,
        norm_num_groups=8,
    )
    perturb(model, seed)
    return model


def scheduler(prediction_type):
    return PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


def write_classic_tokenizer(folder, pad_token):
    """The transformers-4 tokenizer layout most real SD folders have: vocab.json + merges.txt."""
    shutil.rmtree(folder)
    write_clip_vocab(folder)
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad_token,
    }
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({**special, "model_max_length": 77, "tokenizer_class": "CLIPTokenizer"}, f, indent=2)


def build(name, te, unet, vae_model, prediction_type, pad_token, prefixed_text_keys, unet_variant, classic_tokenizer):
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        write_clip_vocab(tmp)
        tok = CLIPTokenizer(
            os.path.join(tmp, "vocab.json"),
            os.path.join(tmp, "merges.txt"),
            model_max_length=77,
            pad_token=pad_token,
        )
    pipe = StableDiffusionPipeline(
        vae=vae_model.half(),
        text_encoder=te.half(),
        tokenizer=tok,
        unet=unet.half(),
        scheduler=scheduler(prediction_type),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    te_file = os.path.join(folder, "text_encoder", "model.safetensors")
    tensors = load_file(te_file)
    has_prefix = all(k.startswith("text_model.") for k in tensors)
    if prefixed_text_keys and not has_prefix:
        tensors = {"text_model." + k: v for k, v in tensors.items()}
    if not prefixed_text_keys and has_prefix:
        tensors = {k[len("text_model.") :]: v for k, v in tensors.items()}
    save_file(tensors, te_file, metadata={"format": "pt"})
    if classic_tokenizer:
        write_classic_tokenizer(os.path.join(folder, "tokenizer"), pad_token)
    if unet_variant:
        src = os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors")
        os.rename(src, src.replace(".safetensors", f".{unet_variant}.safetensors"))
    # Sanity: the reference loads what we wrote, in f32, and tokenizes as CLIP does.
    pipe = StableDiffusionPipeline.from_pretrained(
        folder, torch_dtype=torch.float32, variant=unet_variant, safety_checker=None
    )
    ids = pipe.tokenizer("a photograph of an astronaut riding a horse").input_ids
    assert ids == [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407], ids
    assert pipe.tokenizer.pad_token_id == (49407 if pad_token == "<|endoftext|>" else 0)
    print("wrote", folder)


def main():
    build("tiny-sd1", text_encoder("quick_gelu", 1), unet_sd1(2), vae(3), "epsilon", "<|endoftext|>", True, None, True)
    build("tiny-sd2", text_encoder("gelu", 11), unet_sd2(12), vae(13), "v_prediction", "!", False, "fp16", False)


if __name__ == "__main__":
    main()
