"""Reference edge maps from OpenCV's cv2.Canny, for crates/pigment/tests/canny.rs.

Run from the repository root:  python tools/reference/make_canny_fixtures.py
Needs numpy and opencv-python-headless. Writes tests/fixtures/canny/: small input PNGs made
here (no downloads), OpenCV's edge maps as PNG, and cases.json listing each case.

ControlNet's canny annotator (lllyasviel/ControlNet annotator/canny/__init__.py) calls
`cv2.Canny(img, low, high)` on the RGB HWC uint8 array itself, with no conversion to gray:
OpenCV then takes, per pixel, the Sobel gradient of the channel with the largest L1 magnitude.
The cases do the same (RGB array straight in); two cases feed a single-channel image.
Aperture 3 and L1 gradient (OpenCV's defaults) throughout.

Also writes the "fake scribble" post-process of ControlNet's gradio_fake_scribble2image.py
(GaussianBlur sigma 3, then > 4 -> 255) applied to the canny edges, twice:
- NAME_scribble.png blurs in float32 (kernel 19 taps, the size OpenCV picks for 8-bit input,
  BORDER_REFLECT_101) and rounds: what pigment's scribble computes, checked pixel for pixel.
- NAME_scribble_u8.png is ControlNet's literal uint8 call. OpenCV blurs 8-bit images in fixed
  point (or through IPP), up to ~2 levels away from the exact Gaussian, so near the threshold
  this differs; the test reports the agreement.
"""

import json
import os

import cv2
import numpy as np

FOLDER = os.path.join("tests", "fixtures", "canny")


def shapes():
    img = np.full((80, 96, 3), (30, 60, 90), dtype=np.uint8)
    cv2.rectangle(img, (8, 10), (40, 50), (220, 40, 40), -1)
    cv2.circle(img, (65, 40), 20, (40, 200, 80), -1)
    cv2.line(img, (5, 75), (90, 55), (250, 250, 250), 2)
    pts = np.array([[50, 70], [70, 60], [88, 78]], dtype=np.int32)
    cv2.fillPoly(img, [pts], (200, 200, 30))
    return img


def gradient():
    h, w = 72, 88
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255 // (w - 1)).astype(np.uint8)
    g = (y * 255 // (h - 1)).astype(np.uint8)
    b = ((x + y) * 2 % 256).astype(np.uint8)
    img = np.stack([r, g, b], axis=2)
    cv2.ellipse(img, (44, 36), (25, 14), 30, 0, 360, (0, 0, 0), -1)
    return img


def noise():
    rng = np.random.default_rng(1234)
    img = rng.integers(0, 256, size=(48, 56, 3), dtype=np.uint8)
    return img


def smooth_noise():
    rng = np.random.default_rng(99)
    img = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    return cv2.GaussianBlur(img, (0, 0), 2.0)


def text_strokes():
    img = np.full((64, 128, 3), 255, dtype=np.uint8)
    cv2.putText(img, "Pigment", (4, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.1, (10, 10, 10), 2, cv2.LINE_AA)
    cv2.putText(img, "edges 42", (6, 58), cv2.FONT_HERSHEY_PLAIN, 1.0, (120, 0, 200), 1, cv2.LINE_8)
    return img


def scene():
    """A larger picture (OpenCV splits Canny into row stripes across threads at this size):
    smooth random texture with shapes and anti-aliased text on top."""
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
    cv2.circle(img, (90, 110), 60, (240, 200, 20), -1, cv2.LINE_AA)
    cv2.rectangle(img, (180, 40), (300, 150), (20, 30, 160), -1)
    cv2.ellipse(img, (230, 190), (70, 30), -15, 0, 300, (250, 250, 250), 3, cv2.LINE_AA)
    cv2.putText(img, "ControlNet", (20, 225), cv2.FONT_HERSHEY_DUPLEX, 1.2, (0, 0, 0), 2, cv2.LINE_AA)
    return img


def gray_shapes():
    img = np.full((60, 60), 40, dtype=np.uint8)
    cv2.circle(img, (30, 30), 18, 180, -1, cv2.LINE_AA)
    cv2.rectangle(img, (3, 3), (20, 14), 250, -1)
    return img


def main():
    os.makedirs(FOLDER, exist_ok=True)
    inputs = {
        "shapes": shapes(),
        "gradient": gradient(),
        "noise": noise(),
        "smooth_noise": smooth_noise(),
        "text": text_strokes(),
        "gray_shapes": gray_shapes(),
        "scene": scene(),
    }
    # (name, input, low, high): ControlNet's default 100/200 on every image, plus other
    # thresholds, a fractional pair, and low > high (OpenCV swaps them).
    runs = [(name, name, 100.0, 200.0) for name in inputs]
    runs += [
        ("shapes_50_150", "shapes", 50.0, 150.0),
        ("smooth_noise_20_60", "smooth_noise", 20.0, 60.0),
        ("text_30_90_5", "text", 30.0, 90.5),
        ("gradient_swapped", "gradient", 200.0, 60.0),
        ("gray_shapes_10_40", "gray_shapes", 10.0, 40.0),
    ]
    for name, img in inputs.items():
        # PNG stores RGB; cv2.imwrite expects BGR.
        out = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        cv2.imwrite(os.path.join(FOLDER, f"{name}.png"), out)
    cases = []
    for name, src, low, high in runs:
        edges = cv2.Canny(inputs[src], low, high)
        cv2.imwrite(os.path.join(FOLDER, f"{name}_canny.png"), edges)
        exact = cv2.GaussianBlur(edges.astype(np.float32), (19, 19), 3.0)
        scribble = np.where(np.round(exact) > 4, 255, 0).astype(np.uint8)
        cv2.imwrite(os.path.join(FOLDER, f"{name}_scribble.png"), scribble)
        blurred = cv2.GaussianBlur(edges, (0, 0), 3.0)
        scribble_u8 = np.where(blurred > 4, 255, 0).astype(np.uint8)
        cv2.imwrite(os.path.join(FOLDER, f"{name}_scribble_u8.png"), scribble_u8)
        cases.append({
            "name": name,
            "input": f"{src}.png",
            "low": low,
            "high": high,
            "canny": f"{name}_canny.png",
            "scribble": f"{name}_scribble.png",
            "scribble_u8": f"{name}_scribble_u8.png",
            "edge_pixels": int((edges > 0).sum()),
        })
    meta = {"opencv_version": cv2.__version__, "cases": cases}
    with open(os.path.join(FOLDER, "cases.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
