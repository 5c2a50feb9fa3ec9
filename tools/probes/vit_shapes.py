"""Can a ViT the size of the built-in CLIP's vision tower learn this world's shapes at all?

Trains it on shape labels directly (cross-entropy, AdamW 1e-3 with warm-up and cosine decay,
batch 64), the easiest signal there is, and prints the accuracy on 600 fresh images every
250 steps. Images approximate the built-in world: one flat shape (circle, square, triangle,
star, ring, cross; 10 or 17 px) in a random colour at a random place on a random flat
background, 64x64, drawn with PIL (not Pigment's renderer). One thread.

    python tools/probes/vit_shapes.py PATCH STEPS [WIDTH LAYERS]

needs torch, numpy and pillow (e.g. the venv of tools/reference). README ("Why: the vision
tower") quotes its results.
"""
import math, random, sys, time
import numpy as np, torch, torch.nn as nn
from PIL import Image, ImageDraw
torch.set_num_threads(1); torch.manual_seed(0); random.seed(0)
SHAPES = ["circle", "square", "triangle", "star", "ring", "cross"]
def draw(shape, d, cx, cy, fg, bg):
    im = Image.new("RGB", (64, 64), bg); g = ImageDraw.Draw(im); r = d / 2
    if shape == "circle": g.ellipse([cx-r, cy-r, cx+r, cy+r], fill=fg)
    elif shape == "square": g.rectangle([cx-r*0.85, cy-r*0.85, cx+r*0.85, cy+r*0.85], fill=fg)
    elif shape == "triangle": g.polygon([(cx, cy-r), (cx-r, cy+r*0.8), (cx+r, cy+r*0.8)], fill=fg)
    elif shape == "star":
        pts = [(cx + (r if k % 2 == 0 else r*0.45) * math.sin(k*math.pi/5), cy - (r if k % 2 == 0 else r*0.45) * math.cos(k*math.pi/5)) for k in range(10)]
        g.polygon(pts, fill=fg)
    elif shape == "ring": g.ellipse([cx-r, cy-r, cx+r, cy+r], fill=fg); g.ellipse([cx-r*0.55, cy-r*0.55, cx+r*0.55, cy+r*0.55], fill=bg)
    elif shape == "cross": w = r*0.35; g.rectangle([cx-r, cy-w, cx+r, cy+w], fill=fg); g.rectangle([cx-w, cy-r, cx+w, cy+r], fill=fg)
    return np.asarray(im, dtype=np.float32) / 127.5 - 1
def batch(n):
    xs, ys = [], []
    for _ in range(n):
        s = random.randrange(6); d = random.choice([10, 17]); c = lambda: tuple(random.randrange(256) for _ in range(3))
        cx, cy = random.uniform(d/2+3, 61-d/2), random.uniform(d/2+3, 61-d/2)
        xs.append(draw(SHAPES[s], d, cx, cy, c(), c())); ys.append(s)
    return torch.tensor(np.stack(xs)).permute(0, 3, 1, 2), torch.tensor(ys)
class ViT(nn.Module):
    def __init__(s, patch, width=64, layers=3, heads=4):
        super().__init__(); n = (64 // patch) ** 2
        s.embed = nn.Conv2d(3, width, patch, patch, bias=False); s.cls = nn.Parameter(torch.randn(width) * 0.02)
        s.pos = nn.Parameter(torch.randn(n + 1, width) * 0.02); s.pre = nn.LayerNorm(width)
        s.blocks = nn.TransformerEncoder(nn.TransformerEncoderLayer(width, heads, 4 * width, 0.0, activation="gelu", batch_first=True, norm_first=True), layers)
        s.post = nn.LayerNorm(width); s.head = nn.Linear(width, 6)
    def forward(s, x):
        t = s.embed(x).flatten(2).transpose(1, 2); t = torch.cat([s.cls.expand(len(t), 1, -1), t], 1) + s.pos
        return s.head(s.post(s.blocks(s.pre(t))[:, 0]))
patch, steps = int(sys.argv[1]), int(sys.argv[2])
width, layers = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (64, 3)
m = ViT(patch, width, layers); opt = torch.optim.AdamW(m.parameters(), 1e-3, weight_decay=1e-2)
tx, ty = batch(600); t0 = time.time()
for step in range(1, steps + 1):
    lr = 1e-3 * min(1, step / 100) * 0.5 * (1 + math.cos(math.pi * step / steps)); [g.__setitem__("lr", lr) for g in opt.param_groups]
    x, y = batch(64); loss = nn.functional.cross_entropy(m(x), y); opt.zero_grad(); loss.backward(); opt.step()
    if step % 250 == 0:
        with torch.no_grad(): acc = (m(tx).argmax(1) == ty).float().mean().item()
        print(f"patch {patch} width {width} layers {layers} step {step} loss {loss.item():.3f} held-out acc {acc*100:.1f}% ({time.time()-t0:.0f}s)", flush=True)
