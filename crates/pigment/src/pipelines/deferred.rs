//! Components loaded on demand. A model opened with [`StableDiffusion::load_deferred`] (or a
//! random-weight architecture built the same way for benchmarks) holds its tokenizer, VAE and
//! configs, but leaves the text encoder and the UNet where they come from until a run needs
//! them: [`StableDiffusion::txt2img_low_memory`] then loads the text encoder, encodes, frees
//! it, loads the UNet, denoises, frees it, and decodes. The peak memory of a generation is the
//! largest component with its activations (SD1.5: the UNet's 3.2 GiB of f32 weights) instead
//! of all three at once (4.0 GiB), as ComfyUI's and A1111's `--lowvram` model offloading does
//! with its CPU copy, but from the checkpoint file itself (memory-mapped: a reload costs the
//! conversion, not a second copy).
//!
//! Every other pipeline needs both components resident: call
//! [`StableDiffusion::load_released`] first, or get an error that says so (never wrong numbers
//! from the weightless stand-ins that take a released component's place).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::adapters::LoraSet;
use crate::error::{Error, Result};
use crate::ops::{WeightFormat, WeightFormatScope};
use crate::pipelines::StableDiffusion;
use crate::text::{ClipTextConfig, ClipTextModel};
use crate::unet::{PerBlock, UNet2DConditionConfig, UNet2DConditionModel};
use crate::vae::{AutoencoderKL, AutoencoderKLConfig};
use crate::weights::{Checkpoint, Component};

/// Where a deferred model's text encoder and UNet are built from, each time a run needs them.
pub trait ComponentSource: Send + Sync {
    fn text_encoder(&self) -> Result<ClipTextModel>;
    fn unet(&self) -> Result<UNet2DConditionModel>;
    fn vae(&self) -> Result<AutoencoderKL>;
    /// The UNet's config while its weights are not loaded.
    fn unet_config(&self) -> &UNet2DConditionConfig;
}

/// Which components are loaded, and how to load the others.
#[derive(Clone, Default)]
pub(crate) struct Residency {
    pub source: Option<Arc<dyn ComponentSource>>,
    pub text_encoder_released: bool,
    pub unet_released: bool,
    /// Textual-inversion vectors appended to the token table, in order: appended again to a
    /// text encoder that is loaded anew.
    pub token_rows: Vec<Tensor>,
}

/// A deferred model's parts before its first run: weightless stand-ins for the text encoder,
/// the UNet and the VAE, and the residency that loads them from the source.
pub(crate) struct DeferredParts {
    pub text_encoder: ClipTextModel,
    pub unet: UNet2DConditionModel,
    pub vae: AutoencoderKL,
    pub residency: Residency,
}

impl DeferredParts {
    pub fn new(
        source: Arc<dyn ComponentSource>,
        vae_config: &AutoencoderKLConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            text_encoder: text_encoder_stand_in(dtype, device)?,
            unet: unet_stand_in(dtype, device)?,
            vae: AutoencoderKL::without_weights(vae_config, dtype)?,
            residency: Residency {
                source: Some(source),
                text_encoder_released: true,
                unet_released: true,
                token_rows: Vec::new(),
            },
        })
    }
}

/// A checkpoint's components with the merged LoRAs and the weight format of the first load.
pub(crate) struct CheckpointSource {
    pub checkpoint: Checkpoint,
    pub loras: LoraSet,
    pub dtype: DType,
    pub device: Device,
    pub weights: WeightFormat,
}

impl ComponentSource for CheckpointSource {
    fn text_encoder(&self) -> Result<ClipTextModel> {
        let _packing = WeightFormatScope::enter(self.weights);
        let ck = &self.checkpoint;
        ClipTextModel::new(
            self.loras
                .var_builder(ck, Component::TextEncoder, self.dtype, &self.device)?,
            &ck.text_config,
        )
    }

    fn unet(&self) -> Result<UNet2DConditionModel> {
        let _packing = WeightFormatScope::enter(self.weights);
        let ck = &self.checkpoint;
        UNet2DConditionModel::new(
            self.loras
                .var_builder(ck, Component::Unet, self.dtype, &self.device)?,
            &ck.unet_config,
        )
    }

    fn vae(&self) -> Result<AutoencoderKL> {
        let ck = &self.checkpoint;
        AutoencoderKL::new(
            ck.var_builder(Component::Vae, self.dtype, &self.device)?,
            &ck.vae_config,
        )
    }

    fn unet_config(&self) -> &UNet2DConditionConfig {
        &self.checkpoint.unet_config
    }
}

/// A weightless text encoder with one position in a released one's place: encoding with it
/// fails with an error.
pub(crate) fn text_encoder_stand_in(dtype: DType, device: &Device) -> Result<ClipTextModel> {
    let stand_in = ClipTextConfig {
        vocab_size: 1,
        hidden_size: 1,
        intermediate_size: 1,
        num_hidden_layers: 0,
        num_attention_heads: 1,
        max_position_embeddings: 1,
        projection_dim: 1,
        ..ClipTextConfig::default()
    };
    ClipTextModel::new(VarBuilder::zeros(dtype, device), &stand_in)
}

/// A weightless one-channel UNet in a released one's place: denoising with it fails with an
/// error (a channel mismatch).
pub(crate) fn unet_stand_in(dtype: DType, device: &Device) -> Result<UNet2DConditionModel> {
    let stand_in = UNet2DConditionConfig {
        in_channels: 1,
        out_channels: 1,
        block_out_channels: vec![1],
        down_block_types: vec!["DownBlock2D".into()],
        up_block_types: vec!["UpBlock2D".into()],
        mid_block_type: None,
        layers_per_block: PerBlock::One(1),
        norm_num_groups: 1,
        ..UNet2DConditionConfig::default()
    };
    UNet2DConditionModel::new(VarBuilder::zeros(dtype, device), &stand_in)
}

impl StableDiffusion {
    /// Whether the text encoder and the UNet both hold their weights (false after a
    /// low-memory run, and for a model from [`Self::load_deferred`] until they are loaded).
    pub fn is_loaded(&self) -> bool {
        !self.residency.text_encoder_released
            && !self.residency.unet_released
            && self.vae.has_weights()
    }

    /// The UNet's config, also while the UNet is released.
    pub fn unet_config(&self) -> &UNet2DConditionConfig {
        match &self.residency.source {
            Some(source) if self.residency.unet_released => source.unet_config(),
            _ => self.unet.config(),
        }
    }

    /// Loads whatever a low-memory run released, so that every pipeline can run: from the
    /// model's source when it has one (a model from [`Self::load_deferred`]); otherwise an
    /// error that says to load the model again.
    pub fn load_released(&mut self) -> Result<()> {
        self.ensure_text_encoder()?;
        self.ensure_unet()?;
        self.ensure_vae()
    }

    /// The error every pipeline but [`Self::txt2img_low_memory`] gives while a component is
    /// released (the stand-ins would only fail later with a shape error).
    pub(crate) fn require_loaded(&self) -> Result<()> {
        if self.is_loaded() {
            return Ok(());
        }
        Err(Error::invalid(
            "the model's text encoder or UNet is not loaded (a low-memory model frees them \
             between runs): call `load_released()` before this pipeline, or use \
             `txt2img_low_memory`, which loads each component when it needs it",
        ))
    }

    /// Loads the text encoder from the source if it was released, with the textual-inversion
    /// vectors appended again.
    pub(crate) fn ensure_text_encoder(&mut self) -> Result<()> {
        if !self.residency.text_encoder_released {
            return Ok(());
        }
        let mut text_encoder = self.component_source("text encoder")?.text_encoder()?;
        for rows in &self.residency.token_rows {
            text_encoder.append_token_embeddings(rows)?;
        }
        self.text_encoder = text_encoder;
        self.residency.text_encoder_released = false;
        Ok(())
    }

    /// Loads the UNet from the source if it was released.
    pub(crate) fn ensure_unet(&mut self) -> Result<()> {
        if !self.residency.unet_released {
            return Ok(());
        }
        self.unet = self.component_source("UNet")?.unet()?;
        self.residency.unet_released = false;
        Ok(())
    }

    /// Loads the VAE's weights from the source if they were released; the tiling setting stays.
    pub(crate) fn ensure_vae(&mut self) -> Result<()> {
        if self.vae.has_weights() {
            return Ok(());
        }
        let mut vae = self.component_source("VAE")?.vae()?;
        vae.set_tiling(self.vae.tiling());
        self.vae = vae;
        Ok(())
    }

    /// Frees the VAE's weights if the model can load them again (a deferred model); a model
    /// without a source keeps them, so that it can still decode.
    pub(crate) fn release_vae_if_deferred(&mut self) {
        if self.residency.source.is_some() {
            self.vae.release_weights();
        }
    }

    fn component_source(&self, what: &str) -> Result<Arc<dyn ComponentSource>> {
        self.residency.source.clone().ok_or_else(|| {
            Error::invalid(format!(
                "the {what} was freed by a low-memory run and this model has no source to load \
                 it from again: load the model again, or load it with `load_deferred` so that \
                 each run loads what it needs"
            ))
        })
    }

    /// Frees the text encoder's weights; a weightless stand-in takes its place (see
    /// [`Self::require_loaded`]). A deferred model loads it again when a run needs it.
    pub fn release_text_encoder(&mut self) -> Result<()> {
        self.text_encoder = text_encoder_stand_in(self.dtype, &self.device)?;
        self.residency.text_encoder_released = true;
        Ok(())
    }

    /// Frees the UNet's weights; a weightless stand-in takes its place (see
    /// [`Self::require_loaded`]). A deferred model loads it again when a run needs it.
    pub fn release_unet(&mut self) -> Result<()> {
        self.unet = unet_stand_in(self.dtype, &self.device)?;
        self.residency.unet_released = true;
        Ok(())
    }
}
