//! The sigma schedule shared by the Euler, Euler ancestral and Heun samplers, and the
//! k-diffusion formulas they share: diffusers' EulerDiscreteScheduler.set_timesteps and
//! scale_model_input, and the x_0 prediction of Karras et al. 2022 (EDM).

use candle_core::Tensor;

use super::ops::{div, mul};
use super::{PredictionType, Setup};
use crate::error::Result;
use crate::schedule::{
    karras_sigmas, sigma_at, training_alphas_cumprod, training_sigmas, SigmaToTimestep,
    TimestepSpacing,
};

/// Timesteps and their sigmas, with a final sigma of 0 appended (`sigmas.len() == n + 1`).
#[derive(Clone, Debug)]
pub(crate) struct SigmaSchedule {
    pub timesteps: Vec<f64>,
    pub sigmas: Vec<f32>,
}

/// The alphas_cumprod of the Euler family: with zero terminal SNR, the final 0 becomes 2^-24
/// so that sigma stays finite (diffusers does this in Euler, Euler ancestral and DPM-Solver).
pub(crate) fn sigma_alphas_cumprod(setup: &Setup) -> Result<Vec<f32>> {
    let mut ac = training_alphas_cumprod(&setup.config)?;
    if setup.config.rescale_betas_zero_snr {
        if let Some(last) = ac.last_mut() {
            *last = 2f32.powi(-24);
        }
    }
    Ok(ac)
}

impl SigmaSchedule {
    /// EulerDiscreteScheduler.set_timesteps with interpolation_type "linear" and
    /// final_sigmas_type "zero" (Euler ancestral and Heun compute the same).
    pub fn new(setup: &Setup, alphas_cumprod: &[f32]) -> Self {
        let train = training_sigmas(alphas_cumprod);
        let timesteps = crate::schedule::spacing::spaced_timesteps(
            setup.spacing,
            setup.config.num_train_timesteps,
            setup.steps,
            setup.config.steps_offset,
            false,
        );
        let sigmas: Vec<f64> = timesteps.iter().map(|&t| sigma_at(t, &train)).collect();
        let (timesteps, sigmas) = if setup.karras {
            let n = sigmas.len();
            let karras = karras_sigmas(sigmas[n - 1], sigmas[0], n);
            let inverse = SigmaToTimestep::new(&train);
            // diffusers stores these timesteps as float32.
            let t = karras
                .iter()
                .map(|&s| inverse.timestep(s) as f32 as f64)
                .collect();
            (t, karras)
        } else {
            (timesteps, sigmas)
        };
        let mut sigmas: Vec<f32> = sigmas.iter().map(|&s| s as f32).collect();
        sigmas.push(0.0);
        Self { timesteps, sigmas }
    }

    /// `init_noise_sigma`: the largest sigma, or sqrt(sigma_max^2 + 1) for leading spacing.
    pub fn init_noise_sigma(&self, spacing: TimestepSpacing) -> f64 {
        let max = self.sigmas.iter().copied().fold(f32::MIN, f32::max);
        match spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max as f64,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt() as f64,
        }
    }
}

/// `sample / (sigma^2 + 1) ** 0.5`: the model sees unit-variance input (EDM's c_in).
pub(crate) fn scale_input(sample: &Tensor, sigma: f32) -> Result<Tensor> {
    div(sample, (sigma * sigma + 1.0).sqrt())
}

/// `original + noise * sigma`: x_0 noised to level sigma (variance-exploding form).
pub(crate) fn add_noise_sigma(original: &Tensor, noise: &Tensor, sigma: f32) -> Result<Tensor> {
    Ok((original + mul(noise, sigma)?)?)
}

/// The denoised estimate x_0 from the model output at level sigma (diffusers' Euler step):
/// epsilon: x - sigma eps; v: c_out v + x / (sigma^2 + 1); sample: the output itself.
pub(crate) fn predict_x0(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    sigma: f32,
) -> Result<Tensor> {
    Ok(match prediction {
        PredictionType::Epsilon => (sample - mul(model_output, sigma)?)?,
        PredictionType::VPrediction => {
            let c_skip_den = sigma * sigma + 1.0;
            let c_out = -sigma / c_skip_den.sqrt();
            (mul(model_output, c_out)? + div(sample, c_skip_den)?)?
        }
        PredictionType::Sample => model_output.clone(),
    })
}
