//! The architectures `pigment bench` can build with random weights, their configs written out
//! from the published diffusers `config.json` files (no download).

use std::str::FromStr;
use std::sync::Arc;

use candle_core::{DType, Device};

use super::random_weights::RandomWeights;
use crate::error::{Error, Result};
use crate::ops::{WeightFormat, WeightFormatScope};
use crate::pipelines::deferred::{DeferredParts, Residency};
use crate::pipelines::{ComponentSource, StableDiffusion};
use crate::schedule::SchedulerConfig;
use crate::text::{ClipTextConfig, ClipTextModel, ClipTokenizer};
use crate::unet::{PerBlock, UNet2DConditionConfig, UNet2DConditionModel};
use crate::vae::{AutoencoderKL, AutoencoderKLConfig};
use crate::weights::Family;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// runwayml/stable-diffusion-v1-5 (text_encoder, unet, vae config.json).
    Sd15,
    /// stabilityai/stable-diffusion-2-1 (768 px, v-prediction).
    Sd21,
    /// The shape of tests/fixtures/models/tiny-sd1 (tools/reference/make_tiny_models.py): for
    /// tests of the benchmark itself, not for timing.
    Tiny,
}

impl FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace(['.', '-', '_'], "").as_str() {
            "sd15" | "sd1" => Ok(Self::Sd15),
            "sd21" | "sd2" => Ok(Self::Sd21),
            "tiny" => Ok(Self::Tiny),
            _ => Err(Error::invalid(format!(
                "unknown architecture {s:?}: use sd15, sd21 or tiny"
            ))),
        }
    }
}

/// The configs of one architecture.
#[derive(Debug, Clone)]
pub struct ArchConfigs {
    pub text: ClipTextConfig,
    pub unet: UNet2DConditionConfig,
    pub vae: AutoencoderKLConfig,
    pub scheduler: SchedulerConfig,
    pub family: Family,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sd15 => "sd15",
            Self::Sd21 => "sd21",
            Self::Tiny => "tiny",
        }
    }

    pub fn configs(self) -> ArchConfigs {
        match self {
            // SD1.5: CLIP ViT-L/14 text tower (768 wide, 12 layers, 12 heads, quick_gelu), UNet
            // 320/640/1280/1280 with 8 heads and 768-wide cross-attention, the f=8 VAE with
            // sample_size 512. `sd1()` / `sd()` hold exactly those values.
            Self::Sd15 => ArchConfigs {
                text: ClipTextConfig::sd1(),
                unet: UNet2DConditionConfig::sd1(),
                vae: AutoencoderKLConfig::sd(),
                scheduler: SchedulerConfig::default(),
                family: Family::Sd1,
            },
            // SD2.1: OpenCLIP ViT-H text tower as diffusers stores it (1024 wide, 23 layers,
            // 16 heads, gelu), UNet with heads [5, 10, 20, 20], linear projections, 1024-wide
            // cross-attention, sample_size 96; VAE sample_size 768; v-prediction.
            Self::Sd21 => ArchConfigs {
                text: ClipTextConfig::sd2(),
                unet: UNet2DConditionConfig {
                    sample_size: 96,
                    ..UNet2DConditionConfig::sd2()
                },
                vae: AutoencoderKLConfig {
                    sample_size: 768,
                    ..AutoencoderKLConfig::sd()
                },
                scheduler: SchedulerConfig {
                    prediction_type: "v_prediction".into(),
                    ..SchedulerConfig::default()
                },
                family: Family::Sd2,
            },
            Self::Tiny => ArchConfigs {
                text: ClipTextConfig {
                    hidden_size: 32,
                    intermediate_size: 64,
                    num_hidden_layers: 3,
                    num_attention_heads: 4,
                    projection_dim: 32,
                    ..ClipTextConfig::default()
                },
                unet: UNet2DConditionConfig {
                    sample_size: 8,
                    block_out_channels: vec![16, 32, 32],
                    down_block_types: vec![
                        "CrossAttnDownBlock2D".into(),
                        "CrossAttnDownBlock2D".into(),
                        "DownBlock2D".into(),
                    ],
                    up_block_types: vec![
                        "UpBlock2D".into(),
                        "CrossAttnUpBlock2D".into(),
                        "CrossAttnUpBlock2D".into(),
                    ],
                    attention_head_dim: PerBlock::One(4),
                    cross_attention_dim: PerBlock::One(32),
                    norm_num_groups: 8,
                    ..UNet2DConditionConfig::default()
                },
                vae: AutoencoderKLConfig {
                    block_out_channels: vec![16, 32, 32, 32],
                    down_block_types: vec!["DownEncoderBlock2D".into(); 4],
                    up_block_types: vec!["UpDecoderBlock2D".into(); 4],
                    layers_per_block: 1,
                    norm_num_groups: 8,
                    sample_size: 64,
                    ..AutoencoderKLConfig::default()
                },
                scheduler: SchedulerConfig::default(),
                family: Family::Sd1,
            },
        }
    }

    /// The whole model with random weights (see [`RandomWeights`]) in `dtype` on `device`; the
    /// text encoder's and UNet's linear and convolution weights held in `weights` (as
    /// [`StableDiffusion::load_with_weights`] holds a checkpoint's; the VAE keeps `dtype`).
    pub fn build_random(
        self,
        dtype: DType,
        device: &Device,
        seed: u64,
        weights: WeightFormat,
    ) -> Result<StableDiffusion> {
        self.build(dtype, device, seed, weights, false)
    }

    /// [`Self::build_random`] as [`StableDiffusion::load_deferred`] loads a checkpoint: the
    /// text encoder and UNet are built (the same random weights) only when a run needs them.
    pub fn build_random_deferred(
        self,
        dtype: DType,
        device: &Device,
        seed: u64,
        weights: WeightFormat,
    ) -> Result<StableDiffusion> {
        self.build(dtype, device, seed, weights, true)
    }

    fn build(
        self,
        dtype: DType,
        device: &Device,
        seed: u64,
        weights: WeightFormat,
        defer: bool,
    ) -> Result<StableDiffusion> {
        if device.is_cpu() && dtype == DType::BF16 {
            return Err(Error::invalid(
                "--dtype bf16: the CPU backend has no bf16 matrix multiply; use f32 or f16 on the \
                 CPU, or bf16 on a CUDA device",
            ));
        }
        let start = std::time::Instant::now();
        let c = self.configs();
        let tokenizer = match c.family {
            Family::Sd1 => ClipTokenizer::embedded()?,
            Family::Sd2 => ClipTokenizer::embedded()?.with_pad_id(0),
        };
        let source = RandomSource {
            configs: c.clone(),
            seed,
            dtype,
            device: device.clone(),
            weights,
        };
        let (text_encoder, unet, vae, residency) = if defer {
            let parts = DeferredParts::new(Arc::new(source), &c.vae, dtype, device)?;
            (parts.text_encoder, parts.unet, parts.vae, parts.residency)
        } else {
            let text_encoder = source.text_encoder()?;
            (
                text_encoder,
                source.unet()?,
                source.vae()?,
                Residency::default(),
            )
        };
        Ok(StableDiffusion {
            tokenizer,
            text_encoder,
            unet,
            vae,
            scheduler_config: c.scheduler,
            text_config: c.text,
            family: c.family,
            device: device.clone(),
            dtype,
            name: format!("{} (random weights)", self.name()),
            load_time: start.elapsed(),
            lora_reports: Vec::new(),
            embeddings: Vec::new(),
            hypernetworks: Default::default(),
            runtime_loras: None,
            residency,
        })
    }
}

/// Seeds of each component's weights (xor-ed with the build seed).
const COMPONENT_TEXT_ENCODER: u64 = 1;
const COMPONENT_UNET: u64 = 2;
const COMPONENT_VAE: u64 = 3;

/// The random text encoder and UNet of one architecture and seed: the same weights each time.
struct RandomSource {
    configs: ArchConfigs,
    seed: u64,
    dtype: DType,
    device: Device,
    weights: WeightFormat,
}

impl RandomSource {
    fn var_builder(&self, component: u64) -> candle_nn::VarBuilder<'static> {
        RandomWeights::var_builder(self.seed ^ component, self.dtype, &self.device)
    }
}

impl ComponentSource for RandomSource {
    fn text_encoder(&self) -> Result<ClipTextModel> {
        let _packing = WeightFormatScope::enter(self.weights);
        ClipTextModel::new(self.var_builder(COMPONENT_TEXT_ENCODER), &self.configs.text)
    }

    fn unet(&self) -> Result<UNet2DConditionModel> {
        let _packing = WeightFormatScope::enter(self.weights);
        UNet2DConditionModel::new(self.var_builder(COMPONENT_UNET), &self.configs.unet)
    }

    fn vae(&self) -> Result<AutoencoderKL> {
        AutoencoderKL::new(self.var_builder(COMPONENT_VAE), &self.configs.vae)
    }

    fn unet_config(&self) -> &UNet2DConditionConfig {
        &self.configs.unet
    }
}
