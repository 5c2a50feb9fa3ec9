//! The denoising objective of latent diffusion (Ho et al. 2020, "Denoising Diffusion
//! Probabilistic Models", Algorithm 1 and eq. 14; Rombach et al. 2022 in a VAE's latent space):
//!
//! ```text
//! t ~ U{0, ..., T-1}, eps ~ N(0, I)
//! x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps                        (eq. 4)
//! loss = || eps - eps_theta(x_t, t, c) ||^2                            (eq. 14, "L_simple")
//! ```
//!
//! with one timestep per sample and, for classifier-free guidance (Ho & Salimans 2021; GLIDE,
//! Nichol et al. 2021), the caption replaced by "" with probability `caption_dropout`, so the
//! same network also learns the unconditional prediction. `v_prediction` (Salimans & Ho 2022)
//! and `sample` targets follow the scheduler config, as diffusers' train_text_to_image.py does.

use candle_core::{DType, Tensor};

use super::prng::TrainRng;
use crate::error::{Error, Result};
use crate::samplers::PredictionType;
use crate::schedule::{training_alphas_cumprod, SchedulerConfig};
use crate::unet::{UNet2DConditionModel, UNetExtras};
use crate::vae::AutoencoderKL;

pub struct DiffusionObjective {
    alphas_cumprod: Vec<f32>,
    prediction: PredictionType,
    caption_dropout: f64,
    snr_gamma: Option<f64>,
}

impl DiffusionObjective {
    /// The forward process of `scheduler` (its betas and prediction type); captions dropped
    /// with probability `caption_dropout` (0.1 is usual for classifier-free guidance).
    pub fn new(scheduler: &SchedulerConfig, caption_dropout: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&caption_dropout) {
            return Err(Error::invalid(format!(
                "caption dropout {caption_dropout} must be a probability in [0, 1]"
            )));
        }
        Ok(Self {
            alphas_cumprod: training_alphas_cumprod(scheduler)?,
            prediction: scheduler.prediction_type.parse()?,
            caption_dropout,
            snr_gamma: None,
        })
    }

    /// Min-SNR-gamma loss weighting (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR
    /// Weighting Strategy", eq. 9; diffusers' train_text_to_image.py `--snr_gamma`): each
    /// sample's MSE is weighted by min(SNR_t, gamma) / SNR_t for epsilon targets and
    /// min(SNR_t, gamma) / (SNR_t + 1) for v targets, SNR_t = abar_t / (1 - abar_t), so the
    /// nearly clean timesteps stop dominating the gradient. The paper (and diffusers) use 5.
    pub fn with_snr_gamma(mut self, gamma: f64) -> Result<Self> {
        if !(gamma > 0.0 && gamma.is_finite()) {
            return Err(Error::invalid(format!(
                "min-SNR gamma {gamma} must be a positive number (5 is usual)"
            )));
        }
        self.snr_gamma = Some(gamma);
        Ok(self)
    }

    /// The per-sample loss weights of [`Self::with_snr_gamma`] (all 1 without it).
    pub fn loss_weights(&self, timesteps: &[usize]) -> Vec<f32> {
        timesteps
            .iter()
            .map(|&t| {
                let (Some(gamma), Some(&abar)) = (self.snr_gamma, self.alphas_cumprod.get(t))
                else {
                    return 1.0;
                };
                let snr = abar as f64 / (1.0 - abar as f64);
                let clipped = snr.min(gamma);
                (match self.prediction {
                    PredictionType::VPrediction => clipped / (snr + 1.0),
                    // min(SNR, gamma) / SNR, written so that a zero-terminal-SNR schedule's
                    // SNR_T = 0 gives the limit 1 rather than 0 / 0.
                    PredictionType::Epsilon if snr <= gamma => 1.0,
                    PredictionType::Epsilon => gamma / snr,
                    PredictionType::Sample => clipped,
                }) as f32
            })
            .collect()
    }

    /// T, the number of training timesteps.
    pub fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    pub fn prediction_type(&self) -> PredictionType {
        self.prediction
    }

    /// The captions with each one replaced by "" with probability `caption_dropout`.
    pub fn drop_captions<S: AsRef<str>>(&self, captions: &[S], rng: &mut TrainRng) -> Vec<String> {
        captions
            .iter()
            .map(|c| {
                if rng.chance(self.caption_dropout) {
                    String::new()
                } else {
                    c.as_ref().to_string()
                }
            })
            .collect()
    }

    /// One timestep per sample, uniform over 0..T.
    pub fn sample_timesteps(&self, batch: usize, rng: &mut TrainRng) -> Vec<usize> {
        let t = self.alphas_cumprod.len() as u64;
        (0..batch).map(|_| rng.below(t) as usize).collect()
    }

    /// Per-sample coefficients [B, 1, 1, 1] (f32): sqrt(abar_t) and sqrt(1 - abar_t), computed
    /// in f32 as diffusers' `add_noise` does.
    fn coefficients(&self, timesteps: &[usize], like: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut signal = Vec::with_capacity(timesteps.len());
        let mut noise = Vec::with_capacity(timesteps.len());
        for &t in timesteps {
            let abar = *self.alphas_cumprod.get(t).ok_or_else(|| {
                Error::invalid(format!(
                    "timestep {t} is outside the schedule's {} training timesteps",
                    self.alphas_cumprod.len()
                ))
            })?;
            signal.push(abar.sqrt());
            noise.push((1.0 - abar).sqrt());
        }
        let shape = (timesteps.len(), 1, 1, 1);
        let dev = like.device();
        Ok((
            Tensor::from_vec(signal, shape, dev)?,
            Tensor::from_vec(noise, shape, dev)?,
        ))
    }

    /// x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (eq. 4), in f32.
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        self.check_batch(x0, timesteps)?;
        let (a, s) = self.coefficients(timesteps, x0)?;
        let x0 = x0.to_dtype(DType::F32)?;
        let noise = noise.to_dtype(DType::F32)?;
        Ok((x0.broadcast_mul(&a)? + noise.broadcast_mul(&s)?)?)
    }

    /// What the network should output for (x_0, eps, t) under the prediction type, in f32.
    pub fn target(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        self.check_batch(x0, timesteps)?;
        Ok(match self.prediction {
            PredictionType::Epsilon => noise.to_dtype(DType::F32)?,
            PredictionType::Sample => x0.to_dtype(DType::F32)?,
            PredictionType::VPrediction => {
                let (a, s) = self.coefficients(timesteps, x0)?;
                let eps = noise.to_dtype(DType::F32)?.broadcast_mul(&a)?;
                (eps - x0.to_dtype(DType::F32)?.broadcast_mul(&s)?)?
            }
        })
    }

    /// The training loss on a batch: `latents` x_0 [B, C, h, w] (already scaled, see
    /// [`encode_latents`]), `encoder_hidden_states` [B, tokens, dim] from the (frozen) text
    /// encoder. Draws timesteps and noise from `rng`; MSE in f32, averaged over everything.
    pub fn loss(
        &self,
        unet: &UNet2DConditionModel,
        latents: &Tensor,
        encoder_hidden_states: &Tensor,
        rng: &mut TrainRng,
    ) -> Result<Tensor> {
        let batch = latents.dims().first().copied().unwrap_or(0);
        let timesteps = self.sample_timesteps(batch, rng);
        let noise = Tensor::from_vec(
            rng.normal_vec(latents.elem_count()),
            latents.dims(),
            latents.device(),
        )?;
        self.loss_at(unet, latents, encoder_hidden_states, &noise, &timesteps)
    }

    /// [`Self::loss`] with given noise and timesteps.
    pub fn loss_at(
        &self,
        unet: &UNet2DConditionModel,
        latents: &Tensor,
        encoder_hidden_states: &Tensor,
        noise: &Tensor,
        timesteps: &[usize],
    ) -> Result<Tensor> {
        let noisy = self.add_noise(latents, noise, timesteps)?;
        let t: Vec<f64> = timesteps.iter().map(|&t| t as f64).collect();
        let pred =
            unet.forward_timesteps(&noisy, &t, encoder_hidden_states, &UNetExtras::default())?;
        let target = self.target(latents, noise, timesteps)?;
        let pred = pred.to_dtype(DType::F32)?;
        if self.snr_gamma.is_none() {
            return Ok(candle_nn::loss::mse(&pred, &target)?);
        }
        let per_sample = (pred - target)?.sqr()?.flatten_from(1)?.mean(1)?;
        let weights = Tensor::new(self.loss_weights(timesteps), per_sample.device())?;
        Ok((per_sample * weights)?.mean_all()?)
    }

    fn check_batch(&self, x0: &Tensor, timesteps: &[usize]) -> Result<()> {
        match x0.dims().first() {
            Some(&b) if b == timesteps.len() => Ok(()),
            _ => Err(Error::invalid(format!(
                "{} timesteps for latents of shape {:?}: give one timestep per sample",
                timesteps.len(),
                x0.dims()
            ))),
        }
    }
}

/// UNet training latents of `images` [B, 3, H, W] in [-1, 1] under a frozen VAE: a sample of
/// the posterior, `(z - shift_factor) * scaling_factor`, detached (no gradient reaches the
/// VAE), in f32. As diffusers' train_text_to_image.py: `latent_dist.sample() * scaling_factor`.
pub fn encode_latents(vae: &AutoencoderKL, images: &Tensor, rng: &mut TrainRng) -> Result<Tensor> {
    let posterior = vae.encode(images)?;
    let mean = posterior.mean.to_dtype(DType::F32)?;
    let std = (posterior.logvar.to_dtype(DType::F32)? * 0.5)?.exp()?;
    let noise = Tensor::from_vec(
        rng.normal_vec(mean.elem_count()),
        mean.dims(),
        mean.device(),
    )?;
    let z = (mean + std.mul(&noise)?)?;
    let cfg = vae.config();
    let z = match cfg.shift_factor {
        Some(shift) => z.affine(1.0, -shift)?,
        None => z,
    };
    Ok(z.affine(cfg.scaling_factor, 0.0)?.detach())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Min-SNR-5 weights: 1 while SNR <= 5 (noisy timesteps), 5 / SNR above (epsilon), and
    /// min(SNR, 5) / (SNR + 1) for v targets; none without the option.
    #[test]
    fn min_snr_weights_follow_the_paper() -> Result<()> {
        let config = SchedulerConfig::default();
        let plain = DiffusionObjective::new(&config, 0.0)?;
        assert_eq!(plain.loss_weights(&[0, 500, 999]), vec![1.0; 3]);
        let weighted = DiffusionObjective::new(&config, 0.0)?.with_snr_gamma(5.0)?;
        let abar = training_alphas_cumprod(&config)?;
        for t in [0usize, 10, 100, 500, 999] {
            let snr = abar[t] as f64 / (1.0 - abar[t] as f64);
            let w = weighted.loss_weights(&[t])[0] as f64;
            let expected = if snr > 5.0 { 5.0 / snr } else { 1.0 };
            assert!(
                (w - expected).abs() < 1e-6,
                "t {t}: weight {w}, expected {expected}"
            );
        }
        assert!(
            weighted.loss_weights(&[0])[0] < 0.01,
            "the cleanest step is down-weighted"
        );
        let mut v = config.clone();
        v.prediction_type = "v_prediction".into();
        let v = DiffusionObjective::new(&v, 0.0)?.with_snr_gamma(5.0)?;
        let snr = abar[999] as f64 / (1.0 - abar[999] as f64);
        let w = v.loss_weights(&[999])[0] as f64;
        assert!((w - snr / (snr + 1.0)).abs() < 1e-6);
        assert!(DiffusionObjective::new(&config, 0.0)?
            .with_snr_gamma(0.0)
            .is_err());
        Ok(())
    }

    #[test]
    fn noising_and_targets_follow_the_equations() {
        let obj = DiffusionObjective::new(&SchedulerConfig::default(), 0.0).unwrap();
        let ac = training_alphas_cumprod(&SchedulerConfig::default()).unwrap();
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[[[[1.0f32]]], [[[2.0]]]], &dev).unwrap();
        let eps = Tensor::new(&[[[[0.5f32]]], [[[-1.0]]]], &dev).unwrap();
        let xt = obj.add_noise(&x0, &eps, &[0, 999]).unwrap();
        let xt = xt.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let expect0 = ac[0].sqrt() * 1.0 + (1.0 - ac[0]).sqrt() * 0.5;
        let expect1 = ac[999].sqrt() * 2.0 - (1.0 - ac[999]).sqrt();
        assert!((xt[0] - expect0).abs() < 1e-6 && (xt[1] - expect1).abs() < 1e-6);
        assert!(obj.add_noise(&x0, &eps, &[1]).is_err());
        assert!(obj.add_noise(&x0, &eps, &[0, 1000]).is_err());

        let v = DiffusionObjective::new(
            &SchedulerConfig {
                prediction_type: "v_prediction".into(),
                ..Default::default()
            },
            0.0,
        )
        .unwrap();
        let target = v.target(&x0, &eps, &[500, 500]).unwrap();
        let t = target.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let expect = ac[500].sqrt() * 0.5 - (1.0 - ac[500]).sqrt() * 1.0;
        assert!((t[0] - expect).abs() < 1e-6);
    }

    /// On a zero-terminal-SNR schedule (Lin et al. 2024) x_T holds nothing of x_0, the v target
    /// there is -x_0, and min-SNR weights stay finite at SNR_T = 0 (epsilon: the limit 1; v: 0).
    #[test]
    fn zero_terminal_snr_noises_to_pure_noise_with_finite_weights() -> Result<()> {
        let config = SchedulerConfig {
            prediction_type: "v_prediction".into(),
            rescale_betas_zero_snr: true,
            ..SchedulerConfig::default()
        };
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[[[[3.0f32]]]], &dev)?;
        let eps = Tensor::new(&[[[[0.25f32]]]], &dev)?;
        let v = DiffusionObjective::new(&config, 0.0)?;
        let xt = v
            .add_noise(&x0, &eps, &[999])?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert!((xt[0] - 0.25).abs() < 1e-6, "x_T = {}", xt[0]);
        let target = v
            .target(&x0, &eps, &[999])?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert!((target[0] + 3.0).abs() < 1e-6, "v_T = {}", target[0]);
        let weighted = DiffusionObjective::new(&config, 0.0)?.with_snr_gamma(5.0)?;
        assert_eq!(weighted.loss_weights(&[999]), vec![0.0]);
        let epsilon = SchedulerConfig {
            prediction_type: "epsilon".into(),
            ..config
        };
        let weighted = DiffusionObjective::new(&epsilon, 0.0)?.with_snr_gamma(5.0)?;
        assert_eq!(weighted.loss_weights(&[999]), vec![1.0]);
        Ok(())
    }

    #[test]
    fn caption_dropout_rate_and_timestep_range() {
        let obj = DiffusionObjective::new(&SchedulerConfig::default(), 0.1).unwrap();
        let mut rng = TrainRng::new(0);
        let captions = vec!["a red circle"; 10_000];
        let dropped = obj.drop_captions(&captions, &mut rng);
        let empty = dropped.iter().filter(|c| c.is_empty()).count();
        assert!((800..1200).contains(&empty), "{empty} of 10000 dropped");
        assert!(dropped.iter().all(|c| c.is_empty() || c == "a red circle"));
        let ts = obj.sample_timesteps(10_000, &mut rng);
        assert!(ts.iter().all(|&t| t < 1000));
        assert!(ts.contains(&0) && ts.contains(&999));
        assert!(DiffusionObjective::new(&SchedulerConfig::default(), 1.5).is_err());
    }
}
