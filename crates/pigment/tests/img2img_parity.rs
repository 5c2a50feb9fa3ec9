//! Whole image-to-image runs against diffusers' StableDiffusionImg2ImgPipeline on the tiny
//! models (fixtures from tools/reference/make_img2img_fixtures.py, init image
//! tests/fixtures/img2img/init.png): DDIM, Euler, Euler a, Heun and DPM++ 2M at strengths 0.3,
//! 0.75 and 1.0, epsilon (tiny-sd1) and v-prediction (tiny-sd2), a negative prompt, a batch of
//! two from one image. This checks the order of random draws (VAE sample, then noise, then the
//! sampler's own), get_timesteps' strength rule and add_noise at the first kept timestep.
//!
//! Tolerances, as txt2img_parity.rs: final 8-bit images within 2/255 per pixel; final latents
//! within 2e-3 max abs relative to max(1, max |reference|).

mod common;
use common::*;

use std::collections::HashMap;
use std::path::Path;

use candle_core::Device;
use pigment::image::load_image;
use pigment::pipelines::{Img2ImgRequest, LoadOptions, StableDiffusion, Txt2ImgRequest};
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
}

fn load_model(name: &str) -> StableDiffusion {
    StableDiffusion::load(
        &fixtures().join("models").join(name),
        &LoadOptions::default(),
    )
    .unwrap()
}

fn request(case: &Case, init: &::image::RgbImage) -> Img2ImgRequest {
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
    Img2ImgRequest::new(base, init.clone(), case.strength)
}

#[test]
fn img2img_matches_diffusers_for_every_case() {
    let dir = fixtures();
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("img2img/cases.json")).unwrap())
            .unwrap();
    let outputs =
        candle_core::safetensors::load(dir.join("img2img/outputs.safetensors"), &Device::Cpu)
            .unwrap();
    let init = load_image(&dir.join("img2img/init.png")).unwrap();
    let mut models: HashMap<String, StableDiffusion> = HashMap::new();
    let mut failures = Vec::new();
    for case in &cases {
        let model = models
            .entry(case.model.clone())
            .or_insert_with(|| load_model(&case.model));
        let req = request(case, &init);
        let mut calls = 0;
        let out = model.img2img(&req, &mut |_, _| calls += 1).unwrap();
        // diffusers runs min(int(steps * strength), steps) steps (Heun: two evaluations each
        // but the first of the schedule's tail).
        assert_eq!(calls, out.evaluations, "{}", case.id);

        let (latent_err, pixel_err) = reference_errors(&out, &outputs, &case.id, true);
        let what = format!(
            "{} {} {} strength {} ({} evaluations): latents rel err {latent_err:.2e}, pixels max diff {pixel_err}",
            case.id, case.model, case.sampler, case.strength, out.evaluations
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

#[test]
fn steps_run_follow_diffusers_get_timesteps() {
    let init = ::image::RgbImage::new(64, 64);
    let base = Txt2ImgRequest {
        steps: 5,
        ..Txt2ImgRequest::default()
    };
    for (strength, want) in [(0.3, 1), (0.75, 3), (1.0, 5), (0.19, 0)] {
        let req = Img2ImgRequest::new(base.clone(), init.clone(), strength);
        assert_eq!(req.steps_run(), want, "strength {strength}");
    }
}

#[test]
fn bad_requests_are_rejected_with_the_fix() {
    let model = load_model("tiny-sd1");
    let base = Txt2ImgRequest {
        steps: 5,
        ..Txt2ImgRequest::default()
    };
    let square = ::image::RgbImage::new(64, 64);
    let run = |req: &Img2ImgRequest| {
        model
            .img2img(req, &mut |_, _| {})
            .err()
            .unwrap()
            .to_string()
    };

    for strength in [0.0, -0.5, 1.5, f64::NAN] {
        let err = run(&Img2ImgRequest::new(base.clone(), square.clone(), strength));
        assert!(
            err.contains("--strength") && err.contains("(0, 1]"),
            "{err}"
        );
    }
    // int(5 * 0.1) = 0 steps: diffusers would fail on an empty schedule.
    let err = run(&Img2ImgRequest::new(base.clone(), square.clone(), 0.1));
    assert!(err.contains("raise --steps to at least 10"), "{err}");
    let err = run(&Img2ImgRequest::new(base.clone(), square.clone(), 1e-300));
    assert!(err.contains("raise --steps"), "{err}");

    let odd = ::image::RgbImage::new(60, 64);
    let err = run(&Img2ImgRequest::new(base.clone(), odd, 0.75));
    assert!(err.contains("60x64") && err.contains("56x64"), "{err}");

    let mut req = Img2ImgRequest::new(base.clone(), square, 0.75);
    req.base.width = 128;
    let err = run(&req);
    assert!(err.contains("64x64") && err.contains("128x64"), "{err}");

    let err = load_image(Path::new("no/such/init.png"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no such file"), "{err}");
}
