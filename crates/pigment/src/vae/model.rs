//! AutoencoderKL (diffusers models/autoencoders/autoencoder_kl.py): the latent-diffusion VAE
//! (Rombach et al. 2022). Built from the config; computes in the dtype of its weights.

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;

use super::config::AutoencoderKLConfig;
use super::decoder::Decoder;
use super::encoder::Encoder;
use super::gaussian::DiagonalGaussian;
use super::tiling::{tiled, VaeTiling};
use crate::error::{Error, Result};
use crate::ops::Conv2d;

pub struct AutoencoderKL {
    config: AutoencoderKLConfig,
    dtype: DType,
    /// None once [`AutoencoderKL::release_weights`] freed them (a low-memory model between runs).
    nets: Option<VaeNets>,
    tiling: VaeTiling,
}

/// The weights: everything but the config.
struct VaeNets {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
}

impl AutoencoderKL {
    /// `vb` rooted at the VAE's weights (keys like `encoder.conv_in.weight`); its dtype is the
    /// compute dtype. Unsupported config values are an `Error::Config` naming the field.
    pub fn new(vb: VarBuilder, cfg: &AutoencoderKLConfig) -> Result<Self> {
        cfg.check_supported()?;
        let lc = cfg.latent_channels;
        let conv1x1 =
            |c: usize, name: &str| crate::ops::conv2d(c, c, 1, Default::default(), vb.pp(name));
        let nets = VaeNets {
            encoder: Encoder::new(vb.pp("encoder"), cfg)?,
            decoder: Decoder::new(vb.pp("decoder"), cfg)?,
            quant_conv: if cfg.use_quant_conv {
                Some(conv1x1(2 * lc, "quant_conv")?)
            } else {
                None
            },
            post_quant_conv: if cfg.use_post_quant_conv {
                Some(conv1x1(lc, "post_quant_conv")?)
            } else {
                None
            },
        };
        Ok(Self {
            dtype: vb.dtype(),
            nets: Some(nets),
            config: cfg.clone(),
            tiling: VaeTiling::Off,
        })
    }

    /// A VAE of this config without weights (a deferred model's, until it loads them):
    /// `config`, `dtype` and tiling work, encode and decode are an error.
    pub fn without_weights(cfg: &AutoencoderKLConfig, dtype: DType) -> Result<Self> {
        cfg.check_supported()?;
        Ok(Self {
            config: cfg.clone(),
            dtype,
            nets: None,
            tiling: VaeTiling::Off,
        })
    }

    /// Frees the weights; the config and tiling stay (see [`Self::without_weights`]).
    pub fn release_weights(&mut self) {
        self.nets = None;
    }

    /// Whether the weights are held (encode and decode can run).
    pub fn has_weights(&self) -> bool {
        self.nets.is_some()
    }

    fn nets(&self) -> Result<&VaeNets> {
        self.nets.as_ref().ok_or_else(|| {
            Error::invalid(
                "the VAE's weights are not loaded (a low-memory model frees them between runs): \
                 call `load_released()` on the model first",
            )
        })
    }

    pub fn config(&self) -> &AutoencoderKLConfig {
        &self.config
    }

    /// When `encode` / `decode` work in tiles (see [`VaeTiling`]; default off, as diffusers).
    pub fn set_tiling(&mut self, tiling: VaeTiling) {
        self.tiling = tiling;
    }

    pub fn tiling(&self) -> VaeTiling {
        self.tiling
    }

    /// Tile side in pixels and in latent cells: diffusers' `tile_sample_min_size` (the
    /// config's `sample_size`) and `tile_latent_min_size`.
    fn tile_sizes(&self) -> (usize, usize) {
        let pixels = self.config.sample_size;
        (pixels, pixels / self.config.downscale_factor())
    }

    /// The compute dtype (that of the weights); outputs have it too.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// `images` [B, in_channels, H, W] in [-1, 1] -> the latent distribution, BEFORE
    /// `scaling_factor` (multiply a sample by it to get UNet latents).
    pub fn encode(&self, images: &Tensor) -> Result<DiagonalGaussian> {
        self.check_input(images, self.config.in_channels, "images", "in_channels")?;
        let x = images.to_dtype(self.dtype)?;
        let (_, _, h, w) = x.dims4()?;
        let (tile_pixels, tile_latent) = self.tile_sizes();
        let moments = if self.tiling.applies(h, w, tile_pixels) {
            tiled(&x, tile_pixels, tile_latent, &|t| self.encode_moments(t))?
        } else {
            self.encode_moments(&x)?
        };
        DiagonalGaussian::from_moments(&moments)
    }

    /// Encoder and quant_conv on one image or tile: the moments (mean, logvar).
    fn encode_moments(&self, x: &Tensor) -> Result<Tensor> {
        let nets = self.nets()?;
        let moments = nets.encoder.forward(x)?;
        Ok(match &nets.quant_conv {
            Some(c) => c.forward(&moments)?,
            None => moments,
        })
    }

    /// Unscaled latents [B, latent_channels, h, w] (UNet latents divided by `scaling_factor`) ->
    /// images [B, out_channels, h * f, w * f] in about [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        self.check_input(
            latents,
            self.config.latent_channels,
            "latents",
            "latent_channels",
        )?;
        let z = latents.to_dtype(self.dtype)?;
        let (_, _, h, w) = z.dims4()?;
        let (tile_pixels, tile_latent) = self.tile_sizes();
        let f = self.config.downscale_factor();
        if self.tiling.applies(h * f, w * f, tile_pixels) {
            return tiled(&z, tile_latent, tile_pixels, &|t| self.decode_whole(t));
        }
        self.decode_whole(&z)
    }

    /// post_quant_conv and decoder on one latent or tile.
    fn decode_whole(&self, z: &Tensor) -> Result<Tensor> {
        let nets = self.nets()?;
        let z = match &nets.post_quant_conv {
            Some(c) => c.forward(z)?,
            None => z.clone(),
        };
        nets.decoder.forward(&z)
    }

    fn check_input(&self, x: &Tensor, channels: usize, what: &str, field: &str) -> Result<()> {
        match x.dims() {
            &[_, c, h, w] if c == channels && h > 0 && w > 0 => Ok(()),
            &[_, c, _, _] if c != channels => Err(Error::invalid(format!(
                "VAE {what} have {c} channels but this VAE takes {channels} ({field})"
            ))),
            dims => Err(Error::invalid(format!(
                "VAE {what} must be [batch, {channels}, height, width], got shape {dims:?}"
            ))),
        }
    }
}
