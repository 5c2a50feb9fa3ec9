//! `pigment generate PROMPT`: text to image, image to image (SDEdit) with `--init-image`, or
//! inpainting with `--init-image` and `--mask`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use pigment::image::{load_image, save_png, tensor_to_images, GenerationParameters};
use pigment::pipelines::inpaint::mask_luma;
use pigment::pipelines::multidiffusion::RegionPrompt;
use pigment::pipelines::{
    Img2ImgRequest, InpaintRequest, LoadOptions, PanoramaRequest, StableDiffusion, Txt2ImgRequest,
};
use pigment::samplers::SamplerKind;
use pigment::weights::Prediction;

use crate::output::{check_writable, output_paths};

#[derive(Args)]
pub struct GenerateArgs {
    /// What to draw.
    pub prompt: String,
    /// A diffusers folder, a single-file .safetensors or a .ckpt (env: PIGMENT_MODEL; default:
    /// the built-in model, trained by `pigment train` on the shapes world, 64x64).
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
    /// Guidance rescale phi, 0 to 1 (diffusers' `guidance_rescale`, A1111's "CFG Rescale"):
    /// pulls the guided prediction's spread back to the conditional one's, against the
    /// over-exposure of large --cfg; 0.7 is the paper's value, 0 plain guidance.
    #[arg(long, default_value_t = 0.0)]
    pub guidance_rescale: f64,
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
    /// Start from this image (PNG or JPEG) instead of pure noise: img2img (SDEdit). It must be
    /// the output size, a multiple of 8; without --width/--height its own size is used.
    #[arg(long)]
    pub init_image: Option<PathBuf>,
    /// With --init-image: how far to move from it, in (0, 1] [default: 0.75]. Runs
    /// int(steps * strength) of the --steps steps, as diffusers does.
    #[arg(long)]
    pub strength: Option<f64>,
    /// A LoRA to merge into the weights, as FILE:SCALE (e.g. style.safetensors:0.8; FILE alone is
    /// scale 1). Repeat for several; kohya/A1111 and diffusers/PEFT files are understood.
    #[arg(long = "lora", value_name = "FILE:SCALE")]
    pub loras: Vec<String>,
    #[command(flatten)]
    pub adapters: crate::adapter_args::AdapterArgs,
    /// With --init-image: inpaint. White (luma >= 50%) is repainted, black kept; colour masks
    /// are converted to luma as PIL's "L". Same size as the init image. Works with dedicated
    /// 9-channel inpainting models and, by blending the kept part back every step, with any
    /// model (diffusers' StableDiffusionInpaintPipeline). --strength 1 repaints from pure noise.
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// With --mask: Gaussian blur of the mask, sigma in pixels, before it is cut at 50%
    /// [default: 0, diffusers' behaviour]. As AUTOMATIC1111's "Mask blur" (OpenCV kernel size
    /// 2*int(2.5*N+0.5)+1; A1111's UI default is 4); it rounds the mask's corners.
    #[arg(long, value_name = "N")]
    pub mask_blur: Option<f64>,
    /// MultiDiffusion panorama (Bar-Tal 2023) with diffusers' defaults: windows of the model's
    /// native size, stride an eighth of it. Without this (or --window, --stride, --region,
    /// --circular), any size is plain txt2img, exactly as diffusers' StableDiffusionPipeline.
    #[arg(long)]
    pub panorama: bool,
    /// MultiDiffusion: window side in latent cells (pixels / 8) [default: the model's native
    /// size, 64 for SD 1.x]; implies --panorama.
    #[arg(long, value_name = "N")]
    pub window: Option<usize>,
    /// MultiDiffusion: step between windows in latent cells [default: window / 8].
    #[arg(long, value_name = "N")]
    pub stride: Option<usize>,
    /// MultiDiffusion region prompt, as LEFT,TOP,WIDTH,HEIGHT:PROMPT in pixels (multiples of
    /// 8), e.g. "0,0,256,512:a red barn"; the main prompt covers the rest. Repeatable.
    #[arg(long = "region", value_name = "BOX:PROMPT")]
    pub regions: Vec<String>,
    /// MultiDiffusion: wrap the windows around the left and right edges, for a seamless
    /// 360-degree panorama (diffusers' circular_padding).
    #[arg(long)]
    pub circular: bool,
    #[command(flatten)]
    pub control: crate::control_args::ControlArgs,
    #[command(flatten)]
    pub prompts: crate::prompt_args::PromptArgs,
    #[command(flatten)]
    pub memory: crate::memory_args::MemoryArgs,
    #[command(flatten)]
    pub outpaint: crate::outpaint_args::OutpaintArgs,
    #[command(flatten)]
    pub weights: crate::weights_args::WeightsArgs,
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
    args.memory.tiling()?;
    let prompt_syntax = args.prompts.syntax()?;
    let embeddings = args.prompts.load_embeddings()?;
    // `<lora:NAME:W>` / `<hypernet:NAME:W>` tags are cut out of the prompt (A1111's extra networks).
    let adapters = args.adapters.resolve(&args.prompt)?;
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
        loras: args
            .loras
            .iter()
            .map(|s| parse_lora(s))
            .chain(adapters.loras.iter().cloned().map(Ok))
            .collect::<Result<_>>()?,
        lora_mode: args.adapters.lora_mode()?,
    };
    let weights = args.weights.format()?;
    // Outpainting paints its new area from pure noise unless --strength says otherwise.
    let strength = args
        .strength
        .unwrap_or(if args.outpaint.outpaint.is_some() {
            1.0
        } else {
            DEFAULT_STRENGTH
        });
    if args.init_image.is_none() && args.strength.is_some() {
        anyhow::bail!("--strength applies only to img2img: pass --init-image FILE as well");
    }
    if !(strength > 0.0 && strength <= 1.0) {
        anyhow::bail!(
            "--strength {strength}: must be in (0, 1] (0.3 stays close to the init image, 0.75 is typical)"
        );
    }
    let init_image = args.init_image.as_deref().map(load_image).transpose()?;
    let outpaint = args.outpaint.plan(&args, init_image.as_ref())?;
    check_mask_flags(&args)?;
    let regions = args
        .regions
        .iter()
        .map(|r| parse_region(r))
        .collect::<Result<Vec<_>>>()?;
    if args.init_image.is_some()
        && (args.panorama
            || args.window.is_some()
            || args.stride.is_some()
            || args.circular
            || !regions.is_empty())
    {
        anyhow::bail!(
            "--window/--stride/--region/--circular (MultiDiffusion) are text-to-image only: drop --init-image"
        );
    }
    let control = args.control.plan()?;
    if control.is_some()
        && (args.mask.is_some()
            || args.panorama
            || args.window.is_some()
            || args.stride.is_some()
            || args.circular
            || !regions.is_empty())
    {
        anyhow::bail!(
            "--controlnet works with txt2img and img2img (--init-image), not with --mask or the \
             MultiDiffusion flags (--panorama/--window/--stride/--region/--circular)"
        );
    }
    let mask = match &args.mask {
        Some(path) => Some(mask_luma(&load_image(path).context("reading --mask")?)),
        None => None,
    };
    if let (Some(mask), Some(init)) = (&mask, &init_image) {
        if mask.dimensions() != init.dimensions() {
            anyhow::bail!(
                "--mask is {}x{} but the init image is {}x{}: the mask must be the same size",
                mask.width(),
                mask.height(),
                init.width(),
                init.height()
            );
        }
    }
    let outputs = output_paths(&args.out, args.batch.max(1));
    check_writable(&outputs, args.force)?;
    let (model_path, builtin) = match &args.model {
        Some(path) => (path.clone(), false),
        None => (pigment::builtin::builtin_model_dir()?, true),
    };

    // --low-memory on plain txt2img: the text encoder and UNet load only when the run reaches
    // them (one component in memory at a time); other modes load everything and note it.
    let plain_txt2img = outpaint.is_none()
        && args.init_image.is_none()
        && control.is_none()
        && !(args.panorama
            || args.window.is_some()
            || args.stride.is_some()
            || args.circular
            || !regions.is_empty());
    let mut model = if args.memory.low_memory && plain_txt2img {
        StableDiffusion::load_deferred(&model_path, &options, weights)?
    } else {
        StableDiffusion::load_with_weights(&model_path, &options, weights)?
    };
    if builtin {
        model.name = pigment::builtin::BUILTIN_MODEL_NAME.to_string();
    }
    for report in &model.lora_reports {
        eprintln!(
            "LoRA {} at scale {}: {} weights updated",
            report.path.display(),
            report.scale,
            report.matched
        );
        if !report.unmatched_keys.is_empty() {
            let shown: Vec<&str> = report
                .unmatched_keys
                .iter()
                .take(5)
                .map(String::as_str)
                .collect();
            eprintln!(
                "warning: LoRA {}: {} keys match no module of the model and were not applied: {}{}",
                report.path.display(),
                report.unmatched_keys.len(),
                shown.join(", "),
                if report.unmatched_keys.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            );
        }
    }
    let mut model = model;
    crate::prompt_args::PromptArgs::add_to(&mut model, &embeddings)?;
    adapters.apply(&mut model)?;
    args.memory.apply(&mut model)?;
    crate::prompt_args::warn_about_prompt("prompt", &adapters.prompt, prompt_syntax);
    crate::prompt_args::warn_about_prompt("--negative", &args.negative, prompt_syntax);
    let native = model.unet_config().sample_size * model.vae_scale_factor();
    // img2img defaults to the init image's size; a different --width/--height is rejected.
    // ControlNet: the control image's size, as diffusers' pipeline takes it.
    let (default_width, default_height) = init_image
        .as_ref()
        .map(|img| (img.width() as usize, img.height() as usize))
        .map(|(w, h)| outpaint.map_or((w, h), |pad| pad.padded_size(w, h)))
        .or(control.as_ref().and_then(|c| c.size()))
        .unwrap_or((native, native));
    let request = Txt2ImgRequest {
        prompt: adapters.prompt.clone(),
        negative_prompt: args.negative.clone(),
        steps: args.steps,
        cfg_scale: args.cfg,
        guidance_rescale: args.guidance_rescale,
        sampler,
        karras: args.karras,
        eta: args.eta,
        seed: args.seed.unwrap_or_else(random_seed),
        width: args.width.unwrap_or(default_width),
        height: args.height.unwrap_or(default_height),
        batch_size: args.batch,
        clip_skip: args.clip_skip,
        prompt_syntax,
    };
    let img2img = init_image.map(|init_image| Img2ImgRequest {
        base: request.clone(),
        init_image,
        strength,
    });
    let panorama =
        panorama_request(&args, &model, &request, img2img.is_some()).map(|req| PanoramaRequest {
            regions,
            circular: args.circular,
            ..req
        });
    let inpaint = match (mask, &img2img) {
        (Some(mask), Some(image)) => Some(InpaintRequest {
            image: image.clone(),
            mask,
            mask_blur: args.mask_blur.unwrap_or(0.0),
        }),
        _ => None,
    };
    let outpaint = outpaint
        .zip(img2img.as_ref())
        .map(|(pad, img)| crate::outpaint_args::request(pad, img, args.mask_blur.unwrap_or(0.0)));
    let control_request = control.as_ref().map(|c| c.request(&model)).transpose()?;
    if let Some(c) = &control_request {
        c.validate(&model, &request)?;
    }
    match (&inpaint, &img2img) {
        _ if outpaint.is_some() => outpaint.as_ref().map_or(Ok(()), |o| o.validate(&model))?,
        (Some(req), _) => req.validate(&model)?,
        (None, Some(req)) => req.validate(&model)?,
        (None, None) => match &panorama {
            Some(req) => req.validate(&model)?,
            None => request.validate(&model)?,
        },
    }

    if outpaint.is_some() || img2img.is_some() || panorama.is_some() || control_request.is_some() {
        args.memory.warn_unused("this mode");
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {per_sec}  eta {eta}")
            .expect("static progress template"),
    );
    let mut progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let output = match (&inpaint, &img2img) {
        _ if outpaint.is_some() => {
            let req = outpaint.as_ref().context("the outpainting request")?;
            model.outpaint(req, &mut progress)?
        }
        (Some(req), _) => model.inpaint(req, &mut progress)?,
        (None, Some(req)) => match &control_request {
            Some(c) => model.img2img_controlnet(req, c, &mut progress)?,
            None => model.img2img(req, &mut progress)?,
        },
        (None, None) => match &panorama {
            Some(req) => model.panorama(req, &mut progress)?,
            None => match &control_request {
                Some(c) => model.txt2img_controlnet(&request, c, &mut progress)?,
                None if args.memory.low_memory => {
                    model.txt2img_low_memory(&request, &mut progress)?
                }
                None => model.txt2img(&request, &mut progress)?,
            },
        },
    };
    bar.finish_and_clear();

    let images = tensor_to_images(&output.decoded)?;
    for (i, (image, path)) in images.iter().zip(&outputs).enumerate() {
        let mut params: GenerationParameters = match (&inpaint, &img2img) {
            _ if outpaint.is_some() => outpaint
                .as_ref()
                .map(|o| o.parameters(&model.name))
                .unwrap_or_default(),
            (Some(req), _) => req.parameters(&model.name),
            (None, Some(req)) => req.parameters(&model.name),
            (None, None) => match &panorama {
                Some(req) => req.parameters(&model.name),
                None => request.parameters(&model.name),
            },
        };
        if let Some(c) = &control {
            params.extra.extend(c.parameters());
        }
        // A1111 records the prompt as typed, its extra-network tags included.
        params.prompt = args.prompt.clone();
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
    if let Some(req) = &outpaint {
        let (w, h) = (req.base.width, req.base.height);
        eprintln!(
            "outpainting {}x{} to {w}x{h} ({}){}",
            req.init_image.width(),
            req.init_image.height(),
            req.padding,
            if req.mask_blur > 0.0 {
                format!(", seam feathered by {} px", req.mask_blur)
            } else {
                String::new()
            }
        );
    }
    if weights != pigment::ops::WeightFormat::Full {
        eprintln!("UNet and text encoder weights held as {weights}");
    }
    if let Some(req) = &inpaint {
        let repaint = req.mask.pixels().filter(|p| p.0[0] >= 128).count();
        eprintln!(
            "inpainting {:.1}% of the image{}",
            100.0 * repaint as f64 / req.mask.len().max(1) as f64,
            if req.mask_blur > 0.0 {
                format!(" (mask blurred by {} px before the cut)", req.mask_blur)
            } else {
                String::new()
            }
        );
    }
    if let Some(req) = &img2img {
        eprintln!(
            "img2img from {}x{} init image · strength {} · {} of {} steps run",
            req.init_image.width(),
            req.init_image.height(),
            req.strength,
            req.steps_run(),
            req.base.steps,
        );
    }
    if let Some(req) = &panorama {
        eprintln!(
            "MultiDiffusion: window {} cells, stride {}, {} model evaluations",
            req.window, req.stride, output.evaluations
        );
    }
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

/// The MultiDiffusion request, when --panorama, --window, --stride, --region or --circular asks
/// for it (a large size alone stays plain txt2img, as diffusers does it); the default window is
/// the native latent size (shrunk to fit a smaller side) and the default stride an eighth of
/// the window, as diffusers' panorama pipeline.
fn panorama_request(
    args: &GenerateArgs,
    model: &StableDiffusion,
    request: &Txt2ImgRequest,
    img2img: bool,
) -> Option<PanoramaRequest> {
    let factor = model.vae_scale_factor();
    let (height, width) = (request.height / factor, request.width / factor);
    let defaults = PanoramaRequest::new(request.clone(), model);
    let asked = args.panorama
        || args.window.is_some()
        || args.stride.is_some()
        || args.circular
        || !args.regions.is_empty();
    if img2img || !asked {
        return None;
    }
    let window = args
        .window
        .unwrap_or_else(|| defaults.window.min(height.max(1)).min(width.max(1)));
    Some(PanoramaRequest {
        window,
        stride: args.stride.unwrap_or((window / 8).max(1)),
        ..defaults
    })
}

/// `LEFT,TOP,WIDTH,HEIGHT:PROMPT` (pixels); the prompt may itself contain colons.
fn parse_region(arg: &str) -> Result<RegionPrompt> {
    let usage = || {
        format!(
            "--region {arg:?}: expected LEFT,TOP,WIDTH,HEIGHT:PROMPT in pixels, e.g. \"0,0,256,512:a red barn\""
        )
    };
    let (boxed, prompt) = arg.split_once(':').with_context(usage)?;
    let numbers = boxed
        .split(',')
        .map(|n| n.trim().parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .ok()
        .filter(|n| n.len() == 4 && !prompt.trim().is_empty())
        .with_context(usage)?;
    Ok(RegionPrompt {
        prompt: prompt.trim().to_string(),
        left: numbers[0],
        top: numbers[1],
        width: numbers[2],
        height: numbers[3],
    })
}

/// `FILE:SCALE`, or `FILE` alone for scale 1. The scale is after the last colon, so Windows
/// paths (`C:\loras\x.safetensors:0.5`) keep their drive letter.
fn parse_lora(arg: &str) -> Result<(PathBuf, f64)> {
    if let Some((file, scale)) = arg.rsplit_once(':') {
        if let Ok(scale) = scale.trim().parse::<f64>() {
            if !scale.is_finite() {
                anyhow::bail!("--lora {arg}: the scale must be a finite number, e.g. FILE:0.8");
            }
            return Ok((PathBuf::from(file), scale));
        }
    }
    if arg.is_empty() {
        anyhow::bail!("--lora needs FILE:SCALE, e.g. --lora style.safetensors:0.8");
    }
    Ok((PathBuf::from(arg), 1.0))
}

/// --mask needs --init-image; --mask-blur needs --mask and a non-negative number.
fn check_mask_flags(args: &GenerateArgs) -> Result<()> {
    if args.mask.is_none() && args.outpaint.outpaint.is_none() && args.mask_blur.is_some() {
        anyhow::bail!(
            "--mask-blur applies only to inpainting: pass --mask FILE (or --outpaint) as well"
        );
    }
    if let Some(blur) = args.mask_blur {
        if !(blur.is_finite() && blur >= 0.0) {
            anyhow::bail!("--mask-blur {blur}: must be 0 (none) or a positive number of pixels");
        }
    }
    if args.mask.is_some() && args.init_image.is_none() {
        anyhow::bail!(
            "--mask needs the image to inpaint: pass --init-image FILE as well (white in the \
             mask is repainted, black kept)"
        );
    }
    Ok(())
}

/// diffusers' documented example strength, and A1111's img2img default denoising strength.
const DEFAULT_STRENGTH: f64 = 0.75;

fn random_seed() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // A1111 seeds fit in 32 bits; keep ours in that range so they paste back into it.
    (nanos as u64 ^ (nanos >> 64) as u64) & 0xFFFF_FFFF
}
