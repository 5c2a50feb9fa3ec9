//! CLIP vision and dual-encoder configs: the fields of transformers' `CLIPVisionConfig` and
//! `CLIPConfig` (`config.json` of a `CLIPModel`), with transformers' defaults (ViT-B/32).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::text::ClipTextConfig;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub projection_dim: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    /// `quick_gelu` (OpenAI CLIP) or `gelu` (OpenCLIP).
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    /// Standard deviation of the position embeddings at initialisation (training from scratch).
    pub initializer_range: f64,
    pub initializer_factor: f64,
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            projection_dim: 512,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            initializer_range: 0.02,
            initializer_factor: 1.0,
        }
    }
}

impl ClipVisionConfig {
    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size.max(1)
    }

    /// Everything the vision tower cannot build is an `Error::Config` naming the field.
    pub fn check_supported(&self) -> Result<()> {
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err(Error::Config(format!(
                "CLIP vision image_size {} is not a multiple of patch_size {}",
                self.image_size, self.patch_size
            )));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(Error::Config(format!(
                "CLIP vision hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        Ok(())
    }
}

/// transformers' `CLIPConfig`: both towers and the shared embedding space.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct ClipConfig {
    pub text_config: ClipTextConfig,
    pub vision_config: ClipVisionConfig,
    pub projection_dim: usize,
    /// ln(1 / 0.07), the initial temperature of Radford et al. 2021.
    pub logit_scale_init_value: f64,
}

impl Default for ClipConfig {
    fn default() -> Self {
        Self {
            text_config: ClipTextConfig::default(),
            vision_config: ClipVisionConfig::default(),
            projection_dim: 512,
            logit_scale_init_value: 2.6592,
        }
    }
}
