"""Reference runs of diffusers' schedulers, for crates/pigment/tests/sampler_parity.rs.

Run from the repository root:  python tools/reference/make_sampler_fixtures.py
Writes tests/fixtures/samplers/cases.json (what each case asks for) and
tests/fixtures/samplers/samplers.safetensors (what diffusers answered).

Each case runs the loop a diffusers pipeline runs, with a deterministic stand-in for the UNet:

    latents = randn(shape, generator) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.scale_model_input(latents, t)
        latents = scheduler.step(fake_model(x, t), t, latents, generator=generator).prev_sample

The stand-in, u / (1 + 0.01 u^2) with u = x + 0.0001 t, is close to the identity, so that like a
real denoiser it keeps every sampler's latents of order 1 (a 1e-5 absolute tolerance then means
something), and it uses only IEEE-exact operations (+, *, /) so that Pigment reproduces it bit for
bit and any difference is the scheduler's.

Every scheduler is built fresh from the SD1 base config below (the values of Pigment's
`SchedulerConfig::default()`, i.e. what `pipe.scheduler.config` of an SD1 checkpoint holds),
never from another scheduler's config: `from_config` would carry keys such as
`use_karras_sigmas` over (see REFERENCE-NOTES.md).

Stored per case `<id>`: `<id>.timesteps` (f64, scheduler.timesteps), `<id>.init_noise_sigma`
(f64), `<id>.step1` (the sample after the first step) and `<id>.final` (the last sample), f32.
The add_noise cases store `<id>.noisy`; their inputs are `add_noise.original`/`add_noise.noise`.
`check.noise` is the first case's initial noise, to tell a generator bug from a sampler bug.
"""

import json
import os

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LCMScheduler,
)
from safetensors.torch import save_file

OUT = os.path.join("tests", "fixtures", "samplers")

# Pigment's SchedulerConfig::default(): the SD1.x scheduler config as diffusers loads it.
BASE_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    trained_betas=None,
    prediction_type="epsilon",
    timestep_spacing="leading",
    steps_offset=1,
    clip_sample=False,
    clip_sample_range=1.0,
    set_alpha_to_one=False,
    rescale_betas_zero_snr=False,
)

# Pigment's CLI sampler name -> diffusers' scheduler class and the arguments that select it.
SAMPLERS = {
    "ddpm": (DDPMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "dpmpp_2m_sde": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}),
    "lcm": (LCMScheduler, {}),
}
# Samplers whose diffusers class has `use_karras_sigmas` (EulerAncestral has none in 0.42).
KARRAS = ["euler", "heun", "dpmpp_2m", "dpmpp_2m_sde"]
LATENT = [1, 4, 8, 8]
SMALL = [1, 1, 2, 2]  # fewer than 16 elements: torch.randn's element-by-element path


def fake_model(x, t):
    u = x + 0.0001 * t
    return u / (1 + 0.01 * u * u)


def build(case):
    cls, extra = SAMPLERS[case["sampler"]]
    config = dict(BASE_CONFIG, **case["config"])
    kwargs = dict(extra)
    if case["karras"]:
        kwargs["use_karras_sigmas"] = True
    return cls.from_config(dict(config, **kwargs))


def run(case):
    scheduler = build(case)
    scheduler.set_timesteps(case["steps"])
    generator = torch.Generator("cpu").manual_seed(case["seed"])
    noise = torch.randn(case["shape"], generator=generator)
    latents = noise * scheduler.init_noise_sigma
    step1 = None
    for t in scheduler.timesteps:
        x = scheduler.scale_model_input(latents, t)
        output = fake_model(x, t)
        kwargs = {}
        if case["sampler"] != "heun":  # Heun's step takes no generator
            kwargs["generator"] = generator
        if case["sampler"] == "ddim":
            kwargs["eta"] = case["eta"]
        latents = scheduler.step(output, t, latents, **kwargs).prev_sample
        if step1 is None:
            step1 = latents.clone()
    return dict(
        timesteps=scheduler.timesteps.to(torch.float64),
        init_noise_sigma=torch.tensor([float(scheduler.init_noise_sigma)], dtype=torch.float64),
        step1=step1,
        final=latents,
    ), noise


def loop_cases():
    cases = []

    def add(sampler, steps, config=None, karras=False, eta=0.0, shape=LATENT, seed=None):
        cases.append(
            dict(
                id=f"c{len(cases):03d}",
                sampler=sampler,
                steps=steps,
                karras=karras,
                eta=eta,
                config=config or {},
                shape=shape,
                seed=1000 + len(cases) if seed is None else seed,
            )
        )

    spacings = [
        (4, dict(timestep_spacing="leading", steps_offset=1)),
        (10, dict(timestep_spacing="leading", steps_offset=1)),
        (10, dict(timestep_spacing="trailing", steps_offset=0)),
        (7, dict(timestep_spacing="linspace", steps_offset=0)),
    ]
    for sampler in SAMPLERS:
        for prediction in ["epsilon", "v_prediction"]:
            # LCM's timesteps ignore the spacing: two step counts are enough.
            for steps, spacing in spacings[:2] if sampler == "lcm" else spacings:
                add(sampler, steps, dict(spacing, prediction_type=prediction))
    for sampler in KARRAS:
        for prediction in ["epsilon", "v_prediction"]:
            for steps, spacing in [spacings[0], spacings[2]]:
                add(sampler, steps, dict(spacing, prediction_type=prediction), karras=True)
    # `sample` (x0) prediction wherever diffusers offers it.
    for sampler in ["ddpm", "ddim", "euler", "heun", "dpmpp_2m", "lcm"]:
        add(sampler, 10, dict(prediction_type="sample"))
    # DDIM: eta, clipping, set_alpha_to_one.
    add("ddim", 10, eta=0.5)
    add("ddim", 10, dict(clip_sample=True, clip_sample_range=0.8, set_alpha_to_one=True))
    add("ddim", 10, dict(prediction_type="sample", clip_sample=True), eta=0.3)
    # Zero terminal SNR with v-prediction and trailing spacing (its intended use).
    zero_snr = dict(rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing")
    for sampler in ["ddpm", "ddim", "euler", "euler_a", "dpmpp_2m", "lcm"]:
        add(sampler, 10, zero_snr)
    # Other beta schedules.
    add("ddpm", 10, dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02))
    add("euler", 10, dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02))
    add("ddim", 10, dict(beta_schedule="squaredcos_cap_v2"))
    add("dpmpp_2m", 10, dict(beta_schedule="squaredcos_cap_v2"))
    # (DPM-Solver + Karras + squaredcos_cap_v2 is broken in diffusers 0.42: its unrounded timesteps
    # are truncated to int64, the first one repeats and `index_for_timestep` starts at index 1.)
    add("euler", 10, dict(beta_schedule="squaredcos_cap_v2"), karras=True)
    add("heun", 6, dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02), karras=True)
    # DPM-Solver with 15+ steps keeps second order up to the second-to-last step.
    add("dpmpp_2m", 16, {})
    add("dpmpp_2m_sde", 16, {})
    add("dpmpp_2m", 20, dict(timestep_spacing="linspace", steps_offset=0), karras=True)
    # Few-element tensors: torch.randn's element-by-element path, and its cached second normal.
    add("ddpm", 4, shape=SMALL)
    add("ddim", 4, eta=1.0, shape=SMALL)
    add("euler_a", 4, shape=SMALL)
    add("dpmpp_2m_sde", 4, shape=SMALL)
    add("lcm", 4, shape=SMALL)
    add("euler_a", 5, shape=[1, 1, 3, 5])  # 15 elements
    return cases


def add_noise_cases():
    cases = []
    for sampler in SAMPLERS:
        for karras in [False, True] if sampler in KARRAS else [False]:
            # Heun's index 4 is a first-order entry of its doubled schedule (img2img starts on those).
            cases.append(
                dict(id=f"n{len(cases):02d}", sampler=sampler, steps=10, karras=karras, config={}, step_index=4)
            )
    cases.append(dict(id=f"n{len(cases):02d}", sampler="euler", steps=10, karras=False,
                      config=dict(timestep_spacing="trailing", steps_offset=0), step_index=0))
    return cases


def main():
    os.makedirs(OUT, exist_ok=True)
    tensors = {}
    cases = loop_cases()
    for case in cases:
        result, noise = run(case)
        if "check.noise" not in tensors:
            tensors["check.noise"] = noise
        for key, value in result.items():
            tensors[f"{case['id']}.{key}"] = value.contiguous()
        print(case["id"], case["sampler"], case["steps"], case["config"], "karras" if case["karras"] else "",
              f"eta={case['eta']}" if case["eta"] else "", float(result["final"].abs().max()))

    generator = torch.Generator("cpu").manual_seed(7)
    original = torch.randn(LATENT, generator=generator)
    noise = torch.randn(LATENT, generator=generator)
    tensors["add_noise.original"] = original
    tensors["add_noise.noise"] = noise
    noise_cases = add_noise_cases()
    for case in noise_cases:
        scheduler = build(case)
        scheduler.set_timesteps(case["steps"])
        k = case["step_index"]
        if hasattr(scheduler, "set_begin_index"):
            # What the img2img pipeline does before add_noise (sigma-indexed schedulers).
            scheduler.set_begin_index(k)
        noisy = scheduler.add_noise(original, noise, scheduler.timesteps[k : k + 1])
        tensors[f"{case['id']}.noisy"] = noisy.contiguous()

    save_file(tensors, os.path.join(OUT, "samplers.safetensors"))
    meta = dict(
        base_config=BASE_CONFIG,
        torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),
        loop_cases=cases,
        add_noise_cases=noise_cases,
    )
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
