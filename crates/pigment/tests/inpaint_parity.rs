//! Whole inpainting runs against diffusers' StableDiffusionInpaintPipeline (fixtures from
//! tools/reference/make_inpaint_fixtures.py): a tiny dedicated 9-channel inpainting UNet (Euler,
//! DDIM, DPM++ 2M; strength 1 = pure-noise start, and 0.75; one run without guidance) and the
//! 4-channel tiny-sd1 (Euler, DDIM; strengths 1 and 0.75; a batch of two with a negative
//! prompt), whose known region is blended back after every step; Euler a and Heun on both
//! (latents only), for the sampler's noise drawn after the masked-image sample and Heun's
//! doubled timesteps in the blend. The RGB mask has grey-level
//! regions on both sides of 0.5 luma, so PIL's luma conversion and the binarization are checked
//! too. This also checks diffusers' order of random draws (image VAE sample, noise, masked-image
//! VAE sample, sampler).
//!
//! Tolerances, as img2img_parity.rs: final 8-bit images within 2/255 per pixel; final latents
//! within 2e-3 max abs relative to max(1, max |reference|).

mod common;
use common::*;

use std::collections::HashMap;

use candle_core::Device;
use pigment::image::load_image;
use pigment::pipelines::inpaint::{blur_mask, mask_luma};
use pigment::pipelines::{InpaintRequest, LoadOptions, StableDiffusion, Txt2ImgRequest};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    id: String,
    model: String,
    sampler: String,
    strength: f64,
    prompt: String,
    negative: String,
    steps: usize,
    cfg: f64,
    seed: u64,
    batch: usize,
    /// Whether the fixture holds the decoded image (else latents only).
    image: bool,
}

/// tiny-sd1, or ("unet9") tiny-sd1 with the 9-channel fixture UNet.
fn load_model(name: &str) -> StableDiffusion {
    if name == "unet9" {
        load_tiny_sd1_with_unet("inpaint/unet9")
    } else {
        StableDiffusion::load(
            &fixtures().join("models").join(name),
            &LoadOptions::default(),
        )
        .unwrap()
    }
}

fn inputs() -> (::image::RgbImage, ::image::GrayImage) {
    let dir = fixtures();
    let init = load_image(&dir.join("inpaint/init.png")).unwrap();
    let mask = mask_luma(&load_image(&dir.join("inpaint/mask.png")).unwrap());
    (init, mask)
}

#[test]
fn inpaint_matches_diffusers_for_every_case() {
    let dir = fixtures();
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("inpaint/cases.json")).unwrap())
            .unwrap();
    let outputs =
        candle_core::safetensors::load(dir.join("inpaint/outputs.safetensors"), &Device::Cpu)
            .unwrap();
    let (init, mask) = inputs();
    let mut models: HashMap<String, StableDiffusion> = HashMap::new();
    let mut failures = Vec::new();
    for case in &cases {
        let model = models
            .entry(case.model.clone())
            .or_insert_with(|| load_model(&case.model));
        let base = Txt2ImgRequest {
            prompt: case.prompt.clone(),
            negative_prompt: case.negative.clone(),
            steps: case.steps,
            cfg_scale: case.cfg,
            sampler: case.sampler.parse().unwrap(),
            seed: case.seed,
            batch_size: case.batch,
            ..Txt2ImgRequest::default()
        };
        let req = InpaintRequest::new(base, init.clone(), mask.clone(), case.strength);
        let mut calls = 0;
        let out = model.inpaint(&req, &mut |_, _| calls += 1).unwrap();
        assert_eq!(calls, out.evaluations, "{}", case.id);
        // get_timesteps: int(steps * strength) steps; Heun evaluates twice per step but the last.
        let steps_run = req.image.steps_run();
        let want_evaluations = if case.sampler == "heun" {
            2 * steps_run - 1
        } else {
            steps_run
        };
        assert_eq!(out.evaluations, want_evaluations, "{}", case.id);

        let (latent_err, pixel_err) = reference_errors(&out, &outputs, &case.id, case.image);
        let what = format!(
            "{} {} {} strength {} cfg {}: latents rel err {latent_err:.2e}, pixels max diff {pixel_err}",
            case.id, case.model, case.sampler, case.strength, case.cfg
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

/// --mask-blur 4 against OpenCV's GaussianBlur as AUTOMATIC1111 calls it: within 1 level (Pigment
/// blurs in f64, OpenCV in fixed point), and the same pixels on each side of the 50% cut.
#[test]
fn mask_blur_matches_a1111_opencv_blur() {
    let (_, mask) = inputs();
    let want = load_image(&fixtures().join("inpaint/mask_blur4.png")).unwrap();
    let got = blur_mask(&mask, 4.0);
    let mut worst = 0;
    for (g, w) in got.pixels().zip(want.pixels()) {
        worst = worst.max(g.0[0].abs_diff(w.0[0]));
        assert_eq!(g.0[0] >= 128, w.0[0] >= 128);
    }
    assert!(worst <= 1, "blurred mask off OpenCV's by {worst}");
    assert_ne!(got, mask, "the blur did nothing");
}

#[test]
fn bad_requests_are_rejected_with_the_fix() {
    let model = load_model("tiny-sd1");
    let (init, mask) = inputs();
    let base = Txt2ImgRequest {
        steps: 5,
        ..Txt2ImgRequest::default()
    };
    let run = |req: &InpaintRequest| {
        model
            .inpaint(req, &mut |_, _| {})
            .err()
            .unwrap()
            .to_string()
    };
    let small = ::image::GrayImage::new(32, 64);
    let err = run(&InpaintRequest::new(
        base.clone(),
        init.clone(),
        small,
        0.75,
    ));
    assert!(
        err.contains("mask is 32x64") && err.contains("init image is 64x64"),
        "{err}"
    );
    let mut req = InpaintRequest::new(base.clone(), init.clone(), mask.clone(), 0.75);
    req.mask_blur = -1.0;
    assert!(run(&req).contains("--mask-blur"));
    let err = run(&InpaintRequest::new(base, init, mask, 1.5));
    assert!(err.contains("--strength"), "{err}");
}
