//! Latent consistency model sampling (Luo et al. 2023, Algorithm 1; consistency models, Song
//! et al. 2023): each step maps x_t straight to an x_0 estimate through the consistency
//! function's boundary condition (c_skip x + c_out x_0), then re-noises it to the next
//! timestep. diffusers' LCMScheduler with its defaults (original_inference_steps 50,
//! timestep_scaling 10).

use candle_core::Tensor;

use super::alpha_schedule::{add_noise_alpha, clip, predict_x0};
use super::ops::{as_f32, lin2};
use super::{check_index, PredictionType, Sampler, Setup};
use crate::error::{Error, Result};
use crate::rng::TorchGenerator;
use crate::schedule::numerics::numpy_linspace;
use crate::schedule::training_alphas_cumprod;

/// The distillation schedule's length (LCMScheduler `original_inference_steps`).
const ORIGINAL_INFERENCE_STEPS: usize = 50;
/// LCMScheduler `timestep_scaling`: c_skip and c_out see t * 10.
const TIMESTEP_SCALING: f32 = 10.0;
/// sigma_data of the consistency boundary condition.
const SIGMA_DATA: f32 = 0.5;

pub(crate) struct Lcm {
    timesteps: Vec<f64>,
    alphas_cumprod: Vec<f32>,
    prediction: PredictionType,
    clip_sample: Option<f32>,
}

impl Lcm {
    pub fn new(setup: &Setup) -> Result<Self> {
        let cfg = &setup.config;
        let train_steps = cfg.num_train_timesteps;
        if ORIGINAL_INFERENCE_STEPS > train_steps {
            return Err(Error::Config(format!(
                "LCM needs at least {ORIGINAL_INFERENCE_STEPS} training timesteps; this scheduler has {train_steps}"
            )));
        }
        if setup.steps > ORIGINAL_INFERENCE_STEPS {
            return Err(Error::invalid(format!(
                "steps is {}: the lcm sampler takes at most {ORIGINAL_INFERENCE_STEPS} steps (its distillation schedule); 2 to 8 is typical",
                setup.steps
            )));
        }
        // The distillation timesteps k - 1, 2k - 1, ..., T - 1, of which `steps` evenly chosen
        // from the top (LCMScheduler.set_timesteps with strength 1).
        let k = train_steps / ORIGINAL_INFERENCE_STEPS;
        let origin: Vec<usize> = (1..=ORIGINAL_INFERENCE_STEPS)
            .rev()
            .map(|i| i * k - 1)
            .collect();
        let timesteps = numpy_linspace(0.0, origin.len() as f64, setup.steps, false)
            .into_iter()
            .map(|i| origin[i.floor() as usize] as f64)
            .collect();
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

impl Sampler for Lcm {
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
        let last = step_index + 1 == self.timesteps.len();
        let alpha_prod_t = self.alpha_at(step_index);
        let alpha_prod_prev = self.alpha_at(if last { step_index } else { step_index + 1 });

        // Boundary condition: c_skip -> 1, c_out -> 0 as t -> 0 (LCM eq. 3).
        let scaled_t = self.timesteps[step_index] as f32 * TIMESTEP_SCALING;
        let den = scaled_t * scaled_t + SIGMA_DATA * SIGMA_DATA;
        let c_skip = SIGMA_DATA * SIGMA_DATA / den;
        let c_out = scaled_t / den.sqrt();

        let x0 = clip(
            predict_x0(self.prediction, &out, &x, alpha_prod_t)?,
            self.clip_sample,
        )?;
        let denoised = lin2(c_out, &x0, c_skip, &x)?;
        let prev = if last {
            denoised
        } else {
            let noise = rng.randn_tensor(out.dims(), out.device())?;
            lin2(
                alpha_prod_prev.sqrt(),
                &denoised,
                (1.0 - alpha_prod_prev).sqrt(),
                &noise,
            )?
        };
        Ok(prev.to_dtype(sample.dtype())?)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, step_index: usize) -> Result<Tensor> {
        check_index(step_index, self.timesteps.len())?;
        add_noise_alpha(original, noise, self.alpha_at(step_index))
    }
}
