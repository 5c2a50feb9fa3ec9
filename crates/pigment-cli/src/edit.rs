//! `pigment edit IMAGE "INSTRUCTION"`: InstructPix2Pix (Brooks et al. 2022) instruction editing
//! with an 8-channel InstructPix2Pix model (e.g. timbrooks/instruct-pix2pix), as diffusers'
//! StableDiffusionInstructPix2PixPipeline does it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use pigment::image::{load_image, save_png, tensor_to_images, GenerationParameters};
use pigment::pipelines::instruct_pix2pix::DEFAULT_IMAGE_CFG;
use pigment::pipelines::{InstructPix2PixRequest, LoadOptions, StableDiffusion, Txt2ImgRequest};
use pigment::samplers::SamplerKind;

use crate::output::{check_writable, output_paths};

#[derive(Args)]
pub struct EditArgs {
    /// The image to edit (PNG or JPEG), both sides a multiple of 8; the result has its size.
    pub image: PathBuf,
    /// The edit, written as an instruction ("make it winter", "turn the cat into a dog").
    pub instruction: String,
    /// An InstructPix2Pix model (UNet in_channels 8): a diffusers folder, a single-file
    /// .safetensors or a .ckpt (env: PIGMENT_MODEL).
    #[arg(long, env = "PIGMENT_MODEL")]
    pub model: Option<PathBuf>,
    /// What to steer away from (the text-unconditional side of the guidance).
    #[arg(long, default_value = "")]
    pub negative: String,
    /// Number of sampling steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Text guidance scale s_T: how strongly to follow the instruction. Guidance runs only when
    /// it is above 1 and --image-cfg is at least 1 (diffusers' rule).
    #[arg(long, default_value_t = 7.5)]
    pub cfg: f64,
    /// Image guidance scale s_I: how closely to stay with the image (diffusers' default 1.5).
    #[arg(long, default_value_t = DEFAULT_IMAGE_CFG)]
    pub image_cfg: f64,
    /// Sampler: ddpm, ddim, euler, euler_a, heun, dpmpp_2m, dpmpp_2m_sde, lcm
    /// (timbrooks/instruct-pix2pix ships Euler a).
    #[arg(long, default_value = "euler_a")]
    pub sampler: String,
    /// Karras sigma schedule (euler, heun, dpmpp_2m, dpmpp_2m_sde).
    #[arg(long)]
    pub karras: bool,
    /// Seed of the torch-compatible noise generator (same seed, same image as diffusers).
    /// Random when not given; the seed used is printed and stored in the PNG.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Number of edits from the one seed.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Output PNG (a batch writes NAME-1.png, NAME-2.png, ...).
    #[arg(long, short, default_value = "pigment-edit.png")]
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
    #[command(flatten)]
    pub prompts: crate::prompt_args::PromptArgs,
}

pub fn run(args: EditArgs) -> Result<()> {
    let start = Instant::now();
    // Everything a user typed is checked before the model loads.
    let sampler: SamplerKind = args.sampler.parse()?;
    let prompt_syntax = args.prompts.syntax()?;
    let embeddings = args.prompts.load_embeddings()?;
    let options = LoadOptions {
        device: pigment::device::parse_device(&args.device)?,
        dtype: pigment::device::parse_dtype(&args.dtype)?,
        ..LoadOptions::default()
    };
    if !args.image_cfg.is_finite() || !args.cfg.is_finite() {
        anyhow::bail!(
            "--cfg and --image-cfg must be finite numbers (e.g. --cfg 7.5 --image-cfg 1.5)"
        );
    }
    let image = load_image(&args.image).context("reading the image to edit")?;
    // Every SD VAE downsamples by 8; checked here too so a wrong size fails before loading.
    if image.width() % 8 != 0 || image.height() % 8 != 0 {
        anyhow::bail!(
            "{}: the image is {}x{}; both sides must be multiples of 8 (Pigment does not \
             resample): crop or resize it to {}x{} first",
            args.image.display(),
            image.width(),
            image.height(),
            (image.width() / 8).max(1) * 8,
            (image.height() / 8).max(1) * 8
        );
    }
    let outputs = output_paths(&args.out, args.batch.max(1));
    check_writable(&outputs, args.force)?;
    let model_path = args.model.clone().context(
        "no model given: pass --model with an InstructPix2Pix model (UNet in_channels 8, e.g. \
         timbrooks/instruct-pix2pix) or set PIGMENT_MODEL",
    )?;

    let mut model = StableDiffusion::load(&model_path, &options)?;
    crate::prompt_args::PromptArgs::add_to(&mut model, &embeddings)?;
    crate::prompt_args::warn_about_prompt("instruction", &args.instruction, prompt_syntax);
    crate::prompt_args::warn_about_prompt("--negative", &args.negative, prompt_syntax);
    let base = Txt2ImgRequest {
        prompt: args.instruction.clone(),
        negative_prompt: args.negative.clone(),
        steps: args.steps,
        cfg_scale: args.cfg,
        sampler,
        karras: args.karras,
        seed: args.seed.unwrap_or_else(random_seed),
        batch_size: args.batch,
        prompt_syntax,
        ..Txt2ImgRequest::default()
    };
    let request = InstructPix2PixRequest::new(base, image, args.image_cfg);
    request.validate(&model)?;

    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {per_sec}  eta {eta}")
            .expect("static progress template"),
    );
    let mut progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let output = model.instruct_pix2pix(&request, &mut progress)?;
    bar.finish_and_clear();

    let images = tensor_to_images(&output.decoded)?;
    for (i, (image, path)) in images.iter().zip(&outputs).enumerate() {
        let mut params: GenerationParameters = request.parameters(&model.name);
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
        "edit of {}x{} image · cfg {} · image cfg {}{}",
        request.image.width(),
        request.image.height(),
        args.cfg,
        args.image_cfg,
        if request.guidance_enabled() {
            ""
        } else {
            " (guidance off: it needs --cfg > 1 and --image-cfg >= 1)"
        }
    );
    eprintln!(
        "seed {} · load {:.2} s · {} steps {:.2} s ({:.3} s/step) · decode {:.2} s · total {:.2} s",
        request.base.seed,
        model.load_time.as_secs_f64(),
        output.evaluations,
        sampling,
        per_step,
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
    // A1111 seeds fit in 32 bits, as generate's.
    (nanos as u64 ^ (nanos >> 64) as u64) & 0xFFFF_FFFF
}
