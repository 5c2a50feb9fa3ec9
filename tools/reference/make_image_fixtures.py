"""Reference conversions of diffusers' VaeImageProcessor, for crates/pigment/tests/image_io.rs.

Run from the repository root:  python tools/reference/make_image_fixtures.py
Writes tests/fixtures/image/vae_image_processor.json.

- postprocess: an NCHW float32 tensor (what the VAE decodes, nominally in [-1, 1]) through
  VaeImageProcessor.postprocess(output_type="pil"), read back as uint8 HWC. The tensor holds
  the values where the rounding rules differ: x * 255 landing exactly on k + 0.5 in float32
  (numpy rounds half to even), values just either side of those, the ends of the range and
  beyond, plus random values.
- preprocess: an 8-bit RGB image with every byte value, through VaeImageProcessor.preprocess.

Floats are stored as their float32 bit patterns so the Rust test can compare exactly.

Also writes two tiny PNGs the way AUTOMATIC1111 does (PIL's PngInfo.add_text under the key
"parameters"): pil_parameters.png (Latin-1 text: a tEXt chunk) and pil_parameters_utf8.png
(non-Latin-1 text: PIL writes an iTXt chunk), for the reader's interoperability test.
"""

import json
import os

import numpy as np
import PIL.Image
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL.PngImagePlugin import PngInfo

FOLDER = os.path.join("tests", "fixtures", "image")
OUT = os.path.join(FOLDER, "vae_image_processor.json")
PIL_TEXTS = {
    "pil_parameters.png": "a red fox, snow\nNegative prompt: blurry\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 64x32, Model: \"tiny, v1\"",
    "pil_parameters_utf8.png": "森の狐 — café\n"
    "Steps: 4, Sampler: LCM, CFG scale: 1.5, Seed: 7, Size: 64x32",
}


def write_pil_pngs():
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[:, :, 0] = np.arange(64, dtype=np.uint8)[None, :] * 4
    for name, text in PIL_TEXTS.items():
        info = PngInfo()
        info.add_text("parameters", text)
        PIL.Image.fromarray(pixels).save(os.path.join(FOLDER, name), pnginfo=info)


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).ravel().tolist()


def halfway_inputs():
    """Inputs x in [-1, 1] whose float32 (x * 0.5 + 0.5) * 255 is exactly k + 0.5."""
    found = []
    for k in range(255):
        v0 = np.float32((k + 0.5) / 255.0)
        for v in (np.nextafter(v0, np.float32(0)), v0, np.nextafter(v0, np.float32(1))):
            if np.float32(v * np.float32(255)) == np.float32(k + 0.5):
                x = np.float32(np.float32(2) * v - np.float32(1))
                if np.float32(x * np.float32(0.5) + np.float32(0.5)) == v:
                    found.append(x)
                    # neighbours either side of the halfway input
                    found.append(np.nextafter(x, np.float32(-2)))
                    found.append(np.nextafter(x, np.float32(2)))
    return found


def main():
    rng = np.random.default_rng(0)
    n, h, w = 2, 8, 16
    size = n * 3 * h * w
    special = halfway_inputs()
    special += [np.float32(v) for v in (-1.0, 1.0, 0.0, -0.0, -1.5, 1.5, -100.0, 100.0, 1e-8, -1e-8)]
    values = np.concatenate([np.array(special, dtype=np.float32),
                             rng.uniform(-1.05, 1.05, size).astype(np.float32)])[:size]
    assert len(special) < size, len(special)
    latent_decoded = torch.from_numpy(values.reshape(n, 3, h, w).copy())

    processor = VaeImageProcessor(vae_scale_factor=8)
    pil_images = processor.postprocess(latent_decoded, output_type="pil")
    post_u8 = np.stack([np.array(im) for im in pil_images])  # N, H, W, 3

    # preprocess: every byte value appears (16 * 16 * 3 = 768 > 256).
    pixels = (np.arange(16 * 16 * 3) * 7 % 256).astype(np.uint8).reshape(16, 16, 3)
    pre = processor.preprocess(PIL.Image.fromarray(pixels))  # 1, 3, 16, 16

    doc = {
        "postprocess": {
            "shape": [n, 3, h, w],
            "input_bits": bits(values),
            "halfway_count": len(special),
            "output_nhwc": post_u8.ravel().tolist(),
        },
        "preprocess": {
            "height": 16,
            "width": 16,
            "input_hwc": pixels.ravel().tolist(),
            "output_shape": list(pre.shape),
            "output_bits": bits(pre.numpy()),
        },
        "pil_png_texts": PIL_TEXTS,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    write_pil_pngs()
    print(f"wrote {OUT}: {len(special)} special inputs, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
