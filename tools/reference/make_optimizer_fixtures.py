"""AdamW and gradient-clipping references from torch (torch.optim.AdamW, clip_grad_norm_).

Writes tests/fixtures/train/adamw.safetensors and adamw.json, checked by
crates/pigment/tests/train_smoke.rs. Three parameters, five steps of fixed gradients with a
learning rate that changes every step; one parameter gets no gradient at step 2 (torch skips
it and does not advance its step count). Scenario "plain" steps directly, scenario "clipped"
calls clip_grad_norm_(max_norm=0.5) before each step. Needs only torch and safetensors.

Run from the repository root: python tools/reference/make_optimizer_fixtures.py
"""

import json
import os

import torch
from safetensors.torch import save_file

OUT = os.path.join("tests", "fixtures", "train")
SHAPES = {"a.weight": (3, 4), "b.bias": (5,), "c.weight": (2, 2)}
LRS = [1e-2, 2e-2, 1.5e-2, 5e-3, 1e-2]
SKIP = {2: "c.weight"}  # step index -> parameter without a gradient at that step
SCENARIOS = {
    "plain": dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, max_norm=None),
    "clipped": dict(betas=(0.8, 0.95), eps=1e-6, weight_decay=0.0, max_norm=0.5),
}


def main():
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(1234)
    init = {n: torch.randn(s, generator=gen) for n, s in SHAPES.items()}
    grads = [
        {n: torch.randn(s, generator=gen) * 0.3 for n, s in SHAPES.items()}
        for _ in LRS
    ]
    tensors = {f"init.{n}": t for n, t in init.items()}
    for i, g in enumerate(grads):
        for n, t in g.items():
            if SKIP.get(i) != n:
                tensors[f"grad.{i}.{n}"] = t
    meta = {"lrs": LRS, "skip": {str(k): v for k, v in SKIP.items()}, "scenarios": {}}

    for name, sc in SCENARIOS.items():
        params = {n: torch.nn.Parameter(t.clone()) for n, t in init.items()}
        opt = torch.optim.AdamW(
            list(params.values()), lr=LRS[0], betas=sc["betas"], eps=sc["eps"],
            weight_decay=sc["weight_decay"], foreach=False,
        )
        norms = []
        for i, lr in enumerate(LRS):
            for group in opt.param_groups:
                group["lr"] = lr
            for n, p in params.items():
                p.grad = None if SKIP.get(i) == n else grads[i][n].clone()
            if sc["max_norm"] is not None:
                norm = torch.nn.utils.clip_grad_norm_(
                    [p for p in params.values() if p.grad is not None], sc["max_norm"]
                )
                norms.append(float(norm))
            opt.step()
            for n, p in params.items():
                tensors[f"{name}.after.{i}.{n}"] = p.detach().clone()
        meta["scenarios"][name] = {
            "beta1": sc["betas"][0], "beta2": sc["betas"][1], "eps": sc["eps"],
            "weight_decay": sc["weight_decay"], "max_norm": sc["max_norm"], "norms": norms,
        }

    os.makedirs(OUT, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, "adamw.safetensors"))
    meta["torch"] = torch.__version__
    with open(os.path.join(OUT, "adamw.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print("wrote", OUT, "with", len(tensors), "tensors")


if __name__ == "__main__":
    main()
