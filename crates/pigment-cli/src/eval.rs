//! `pigment eval`: how well a model draws the built-in world's captions, per category, on
//! colour-shape pairs seen in training and on held-out ones (see `pigment::builtin::eval`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use pigment::builtin::eval::{evaluate, ClipScorer, EvalConfig, EvalStep};
use pigment::image::save_png;
use pigment::pipelines::{LoadOptions, StableDiffusion};
use pigment::samplers::SamplerKind;

#[derive(Args)]
pub struct EvalArgs {
    /// A diffusers folder, .safetensors or .ckpt (env: PIGMENT_MODEL; default: the built-in
    /// model, models/builtin).
    #[arg(long, env = "PIGMENT_MODEL")]
    pub model: Option<PathBuf>,
    /// A CLIPModel folder (config.json + model.safetensors) for CLIP scores (default:
    /// MODEL/clip when it exists; without one the CLIP column is empty).
    #[arg(long)]
    pub clip: Option<PathBuf>,
    /// Captions per category, for seen and for held-out pairs each.
    #[arg(long, default_value_t = 8)]
    pub prompts_per_category: usize,
    /// Seeds, comma-separated: one image per caption and seed.
    #[arg(long, value_delimiter = ',', default_values_t = [0u64, 1, 2])]
    pub seeds: Vec<u64>,
    /// Sampling steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = 7.5)]
    pub cfg: f64,
    /// Guidance rescale phi, 0 to 1 (as `generate --guidance-rescale`).
    #[arg(long, default_value_t = 0.0)]
    pub guidance_rescale: f64,
    /// Sampler: ddpm, ddim, euler, euler_a, heun, dpmpp_2m, dpmpp_2m_sde, lcm.
    #[arg(long, default_value = "euler_a")]
    pub sampler: String,
    /// Image width in pixels (default: the model's native size).
    #[arg(long)]
    pub width: Option<usize>,
    /// Image height in pixels (default: the model's native size).
    #[arg(long)]
    pub height: Option<usize>,
    /// Print the report as JSON (with every image's result) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write every generated image here as PNG (named by index, category, pairs, seed).
    #[arg(long)]
    pub save_images: Option<PathBuf>,
    /// cpu, cuda[:N] or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

pub fn run(args: EvalArgs) -> Result<()> {
    // Everything a user typed is checked before the model loads.
    let sampler: SamplerKind = args.sampler.parse()?;
    let device = pigment::device::parse_device(&args.device)?;
    let options = LoadOptions {
        device: device.clone(),
        dtype: pigment::device::parse_dtype(&args.dtype)?,
        ..LoadOptions::default()
    };
    let model_path = match &args.model {
        Some(path) => path.clone(),
        None => builtin_model()?,
    };
    let clip_path = args.clip.clone().or_else(|| {
        let default = model_path.join("clip");
        default.join("config.json").is_file().then_some(default)
    });
    if let Some(dir) = &args.save_images {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create --save-images folder {}", dir.display()))?;
    }

    let mut cfg = EvalConfig {
        prompts_per_category: args.prompts_per_category,
        seeds: args.seeds.clone(),
        steps: args.steps,
        cfg_scale: args.cfg,
        guidance_rescale: args.guidance_rescale,
        sampler,
        ..EvalConfig::default()
    };
    cfg.validate()?;

    let model = StableDiffusion::load(&model_path, &options)?;
    let clip = clip_path
        .as_deref()
        .map(|dir| {
            ClipScorer::load(dir, &device).with_context(|| {
                format!(
                    "loading the CLIP model for CLIP scores from {}",
                    dir.display()
                )
            })
        })
        .transpose()?;
    let native = model.unet_config().sample_size * model.vae_scale_factor();
    cfg.width = args.width.unwrap_or(native);
    cfg.height = args.height.unwrap_or(native);

    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} images  {per_sec}  eta {eta}")
            .expect("static progress template"),
    );
    let report = evaluate(&model, clip.as_ref(), &cfg, &mut |step| {
        bar.set_length(step.total as u64);
        bar.set_position(step.done as u64);
        match &args.save_images {
            Some(dir) => save(dir, step, &cfg, &model.name),
            None => Ok(()),
        }
    })?;
    bar.finish_and_clear();

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        println!("model {}", model_path.display());
        if let Some(dir) = &clip_path {
            println!("clip  {}", dir.display());
        }
        print!("{}", report.to_table());
    }
    Ok(())
}

/// The built-in model folder: ./models/builtin, else the one in the source tree this binary
/// was built from.
fn builtin_model() -> Result<PathBuf> {
    Ok(pigment::builtin::builtin_model_dir()?)
}

/// Write one evaluation image, its request recorded as PNG parameters like `generate` does.
fn save(dir: &Path, step: &EvalStep, cfg: &EvalConfig, model_name: &str) -> pigment::Result<()> {
    let name = format!(
        "{:04}-{}-{}-seed{}.png",
        step.done,
        step.prompt.category.name(),
        step.prompt.pairs.name(),
        step.seed
    );
    let request = cfg.request(&step.prompt.caption, step.seed);
    let infotext = request.parameters(model_name).to_infotext();
    save_png(&dir.join(name), step.image, Some(&infotext), true)
}
