//! Adapters against references made by tools/reference/make_adapter_fixtures.py on tiny-sd1:
//! - LCM-LoRA (kohya layout, every module an LCM-LoRA adapts, 3x3 convs included: LoCon)
//!   loaded by diffusers' `load_lora_weights`, sampled by `LCMScheduler` in 4 steps at guidance
//!   1.5;
//! - an AUTOMATIC1111 hypernetwork (.pt as A1111 saves it) at strength 0.7, against a port of
//!   A1111's `HypernetworkModule` / `apply_hypernetworks` installed in diffusers' attention;
//! - one hypernetwork MLP pair on known input at strength 0.7;
//! - a kohya LoRA pickled as `.pt` gives the `.safetensors` file's result (tests/fixtures/lora);
//! - a LoHa (LyCORIS `hada_w1_a`...) on linear, 1x1 and 3x3 conv weights at scale 0.9, against
//!   A1111's network_hada.py definition applied to the weights in torch.
//!
//! Tolerances (those of txt2img_parity.rs and lora.rs): final 8-bit images within 2/255 per
//! pixel; final latents within 2e-3 max abs relative to max(1, max |reference|); the single MLP
//! within 1e-5 relative.

mod common;
use common::*;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use pigment::adapters::Hypernetwork;
use pigment::image::tensor_to_images;
use pigment::pipelines::{LoadOptions, PanoramaRequest, StableDiffusion, Txt2ImgRequest};

fn adapters(name: &str) -> PathBuf {
    fixtures().join("adapters").join(name)
}

fn outputs() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(adapters("outputs.safetensors"), &Device::Cpu).unwrap()
}

fn load(loras: Vec<(PathBuf, f64)>) -> StableDiffusion {
    let options = LoadOptions {
        loras,
        ..LoadOptions::default()
    };
    StableDiffusion::load(&fixtures().join("models/tiny-sd1"), &options).unwrap()
}

fn request(sampler: &str, steps: usize, cfg: f64, seed: u64) -> Txt2ImgRequest {
    Txt2ImgRequest {
        prompt: "a red star above a small green square".into(),
        negative_prompt: String::new(),
        steps,
        cfg_scale: cfg,
        sampler: sampler.parse().unwrap(),
        seed,
        width: 64,
        height: 64,
        ..Txt2ImgRequest::default()
    }
}

fn run(model: &StableDiffusion, req: &Txt2ImgRequest) -> (Tensor, Tensor) {
    let out = model.txt2img(req, &mut |_, _| {}).unwrap();
    let pixels: Vec<f32> = tensor_to_images(&out.decoded)
        .unwrap()
        .iter()
        .flat_map(|img| img.as_raw().iter().map(|&v| v as f32))
        .collect();
    let n = pixels.len();
    (
        out.latents,
        Tensor::from_vec(pixels, n, &Device::Cpu).unwrap(),
    )
}

/// (latent error relative to max(1, max |want|), pixel max diff).
fn errors(got: &(Tensor, Tensor), want_latents: &Tensor, want_image: &Tensor) -> (f32, f32) {
    let want_pixels = want_image
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    (
        max_abs_diff(&got.0, want_latents) / max_abs(want_latents).max(1.0),
        max_abs_diff(&got.1, &want_pixels),
    )
}

#[test]
fn lcm_lora_in_four_steps_matches_diffusers() {
    let out = outputs();
    let model = load(vec![(adapters("loras/lcm.safetensors"), 1.0)]);
    let report = &model.lora_reports[0];
    assert!(
        report.unmatched_keys.is_empty(),
        "{:?}",
        report.unmatched_keys
    );
    // Every attention projection, proj_in/out, feed-forward, resnet conv, time_emb_proj and
    // resampler conv of tiny-sd1 (diffusers counts the same modules).
    assert!(
        report.matched > 60,
        "only {} weights matched",
        report.matched
    );
    let got = run(&model, &request("lcm", 4, 1.5, 7));
    let (latent_err, pixel_err) = errors(&got, &out["lcm_lora.latents"], &out["lcm_lora.image"]);
    let effect = max_abs_diff(&out["lcm_lora.latents"], &out["lcm_base.latents"]);
    println!(
        "lcm-lora: latents rel err {latent_err:.2e}, pixels {pixel_err}, LoRA effect {effect}"
    );
    assert!(effect > 0.5, "the LoRA must change the result");
    assert!(latent_err <= 2e-3 && pixel_err <= 2.0);
}

#[test]
fn hypernetwork_matches_a1111s_module() {
    let out = outputs();
    let net = Hypernetwork::load(&adapters("hypernetworks/sketch.pt")).unwrap();
    assert_eq!(net.name(), "sketch");
    assert_eq!(net.widths(), [16, 32]);
    let x = &out["hypernet_module.input"];
    // The fixture's modules ran at the strength of the pipeline case, 0.7.
    let (k, v) = net.apply(x, x, 0.7).unwrap().unwrap();
    for (got, want) in [
        (k, &out["hypernet_module.k"]),
        (v, &out["hypernet_module.v"]),
    ] {
        let err = max_abs_diff(&got, want) / max_abs(want);
        assert!(err < 1e-5, "MLP off by {err:.2e}");
    }
    // No MLP for a width the file lacks: the context is left alone.
    let other = Tensor::zeros((1, 2, 24), DType::F32, &Device::Cpu).unwrap();
    assert!(net.apply(&other, &other, 1.0).unwrap().is_none());
}

#[test]
fn hypernetwork_run_matches_the_reference_and_can_be_removed() {
    let out = outputs();
    let mut model = load(Vec::new());
    let req = request("euler", 4, 7.5, 42);
    let base = run(&model, &req);
    let net = Hypernetwork::load(&adapters("hypernetworks/sketch.pt")).unwrap();
    model.set_hypernetworks(&[(net, 0.7)]).unwrap();
    let got = run(&model, &req);
    let (latent_err, pixel_err) = errors(&got, &out["hypernet.latents"], &out["hypernet.image"]);
    let effect = max_abs_diff(&base.0, &out["hypernet.latents"]);
    println!("hypernetwork: latents rel err {latent_err:.2e}, pixels {pixel_err}, effect {effect}");
    assert!(effect > 0.05, "the hypernetwork must change the result");
    assert!(latent_err <= 2e-3 && pixel_err <= 2.0);
    // Switched off without reloading: the base model again, bit for bit.
    model.set_hypernetworks(&[]).unwrap();
    let again = run(&model, &req);
    assert_eq!(max_abs_diff(&again.0, &base.0), 0.0);
}

#[test]
fn loha_matches_a1111s_definition() {
    let out = outputs();
    let model = load(vec![(adapters("loras/loha.safetensors"), 0.9)]);
    let report = &model.lora_reports[0];
    assert!(
        report.unmatched_keys.is_empty(),
        "{:?}",
        report.unmatched_keys
    );
    assert_eq!(report.matched, 4);
    let base = run(&load(Vec::new()), &request("euler", 4, 7.5, 42));
    let got = run(&model, &request("euler", 4, 7.5, 42));
    let (latent_err, pixel_err) = errors(&got, &out["loha.latents"], &out["loha.image"]);
    let effect = max_abs_diff(&base.0, &out["loha.latents"]);
    println!("loha: latents rel err {latent_err:.2e}, pixels {pixel_err}, effect {effect}");
    assert!(effect > 0.05, "the LoHa must change the result");
    assert!(latent_err <= 2e-3 && pixel_err <= 2.0);
}

#[test]
fn hypernetworks_reach_the_multidiffusion_loop_too() {
    // A single-window panorama is plain txt2img (panorama_parity.rs), so with the hypernetwork
    // set it must give the hypernetwork reference as well.
    let out = outputs();
    let mut model = load(Vec::new());
    let net = Hypernetwork::load(&adapters("hypernetworks/sketch.pt")).unwrap();
    model.set_hypernetworks(&[(net, 0.7)]).unwrap();
    let request = PanoramaRequest {
        window: 8,
        stride: 4,
        ..PanoramaRequest::new(request("euler", 4, 7.5, 42), &model)
    };
    let fused = model.panorama(&request, &mut |_, _| {}).unwrap();
    let want = &out["hypernet.latents"];
    let err = max_abs_diff(&fused.latents, want) / max_abs(want).max(1.0);
    assert!(err <= 2e-3, "panorama with a hypernetwork off by {err:.2e}");
}

#[test]
fn a_pickled_lora_equals_its_safetensors_twin() {
    let req = request("euler", 4, 7.5, 42);
    let from_pt = run(&load(vec![(adapters("loras/style.pt"), 0.8)]), &req);
    let from_st = run(
        &load(vec![(fixtures().join("lora/kohya.safetensors"), 0.8)]),
        &req,
    );
    assert_eq!(max_abs_diff(&from_pt.0, &from_st.0), 0.0);
}
