//! DDIM (Song et al. 2020, eq. 12): x_{t-1} = sqrt(a_prev) x_0 + sqrt(1 - a_prev - s^2) eps
//! plus s times fresh noise, with s = eta sqrt((1 - a_prev) / (1 - a_t) (1 - a_t / a_prev))
//! (eq. 16). diffusers' DDIMScheduler (use_clipped_model_output off, as its pipelines call it).

use candle_core::Tensor;

use super::alpha_schedule::{add_noise_alpha, clip, predict_x0};
use super::ops::{as_f32, div, lin2, mul};
use super::{check_index, PredictionType, Sampler, Setup};
use crate::error::Result;
use crate::rng::TorchGenerator;
use crate::schedule::spacing::{check_in_range, spaced_timesteps};
use crate::schedule::training_alphas_cumprod;

pub(crate) struct Ddim {
    timesteps: Vec<f64>,
    alphas_cumprod: Vec<f32>,
    /// alpha_prod before the first training timestep: 1, or alphas_cumprod[0]
    /// (`set_alpha_to_one`).
    final_alpha_cumprod: f32,
    /// diffusers steps back by `T // steps` whatever the spacing.
    step_ratio: i64,
    prediction: PredictionType,
    clip_sample: Option<f32>,
    eta: f32,
}

impl Ddim {
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
        let alphas_cumprod = training_alphas_cumprod(cfg)?;
        Ok(Self {
            timesteps,
            final_alpha_cumprod: if setup.set_alpha_to_one {
                1.0
            } else {
                alphas_cumprod[0]
            },
            alphas_cumprod,
            step_ratio: (cfg.num_train_timesteps / setup.steps) as i64,
            prediction: setup.prediction,
            clip_sample: setup.clip_sample,
            eta: setup.eta as f32,
        })
    }
}

impl Sampler for Ddim {
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
        let t = self.timesteps[step_index] as i64;
        let prev_t = t - self.step_ratio;
        let alpha_prod_t = self.alphas_cumprod[t as usize];
        let alpha_prod_prev = if prev_t >= 0 {
            self.alphas_cumprod[prev_t as usize]
        } else {
            self.final_alpha_cumprod
        };
        let beta_prod_t = 1.0 - alpha_prod_t;

        let x0 = predict_x0(self.prediction, &out, &x, alpha_prod_t)?;
        // The noise estimate, from the unclipped x_0.
        let eps = match self.prediction {
            PredictionType::Epsilon => out.clone(),
            PredictionType::Sample => {
                div(&(&x - mul(&x0, alpha_prod_t.sqrt())?)?, beta_prod_t.sqrt())?
            }
            PredictionType::VPrediction => lin2(alpha_prod_t.sqrt(), &out, beta_prod_t.sqrt(), &x)?,
        };
        let x0 = clip(x0, self.clip_sample)?;

        let beta_prod_prev = 1.0 - alpha_prod_prev;
        let variance = beta_prod_prev / beta_prod_t * (1.0 - alpha_prod_t / alpha_prod_prev);
        let std_dev = self.eta * variance.sqrt();
        let direction_coeff = (1.0 - alpha_prod_prev - std_dev * std_dev).sqrt();
        let mut prev = lin2(alpha_prod_prev.sqrt(), &x0, direction_coeff, &eps)?;
        if self.eta > 0.0 {
            let noise = rng.randn_tensor(out.dims(), out.device())?;
            prev = (prev + mul(&noise, std_dev)?)?;
        }
        Ok(prev.to_dtype(sample.dtype())?)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, step_index: usize) -> Result<Tensor> {
        check_index(step_index, self.timesteps.len())?;
        add_noise_alpha(
            original,
            noise,
            self.alphas_cumprod[self.timesteps[step_index] as usize],
        )
    }
}
