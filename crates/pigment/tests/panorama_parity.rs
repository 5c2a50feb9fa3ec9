//! MultiDiffusion panoramas against diffusers' StableDiffusionPanoramaPipeline on tiny-sd1
//! (fixtures from tools/reference/make_panorama_fixtures.py): 64x192 and 128x128 pixel canvases
//! (8x24 and 16x16 latent cells) with window 8 and stride 4, samplers Euler, DDIM and DPM++ 2M
//! (multistep: each view batch keeps its own history), one and several views per UNet call; and,
//! latents only, Euler a (noise drawn per view batch in diffusers' order) and Heun (its two-stage
//! state kept per view batch); circular padding (views wrapping past the right edge, decoded with
//! diffusers' decode_latents_with_padding).
//!
//! Tolerances (txt2img_parity's): final 8-bit images within 2/255 per pixel; final latents within
//! 2e-3 max abs relative to max(1, max |reference|).

mod common;
use common::*;

use candle_core::{DType, Device, Tensor};
use pigment::image::tensor_to_images;
use pigment::pipelines::multidiffusion::RegionPrompt;
use pigment::pipelines::{LoadOptions, PanoramaRequest, StableDiffusion, Txt2ImgRequest};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    id: String,
    sampler: String,
    prompt: String,
    negative: String,
    steps: usize,
    cfg: f64,
    seed: u64,
    width: usize,
    height: usize,
    window: usize,
    stride: usize,
    view_batch: usize,
    /// Whether the fixture holds the decoded image too (else latents only).
    image: bool,
    /// diffusers' `circular_padding` (wrapped views, padded decode).
    circular: bool,
}

fn load() -> StableDiffusion {
    StableDiffusion::load(&fixtures().join("models/tiny-sd1"), &LoadOptions::default()).unwrap()
}

fn request(case: &Case) -> PanoramaRequest {
    PanoramaRequest {
        base: Txt2ImgRequest {
            prompt: case.prompt.clone(),
            negative_prompt: case.negative.clone(),
            steps: case.steps,
            cfg_scale: case.cfg,
            sampler: case.sampler.parse().unwrap(),
            seed: case.seed,
            width: case.width,
            height: case.height,
            ..Txt2ImgRequest::default()
        },
        window: case.window,
        stride: case.stride,
        view_batch_size: case.view_batch,
        regions: Vec::new(),
        circular: case.circular,
    }
}

#[test]
fn panoramas_match_diffusers() {
    let dir = fixtures();
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("panorama/cases.json")).unwrap())
            .unwrap();
    let outputs =
        candle_core::safetensors::load(dir.join("panorama/outputs.safetensors"), &Device::Cpu)
            .unwrap();
    let model = load();
    let mut failures = Vec::new();
    for case in &cases {
        let out = model.panorama(&request(case), &mut |_, _| {}).unwrap();
        let want_latents = &outputs[&format!("{}.latents", case.id)];
        let latent_err =
            max_abs(&(&out.latents - want_latents).unwrap()) / max_abs(want_latents).max(1.0);

        let pixel_err = if case.image {
            let want_image = outputs[&format!("{}.image", case.id)]
                .to_dtype(DType::F32)
                .unwrap();
            let images = tensor_to_images(&out.decoded).unwrap();
            let got: Vec<f32> = images[0].as_raw().iter().map(|&v| v as f32).collect();
            let got = Tensor::from_vec(got, want_image.shape(), &Device::Cpu).unwrap();
            max_abs(&(got - &want_image).unwrap())
        } else {
            0.0
        };

        let what = format!(
            "{} {} {}x{} view batch {}{}: latents rel err {latent_err:.2e}, pixels max diff {pixel_err}",
            case.id,
            case.sampler,
            case.width,
            case.height,
            case.view_batch,
            if case.circular { " circular" } else { "" }
        );
        println!("{what}");
        if latent_err > 2e-3 || pixel_err > 2.0 {
            failures.push(what);
        }
    }
    assert!(
        failures.is_empty(),
        "cases off the reference:\n{}",
        failures.join("\n")
    );
}

/// A canvas the size of one window is plain txt2img: the same latents as `txt2img` (a check
/// that the windowing adds nothing of its own when there is nothing to fuse).
#[test]
fn a_single_window_is_plain_txt2img() {
    let model = load();
    let base = Txt2ImgRequest {
        prompt: "a lighthouse".into(),
        steps: 3,
        sampler: "dpmpp_2m".parse().unwrap(),
        width: 64,
        height: 64,
        seed: 5,
        ..Txt2ImgRequest::default()
    };
    let plain = model.txt2img(&base, &mut |_, _| {}).unwrap();
    let request = PanoramaRequest {
        window: 8,
        stride: 4,
        ..PanoramaRequest::new(base, &model)
    };
    let fused = model.panorama(&request, &mut |_, _| {}).unwrap();
    let err = max_abs(&(&fused.latents - &plain.latents).unwrap());
    assert!(
        err < 1e-5,
        "single-window panorama differs from txt2img by {err}"
    );
}

#[test]
fn bad_panorama_requests_are_refused_with_the_fix() {
    let model = load();
    let base = Txt2ImgRequest {
        width: 192,
        height: 64,
        steps: 2,
        ..Txt2ImgRequest::default()
    };
    let with = |window: usize, stride: usize, base: &Txt2ImgRequest| PanoramaRequest {
        base: base.clone(),
        window,
        stride,
        view_batch_size: 1,
        regions: Vec::new(),
        circular: false,
    };
    let err = |r: PanoramaRequest| {
        model
            .panorama(&r, &mut |_, _| {})
            .err()
            .unwrap()
            .to_string()
    };

    let e = err(with(16, 4, &base));
    assert!(
        e.contains("--window 16") && e.contains("larger than the 8x24"),
        "{e}"
    );
    let e = err(with(8, 0, &base));
    assert!(e.contains("--stride 0"), "{e}");
    let e = err(with(8, 12, &base));
    assert!(e.contains("--stride 12"), "{e}");
    let odd = Txt2ImgRequest {
        width: 196,
        ..base.clone()
    };
    let e = err(with(8, 4, &odd));
    assert!(
        e.contains("--width 196") && e.contains("multiple of 8"),
        "{e}"
    );
    let e = err(PanoramaRequest {
        view_batch_size: 0,
        ..with(8, 4, &base)
    });
    assert!(e.contains("view batch size 0"), "{e}");
}

fn small_request(model: &StableDiffusion, width: usize, steps: usize) -> PanoramaRequest {
    let base = Txt2ImgRequest {
        prompt: "a red star above a small green square".into(),
        steps,
        sampler: "euler".parse().unwrap(),
        width,
        height: 64,
        seed: 9,
        ..Txt2ImgRequest::default()
    };
    PanoramaRequest {
        window: 8,
        stride: 4,
        ..PanoramaRequest::new(base, model)
    }
}

/// Where the stride does not divide (canvas - window), diffusers leaves the last cells outside
/// every view (zeros); Pigment's extra edge view denoises them like the rest.
#[test]
fn a_stride_that_does_not_divide_still_covers_the_last_columns() {
    let model = load();
    // 184 px = 23 cells: views at 0, 4, 8, 12 and the edge view at 15.
    let out = model
        .panorama(&small_request(&model, 184, 2), &mut |_, _| {})
        .unwrap();
    let last = out.latents.narrow(3, 20, 3).unwrap();
    let mean = last
        .abs()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        mean > 0.1,
        "the last columns were left undenoised (mean |x| {mean})"
    );
}

/// Region prompts: after one step the region's prompt has changed the latents inside its box
/// and left every cell outside exactly as the plain panorama has it (its mask is 0 there); a
/// region with the main prompt changes nothing (a mean of equal values).
#[test]
fn region_prompts_act_only_inside_their_box() {
    let model = load();
    let plain_req = small_request(&model, 128, 1);
    let plain = model.panorama(&plain_req, &mut |_, _| {}).unwrap().latents;
    let region = |prompt: &str| RegionPrompt {
        prompt: prompt.into(),
        left: 32,
        top: 0,
        width: 40,
        height: 32,
    };
    let with_region = |prompt: &str| {
        let req = PanoramaRequest {
            regions: vec![region(prompt)],
            ..plain_req.clone()
        };
        model.panorama(&req, &mut |_, _| {}).unwrap().latents
    };

    let other = with_region("a blue whale in a stormy sea");
    let diff = (&other - &plain).unwrap().abs().unwrap();
    // Box in cells: rows 0..4, columns 4..9.
    let inside = diff.narrow(2, 0, 4).unwrap().narrow(3, 4, 5).unwrap();
    assert!(
        max_abs(&inside) > 1e-3,
        "the region's prompt changed nothing"
    );
    let outside = (diff.sum_all().unwrap().to_scalar::<f32>().unwrap()
        - inside.sum_all().unwrap().to_scalar::<f32>().unwrap())
    .abs();
    assert!(
        outside < 1e-6,
        "cells outside the box changed by {outside} in all"
    );

    let same = with_region(&plain_req.base.prompt);
    let err = max_abs(&(&same - &plain).unwrap());
    assert!(
        err < 1e-5,
        "a region with the main prompt changed the result by {err}"
    );
}

#[test]
fn bad_regions_are_refused_with_the_fix() {
    let model = load();
    let req = |left, width| PanoramaRequest {
        regions: vec![RegionPrompt {
            prompt: "a cat".into(),
            left,
            top: 0,
            width,
            height: 32,
        }],
        ..small_request(&model, 128, 1)
    };
    let err = |r: PanoramaRequest| {
        model
            .panorama(&r, &mut |_, _| {})
            .err()
            .unwrap()
            .to_string()
    };
    let e = err(req(100, 40));
    assert!(
        e.contains("region `a cat`") && e.contains("multiple of 8"),
        "{e}"
    );
    let e = err(req(96, 40));
    assert!(e.contains("inside the 128x64 canvas"), "{e}");
    let e = err(req(0, 0));
    assert!(e.contains("non-empty"), "{e}");
}
