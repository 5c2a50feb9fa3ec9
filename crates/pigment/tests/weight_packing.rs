//! `--weights f16|q8` on tiny-sd1: the UNet and text encoder run from packed weights (f16, or
//! per-output-channel int8 dequantised in each forward) and the final image stays close to the
//! f32 one on the same seed. The quality cost is stated as the PSNR of the 8-bit image against
//! f32's.

mod common;
use common::*;

use pigment::image::tensor_to_images;
use pigment::ops::WeightFormat;
use pigment::pipelines::{LoadOptions, StableDiffusion, Txt2ImgOutput, Txt2ImgRequest};
use pigment::samplers::SamplerKind;

fn generate(weights: WeightFormat) -> Txt2ImgOutput {
    let model = StableDiffusion::load_with_weights(
        &fixtures().join("models/tiny-sd1"),
        &LoadOptions::default(),
        weights,
    )
    .unwrap();
    let request = Txt2ImgRequest {
        prompt: "a red star above a small green square".into(),
        steps: 8,
        sampler: SamplerKind::Euler,
        seed: 7,
        width: 64,
        height: 64,
        ..Txt2ImgRequest::default()
    };
    model.txt2img(&request, &mut |_, _| {}).unwrap()
}

/// PSNR in dB of two 8-bit images (infinite when equal).
fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

#[test]
fn q8_weights_stay_close_to_f32() {
    let full = generate(WeightFormat::Full);
    let reference = tensor_to_images(&full.decoded).unwrap().remove(0);
    let q8 = generate(WeightFormat::Q8);
    // The int8 run really is a different computation (the weights were packed) ...
    let moved = max_abs_diff(&q8.latents, &full.latents);
    assert!(moved > 0.0, "identical latents: were the weights packed?");
    // ... whose image is within the stated PSNR of f32's. Bar: 45 dB (an RMS error of about
    // 1.4 levels out of 255); measured 53.0 dB on this fixture when written.
    let image = tensor_to_images(&q8.decoded).unwrap().remove(0);
    let db = psnr(image.as_raw(), reference.as_raw());
    eprintln!("q8: PSNR {db:.1} dB vs f32, latents max diff {moved:.2e}");
    assert!(db >= 45.0, "q8: PSNR {db:.1} dB < 45 dB");
}

#[test]
fn f16_weights_of_an_f16_checkpoint_are_exact() {
    // tiny-sd1 is stored in f16, so holding its weights in f16 loses nothing: the widen-in-the-
    // forward path must then give exactly the dense path's numbers.
    let full = generate(WeightFormat::Full);
    let f16 = generate(WeightFormat::F16);
    assert_eq!(max_abs_diff(&f16.latents, &full.latents), 0.0);
}

#[test]
fn unknown_weight_format_is_refused_with_the_choices() {
    let err = "int4".parse::<WeightFormat>().unwrap_err().to_string();
    assert!(err.contains("--weights int4"), "{err}");
    for choice in ["f32", "f16", "q8"] {
        assert!(err.contains(choice), "{err}");
    }
}
