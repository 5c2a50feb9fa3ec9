//! The built-in model's recipe: the three model configs and the three training stages, in
//! order (CLIP, then the VAE, then the UNet conditioned on the frozen CLIP text tower), each a
//! resumable run of [`crate::train::Trainer`] on the synthetic shapes world, and the export to
//! a diffusers folder that the ordinary loader and pipeline run unchanged.
//!
//! Layout of a work folder: `clip/`, `vae/`, `unet/`, each with `checkpoints/`, `loss.jsonl` and,
//! when the stage finishes, its weights and `config.json` (EMA weights where the stage keeps an
//! EMA). `export` assembles `model_index.json`, `text_encoder/`, `vae/`, `unet/`, `scheduler/` and
//! `clip/` (the small CLIP's vision tower and projections, for CLIP scores; its text tower is
//! `text_encoder/`) with f16 weights.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rayon::prelude::*;

use crate::builtin::{Dataset, Sample};
use crate::error::{Error, Result};
use crate::image::{image_to_tensor, write_atomically};
use crate::schedule::{ConfigFlag, SchedulerConfig};
use crate::text::{ClipTextConfig, ClipTextModel, ClipTokenizer};
use crate::train::clip::{clip_loss, MAX_LOGIT_SCALE};
use crate::train::diffusion::{encode_latents, DiffusionObjective};
use crate::train::vae::{Reconstruction, VaeObjective};
use crate::train::{
    grow_vars_from_file, init_vars_from_file, named_vars, seeded_var_builder, AdamWConfig,
    LrSchedule, ProgressFn, StepContext, TrainRng, Trainer, TrainerConfig,
};
use crate::unet::{PerBlock, UNet2DConditionConfig, UNet2DConditionModel};
use crate::vae::{AutoencoderKL, AutoencoderKLConfig};
use crate::vision::{normalize, ClipConfig, ClipModel, ClipVisionConfig};

/// Side of the training images in pixels.
pub const IMAGE_SIZE: u32 = 64;
/// Tokens per caption: the CLIP context the pipeline pads every prompt to.
pub const TEXT_TOKENS: usize = 77;
/// Items the data order draws from; the synthetic world renders any index on demand.
const DATASET_LEN: usize = 1 << 20;
/// Seed of the training split; evaluation uses other seeds and the held-out split.
pub const DATA_SEED: u64 = 2024;

/// A small CLIP: text tower (the conditioning encoder) and a ViT over 8x8 patches.
pub fn clip_config() -> ClipConfig {
    ClipConfig {
        text_config: ClipTextConfig {
            hidden_size: 64,
            intermediate_size: 256,
            num_hidden_layers: 3,
            num_attention_heads: 4,
            max_position_embeddings: TEXT_TOKENS,
            projection_dim: 64,
            ..ClipTextConfig::default()
        },
        vision_config: ClipVisionConfig {
            hidden_size: 64,
            intermediate_size: 256,
            num_hidden_layers: 3,
            num_attention_heads: 4,
            image_size: IMAGE_SIZE as usize,
            patch_size: 8,
            projection_dim: 64,
            ..ClipVisionConfig::default()
        },
        projection_dim: 64,
        ..ClipConfig::default()
    }
}

/// A small AutoencoderKL with f = 2: 64x64 images to 32x32x4 latents. Flat-coloured shapes need
/// few channels at full resolution, where nearly all of a VAE's compute is spent. f = 4 (16x16
/// latents, `[16, 32, 64]`) lost star points and small triangles thinner than its 4-pixel latent
/// cell: its round trip kept 94% of single-object scenes but 62.5% of relation scenes
/// (`examples/vae_ceiling.rs`); this one keeps all 96.
pub fn vae_config() -> AutoencoderKLConfig {
    AutoencoderKLConfig {
        down_block_types: vec!["DownEncoderBlock2D".into(); 2],
        up_block_types: vec!["UpDecoderBlock2D".into(); 2],
        block_out_channels: vec![16, 32],
        layers_per_block: 1,
        norm_num_groups: 8,
        sample_size: IMAGE_SIZE as usize,
        scaling_factor: 1.0,
        ..AutoencoderKLConfig::default()
    }
}

/// Side of the random crops the VAE trains on: a convolutional autoencoder learns the same
/// thing from crops at a quarter of the cost of whole images.
pub const VAE_CROP: usize = 32;

/// A small SD-shaped UNet on the VAE's 32x32 latents: a narrow first level (16 channels) at
/// 32x32, then the levels of the first built-in UNet at 16x16, 8x8 and 4x4, cross-attending to
/// the 64-wide text tower at 8x8 and 4x4. Attention at 16x16 costs ~40% of a training step
/// and gained nothing: a cross-attention-only transformer there, grown into the fifth UNet and
/// trained 1100 steps, scored as the same run without it (README, "Exactly how"), since the
/// text tower hardly tells shape words apart. The extra level costs 1.35x the 16x16 network's
/// training step, against 4x for the old widths at 32x32. 8 groups per norm, as 16 channels
/// allow.
pub fn unet_config() -> UNet2DConditionConfig {
    UNet2DConditionConfig {
        sample_size: IMAGE_SIZE as usize / 2,
        block_out_channels: vec![16, 32, 64, 128],
        down_block_types: vec![
            "DownBlock2D".into(),
            "DownBlock2D".into(),
            "CrossAttnDownBlock2D".into(),
            "CrossAttnDownBlock2D".into(),
        ],
        up_block_types: vec![
            "CrossAttnUpBlock2D".into(),
            "CrossAttnUpBlock2D".into(),
            "UpBlock2D".into(),
            "UpBlock2D".into(),
        ],
        layers_per_block: PerBlock::One(1),
        attention_head_dim: PerBlock::One(4),
        cross_attention_dim: PerBlock::One(64),
        norm_num_groups: 8,
        ..UNet2DConditionConfig::default()
    }
}

/// SD's scaled linear betas (1000 steps), rescaled to zero terminal SNR, with v-prediction and
/// trailing timesteps: the fixes of Lin et al. 2024 ("Common Diffusion Noise Schedules and
/// Sample Steps are Flawed", section 3; diffusers' `rescale_betas_zero_snr`). SD's own schedule
/// leaves sqrt(abar_T) = 0.068 of the image in x_T, and in this world of flat backgrounds the
/// per-channel mean of x_T then still tells the background colour (the noise's mean over 32x32
/// latents has std 1/32): the first built-in UNets learnt to read the background from it, so
/// sampling from pure noise gave the colour of the all-zero latent whatever the prompt said,
/// and img2img at strength 1 kept the init image's background. At zero terminal SNR nothing
/// leaks, and v-prediction keeps the t = T target (v = -x_0) well defined.
pub fn scheduler_config() -> SchedulerConfig {
    SchedulerConfig {
        prediction_type: "v_prediction".into(),
        timestep_spacing: Some("trailing".into()),
        steps_offset: 0,
        rescale_betas_zero_snr: true,
        // Latents are not in [-1, 1]; written out so that no scheduler class clips them by
        // default (DDIMScheduler's `clip_sample=True`).
        clip_sample: ConfigFlag::Set(false),
        ..SchedulerConfig::default()
    }
}

/// What every stage takes from the command line.
#[derive(Debug, Clone)]
pub struct StageOptions {
    pub work_dir: PathBuf,
    pub steps: u64,
    pub batch_size: usize,
    pub peak_lr: f64,
    pub seed: u64,
    pub checkpoint_every: u64,
    /// Where the models train (`Device::Cpu`, or a CUDA device with the `cuda` feature). Data
    /// batches are rendered and tokenised on the CPU and moved there; on CUDA, f32 matrix
    /// products use TF32 (candle's reduced-precision f32 GEMM).
    pub device: Device,
    /// Start from these weights (a .safetensors file of the stage's model, any float dtype,
    /// e.g. the shipped f16 export) instead of a seeded random init: fine-tuning. Used when the
    /// stage has no checkpoint yet; a checkpoint, once written, is what a rerun resumes.
    pub init_weights: Option<PathBuf>,
    /// With `init_weights`: the model may have weights the file lacks (a grown architecture);
    /// they start from the seeded init, new attention outputs at zero, so the grown model
    /// starts as the file's ([`grow_vars_from_file`]).
    pub grow: bool,
    /// The UNet stage's min-SNR-gamma loss weighting (None: plain L_simple, every timestep
    /// weighted 1).
    pub snr_gamma: Option<f64>,
    /// Each step's batch is split into this many equal micro-batches, which run in parallel
    /// on the CPU's threads and whose gradients are averaged ([`Trainer::run_split`]); results
    /// depend on this number, not on the thread count. 1 for the CLIP stage, whose contrastive
    /// loss compares every caption with every image of the whole batch.
    pub micro_batches: usize,
    /// Time each step's phases (data, forward, backward, clipping, optimiser, EMA; waiting for
    /// the device after each) and write the means to `WORK/STAGE/step_profile.txt`.
    pub profile_steps: bool,
    /// CLIP stage: the share of each batch made of hard-negative pairs (an item and its
    /// counterfactual, [`Dataset::contrast_pair`]); 0 draws every item independently.
    pub hard_negatives: f64,
}

/// The file, beside a stage's loss log, that [`StageOptions::profile_steps`] writes.
pub const STEP_PROFILE_FILE: &str = "step_profile.txt";

/// What the recipe uses unless told otherwise: no min-SNR weighting, plain v-prediction MSE (as
/// Lin et al. 2024 train). Min-SNR-gamma on v targets weights each step by
/// min(SNR, gamma) / (SNR + 1), which is 0 at the zero-SNR step t = T and near 0 around it:
/// exactly the steps that place the objects and choose the background.
pub const DEFAULT_SNR_GAMMA: f64 = 0.0;

/// Half of each CLIP batch in (item, counterfactual) pairs: random batches of this world are
/// told apart by colour alone, and a text tower trained only on them barely encodes shape,
/// size, count or relation (`builtin::counterfactual`, `examples/text_probe.rs`).
pub const DEFAULT_HARD_NEGATIVES: f64 = 0.5;

/// The stage's trainer: fresh weights replaced by [`StageOptions::init_weights`] when given and
/// no checkpoint exists yet (a checkpoint wins: it holds the run's own later weights).
fn stage_trainer(vars: &VarMap, opts: &StageOptions, config: TrainerConfig) -> Result<Trainer> {
    let has_checkpoint = config.checkpoint_dir.as_ref().is_some_and(|dir| {
        dir.read_dir()
            .is_ok_and(|mut entries| entries.next().is_some())
    });
    match (&opts.init_weights, has_checkpoint) {
        (Some(path), false) if opts.grow => {
            let report = grow_vars_from_file(vars, path)?;
            tracing::info!(
                "grew the model from {}: {} weights loaded, {} new",
                path.display(),
                report.loaded,
                report.new.len()
            );
        }
        (Some(path), false) => init_vars_from_file(vars, path)?,
        _ => {}
    }
    let mut trainer = Trainer::new(named_vars(vars)?, config)?;
    if opts.profile_steps {
        trainer.enable_step_profile();
    }
    Ok(trainer)
}

/// The stage names, in training order.
pub const STAGES: [&str; 3] = ["clip", "vae", "unet"];

/// Run one stage (resuming from its newest checkpoint if there is one) and write its weights.
pub fn train_stage(stage: &str, opts: &StageOptions, progress: ProgressFn) -> Result<PathBuf> {
    if opts.device.is_cuda() {
        // TF32 tensor cores for f32 GEMMs (as torch's `allow_tf32`): ~10 bits of mantissa in
        // the products, f32 accumulation; a process-wide cuBLAS setting, so only set on CUDA.
        candle_core::cuda::set_gemm_reduced_precision_f32(true);
    }
    match stage {
        "clip" => train_clip(opts, progress),
        "vae" => train_vae(opts, progress),
        "unet" => train_unet(opts, progress),
        other => Err(Error::invalid(format!(
            "unknown training stage `{other}`: use clip, vae or unet (in that order)"
        ))),
    }
}

fn dataset() -> Result<Dataset> {
    Dataset::train(DATA_SEED).with_size(IMAGE_SIZE)
}

/// [batch, 3, S, S] in [-1, 1] on `device` and the captions of the data indices. The images
/// are rendered on the CPU (in parallel: each item depends only on its index) and moved to
/// `device` in one copy.
fn batch(data: &Dataset, indices: &[usize], device: &Device) -> Result<(Tensor, Vec<String>)> {
    contrast_batch(data, indices, 0.0, device)
}

/// Like [`batch`], but the first `share` of the batch is made of (item, counterfactual) pairs:
/// pair `i` is item `indices[i]` and its hard negative; the rest are items
/// `indices[pairs * 2..]`, so the batch keeps its size.
fn contrast_batch(
    data: &Dataset,
    indices: &[usize],
    share: f64,
    device: &Device,
) -> Result<(Tensor, Vec<String>)> {
    let pairs = ((indices.len() as f64 * share / 2.0).round() as usize).min(indices.len() / 2);
    let paired: Vec<Sample> = indices[..pairs]
        .par_iter()
        .flat_map_iter(|&i| {
            let (item, negative, _) = data.contrast_pair(i as u64);
            [item, negative]
        })
        .collect();
    let single: Vec<Sample> = indices[pairs * 2..]
        .par_iter()
        .map(|&i| data.get(i as u64))
        .collect();
    let mut images = Vec::with_capacity(indices.len());
    let mut captions = Vec::with_capacity(indices.len());
    for sample in paired.into_iter().chain(single) {
        images.push(image_to_tensor(&sample.image, &Device::Cpu)?);
        captions.push(sample.caption);
    }
    Ok((Tensor::cat(&images, 0)?.to_device(device)?, captions))
}

/// Padded token ids [batch, 77] (u32), tokenised on the CPU and moved to `device`.
fn token_ids(tokenizer: &ClipTokenizer, captions: &[String], device: &Device) -> Result<Tensor> {
    let mut rows = Vec::with_capacity(captions.len());
    for caption in captions {
        rows.push(tokenizer.encode_padded(caption, TEXT_TOKENS)?);
    }
    Ok(Tensor::new(rows, &Device::Cpu)?.to_device(device)?)
}

fn trainer_config(opts: &StageOptions, stage: &str, ema: Option<f64>) -> Result<TrainerConfig> {
    let parts = opts.micro_batches;
    if parts == 0 || !opts.batch_size.is_multiple_of(parts) {
        return Err(Error::invalid(format!(
            "--batch {} does not split into --micro-batches {parts} equal parts: use a batch \
             that is a multiple of it",
            opts.batch_size
        )));
    }
    if stage == "clip" && parts != 1 {
        return Err(Error::invalid(
            "the CLIP stage cannot split its batch into micro-batches: its contrastive loss \
             compares every caption with every image of the whole batch (use --micro-batches 1)",
        ));
    }
    let dir = opts.work_dir.join(stage);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(TrainerConfig {
        seed: opts.seed,
        optimizer: AdamWConfig {
            weight_decay: 1e-2,
            ..AdamWConfig::default()
        },
        schedule: LrSchedule::WarmupCosine {
            peak_lr: opts.peak_lr,
            warmup_steps: (opts.steps / 20).max(1),
            total_steps: opts.steps,
            min_lr: opts.peak_lr * 0.05,
        },
        max_grad_norm: Some(1.0),
        ema_decay: ema,
        checkpoint_dir: Some(dir.join("checkpoints")),
        checkpoint_every: opts.checkpoint_every,
        keep_checkpoints: 2,
        log_path: Some(dir.join("loss.jsonl")),
        grad_accumulation: parts,
        ..TrainerConfig::new(opts.steps, opts.batch_size / parts, DATASET_LEN)
    })
}

/// Resume if a checkpoint exists, run to the end, and return the weights to export (EMA where
/// the stage keeps one). `prepare` renders a micro-batch; `loss` computes on it, micro-batches
/// in parallel ([`Trainer::run_split`]).
fn run_to_end<P, B, L>(
    trainer: &mut Trainer,
    progress: ProgressFn,
    prepare: P,
    loss: L,
) -> Result<HashMap<String, Tensor>>
where
    P: FnMut(&mut StepContext<'_>) -> Result<B>,
    B: Send,
    L: Fn(B, &mut TrainRng) -> Result<Tensor> + Sync,
{
    if let Some(step) = trainer.resume_latest()? {
        tracing::info!("resumed at step {step}");
    }
    trainer.set_progress(progress);
    trainer.run_split(u64::MAX, prepare, loss)?;
    if let (Some(profile), Some(log)) = (trainer.step_profile(), &trainer.config().log_path) {
        let path = log.with_file_name(STEP_PROFILE_FILE);
        let report = profile.report();
        write_atomically(&path, true, |w| {
            writeln!(w, "{report}").map_err(|e| Error::io(&path, e))
        })?;
    }
    Ok(match trainer.ema() {
        Some(ema) => ema.tensors(),
        None => trainer
            .params()
            .iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
            .collect(),
    })
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::invalid(format!("cannot serialise {}: {e}", path.display())))?;
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

fn save_weights(tensors: &HashMap<String, Tensor>, path: &Path, dtype: DType) -> Result<()> {
    let converted: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_dtype(dtype)?)))
        .collect::<Result<_>>()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = path.with_extension("partial");
    candle_core::safetensors::save(&converted, &tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn load_weights(path: &Path, device: &Device) -> Result<VarBuilder<'static>> {
    if !path.is_file() {
        return Err(Error::invalid(format!(
            "{} is missing: train the earlier stage first (stages run clip, vae, unet)",
            path.display()
        )));
    }
    // SAFETY: the file is ours, written by an earlier stage and not modified while we read it.
    Ok(unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, device)? })
}

/// Stage 1: contrastive CLIP (Radford 2021) on captions and images of the synthetic world.
pub fn train_clip(opts: &StageOptions, progress: ProgressFn) -> Result<PathBuf> {
    if !(0.0..=1.0).contains(&opts.hard_negatives) {
        return Err(Error::invalid(format!(
            "--hard-negatives {} is not a share of the batch: use 0 to 1 (e.g. {})",
            opts.hard_negatives, DEFAULT_HARD_NEGATIVES
        )));
    }
    let device = opts.device.clone();
    let config = clip_config();
    let vars = VarMap::new();
    let model = ClipModel::new(
        seeded_var_builder(&vars, opts.seed, DType::F32, &device),
        &config,
    )?;
    let tokenizer = ClipTokenizer::embedded()?;
    let data = dataset()?;
    let mut trainer = stage_trainer(&vars, opts, trainer_config(opts, "clip", None)?)?;
    trainer.clamp_param("logit_scale", 0.0, MAX_LOGIT_SCALE)?;
    let weights = run_to_end(
        &mut trainer,
        progress,
        |ctx| contrast_batch(&data, &ctx.indices, opts.hard_negatives, &device),
        |(images, captions), _| {
            let pixels = normalize(&((images + 1.0)? * 0.5)?)?;
            clip_loss(&model, &token_ids(&tokenizer, &captions, &device)?, &pixels)
        },
    )?;
    let dir = opts.work_dir.join("clip");
    save_weights(&weights, &dir.join("model.safetensors"), DType::F32)?;
    write_json(&dir.join("config.json"), &config)?;
    Ok(dir)
}

/// Stage 2: the autoencoder (L1 reconstruction + KL, LDM's first stage without the GAN), then
/// the latent scaling factor: 1 / std of the latents, as LDM chose 0.18215 for SD.
pub fn train_vae(opts: &StageOptions, progress: ProgressFn) -> Result<PathBuf> {
    let device = opts.device.clone();
    let mut config = vae_config();
    let vars = VarMap::new();
    let vae = AutoencoderKL::new(
        seeded_var_builder(&vars, opts.seed, DType::F32, &device),
        &config,
    )?;
    let data = dataset()?;
    let objective = VaeObjective::new(Reconstruction::L1, 1e-6)?;
    let mut trainer = stage_trainer(&vars, opts, trainer_config(opts, "vae", None)?)?;
    let weights = run_to_end(
        &mut trainer,
        progress,
        |ctx| Ok(batch(&data, &ctx.indices, &device)?.0),
        |images, rng| {
            let span = (IMAGE_SIZE as usize - VAE_CROP + 1) as u64;
            let (top, left) = (rng.below(span), rng.below(span));
            let crops = images
                .narrow(2, top as usize, VAE_CROP)?
                .narrow(3, left as usize, VAE_CROP)?
                .contiguous()?;
            Ok(objective.loss(&vae, &crops, rng)?.total)
        },
    )?;

    let indices: Vec<usize> = (0..256).collect();
    let (images, _) = batch(&data, &indices, &device)?;
    let latents = vae.encode(&images)?.mean;
    let std = latents
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .fold((0f64, 0f64, 0usize), |(s, ss, n), &v| {
            (s + v as f64, ss + (v as f64).powi(2), n + 1)
        });
    let mean = std.0 / std.2 as f64;
    let std = (std.1 / std.2 as f64 - mean * mean).sqrt();
    config.scaling_factor = 1.0 / std.max(1e-6);

    let dir = opts.work_dir.join("vae");
    save_weights(
        &weights,
        &dir.join("diffusion_pytorch_model.safetensors"),
        DType::F32,
    )?;
    write_json(&dir.join("config.json"), &config)?;
    Ok(dir)
}

/// Stage 3: the UNet on VAE latents, conditioned on the frozen CLIP text tower, with 10% of
/// captions dropped (GLIDE) so that classifier-free guidance works.
pub fn train_unet(opts: &StageOptions, progress: ProgressFn) -> Result<PathBuf> {
    let device = opts.device.clone();
    let clip = clip_config();
    let text = ClipTextModel::new(
        load_weights(&opts.work_dir.join("clip/model.safetensors"), &device)?.pp("text_model"),
        &clip.text_config,
    )?;
    let vae_config = read_vae_config(&opts.work_dir.join("vae/config.json"))?;
    let vae = AutoencoderKL::new(
        load_weights(
            &opts
                .work_dir
                .join("vae/diffusion_pytorch_model.safetensors"),
            &device,
        )?,
        &vae_config,
    )?;
    let config = unet_config();
    let vars = VarMap::new();
    let unet = UNet2DConditionModel::new(
        seeded_var_builder(&vars, opts.seed, DType::F32, &device),
        &config,
    )?;
    let tokenizer = ClipTokenizer::embedded()?;
    let data = dataset()?;
    let objective = DiffusionObjective::new(&scheduler_config(), 0.1)?;
    let objective = match opts.snr_gamma {
        Some(gamma) => objective.with_snr_gamma(gamma)?,
        None => objective,
    };
    let mut trainer = stage_trainer(&vars, opts, trainer_config(opts, "unet", Some(0.999))?)?;
    let weights = run_to_end(
        &mut trainer,
        progress,
        |ctx| batch(&data, &ctx.indices, &device),
        |(images, captions), rng| {
            let latents = encode_latents(&vae, &images, rng)?;
            let captions = objective.drop_captions(&captions, rng);
            let context = text
                .forward(&token_ids(&tokenizer, &captions, &device)?)?
                .detach();
            objective.loss(&unet, &latents, &context, rng)
        },
    )?;
    let dir = opts.work_dir.join("unet");
    save_weights(
        &weights,
        &dir.join("diffusion_pytorch_model.safetensors"),
        DType::F32,
    )?;
    write_json(&dir.join("config.json"), &config)?;
    Ok(dir)
}

fn read_vae_config(path: &Path) -> Result<AutoencoderKLConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// Assemble the trained stages into a diffusers folder at `out` (weights stored as f16).
pub fn export(work_dir: &Path, out: &Path) -> Result<()> {
    let device = Device::Cpu;
    let load = |path: PathBuf| -> Result<HashMap<String, Tensor>> {
        if !path.is_file() {
            return Err(Error::invalid(format!(
                "{} is missing: run every training stage before exporting",
                path.display()
            )));
        }
        Ok(candle_core::safetensors::load(&path, &device)?)
    };
    // The configs the VAE and UNet were trained with (their stages write them), not today's
    // recipe's: a work folder trained before the recipe changed still exports a loadable model.
    let copy_trained_config = |stage: &str| -> Result<()> {
        let to = out.join(stage).join("config.json");
        std::fs::copy(work_dir.join(stage).join("config.json"), &to)
            .map(drop)
            .map_err(|e| Error::io(to, e))
    };
    let clip = load(work_dir.join("clip/model.safetensors"))?;
    let vae = load(work_dir.join("vae/diffusion_pytorch_model.safetensors"))?;
    let unet = load(work_dir.join("unet/diffusion_pytorch_model.safetensors"))?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;

    // The text encoder keeps transformers-4 names (`text_model.` prefix), as most SD folders do.
    let text: HashMap<String, Tensor> = clip
        .iter()
        .filter(|(k, _)| k.starts_with("text_model."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let clip_config = clip_config();
    save_weights(
        &text,
        &out.join("text_encoder/model.safetensors"),
        DType::F16,
    )?;
    write_json(
        &out.join("text_encoder/config.json"),
        &clip_config.text_config,
    )?;
    // The CLIP folder keeps only what the text encoder does not hold (the vision tower and the
    // projections): the scorer reads the text tower from `text_encoder/`.
    let clip_rest: HashMap<String, Tensor> = clip
        .iter()
        .filter(|(k, _)| !k.starts_with("text_model."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    save_weights(&clip_rest, &out.join("clip/model.safetensors"), DType::F16)?;
    write_json(&out.join("clip/config.json"), &clip_config)?;
    save_weights(
        &vae,
        &out.join("vae/diffusion_pytorch_model.safetensors"),
        DType::F16,
    )?;
    copy_trained_config("vae")?;
    save_weights(
        &unet,
        &out.join("unet/diffusion_pytorch_model.safetensors"),
        DType::F16,
    )?;
    copy_trained_config("unet")?;
    std::fs::create_dir_all(out.join("scheduler")).map_err(|e| Error::io(out, e))?;
    write_json(
        &out.join("scheduler/scheduler_config.json"),
        &scheduler_config(),
    )?;
    write_json(
        &out.join("model_index.json"),
        &serde_json::json!({
            "_class_name": "StableDiffusionPipeline",
            "text_encoder": ["transformers", "CLIPTextModel"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "scheduler": ["diffusers", "DDIMScheduler"],
            "tokenizer": [null, null],
            "safety_checker": [null, null],
            "feature_extractor": [null, null],
        }),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::training_alphas_cumprod;

    /// The recipe's forward process ends at pure noise (abar_T = 0, so x_T carries no trace of
    /// the image's background) and predicts v, which stays defined there; samplers start at the
    /// last training timestep (trailing spacing).
    #[test]
    fn recipe_schedule_has_zero_terminal_snr_and_v_prediction() -> Result<()> {
        let config = scheduler_config();
        let abar = training_alphas_cumprod(&config)?;
        assert_eq!(abar.len(), 1000);
        assert_eq!(abar[999], 0.0);
        assert!(abar[0] > 0.99 && abar[998] > 0.0);
        assert_eq!(config.prediction_type, "v_prediction");
        assert_eq!(config.timestep_spacing.as_deref(), Some("trailing"));
        Ok(())
    }
}
