//! The encoder's posterior q(z|x) = N(mean, exp(logvar)) (Kingma & Welling 2014), as diffusers'
//! `DiagonalGaussianDistribution` (models/autoencoders/vae.py).

use candle_core::Tensor;

use crate::error::Result;
use crate::rng::TorchGenerator;

/// Mean and log-variance [B, latent_channels, h, w], BEFORE the VAE's scaling factor.
#[derive(Debug, Clone)]
pub struct DiagonalGaussian {
    pub mean: Tensor,
    /// Clamped to [-30, 20] as diffusers does.
    pub logvar: Tensor,
}

impl DiagonalGaussian {
    /// Splits encoder moments [B, 2C, h, w] into mean (first C channels) and logvar.
    pub fn from_moments(moments: &Tensor) -> Result<Self> {
        let halves = moments.chunk(2, 1)?;
        Ok(Self {
            mean: halves[0].clone(),
            logvar: halves[1].clamp(-30f32, 20f32)?,
        })
    }

    /// The mode (= mean): the deterministic latent img2img uses by default.
    pub fn mode(&self) -> Tensor {
        self.mean.clone()
    }

    /// mean + exp(logvar / 2) * noise, noise drawn from `rng` as diffusers'
    /// `latent_dist.sample(generator)` draws it (one randn of the mean's shape, in f32).
    pub fn sample(&self, rng: &mut TorchGenerator) -> Result<Tensor> {
        let noise = rng
            .randn_tensor(self.mean.dims(), self.mean.device())?
            .to_dtype(self.mean.dtype())?;
        let std = (&self.logvar * 0.5)?.exp()?;
        Ok((&self.mean + std.mul(&noise)?)?)
    }
}
