//! DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2): a second-order multistep
//! solver in log-SNR time lambda = log(alpha_t / sigma_t) on the x_0 prediction, and its SDE
//! variant (SDE-DPM-Solver++(2M), same paper, section 5 / appendix), which adds fresh noise.
//! diffusers' DPMSolverMultistepScheduler with solver_order 2, solver_type "midpoint",
//! lower_order_final on, euler_at_final off, final_sigmas_type "zero": the first step and the
//! last step are first order.

use candle_core::Tensor;

use super::ops::{as_f32, div, lin2, mul};
use super::sigma_schedule::sigma_alphas_cumprod;
use super::{check_index, PredictionType, Sampler, Setup};
use crate::error::Result;
use crate::rng::TorchGenerator;
use crate::schedule::spacing::{check_in_range, dpm_solver_timesteps};
use crate::schedule::{karras_sigmas, training_sigmas, SigmaToTimestep};

pub(crate) struct DpmPp2M {
    timesteps: Vec<f64>,
    /// sigma per timestep, then 0.
    sigmas: Vec<f32>,
    prediction: PredictionType,
    sde: bool,
    /// x_0 predictions of the previous and current step (diffusers' `model_outputs`).
    previous_x0: Option<Tensor>,
    /// Steps taken in this run (diffusers' `lower_order_nums`, capped at the order 2).
    lower_order_nums: usize,
    last_step: Option<usize>,
}

/// (alpha_t, sigma_t) of the variance-preserving process at EDM level sigma.
fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// lambda = log(alpha) - log(sigma): the half log-SNR (infinite at sigma = 0).
fn lambda(alpha: f32, sigma: f32) -> f32 {
    alpha.ln() - sigma.ln()
}

impl DpmPp2M {
    pub fn new(setup: &Setup, sde: bool) -> Result<Self> {
        let cfg = &setup.config;
        let train = training_sigmas(&sigma_alphas_cumprod(setup)?);
        let timesteps = dpm_solver_timesteps(
            setup.spacing,
            cfg.num_train_timesteps,
            setup.steps,
            cfg.steps_offset,
        );
        check_in_range(&timesteps, cfg.num_train_timesteps, cfg.steps_offset)?;
        let (timesteps, sigmas): (Vec<f64>, Vec<f64>) = if setup.karras {
            let sigmas = karras_sigmas(train[0] as f64, train[train.len() - 1] as f64, setup.steps);
            let inverse = SigmaToTimestep::new(&train);
            let round = cfg.beta_schedule != "squaredcos_cap_v2";
            let timesteps = sigmas
                .iter()
                .map(|&s| {
                    let t = inverse.timestep(s);
                    // Rounded, then stored as int64 (truncation) by diffusers.
                    if round {
                        t.round_ties_even()
                    } else {
                        t.trunc()
                    }
                })
                .collect();
            (timesteps, sigmas)
        } else {
            let sigmas = timesteps
                .iter()
                .map(|&t| train[t as usize] as f64)
                .collect();
            (timesteps, sigmas)
        };
        let mut sigmas: Vec<f32> = sigmas.iter().map(|&s| s as f32).collect();
        sigmas.push(0.0);
        Ok(Self {
            timesteps,
            sigmas,
            prediction: setup.prediction,
            sde,
            previous_x0: None,
            lower_order_nums: 0,
            last_step: None,
        })
    }

    /// diffusers' `convert_model_output` for the ++ algorithms: the x_0 prediction.
    fn x0(&self, model_output: &Tensor, sample: &Tensor, step_index: usize) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[step_index]);
        Ok(match self.prediction {
            PredictionType::Epsilon => div(&(sample - mul(model_output, sigma_t)?)?, alpha_t)?,
            PredictionType::VPrediction => (mul(sample, alpha_t)? - mul(model_output, sigma_t)?)?,
            PredictionType::Sample => model_output.clone(),
        })
    }
}

impl Sampler for DpmPp2M {
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
        if step_index == 0 || self.last_step != Some(step_index - 1) {
            // A new run (diffusers: set_timesteps / set_begin_index) starts at first order.
            self.previous_x0 = None;
            self.lower_order_nums = 0;
        }
        self.last_step = Some(step_index);
        let (x, out) = (as_f32(sample)?, as_f32(model_output)?);
        let x0 = self.x0(&out, &x, step_index)?;
        let noise = if self.sde {
            Some(rng.randn_tensor(x0.dims(), x0.device())?)
        } else {
            None
        };

        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[step_index + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[step_index]);
        let lambda_t = lambda(alpha_t, sigma_t);
        let lambda_s0 = lambda(alpha_s0, sigma_s0);
        let h = lambda_t - lambda_s0;
        let final_step = step_index + 1 == self.timesteps.len();

        // The correction D1 of the second-order (midpoint) update, when the history allows it.
        let correction = match (&self.previous_x0, self.lower_order_nums >= 1 && !final_step) {
            (Some(previous), true) => {
                let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[step_index - 1]);
                let h_0 = lambda_s0 - lambda(alpha_s1, sigma_s1);
                let r0 = h_0 / h;
                Some(mul(&(&x0 - previous)?, 1.0 / r0)?)
            }
            _ => None,
        };

        let prev = if self.sde {
            // x_t = (sigma_t / sigma_s) e^-h x + alpha_t (1 - e^-2h) (D0 + D1 / 2)
            //       + sigma_t sqrt(1 - e^-2h) noise
            let decay = 1.0 - (-2.0 * h).exp();
            let mut prev = lin2(sigma_t / sigma_s0 * (-h).exp(), &x, alpha_t * decay, &x0)?;
            if let Some(d1) = &correction {
                prev = (prev + mul(d1, 0.5 * (alpha_t * decay))?)?;
            }
            match &noise {
                Some(noise) => (prev + mul(noise, sigma_t * decay.sqrt())?)?,
                None => prev,
            }
        } else {
            // x_t = (sigma_t / sigma_s) x - alpha_t (e^-h - 1) (D0 + D1 / 2)
            let expm1 = (-h).exp() - 1.0;
            let mut prev = (mul(&x, sigma_t / sigma_s0)? - mul(&x0, alpha_t * expm1)?)?;
            if let Some(d1) = &correction {
                prev = (prev - mul(d1, 0.5 * (alpha_t * expm1))?)?;
            }
            prev
        };

        self.previous_x0 = Some(x0);
        self.lower_order_nums = (self.lower_order_nums + 1).min(2);
        Ok(prev.to_dtype(sample.dtype())?)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, step_index: usize) -> Result<Tensor> {
        check_index(step_index, self.timesteps.len())?;
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[step_index]);
        lin2(alpha_t, original, sigma_t, noise)
    }
}
