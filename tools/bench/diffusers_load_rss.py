"""Peak RSS of diffusers loading a Stable Diffusion folder in f32 and making one 64x64 step,
the reference for Pigment's load-memory figure:

    /usr/bin/time -v python tools/bench/diffusers_load_rss.py MODEL_DIR
"""

import sys
import time

import torch
from diffusers import StableDiffusionPipeline

torch.set_num_threads(2)
start = time.time()
pipe = StableDiffusionPipeline.from_pretrained(sys.argv[1], torch_dtype=torch.float32, safety_checker=None)
print(f"load {time.time() - start:.2f} s")
pipe(["a photo of a cat"], num_inference_steps=1, width=64, height=64)
print(f"total {time.time() - start:.2f} s")
