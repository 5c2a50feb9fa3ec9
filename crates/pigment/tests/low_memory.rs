//! Low-memory txt2img on tiny-sd1: the same image as txt2img (bit for bit: the same operations
//! in the same order), and a released text encoder or UNet refuses to run instead of giving
//! wrong numbers.

mod common;

use pigment::pipelines::{LoadOptions, StableDiffusion, Txt2ImgRequest};
use pigment::samplers::SamplerKind;

use common::{fixtures, max_abs_diff};

fn load() -> StableDiffusion {
    StableDiffusion::load(&fixtures().join("models/tiny-sd1"), &LoadOptions::default()).unwrap()
}

#[test]
fn low_memory_txt2img_matches_txt2img_and_frees_the_text_encoder_and_unet() {
    let request = Txt2ImgRequest {
        prompt: "a red circle".into(),
        negative_prompt: "blurry".into(),
        steps: 3,
        sampler: SamplerKind::Euler,
        seed: 7,
        width: 64,
        height: 64,
        ..Txt2ImgRequest::default()
    };
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
