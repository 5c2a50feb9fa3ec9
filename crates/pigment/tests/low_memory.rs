//! Low-memory txt2img on tiny-sd1: the same image as txt2img (bit for bit: the same operations
//! in the same order), and a released text encoder or UNet refuses to run instead of giving
//! wrong numbers. A deferred model (`load_deferred`) loads each component when a run needs it,
//! so its runs repeat, with textual-inversion embeddings kept across reloads.

mod common;

use pigment::adapters::load_textual_inversion;
use pigment::ops::WeightFormat;
use pigment::pipelines::{LoadOptions, StableDiffusion, Txt2ImgRequest};
use pigment::samplers::SamplerKind;

use common::{fixtures, max_abs_diff};

fn load() -> StableDiffusion {
    StableDiffusion::load(&fixtures().join("models/tiny-sd1"), &LoadOptions::default()).unwrap()
}

fn load_deferred() -> StableDiffusion {
    StableDiffusion::load_deferred(
        &fixtures().join("models/tiny-sd1"),
        &LoadOptions::default(),
        WeightFormat::Full,
    )
    .unwrap()
}

fn request(prompt: &str) -> Txt2ImgRequest {
    Txt2ImgRequest {
        prompt: prompt.into(),
        negative_prompt: "blurry".into(),
        steps: 3,
        sampler: SamplerKind::Euler,
        seed: 7,
        width: 64,
        height: 64,
        ..Txt2ImgRequest::default()
    }
}

#[test]
fn a_deferred_model_loads_each_component_per_run_and_its_runs_repeat() {
    let request = request("a red circle");
    let plain = load().txt2img(&request, &mut |_, _| {}).unwrap();
    let mut model = load_deferred();
    assert!(!model.is_loaded());
    assert!(!model.vae.has_weights(), "the VAE must wait for the decode");
    let err = model
        .txt2img(&request, &mut |_, _| {})
        .err()
        .expect("a deferred model must refuse plain txt2img");
    assert!(
        err.to_string().contains("load_released"),
        "the error must say how to load the components: {err}"
    );
    for run in 0..2 {
        let low = model.txt2img_low_memory(&request, &mut |_, _| {}).unwrap();
        assert_eq!(max_abs_diff(&plain.decoded, &low.decoded), 0.0, "run {run}");
        assert!(!model.is_loaded(), "run {run} must free what it loaded");
        assert!(!model.vae.has_weights());
    }
    model.load_released().unwrap();
    assert!(model.is_loaded());
    let again = model.txt2img(&request, &mut |_, _| {}).unwrap();
    assert_eq!(max_abs_diff(&plain.decoded, &again.decoded), 0.0);
}

#[test]
fn a_deferred_model_keeps_textual_inversion_across_reloads() {
    let embeddings = fixtures().join("prompts/embeddings/learned_embeds.safetensors");
    let embedding = load_textual_inversion(&embeddings).unwrap().remove(0);
    let request = request(&format!("a photo of {}", embedding.name));
    let mut plain = load();
    plain.add_textual_inversion(&embedding).unwrap();
    let want = plain.txt2img(&request, &mut |_, _| {}).unwrap();
    let without = load().txt2img(&request, &mut |_, _| {}).unwrap();
    assert!(max_abs_diff(&want.decoded, &without.decoded) > 1e-3);

    let mut model = load_deferred();
    model.add_textual_inversion(&embedding).unwrap();
    for run in 0..2 {
        let low = model.txt2img_low_memory(&request, &mut |_, _| {}).unwrap();
        assert_eq!(max_abs_diff(&want.decoded, &low.decoded), 0.0, "run {run}");
    }
}

#[test]
fn low_memory_txt2img_matches_txt2img_and_frees_the_text_encoder_and_unet() {
    let request = request("a red circle");
    let plain = load().txt2img(&request, &mut |_, _| {}).unwrap();
    let mut model = load();
    let low = model.txt2img_low_memory(&request, &mut |_, _| {}).unwrap();
    assert_eq!(max_abs_diff(&plain.decoded, &low.decoded), 0.0);
    assert_eq!(max_abs_diff(&plain.latents, &low.latents), 0.0);
    assert_eq!(
        model.text_encoder.token_count(),
        1,
        "the weights were not released"
    );
    let again = model.txt2img(&request, &mut |_, _| {});
    assert!(
        again.is_err(),
        "a released text encoder must refuse to encode"
    );
    let latents = low.latents.clone();
    let context =
        candle_core::Tensor::zeros((1, 77, 32), latents.dtype(), latents.device()).unwrap();
    assert!(
        model.unet.forward(&latents, 10.0, &context).is_err(),
        "a released UNet must refuse to denoise"
    );
    // The VAE stays: the latents still decode to the same image.
    let decoded = model.decode_latents(&low.latents).unwrap();
    assert_eq!(max_abs_diff(&plain.decoded, &decoded), 0.0);
}

#[test]
fn a_deferred_model_refuses_run_time_loras() {
    let options = LoadOptions {
        lora_mode: pigment::adapters::LoraMode::Runtime,
        ..LoadOptions::default()
    };
    let err = StableDiffusion::load_deferred(
        &fixtures().join("models/tiny-sd1"),
        &options,
        WeightFormat::Full,
    )
    .err()
    .expect("run-time LoRAs need the UNet resident");
    assert!(err.to_string().contains("--lora-mode merge"), "{err}");
}
