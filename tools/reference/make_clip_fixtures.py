"""CLIP dual-encoder references from transformers (CLIPModel) on a tiny random model.

Writes tests/fixtures/vision/tiny-clip/{config.json,model.safetensors} and
tests/fixtures/vision/clip_reference.safetensors, checked by
crates/pigment/tests/vision_parity.rs: the vision tower's hidden states and pooled output, the
text and image features (EOS-token pooling and projections), logits_per_image, the symmetric
contrastive loss (return_loss=True) and its gradient for every parameter (`grad.NAME`; the
attention projections' show whether gradients flow through the softmax). Every weight gets a little noise so that layer norms and biases matter.

Run from the repository root: python tools/reference/make_clip_fixtures.py
"""

import json
import os

import torch
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel

OUT = os.path.join("tests", "fixtures", "vision")
EOS, BOS = 63, 62


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    text = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=8, hidden_act="quick_gelu",
                bos_token_id=BOS, eos_token_id=EOS, pad_token_id=1, projection_dim=12)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                  num_attention_heads=2, image_size=16, patch_size=4, num_channels=3,
                  hidden_act="gelu", projection_dim=12)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=12)
    model = CLIPModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name != "logit_scale":
                p.add_(torch.randn_like(p) * 0.05)
        model.logit_scale.fill_(2.0)

    # Three pairs; EOS-padded ids as SD1's tokenizer pads (first EOS is the pooled token).
    ids = torch.tensor([
        [BOS, 5, 9, EOS, EOS, EOS, EOS, EOS],
        [BOS, 7, 3, 20, 41, EOS, EOS, EOS],
        [BOS, 11, EOS, EOS, EOS, EOS, EOS, EOS],
    ])
    pixels = torch.randn(3, 3, 16, 16)

    model.zero_grad()
    out = model(input_ids=ids, pixel_values=pixels, return_loss=True)
    out.loss.backward()
    # The tower itself (CLIPModel's outputs carry the projected features as pooler_output).
    vis = model.vision_model(pixel_values=pixels, output_hidden_states=True)
    ref = {
        "input_ids": ids.to(torch.int64),
        "pixel_values": pixels,
        "vision_last_hidden_state": vis.last_hidden_state,
        "vision_pooler_output": vis.pooler_output,
        "vision_penultimate": vis.hidden_states[-2],
        # transformers 5 returns the projected features as the outputs' pooler_output.
        "text_features": model.get_text_features(input_ids=ids).pooler_output,
        "image_features": model.get_image_features(pixel_values=pixels).pooler_output,
        "logits_per_image": out.logits_per_image,
        "loss": out.loss.reshape(1),
        "grad_logit_scale": model.logit_scale.grad.reshape(1),
        "grad_visual_projection": model.visual_projection.weight.grad,
    }
    for name, p in model.named_parameters():
        ref[f"grad.{name}"] = p.grad.clone()
    ref = {k: v.detach().contiguous() for k, v in ref.items()}

    folder = os.path.join(OUT, "tiny-clip")
    os.makedirs(folder, exist_ok=True)
    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()
               if not k.endswith("position_ids")}
    save_file(weights, os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config.to_dict(), f, indent=2, default=str)
    save_file(ref, os.path.join(OUT, "clip_reference.safetensors"))
    print("loss", float(out.loss.detach()), "keys", sorted(weights)[:3], len(weights))


if __name__ == "__main__":
    main()
