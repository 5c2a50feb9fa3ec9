//! `pigment generate PROMPT`: text to image.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use pigment::image::{save_png, tensor_to_images};
use pigment::pipelines::{LoadOptions, StableDiffusion, Txt2ImgRequest};
use pigment::samplers::SamplerKind;
use pigment::weights::Prediction;

use crate::output::{check_writable, output_paths};

#[derive(Args)]
pub struct GenerateArgs {
    /// What to draw.
    pub prompt: String,
    /// A diffusers folder, a single-file .safetensors or a .ckpt (env: PIGMENT_MODEL).
    #[arg(long, env = "PIGMENT_MODEL")]
    pub model: Option<PathBuf>,
    /// What to steer away from (the unconditional side of classifier-free guidance).
    #[arg(long, default_value = "")]
    pub negative: String,
    /// Number of sampling steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Classifier-free guidance scale (1 disables guidance).
    #[arg(long, default_value_t = 7.5)]
    pub cfg: f64,
    /// Sampler: ddpm, ddim, euler, euler_a, heun, dpmpp_2m, dpmpp_2m_sde, lcm.
    #[arg(long, default_value = "euler_a")]
    pub sampler: String,
    /// Karras sigma schedule (euler, heun, dpmpp_2m, dpmpp_2m_sde).
    #[arg(long)]
    pub karras: bool,
    /// DDIM eta: 0 is deterministic, 1 is DDPM-like.
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Seed of the torch-compatible noise generator (same seed, same image as diffusers).
    /// Random when not given; the seed used is printed and stored in the PNG.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Image width in pixels (default: the model's native size).
    #[arg(long)]
    pub width: Option<usize>,
    /// Image height in pixels (default: the model's native size).
    #[arg(long)]
    pub height: Option<usize>,
    /// Number of images from the one seed.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// AUTOMATIC1111's clip skip: 1 uses the last text-encoder layer, 2 the one before, ...
    #[arg(long, default_value_t = 1)]
    pub clip_skip: usize,
    /// Override the checkpoint's prediction type: epsilon or v (SD2 768 models need v).
    #[arg(long)]
    pub prediction: Option<String>,
    /// A diffusers folder whose config files describe a single-file checkpoint's architecture
    /// (needed only for models whose head or group counts differ from SD1.x / SD2.x).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output PNG (a batch writes NAME-1.png, NAME-2.png, ...).
    #[arg(long, short, default_value = "pigment.png")]
    pub out: PathBuf,
    /// Overwrite existing output files.
    #[arg(long)]
    pub force: bool,
    /// cpu, cuda[:N] or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let start = Instant::now();
    // Everything a user typed is checked before the model loads.
    let sampler: SamplerKind = args.sampler.parse()?;
    let prediction = args
        .prediction
        .as_deref()
        .map(str::parse::<Prediction>)
        .transpose()?;
    let options = LoadOptions {
        device: pigment::device::parse_device(&args.device)?,
        dtype: pigment::device::parse_dtype(&args.dtype)?,
        prediction,
        config: args.config.clone(),
    };
    let outputs = output_paths(&args.out, args.batch.max(1));
    check_writable(&outputs, args.force)?;
    let model_path = args.model.clone().context(
        "no model given: pass --model with a diffusers folder, a .safetensors or a .ckpt \
         (or set PIGMENT_MODEL)",
    )?;

    let model = StableDiffusion::load(&model_path, &options)?;
    let native = model.unet.config().sample_size * model.vae_scale_factor();
    let request = Txt2ImgRequest {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative.clone(),
        steps: args.steps,
        cfg_scale: args.cfg,
        sampler,
        karras: args.karras,
        eta: args.eta,
        seed: args.seed.unwrap_or_else(random_seed),
        width: args.width.unwrap_or(native),
        height: args.height.unwrap_or(native),
        batch_size: args.batch,
        clip_skip: args.clip_skip,
    };
    request.validate(&model)?;

    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {per_sec}  eta {eta}")
            .expect("static progress template"),
    );
    let output = model.txt2img(&request, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();

    let images = tensor_to_images(&output.decoded)?;
    for (i, (image, path)) in images.iter().zip(&outputs).enumerate() {
        let mut params = request.parameters(&model.name);
        if images.len() > 1 {
            params
                .extra
                .push(("Batch size".into(), images.len().to_string()));
            params.extra.push(("Batch pos".into(), i.to_string()));
        }
        save_png(path, image, Some(&params.to_infotext()), args.force)?;
    }
    let sampling = output.sampling_time.as_secs_f64();
    let per_step = sampling / output.evaluations.max(1) as f64;
    eprintln!(
        "seed {} · load {:.2} s · {} steps {:.2} s ({:.3} s/step, {:.2} it/s) · decode {:.2} s · total {:.2} s",
        request.seed,
        model.load_time.as_secs_f64(),
        output.evaluations,
        sampling,
        per_step,
        1.0 / per_step.max(1e-9),
        output.decode_time.as_secs_f64(),
        start.elapsed().as_secs_f64(),
    );
    for path in &outputs {
        println!("{}", path.display());
    }
    Ok(())
}

fn random_seed() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // A1111 seeds fit in 32 bits; keep ours in that range so they paste back into it.
    (nanos as u64 ^ (nanos >> 64) as u64) & 0xFFFF_FFFF
}
