//! Whole text-to-image runs against diffusers' StableDiffusionPipeline on the tiny models
//! (fixtures from tools/reference/make_txt2img_fixtures.py): every sampler, Karras sigmas,
//! epsilon (tiny-sd1) and v-prediction (tiny-sd2), negative prompts, batches, clip skip,
//! guidance off, non-square sizes, DDIM eta, guidance rescale.
//!
//! Tolerances: final 8-bit images within 2/255 per pixel (the bar); final latents within
//! 2e-3 max abs relative to max(1, max |reference|) — f32 rounding differences compound over the
//! UNet's layers and the sampler's steps but stay far below that.

mod common;
use common::*;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use pigment::image::tensor_to_images;
use pigment::pipelines::{LoadOptions, StableDiffusion, Txt2ImgRequest};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    id: String,
    model: String,
    sampler: String,
    karras: bool,
    prompt: String,
    negative: String,
    steps: usize,
    cfg: f64,
    seed: u64,
    width: usize,
    height: usize,
    batch: usize,
    clip_skip: usize,
    eta: f64,
    guidance_rescale: f64,
}

#[test]
fn txt2img_matches_diffusers_for_every_case() {
    let dir = fixtures();
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("txt2img/cases.json")).unwrap())
            .unwrap();
    let outputs =
        candle_core::safetensors::load(dir.join("txt2img/outputs.safetensors"), &Device::Cpu)
            .unwrap();
    let mut models: HashMap<String, StableDiffusion> = HashMap::new();
    let mut failures = Vec::new();
    for case in &cases {
        let model = models.entry(case.model.clone()).or_insert_with(|| {
            StableDiffusion::load(
                &dir.join("models").join(&case.model),
                &LoadOptions::default(),
            )
            .unwrap()
        });
        let request = Txt2ImgRequest {
            prompt: case.prompt.clone(),
            negative_prompt: case.negative.clone(),
            steps: case.steps,
            cfg_scale: case.cfg,
            sampler: case.sampler.parse().unwrap(),
            karras: case.karras,
            eta: case.eta,
            seed: case.seed,
            width: case.width,
            height: case.height,
            batch_size: case.batch,
            clip_skip: case.clip_skip,
            guidance_rescale: case.guidance_rescale,
            ..Txt2ImgRequest::default()
        };
        let out = model.txt2img(&request, &mut |_, _| {}).unwrap();

        let want_latents = &outputs[&format!("{}.latents", case.id)];
        let scale = want_latents
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .max(1.0);
        let latent_err = max_abs_diff(&out.latents, want_latents) / scale;

        let want_images = outputs[&format!("{}.image", case.id)]
            .to_dtype(DType::F32)
            .unwrap();
        let got: Vec<f32> = tensor_to_images(&out.decoded)
            .unwrap()
            .iter()
            .flat_map(|img| img.as_raw().iter().map(|&v| v as f32))
            .collect();
        let got = Tensor::from_vec(got, want_images.shape(), &Device::Cpu).unwrap();
        let pixel_err = max_abs_diff(&got, &want_images);

        let what = format!(
            "{} {} {}{}: latents rel err {latent_err:.2e}, pixels max diff {pixel_err}",
            case.id,
            case.model,
            case.sampler,
            if case.karras { " karras" } else { "" }
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

/// The same weights as single files (LDM layout .safetensors and .ckpt, made by
/// tools/reference/make_single_file_fixtures.py and verified there with diffusers'
/// from_single_file) give the folder's reference images. The tiny models' head and group counts
/// are not SD's, so their configs come from the folder, as diffusers' `config=` argument does.
#[test]
fn single_file_checkpoints_match_the_folder_reference() {
    let dir = fixtures();
    let outputs =
        candle_core::safetensors::load(dir.join("txt2img/outputs.safetensors"), &Device::Cpu)
            .unwrap();
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("txt2img/cases.json")).unwrap())
            .unwrap();
    for (file, model) in [
        ("tiny-sd1.safetensors", "tiny-sd1"),
        ("tiny-sd1.ckpt", "tiny-sd1"),
        ("tiny-sd2.safetensors", "tiny-sd2"),
    ] {
        let options = LoadOptions {
            config: Some(dir.join("models").join(model)),
            ..LoadOptions::default()
        };
        let sd = StableDiffusion::load(&dir.join("single_file").join(file), &options).unwrap();
        let case = cases
            .iter()
            .find(|c| c.model == model && c.sampler == "dpmpp_2m" && !c.karras && c.batch == 1)
            .unwrap();
        let request = Txt2ImgRequest {
            prompt: case.prompt.clone(),
            negative_prompt: case.negative.clone(),
            steps: case.steps,
            cfg_scale: case.cfg,
            sampler: case.sampler.parse().unwrap(),
            karras: false,
            eta: case.eta,
            seed: case.seed,
            width: case.width,
            height: case.height,
            batch_size: 1,
            clip_skip: case.clip_skip,
            ..Txt2ImgRequest::default()
        };
        let out = sd.txt2img(&request, &mut |_, _| {}).unwrap();
        let want = &outputs[&format!("{}.latents", case.id)];
        let scale = want.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        let scale = scale.to_scalar::<f32>().unwrap().max(1.0);
        // Same tolerance as the folder runs above.
        let err = max_abs_diff(&out.latents, want) / scale;
        assert!(err <= 2e-3, "{file}: latents rel err {err:.2e}");
    }
}
