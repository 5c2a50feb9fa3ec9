//! A loaded Stable Diffusion model: tokenizer, text encoder, UNet, VAE and the scheduler config,
//! on one device in one compute dtype.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device};

use crate::adapters::{with_runtime_slots, LoraMode, LoraReport, LoraSet, RuntimeLoras};
use crate::error::{Error, Result};
use crate::ops::{WeightFormat, WeightFormatScope};
use crate::pipelines::deferred::{CheckpointSource, DeferredParts, Residency};
use crate::pipelines::textual_inversion::LoadedEmbedding;
use crate::pipelines::ComponentSource;
use crate::schedule::SchedulerConfig;
use crate::text::{ClipTextConfig, ClipTextModel, ClipTokenizer};
use crate::unet::UNet2DConditionModel;
use crate::vae::AutoencoderKL;
use crate::weights::{Checkpoint, Component, Family, OpenOptions, Prediction};

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// Compute dtype; stored weights are converted to it on load.
    pub dtype: DType,
    /// Override the prediction type read from (or guessed for) the checkpoint.
    pub prediction: Option<Prediction>,
    /// A diffusers folder whose configs replace the ones derived for a single-file checkpoint
    /// (diffusers' `from_single_file(config=...)`), for models with non-standard head or group
    /// counts.
    pub config: Option<PathBuf>,
    /// LoRA files (`.safetensors`, kohya or diffusers/PEFT layout) and their scales, merged into
    /// the text encoder and UNet weights as they load (see [`crate::adapters`]).
    pub loras: Vec<(PathBuf, f64)>,
    /// Merge the LoRAs into the weights (default) or apply them in each forward, switchable
    /// with `StableDiffusion::set_loras`.
    pub lora_mode: LoraMode,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            prediction: None,
            config: None,
            loras: Vec::new(),
            lora_mode: LoraMode::Merge,
        }
    }
}

pub struct StableDiffusion {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel,
    pub unet: UNet2DConditionModel,
    pub vae: AutoencoderKL,
    pub scheduler_config: SchedulerConfig,
    pub text_config: ClipTextConfig,
    pub family: Family,
    pub device: Device,
    pub dtype: DType,
    /// A short name for the model (folder or file stem), recorded in PNG metadata.
    pub name: String,
    /// Wall time spent loading.
    pub load_time: Duration,
    /// What became of each LoRA of [`LoadOptions::loras`] (matched weights, unmatched keys).
    pub lora_reports: Vec<LoraReport>,
    /// Textual-inversion embeddings added with `add_textual_inversion`.
    pub(crate) embeddings: Vec<LoadedEmbedding>,
    /// AUTOMATIC1111 hypernetworks used in every UNet attention (`set_hypernetworks`).
    pub(crate) hypernetworks: crate::adapters::HypernetworkStack,
    /// The run-time LoRA slots when loaded with [`LoraMode::Runtime`].
    pub(crate) runtime_loras: Option<RuntimeLoras>,
    /// Which of the text encoder and UNet are loaded, and where a deferred model loads them
    /// from ([`crate::pipelines::deferred`]).
    pub(crate) residency: Residency,
}

impl StableDiffusion {
    /// Load a diffusers folder, a single-file `.safetensors` or a `.ckpt`.
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Self> {
        Self::load_with_weights(path, options, WeightFormat::Full)
    }

    /// As [`Self::load`], holding the text encoder's and UNet's linear and convolution weights
    /// in `weights` (f16 or per-channel int8, widened to the compute dtype in each forward; see
    /// [`crate::ops::packed_weight`]). The VAE keeps its weights as loaded.
    pub fn load_with_weights(
        path: &Path,
        options: &LoadOptions,
        weights: WeightFormat,
    ) -> Result<Self> {
        let start = Instant::now();
        let checkpoint = open_checkpoint(path, options)?;
        Self::from_checkpoint(&checkpoint, options, weights, false, start)
    }

    /// As [`Self::load_with_weights`], but the text encoder, UNet and VAE stay in the checkpoint
    /// (opened and memory-mapped, not read) until a run needs them: for
    /// [`Self::txt2img_low_memory`], which holds one component at a time. LoRAs are merged as
    /// each component loads; run-time LoRAs ([`LoraMode::Runtime`]) need the UNet resident and
    /// are refused.
    pub fn load_deferred(
        path: &Path,
        options: &LoadOptions,
        weights: WeightFormat,
    ) -> Result<Self> {
        let start = Instant::now();
        if options.lora_mode == LoraMode::Runtime {
            return Err(Error::invalid(
                "--lora-mode runtime keeps the UNet loaded to switch LoRAs, which --low-memory \
                 does not: use --lora-mode merge (the default) with --low-memory",
            ));
        }
        let checkpoint = open_checkpoint(path, options)?;
        Self::from_checkpoint(&checkpoint, options, weights, true, start)
    }

    fn from_checkpoint(
        ck: &Checkpoint,
        options: &LoadOptions,
        weights: WeightFormat,
        defer: bool,
        start: Instant,
    ) -> Result<Self> {
        let (device, dtype) = (&options.device, options.dtype);
        if device.is_cpu() && dtype == DType::BF16 {
            return Err(Error::invalid(
                "--dtype bf16: the CPU backend has no bf16 matrix multiply; use f32 (default) or f16 \
                 on the CPU, or bf16 on a CUDA device",
            ));
        }
        let tokenizer = load_tokenizer(ck)?;
        let runtime = options.lora_mode == LoraMode::Runtime;
        let loras = LoraSet::load(ck, if runtime { &[] } else { &options.loras })?;
        let slots = crate::adapters::SlotSink::default();
        let source = CheckpointSource {
            checkpoint: ck.clone(),
            loras: loras.clone(),
            dtype,
            device: device.clone(),
            weights,
        };
        let (text_encoder, unet, vae, residency) = if defer {
            let parts = DeferredParts::new(Arc::new(source), &ck.vae_config, dtype, device)?;
            (parts.text_encoder, parts.unet, parts.vae, parts.residency)
        } else {
            let _packing = WeightFormatScope::enter(weights);
            let text_encoder =
                with_runtime_slots(runtime, ck, Component::TextEncoder, &slots, || {
                    ClipTextModel::new(
                        loras.var_builder(ck, Component::TextEncoder, dtype, device)?,
                        &ck.text_config,
                    )
                })?;
            let unet = with_runtime_slots(runtime, ck, Component::Unet, &slots, || {
                UNet2DConditionModel::new(
                    loras.var_builder(ck, Component::Unet, dtype, device)?,
                    &ck.unet_config,
                )
            })?;
            (text_encoder, unet, source.vae()?, Residency::default())
        };
        let runtime_loras = runtime.then(|| RuntimeLoras::from_sink(slots, device, dtype));
        let lora_reports = match &runtime_loras {
            Some(r) => r.set(&options.loras)?,
            None => loras.reports().to_vec(),
        };
        let mut scheduler_config = ck.scheduler_config.clone();
        scheduler_config.prediction_type = match ck.prediction {
            Prediction::Epsilon => "epsilon".into(),
            Prediction::VPrediction => "v_prediction".into(),
        };
        let name = ck
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self {
            tokenizer,
            text_encoder,
            unet,
            vae,
            scheduler_config,
            text_config: ck.text_config.clone(),
            family: ck.family,
            device: device.clone(),
            dtype,
            name,
            load_time: start.elapsed(),
            lora_reports,
            embeddings: Vec::new(),
            hypernetworks: Default::default(),
            runtime_loras,
            residency,
        })
    }

    /// Pixels per latent cell (8 for every SD VAE).
    pub fn vae_scale_factor(&self) -> usize {
        self.vae.config().downscale_factor()
    }
}

/// The checkpoint at `path` with the options' prediction and config overrides.
fn open_checkpoint(path: &Path, options: &LoadOptions) -> Result<Checkpoint> {
    Checkpoint::open_with_config(
        path,
        &OpenOptions {
            prediction: options.prediction,
        },
        options.config.as_deref(),
    )
}

/// The checkpoint's own tokenizer when it has one; otherwise the standard CLIP vocabulary with
/// the family's padding (SD1 pads with <|endoftext|>, SD2's OpenCLIP with id 0).
fn load_tokenizer(ck: &Checkpoint) -> Result<ClipTokenizer> {
    if let Some(dir) = &ck.tokenizer_dir {
        return ClipTokenizer::from_folder(dir);
    }
    let tokenizer = ClipTokenizer::embedded()?;
    Ok(match ck.family {
        Family::Sd1 => tokenizer,
        Family::Sd2 => tokenizer.with_pad_id(0),
    })
}
