//! Ancestral sampling of DDPM (Ho et al. 2020, eq. 6-7): x_{t-1} ~ q(x_{t-1} | x_t, x_0) with
//! x_0 predicted by the model, over any subset of timesteps (the "respacing" of Nichol &
//! Dhariwal 2021). diffusers' DDPMScheduler with variance_type "fixed_small".

use candle_core::Tensor;

use super::alpha_schedule::{add_noise_alpha, clip, predict_x0};
use super::ops::{as_f32, lin2, mul};
use super::{check_index, PredictionType, Sampler, Setup};
use crate::error::Result;
use crate::rng::TorchGenerator;
use crate::schedule::spacing::{check_in_range, spaced_timesteps};
use crate::schedule::training_alphas_cumprod;

pub(crate) struct Ddpm {
    timesteps: Vec<f64>,
    alphas_cumprod: Vec<f32>,
    prediction: PredictionType,
    clip_sample: Option<f32>,
}

impl Ddpm {
    pub fn new(setup: &Setup) -> Result<Self> {
        let cfg = &setup.config;
        let timesteps = spaced_timesteps(
            setup.spacing,
            cfg.num_train_timesteps,
            setup.steps,
            cfg.steps_offset,
            true,
        );
        check_in_range(&timesteps, cfg.num_train_timesteps, cfg.steps_offset)?;
        Ok(Self {
            timesteps,
            alphas_cumprod: training_alphas_cumprod(cfg)?,
            prediction: setup.prediction,
            clip_sample: setup.clip_sample,
        })
    }

    fn alpha_at(&self, step_index: usize) -> f32 {
        self.alphas_cumprod[self.timesteps[step_index] as usize]
    }
}

impl Sampler for Ddpm {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor> {
        check_index(step_index, self.timesteps.len())?;
        Ok(sample.clone())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        rng: &mut TorchGenerator,
    ) -> Result<Tensor> {
        check_index(step_index, self.timesteps.len())?;
        let (x, out) = (as_f32(sample)?, as_f32(model_output)?);
        let alpha_prod_t = self.alpha_at(step_index);
        // After the last timestep comes alpha_prod = 1 (x_0 itself).
        let alpha_prod_prev = if step_index + 1 < self.timesteps.len() {
            self.alpha_at(step_index + 1)
        } else {
            1.0
        };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_prev = 1.0 - alpha_prod_prev;
        let current_alpha = alpha_prod_t / alpha_prod_prev;
        let current_beta = 1.0 - current_alpha;

        let x0 = clip(
            predict_x0(self.prediction, &out, &x, alpha_prod_t)?,
            self.clip_sample,
        )?;
        // Mean of q(x_{t-1} | x_t, x_0), eq. 7.
        let x0_coeff = alpha_prod_prev.sqrt() * current_beta / beta_prod_t;
        let x_coeff = current_alpha.sqrt() * beta_prod_prev / beta_prod_t;
        let mut prev = lin2(x0_coeff, &x0, x_coeff, &x)?;
        if self.timesteps[step_index] > 0.0 {
            // fixed_small: the posterior variance beta~_t, eq. 7.
            let variance = (beta_prod_prev / beta_prod_t * current_beta).max(1e-20);
            let noise = rng.randn_tensor(out.dims(), out.device())?;
            prev = (prev + mul(&noise, variance.sqrt())?)?;
        }
        Ok(prev.to_dtype(sample.dtype())?)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, step_index: usize) -> Result<Tensor> {
        check_index(step_index, self.timesteps.len())?;
        add_noise_alpha(original, noise, self.alpha_at(step_index))
    }
}
