//! The eval's ceiling set by the autoencoder: scores the eval scenes rendered exactly and after a
//! VAE round trip (encode mode -> decode). If the round trip fails the analyser, no UNet can pass.
//!
//! cargo run --release -p pigment --example vae_ceiling [MODEL_DIR]
use candle_core::Device;
use pigment::builtin::eval::{eval_prompts, score_images};
use pigment::builtin::render;
use pigment::image::{image_to_tensor, tensor_to_images};
use pigment::pipelines::{LoadOptions, StableDiffusion};

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| pigment::builtin::builtin_model_dir().expect("builtin"));
    let model = StableDiffusion::load(&dir, &LoadOptions::default())?;
    let prompts = eval_prompts(8)?;
    let mut exact = Vec::new();
    let mut round = Vec::new();
    for p in &prompts {
        let img = render(&p.scene, 64);
        let x = image_to_tensor(&img, &Device::Cpu)?;
        let z = model.vae.encode(&x)?.mode();
        let y = model.vae.decode(&z)?;
        round.push(tensor_to_images(&y)?.remove(0));
        exact.push(img);
    }
    let items: Vec<_> = prompts
        .iter()
        .zip(&exact)
        .map(|(p, i)| (p, 0u64, i))
        .collect();
    println!("exact renders:\n{}", score_images(&items, None)?.to_table());
    let items: Vec<_> = prompts
        .iter()
        .zip(&round)
        .map(|(p, i)| (p, 0u64, i))
        .collect();
    println!(
        "VAE round trip:\n{}",
        score_images(&items, None)?.to_table()
    );
    Ok(())
}
