//! Where the built-in model loses the scene: renders the eval scenes exactly, noises their
//! latents to timestep t, and scores the UNet's one-step x0 prediction (decoded) with the
//! analyser, per t; also its unweighted epsilon MSE. A model that denoises well in one step at
//! t but fails when sampling from pure noise loses the scene in the early (high-noise) steps.
//!
//! cargo run --release -p pigment --example denoise_probe [MODEL_DIR]
use candle_core::{Device, Tensor};
use pigment::builtin::eval::{eval_prompts, score_images};
use pigment::builtin::render;
use pigment::image::{image_to_tensor, tensor_to_images};
use pigment::pipelines::{LoadOptions, StableDiffusion};
use pigment::schedule::training_alphas_cumprod;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| pigment::builtin::builtin_model_dir().expect("builtin"));
    let model = StableDiffusion::load(&dir, &LoadOptions::default())?;
    let prompts = eval_prompts(4)?;
    let abar = training_alphas_cumprod(&model.scheduler_config)?;
    let sf = model.vae.config().scaling_factor;
    // The decoder's tolerance: exact latents plus Gaussian error of rms sigma (scaled space).
    for &sigma in &[0.0f64, 0.05, 0.1, 0.2, 0.3] {
        let mut images = Vec::new();
        for p in &prompts {
            let x = image_to_tensor(&render(&p.scene, 64), &Device::Cpu)?;
            let z = (model.vae.encode(&x)?.mode() * sf)?;
            let noise = Tensor::randn(0f32, 1.0, z.dims(), &Device::Cpu)?;
            let zn = (z + (noise * sigma)?)?;
            images.push(tensor_to_images(&model.vae.decode(&(zn / sf)?)?)?.remove(0));
        }
        let items: Vec<_> = prompts
            .iter()
            .zip(&images)
            .map(|(p, i)| (p, 0u64, i))
            .collect();
        let table = score_images(&items, None)?.to_table();
        let all = table
            .lines()
            .filter(|l| l.starts_with("all"))
            .collect::<Vec<_>>();
        println!("latent error {sigma}\n{}", all.join("\n"));
    }
    for &t in &[50usize, 200, 400, 600, 800, 950, 999] {
        let a = abar[t] as f64;
        let (mut images, mut mse, mut x0_err) = (Vec::new(), 0.0f32, 0.0f32);
        for p in &prompts {
            let x = image_to_tensor(&render(&p.scene, 64), &Device::Cpu)?;
            let z = (model.vae.encode(&x)?.mode() * sf)?;
            let noise = Tensor::randn(0f32, 1.0, z.dims(), &Device::Cpu)?;
            let xt = ((&z * a.sqrt())? + (&noise * (1.0 - a).sqrt())?)?;
            let ctx = model.encode_prompts(&[p.caption.as_str()], 1)?;
            let eps = model.unet.forward(&xt, t as f64, &ctx)?;
            mse += (&eps - &noise)?.sqr()?.mean_all()?.to_scalar::<f32>()?;
            let x0 = ((xt - (eps * (1.0 - a).sqrt())?)? / a.sqrt())?;
            x0_err += (&x0 - &z)?.sqr()?.mean_all()?.to_scalar::<f32>()?;
            images.push(tensor_to_images(&model.vae.decode(&(x0 / sf)?)?)?.remove(0));
        }
        let items: Vec<_> = prompts
            .iter()
            .zip(&images)
            .map(|(p, i)| (p, 0u64, i))
            .collect();
        let table = score_images(&items, None)?.to_table();
        let all = table
            .lines()
            .filter(|l| l.starts_with("all"))
            .collect::<Vec<_>>();
        println!(
            "t {t} eps mse {:.4} x0 rms error {:.3}\n{}",
            mse / prompts.len() as f32,
            (x0_err / prompts.len() as f32).sqrt(),
            all.join("\n")
        );
    }
    Ok(())
}
