//! The eval's ceiling set by the autoencoder: scores the eval scenes rendered exactly and after a
//! VAE round trip (encode mode -> decode). If the round trip fails the analyser, no UNet can pass.
//!
//! cargo run --release -p pigment --example vae_ceiling [MODEL_DIR] [--failures DIR]
//! (`--failures DIR`: each round trip the analyser rejects, saved next to its exact render as
//! DIR/NN.png, with the caption and what failed printed.)
mod common;

use candle_core::Device;
use pigment::builtin::eval::eval_prompts;
use pigment::builtin::{analyse, render};
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
    let failures = std::env::args()
        .skip_while(|a| a != "--failures")
        .nth(1)
        .map(std::path::PathBuf::from);
    if let Some(dir) = &failures {
        std::fs::create_dir_all(dir)?;
        for (i, (p, (e, r))) in prompts.iter().zip(exact.iter().zip(&round)).enumerate() {
            let verdict = analyse(r, &p.query);
            if verdict.all_correct() {
                continue;
            }
            println!("{i:02} {:?}: {}", verdict.failures(), p.caption);
            let mut pair = image::RgbImage::new(e.width() * 2, e.height());
            image::imageops::replace(&mut pair, e, 0, 0);
            image::imageops::replace(&mut pair, r, e.width() as i64, 0);
            pair.save(dir.join(format!("{i:02}.png")))?;
        }
    }
    println!("exact renders:\n{}", common::score_table(&prompts, &exact)?);
    println!(
        "VAE round trip:\n{}",
        common::score_table(&prompts, &round)?
    );
    Ok(())
}
