//! Euler's method on the probability-flow ODE dx/dsigma = (x - x_0(x, sigma)) / sigma
//! (Karras et al. 2022, Algorithm 2 without churn): diffusers' EulerDiscreteScheduler with its
//! defaults (s_churn 0, interpolation "linear", final sigma 0).

use candle_core::Tensor;

use super::ops::{as_f32, div, mul};
use super::sigma_schedule::{
    add_noise_sigma, predict_x0, scale_input, sigma_alphas_cumprod, SigmaSchedule,
};
use super::{check_index, PredictionType, Sampler, Setup};
use crate::error::Result;
use crate::rng::TorchGenerator;

pub(crate) struct Euler {
    schedule: SigmaSchedule,
    init_noise_sigma: f64,
    prediction: PredictionType,
}

impl Euler {
    pub fn new(setup: &Setup) -> Result<Self> {
        let schedule = SigmaSchedule::new(setup, &sigma_alphas_cumprod(setup)?);
        Ok(Self {
            init_noise_sigma: schedule.init_noise_sigma(setup.spacing),
            schedule,
            prediction: setup.prediction,
        })
    }
}

impl Sampler for Euler {
    fn timesteps(&self) -> &[f64] {
        &self.schedule.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor> {
        check_index(step_index, self.schedule.timesteps.len())?;
        scale_input(sample, self.schedule.sigmas[step_index])
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _rng: &mut TorchGenerator,
    ) -> Result<Tensor> {
        check_index(step_index, self.schedule.timesteps.len())?;
        let (x, out) = (as_f32(sample)?, as_f32(model_output)?);
        let sigma = self.schedule.sigmas[step_index];
        let x0 = predict_x0(self.prediction, &out, &x, sigma)?;
        let derivative = div(&(&x - x0)?, sigma)?;
        let dt = self.schedule.sigmas[step_index + 1] - sigma;
        Ok((x + mul(&derivative, dt)?)?.to_dtype(sample.dtype())?)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, step_index: usize) -> Result<Tensor> {
        check_index(step_index, self.schedule.timesteps.len())?;
        add_noise_sigma(original, noise, self.schedule.sigmas[step_index])
    }
}
