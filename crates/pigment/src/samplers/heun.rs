//! Heun's second-order method on the probability-flow ODE (Karras et al. 2022, Algorithm 1
//! without churn): an Euler step, then a correction with the slope at its end.
//! diffusers' HeunDiscreteScheduler: its timesteps repeat every step after the first
//! (`[t0, t1, t1, t2, t2, ...]`), even entries being Euler steps and odd ones corrections,
//! and the last step is a plain Euler step to sigma 0.

use candle_core::Tensor;

use super::ops::{as_f32, div, mul};
use super::sigma_schedule::{add_noise_sigma, predict_x0, scale_input, SigmaSchedule};
use super::{check_index, PredictionType, Sampler, Setup};
use crate::error::{Error, Result};
use crate::rng::TorchGenerator;
use crate::schedule::training_alphas_cumprod;

/// The Euler half of a Heun step, kept for its correction.
struct FirstOrder {
    step_index: usize,
    derivative: Tensor,
    dt: f32,
    sample: Tensor,
}

pub(crate) struct Heun {
    timesteps: Vec<f64>,
    /// Per entry of `timesteps`, plus a final 0: `[s0, s1, s1, s2, s2, ..., 0]`.
    sigmas: Vec<f32>,
    init_noise_sigma: f64,
    prediction: PredictionType,
    clip_sample: Option<f32>,
    pending: Option<FirstOrder>,
}

impl Heun {
    pub fn new(setup: &Setup) -> Result<Self> {
        // HeunDiscreteScheduler has no rescale_betas_zero_snr: diffusers ignores that key.
        let mut config = setup.config.clone();
        config.rescale_betas_zero_snr = false;
        let schedule = SigmaSchedule::new(setup, &training_alphas_cumprod(&config)?);
        let n = schedule.timesteps.len();
        let mut timesteps = vec![schedule.timesteps[0]];
        let mut sigmas = vec![schedule.sigmas[0]];
        for i in 1..n {
            timesteps.extend([schedule.timesteps[i]; 2]);
            sigmas.extend([schedule.sigmas[i]; 2]);
        }
        sigmas.push(schedule.sigmas[n]);
        Ok(Self {
            timesteps,
            sigmas,
            init_noise_sigma: schedule.init_noise_sigma(setup.spacing),
            prediction: setup.prediction,
            clip_sample: setup.clip_sample,
            pending: None,
        })
    }
}

impl Sampler for Heun {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor> {
        check_index(step_index, self.timesteps.len())?;
        scale_input(sample, self.sigmas[step_index])
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _rng: &mut TorchGenerator,
    ) -> Result<Tensor> {
        check_index(step_index, self.timesteps.len())?;
        let (x, out) = (as_f32(sample)?, as_f32(model_output)?);
        let first_order = step_index.is_multiple_of(2);
        // The level the model output belongs to: the start of the Euler step, or (for the
        // correction) its end; both are sigmas[step_index] in the repeated list.
        let sigma_input = self.sigmas[step_index];
        let mut x0 = predict_x0(self.prediction, &out, &x, sigma_input)?;
        if let Some(range) = self.clip_sample {
            x0 = x0.clamp(-range, range)?;
        }
        let prev = if first_order {
            let sigma = self.sigmas[step_index];
            let derivative = div(&(&x - x0)?, sigma)?;
            let dt = self.sigmas[step_index + 1] - sigma;
            let prev = (&x + mul(&derivative, dt)?)?;
            self.pending = Some(FirstOrder {
                step_index,
                derivative,
                dt,
                sample: x,
            });
            prev
        } else {
            let first = match self.pending.take() {
                Some(first) if first.step_index + 1 == step_index => first,
                _ => {
                    return Err(Error::invalid(format!(
                        "Heun step {step_index} is the correction of step {}: take that step first",
                        step_index - 1
                    )))
                }
            };
            let derivative = div(&(&x - x0)?, sigma_input)?;
            let derivative = div(&(first.derivative + derivative)?, 2.0)?;
            (first.sample + mul(&derivative, first.dt)?)?
        };
        Ok(prev.to_dtype(sample.dtype())?)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, step_index: usize) -> Result<Tensor> {
        check_index(step_index, self.timesteps.len())?;
        add_noise_sigma(original, noise, self.sigmas[step_index])
    }
}
