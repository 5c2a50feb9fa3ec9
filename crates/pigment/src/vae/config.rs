//! AutoencoderKL config: the fields of diffusers' `vae/config.json`, with diffusers' defaults
//! (diffusers/models/autoencoders/autoencoder_kl.py).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct AutoencoderKLConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub act_fn: String,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    pub sample_size: usize,
    pub scaling_factor: f64,
    pub shift_factor: Option<f64>,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
    pub force_upcast: bool,
}

impl Default for AutoencoderKLConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into()],
            up_block_types: vec!["UpDecoderBlock2D".into()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: 32,
            scaling_factor: 0.18215,
            shift_factor: None,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
            force_upcast: true,
        }
    }
}

impl AutoencoderKLConfig {
    /// The SD1.x / SD2.x VAE (f = 8, 4 latent channels).
    pub fn sd() -> Self {
        Self {
            down_block_types: vec!["DownEncoderBlock2D".into(); 4],
            up_block_types: vec!["UpDecoderBlock2D".into(); 4],
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            sample_size: 512,
            ..Self::default()
        }
    }

    /// Spatial down-sampling factor between pixels and latents.
    pub fn downscale_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// Everything Pigment's AutoencoderKL cannot build is an `Error::Config` naming the field.
    pub fn check_supported(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(Error::Config("VAE `block_out_channels` is empty".into()));
        }
        for (field, types, want) in [
            (
                "down_block_types",
                &self.down_block_types,
                "DownEncoderBlock2D",
            ),
            ("up_block_types", &self.up_block_types, "UpDecoderBlock2D"),
        ] {
            if types.len() != n {
                return Err(Error::Config(format!(
                    "VAE has {n} `block_out_channels` but {} `{field}`: they must match",
                    types.len()
                )));
            }
            if let Some((i, t)) = types.iter().enumerate().find(|(_, t)| *t != want) {
                return Err(Error::Config(format!(
                    "VAE `{field}[{i}]` = {t:?} is not supported by Pigment (only {want})"
                )));
            }
        }
        if !matches!(self.act_fn.as_str(), "silu" | "swish") {
            return Err(Error::Config(format!(
                "VAE `act_fn` = {:?} is not supported by Pigment (only \"silu\")",
                self.act_fn
            )));
        }
        if self.layers_per_block == 0 || self.latent_channels == 0 {
            return Err(Error::Config(
                "VAE `layers_per_block` and `latent_channels` must be at least 1".into(),
            ));
        }
        let g = self.norm_num_groups;
        if let Some(&c) = self
            .block_out_channels
            .iter()
            .find(|&&c| g == 0 || !c.is_multiple_of(g))
        {
            return Err(Error::Config(format!(
                "VAE `block_out_channels` value {c} is not a multiple of `norm_num_groups` = {g}"
            )));
        }
        Ok(())
    }
}
