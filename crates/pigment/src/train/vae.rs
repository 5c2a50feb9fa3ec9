//! The autoencoder objective: reconstruction plus a small KL term pulling the posterior toward
//! N(0, I) (Kingma & Welling 2014, eq. 10; Rombach et al. 2022, "KL-reg." autoencoders, where
//! the weight is tiny so the latent space stays detailed).
//!
//! ```text
//! z = mean + exp(logvar / 2) eps                    (reparameterisation, gradients flow)
//! KL(x) = 1/2 sum over latent elements (mean^2 + exp(logvar) - 1 - logvar)
//! loss = mean over pixels |x - D(z)|  (or squared)  +  beta * mean over batch KL(x) / P
//! ```
//!
//! P is the number of pixel values per image (C H W): this is LDM's loss (sum over pixels plus
//! kl_weight times the summed KL, per image; taming-transformers' LPIPSWithDiscriminator without
//! its perceptual and adversarial terms) divided by P, so `beta` means the same as LDM's
//! `kl_weight` (1e-6 in SD's VAE config) at a learning rate independent of image size.

use candle_core::{DType, Tensor};

use super::prng::TrainRng;
use crate::error::{Error, Result};
use crate::vae::{AutoencoderKL, DiagonalGaussian};

/// The reconstruction distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconstruction {
    /// Mean absolute error (LDM's choice: sharper than L2).
    L1,
    /// Mean squared error.
    Mse,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VaeObjective {
    pub reconstruction: Reconstruction,
    /// Weight of the KL term (LDM's kl_weight); 1e-6 is SD's.
    pub beta: f64,
}

/// The loss and its two parts (scalars), for logging.
#[derive(Debug, Clone)]
pub struct VaeLoss {
    pub total: Tensor,
    pub reconstruction: Tensor,
    /// Mean over the batch of the per-image KL divergence, in nats.
    pub kl: Tensor,
}

impl VaeObjective {
    pub fn new(reconstruction: Reconstruction, beta: f64) -> Result<Self> {
        if !(beta.is_finite() && beta >= 0.0) {
            return Err(Error::invalid(format!(
                "VAE KL weight {beta} must be a finite number >= 0"
            )));
        }
        Ok(Self {
            reconstruction,
            beta,
        })
    }

    /// The loss on `images` [B, C, H, W] in [-1, 1]; posterior noise comes from `rng`.
    pub fn loss(
        &self,
        vae: &AutoencoderKL,
        images: &Tensor,
        rng: &mut TrainRng,
    ) -> Result<VaeLoss> {
        let posterior = vae.encode(images)?;
        let noise = Tensor::from_vec(
            rng.normal_vec(posterior.mean.elem_count()),
            posterior.mean.dims(),
            posterior.mean.device(),
        )?
        .to_dtype(posterior.mean.dtype())?;
        self.loss_of_posterior(vae, images, &posterior, &noise)
    }

    /// [`Self::loss`] with the posterior noise eps given (the latent shape, N(0, I)).
    pub fn loss_with_noise(
        &self,
        vae: &AutoencoderKL,
        images: &Tensor,
        noise: &Tensor,
    ) -> Result<VaeLoss> {
        let posterior = vae.encode(images)?;
        if noise.dims() != posterior.mean.dims() {
            return Err(Error::invalid(format!(
                "posterior noise of shape {:?} for latents of shape {:?}",
                noise.dims(),
                posterior.mean.dims()
            )));
        }
        let noise = noise.to_dtype(posterior.mean.dtype())?;
        self.loss_of_posterior(vae, images, &posterior, &noise)
    }

    fn loss_of_posterior(
        &self,
        vae: &AutoencoderKL,
        images: &Tensor,
        posterior: &DiagonalGaussian,
        noise: &Tensor,
    ) -> Result<VaeLoss> {
        let std = (&posterior.logvar * 0.5)?.exp()?;
        let z = (&posterior.mean + std.mul(noise)?)?;
        let decoded = vae.decode(&z)?.to_dtype(DType::F32)?;
        let diff = (decoded - images.to_dtype(DType::F32)?)?;
        let reconstruction = match self.reconstruction {
            Reconstruction::L1 => diff.abs()?.mean_all()?,
            Reconstruction::Mse => diff.sqr()?.mean_all()?,
        };
        let kl = kl_divergence(posterior)?.mean_all()?;
        let pixels = images.elem_count() / images.dims()[0].max(1);
        let total = (&reconstruction + kl.affine(self.beta / pixels as f64, 0.0)?)?;
        Ok(VaeLoss {
            total,
            reconstruction,
            kl,
        })
    }
}

/// KL(q(z|x) || N(0, I)) per image, [B] f32: diffusers' `DiagonalGaussianDistribution.kl()`.
pub fn kl_divergence(posterior: &DiagonalGaussian) -> Result<Tensor> {
    let mean = posterior.mean.to_dtype(DType::F32)?;
    let logvar = posterior.logvar.to_dtype(DType::F32)?;
    let terms = ((mean.sqr()? + logvar.exp()?)? - 1.0)?.sub(&logvar)?;
    Ok((terms.flatten_from(1)?.sum(1)? * 0.5)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn kl_is_zero_at_the_prior_and_matches_the_closed_form() {
        let dev = Device::Cpu;
        let zero = DiagonalGaussian {
            mean: Tensor::zeros((1, 2, 1, 1), DType::F32, &dev).unwrap(),
            logvar: Tensor::zeros((1, 2, 1, 1), DType::F32, &dev).unwrap(),
        };
        assert_eq!(
            kl_divergence(&zero).unwrap().to_vec1::<f32>().unwrap(),
            [0.0]
        );
        let q = DiagonalGaussian {
            mean: Tensor::new(&[[[[1.0f32]]]], &dev).unwrap(),
            logvar: Tensor::new(&[[[[2.0f32.ln()]]]], &dev).unwrap(),
        };
        // 1/2 (1 + 2 - 1 - ln 2)
        let kl = kl_divergence(&q).unwrap().to_vec1::<f32>().unwrap()[0];
        assert!((kl - 0.5 * (2.0 - 2f32.ln())).abs() < 1e-6);
        assert!(VaeObjective::new(Reconstruction::L1, -1.0).is_err());
    }
}
