//! Euler ancestral: an Euler step down to sigma_down, then fresh noise of size sigma_up, with
//! sigma_down^2 + sigma_up^2 = sigma_next^2 (k-diffusion's `get_ancestral_step`, eta 1):
//! diffusers' EulerAncestralDiscreteScheduler. AUTOMATIC1111's default sampler "Euler a".

use candle_core::Tensor;

use super::ops::{as_f32, div, mul};
use super::sigma_schedule::{
    add_noise_sigma, predict_x0, scale_input, sigma_alphas_cumprod, SigmaSchedule,
};
use super::{check_index, PredictionType, Sampler, Setup};
use crate::error::{Error, Result};
use crate::rng::TorchGenerator;

pub(crate) struct EulerAncestral {
    schedule: SigmaSchedule,
    init_noise_sigma: f64,
    prediction: PredictionType,
}

impl EulerAncestral {
    pub fn new(setup: &Setup) -> Result<Self> {
        if setup.prediction == PredictionType::Sample {
            return Err(Error::invalid(
                "the euler_a sampler does not support prediction_type 'sample' (neither does diffusers' EulerAncestralDiscreteScheduler); use euler, heun or dpmpp_2m",
            ));
        }
        let schedule = SigmaSchedule::new(setup, &sigma_alphas_cumprod(setup)?);
        Ok(Self {
            init_noise_sigma: schedule.init_noise_sigma(setup.spacing),
            schedule,
            prediction: setup.prediction,
        })
    }
}

impl Sampler for EulerAncestral {
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
        rng: &mut TorchGenerator,
    ) -> Result<Tensor> {
        check_index(step_index, self.schedule.timesteps.len())?;
        let (x, out) = (as_f32(sample)?, as_f32(model_output)?);
        let sigma = self.schedule.sigmas[step_index];
        let sigma_to = self.schedule.sigmas[step_index + 1];
        let x0 = predict_x0(self.prediction, &out, &x, sigma)?;
        let sigma_up =
            (sigma_to * sigma_to * (sigma * sigma - sigma_to * sigma_to) / (sigma * sigma)).sqrt();
        let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).sqrt();
        let derivative = div(&(&x - x0)?, sigma)?;
        let prev = (&x + mul(&derivative, sigma_down - sigma)?)?;
        let noise = rng.randn_tensor(out.dims(), out.device())?;
        Ok((prev + mul(&noise, sigma_up)?)?.to_dtype(sample.dtype())?)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, step_index: usize) -> Result<Tensor> {
        check_index(step_index, self.schedule.timesteps.len())?;
        add_noise_sigma(original, noise, self.schedule.sigmas[step_index])
    }
}
