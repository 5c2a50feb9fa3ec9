//! Shared by the built-in model's probe examples (`mod common;`); each uses a part of it.
#![allow(dead_code)]

use pigment::builtin::eval::{score_images, EvalPrompt};
use pigment::pipelines::{LoadOptions, StableDiffusion};

/// The model folder given as the first argument, or the built-in model.
pub fn model_from_args() -> anyhow::Result<StableDiffusion> {
    let dir = match std::env::args().nth(1) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => pigment::builtin::builtin_model_dir()?,
    };
    Ok(StableDiffusion::load(&dir, &LoadOptions::default())?)
}

/// The eval's score table for one image per prompt (seed 0).
pub fn score_table(prompts: &[EvalPrompt], images: &[image::RgbImage]) -> anyhow::Result<String> {
    let items: Vec<_> = prompts
        .iter()
        .zip(images)
        .map(|(p, i)| (p, 0u64, i))
        .collect();
    Ok(score_images(&items, None)?.to_table())
}
