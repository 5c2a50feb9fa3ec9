"""What the fixture scripts share: Pigment's sampler names mapped to diffusers schedulers, and
the deterministic init image of the image-to-image fixtures. Imported by the make_*.py scripts,
which are run from the repo root (this folder is put on sys.path by each of them)."""

import numpy as np
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LCMScheduler,
)
from PIL import Image

# Pigment's CLI sampler name -> (diffusers scheduler class, from_config overrides).
DIFFUSERS_SCHEDULERS = {
    "ddpm": (DDPMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "dpmpp_2m_sde": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}),
    "lcm": (LCMScheduler, {}),
}


def schedulers(*names):
    """The scheduler table restricted to `names`, in that order (scripts iterate over it)."""
    return {name: DIFFUSERS_SCHEDULERS[name] for name in names}


def init_image():
    """A 64x64 RGB image with smooth gradients and hard-edged shapes, so the VAE sees both."""
    y, x = np.mgrid[0:64, 0:64].astype(np.float32)
    r = x / 63.0
    g = y / 63.0
    b = 0.5 + 0.5 * np.sin(x / 6.0) * np.cos(y / 9.0)
    img = np.stack([r, g, b], axis=-1)
    img[(x - 20) ** 2 + (y - 22) ** 2 < 100] = [0.9, 0.1, 0.1]  # a red disc
    img[40:56, 34:58] = [0.1, 0.6, 0.2]  # a green rectangle
    img[8:14, 40:60] = [1.0, 1.0, 1.0]  # a white bar
    return Image.fromarray((img * 255).round().clip(0, 255).astype(np.uint8))
