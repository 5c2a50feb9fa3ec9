//! `pigment info PATH`: what Pigment sees in a checkpoint.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use pigment::weights::{Checkpoint, Component, OpenOptions};

#[derive(Args)]
pub struct InfoArgs {
    /// A diffusers folder, a single-file .safetensors or a .ckpt.
    pub path: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InfoArgs) -> Result<()> {
    let ck = Checkpoint::open(&args.path, &OpenOptions::default())?;
    let counts: Vec<(&str, usize)> = [
        ("text_encoder", Component::TextEncoder),
        ("unet", Component::Unet),
        ("vae", Component::Vae),
    ]
    .into_iter()
    .map(|(name, c)| (name, ck.parameter_count(c)))
    .collect();
    if args.json {
        let params: serde_json::Map<String, serde_json::Value> = counts
            .iter()
            .map(|(n, c)| (n.to_string(), (*c).into()))
            .collect();
        let doc = serde_json::json!({
            "path": ck.path.display().to_string(),
            "format": format!("{:?}", ck.format),
            "family": ck.family.to_string(),
            "prediction": format!("{:?}", ck.prediction),
            "stored_dtype": format!("{:?}", ck.stored_dtype),
            "unet_in_channels": ck.unet_config.in_channels,
            "parameters": params,
            "unknown_keys": ck.unknown_keys,
            "notes": ck.notes,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("path:          {}", ck.path.display());
    println!("format:        {:?}", ck.format);
    println!("family:        {}", ck.family);
    println!("prediction:    {:?}", ck.prediction);
    println!("stored dtype:  {:?}", ck.stored_dtype);
    println!(
        "unet:          in_channels {}, block_out_channels {:?}, cross_attention_dim {:?}",
        ck.unet_config.in_channels,
        ck.unet_config.block_out_channels,
        ck.unet_config.cross_attention_dim
    );
    for (name, count) in &counts {
        println!("params {name:<13} {:>8.1} M", *count as f64 / 1e6);
    }
    for note in &ck.notes {
        println!("note:          {note}");
    }
    if ck.unknown_keys.is_empty() {
        println!("unknown keys:  none");
    } else {
        println!("unknown keys:  {}", ck.unknown_keys.len());
        for key in ck.unknown_keys.iter().take(20) {
            println!("  {key}");
        }
        if ck.unknown_keys.len() > 20 {
            println!("  ... and {} more", ck.unknown_keys.len() - 20);
        }
    }
    Ok(())
}
