//! The eval's ceiling set by the autoencoder: scores the eval scenes rendered exactly and after a
//! VAE round trip (encode mode -> decode). If the round trip fails the analyser, no UNet can pass.
//!
//! cargo run --release -p pigment --example vae_ceiling [MODEL_DIR]
mod common;

use candle_core::Device;
use pigment::builtin::eval::eval_prompts;
use pigment::builtin::render;
use pigment::image::{image_to_tensor, tensor_to_images};

fn main() -> anyhow::Result<()> {
    let model = common::model_from_args()?;
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
    println!("exact renders:\n{}", common::score_table(&prompts, &exact)?);
    println!(
        "VAE round trip:\n{}",
        common::score_table(&prompts, &round)?
    );
    Ok(())
}
