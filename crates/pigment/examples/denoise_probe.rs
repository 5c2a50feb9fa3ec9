//! Where the built-in model loses the scene: renders the eval scenes exactly and scores, with
//! the analyser, (1) their latents decoded with random error of rms sigma added (the decoder's
//! tolerance), and (2) the UNet's one-step x0 prediction (decoded) from those latents noised to
//! timestep t, with the x0 error. Prints the "all" rows.
//!
//! cargo run --release -p pigment --example denoise_probe [MODEL_DIR]
mod common;

use candle_core::{Device, Tensor};
use pigment::builtin::eval::{eval_prompts, EvalPrompt};
use pigment::builtin::render;
use pigment::image::{image_to_tensor, tensor_to_images};
use pigment::pipelines::StableDiffusion;
use pigment::samplers::{add_noise_alpha, predict_x0, PredictionType};
use pigment::schedule::training_alphas_cumprod;

/// Scaled latents of the exact render of each prompt's scene.
fn exact_latents(model: &StableDiffusion, prompts: &[EvalPrompt]) -> anyhow::Result<Vec<Tensor>> {
    let sf = model.vae.config().scaling_factor;
    prompts
        .iter()
        .map(|p| {
            let x = image_to_tensor(&render(&p.scene, 64), &Device::Cpu)?;
            Ok((model.vae.encode(&x)?.mode() * sf)?)
        })
        .collect()
}

/// The score table's "all" rows for images decoded from scaled latents.
fn score_latents(
    model: &StableDiffusion,
    prompts: &[EvalPrompt],
    latents: &[Tensor],
) -> anyhow::Result<String> {
    let sf = model.vae.config().scaling_factor;
    let mut images = Vec::new();
    for z in latents {
        images.push(tensor_to_images(&model.vae.decode(&(z / sf)?)?)?.remove(0));
    }
    let table = common::score_table(prompts, &images)?;
    Ok(table
        .lines()
        .filter(|l| l.starts_with("all"))
        .collect::<Vec<_>>()
        .join("\n"))
}

fn main() -> anyhow::Result<()> {
    let model = common::model_from_args()?;
    let prompts = eval_prompts(4)?;
    let exact = exact_latents(&model, &prompts)?;
    for sigma in [0.0f64, 0.05, 0.1, 0.2, 0.3] {
        let noisy = exact
            .iter()
            .map(|z| Ok((z + (Tensor::randn(0f32, 1.0, z.dims(), &Device::Cpu)? * sigma)?)?))
            .collect::<anyhow::Result<Vec<_>>>()?;
        println!(
            "latent error {sigma}\n{}",
            score_latents(&model, &prompts, &noisy)?
        );
    }
    let abar = training_alphas_cumprod(&model.scheduler_config)?;
    let prediction: PredictionType = model.scheduler_config.prediction_type.parse()?;
    for t in [50usize, 200, 400, 600, 800, 950, 999] {
        let a = abar[t];
        let (mut predicted, mut x0_err) = (Vec::new(), 0.0f32);
        for (p, z) in prompts.iter().zip(&exact) {
            let noise = Tensor::randn(0f32, 1.0, z.dims(), &Device::Cpu)?;
            let xt = add_noise_alpha(z, &noise, a)?;
            let ctx = model.encode_prompts(&[p.caption.as_str()], 1)?;
            let out = model.unet.forward(&xt, t as f64, &ctx)?;
            let x0 = predict_x0(prediction, &out, &xt, a)?;
            x0_err += (&x0 - z)?.sqr()?.mean_all()?.to_scalar::<f32>()?;
            predicted.push(x0);
        }
        let n = prompts.len() as f32;
        println!(
            "t {t} x0 rms error {:.3}\n{}",
            (x0_err / n).sqrt(),
            score_latents(&model, &prompts, &predicted)?
        );
    }
    Ok(())
}
