//! Samplers: walk from noise to an image, one model evaluation per entry of `timesteps()`.
//!
//! Each sampler reproduces one diffusers scheduler (diffusers/schedulers/scheduling_*.py)
//! operation for operation in float32, so that a seed gives the same latents as diffusers
//! (tests/sampler_parity.rs checks every sampler against diffusers' own loop). A pipeline
//! drives any of them the way diffusers' pipelines drive a scheduler:
//!
//! ```text
//! let mut sampler = build_sampler(kind, &config, &options)?;
//! let mut x = (rng.randn_tensor(shape, dev)? * sampler.init_noise_sigma())?;
//! for i in 0..sampler.timesteps().len() {
//!     let out = unet(sampler.scale_model_input(&x, i)?, sampler.timesteps()[i]);
//!     x = sampler.step(&out, i, &x, &mut rng)?;
//! }
//! ```

mod alpha_schedule;
mod ddim;
mod ddpm;
mod dpmpp_2m;
mod euler;
mod euler_ancestral;
mod heun;
mod kind;
mod lcm;
mod ops;
mod prediction;
mod sigma_schedule;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::rng::TorchGenerator;
use crate::schedule::{SchedulerConfig, TimestepSpacing};

pub use alpha_schedule::{add_noise_alpha, predict_x0};
pub use kind::SamplerKind;
pub use prediction::PredictionType;

/// One sampling method with its schedule fixed (diffusers: a scheduler after `set_timesteps`).
pub trait Sampler: Send {
    /// Model timesteps to evaluate, in order (Heun: 2n-1 entries, as diffusers'
    /// HeunDiscreteScheduler.timesteps). Fractional for Karras schedules.
    fn timesteps(&self) -> &[f64];

    /// Multiply the initial N(0, 1) noise by this (diffusers' `scheduler.init_noise_sigma`).
    fn init_noise_sigma(&self) -> f64;

    /// diffusers' `scale_model_input` for entry `step_index` of `timesteps()`: what the model
    /// sees instead of the sample (sigma samplers divide by sqrt(sigma^2 + 1)).
    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor>;

    /// diffusers' `step(model_output, timesteps()[step_index], sample, generator).prev_sample`.
    /// Samplers that draw noise (DDPM, DDIM with eta > 0, Euler a, DPM++ 2M SDE, LCM) draw it
    /// from `rng` exactly as diffusers does with `randn_tensor(shape, generator=generator)`.
    /// Steps are taken in order; a multistep sampler restarts its history when a run starts
    /// anew (a step index that does not follow the previous one).
    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        rng: &mut TorchGenerator,
    ) -> Result<Tensor>;

    /// diffusers' `add_noise(original, noise, timesteps()[step_index])` as img2img calls it
    /// (after `set_begin_index(step_index)`): the original noised to the level of that entry.
    /// For Heun, whose `timesteps()` repeat each step, img2img starts on an even index.
    fn add_noise(&self, original: &Tensor, noise: &Tensor, step_index: usize) -> Result<Tensor>;
}

/// How to build a sampler beyond the scheduler config.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerOptions {
    /// Number of denoising steps (model evaluations, except Heun: 2 * steps - 1).
    pub steps: usize,
    /// Use the Karras et al. 2022 sigma schedule (diffusers' `use_karras_sigmas`); only for
    /// samplers whose `SamplerKind::supports_karras()` is true.
    pub karras: bool,
    /// DDIM's eta: 0 is deterministic DDIM, 1 has DDPM's variance (Song et al. 2020, eq. 16).
    pub eta: f64,
    /// Override the config's `timestep_spacing` (leading, trailing, linspace).
    pub timestep_spacing: Option<String>,
    /// Override the config's `prediction_type` (epsilon, v_prediction, sample).
    pub prediction_type: Option<String>,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        Self {
            steps: 20,
            karras: false,
            eta: 0.0,
            timestep_spacing: None,
            prediction_type: None,
        }
    }
}

impl SamplerOptions {
    pub fn with_steps(steps: usize) -> Self {
        Self {
            steps,
            ..Self::default()
        }
    }
}

/// What every sampler is built from: the config with the options' overrides applied, parsed.
#[derive(Clone, Debug)]
pub(crate) struct Setup {
    pub config: SchedulerConfig,
    pub steps: usize,
    pub karras: bool,
    pub eta: f64,
    pub spacing: TimestepSpacing,
    pub prediction: PredictionType,
    /// `clip_sample` resolved against this sampler's class default: the range, or None.
    pub clip_sample: Option<f32>,
    /// `set_alpha_to_one` resolved against this sampler's class default.
    pub set_alpha_to_one: bool,
}

/// Build the sampler `kind` for `config` (a checkpoint's scheduler_config.json) and `opts`.
pub fn build_sampler(
    kind: SamplerKind,
    config: &SchedulerConfig,
    opts: &SamplerOptions,
) -> Result<Box<dyn Sampler>> {
    let setup = validate(kind, config, opts)?;
    Ok(match kind {
        SamplerKind::Ddpm => Box::new(ddpm::Ddpm::new(&setup)?),
        SamplerKind::Ddim => Box::new(ddim::Ddim::new(&setup)?),
        SamplerKind::Euler => Box::new(euler::Euler::new(&setup)?),
        SamplerKind::EulerAncestral => Box::new(euler_ancestral::EulerAncestral::new(&setup)?),
        SamplerKind::Heun => Box::new(heun::Heun::new(&setup)?),
        SamplerKind::DpmPp2M => Box::new(dpmpp_2m::DpmPp2M::new(&setup, false)?),
        SamplerKind::DpmPp2MSde => Box::new(dpmpp_2m::DpmPp2M::new(&setup, true)?),
        SamplerKind::Lcm => Box::new(lcm::Lcm::new(&setup)?),
    })
}

fn validate(kind: SamplerKind, config: &SchedulerConfig, opts: &SamplerOptions) -> Result<Setup> {
    let train_steps = config.num_train_timesteps;
    if opts.steps == 0 {
        return Err(Error::invalid(
            "steps is 0: sampling needs at least one step (20 to 30 is typical)",
        ));
    }
    if opts.steps > train_steps {
        return Err(Error::invalid(format!(
            "steps is {}: it cannot exceed the model's {train_steps} training timesteps",
            opts.steps
        )));
    }
    if opts.karras && !kind.supports_karras() {
        let with: Vec<&str> = SamplerKind::all()
            .iter()
            .filter(|k| k.supports_karras())
            .map(|k| k.cli_name())
            .collect();
        return Err(Error::invalid(format!(
            "sampler {} has no Karras schedule (diffusers offers one for {} only); turn Karras off or pick one of those",
            kind.cli_name(),
            with.join(", ")
        )));
    }
    if !opts.eta.is_finite() || opts.eta < 0.0 {
        return Err(Error::invalid(format!(
            "eta is {}: it must be a number >= 0 (0 = deterministic DDIM, 1 = DDPM-like)",
            opts.eta
        )));
    }
    // Keys the config file lacks take the diffusers class default of *this* sampler
    // (schedule/config.rs explains why these differ by class).
    let alpha_family = matches!(
        kind,
        SamplerKind::Ddpm | SamplerKind::Ddim | SamplerKind::Lcm
    );
    let config_spacing = config
        .timestep_spacing
        .as_deref()
        .unwrap_or(if alpha_family { "leading" } else { "linspace" });
    let spacing = match &opts.timestep_spacing {
        Some(s) => s.parse()?,
        None => config_spacing.parse().map_err(|_| {
            Error::Config(format!(
                "scheduler timestep_spacing '{config_spacing}' is unknown; valid spacings are {}",
                TimestepSpacing::NAMES.join(", ")
            ))
        })?,
    };
    let clip_default = matches!(kind, SamplerKind::Ddpm | SamplerKind::Ddim);
    let clip_sample = config
        .clip_sample
        .resolve(clip_default)
        .then_some(config.clip_sample_range as f32);
    let set_alpha_to_one = config
        .set_alpha_to_one
        .resolve(matches!(kind, SamplerKind::Ddim | SamplerKind::Lcm));
    let prediction = match &opts.prediction_type {
        Some(p) => p.parse()?,
        None => config.prediction_type.parse().map_err(|_| {
            Error::Config(format!(
                "scheduler prediction_type '{}' is unknown; valid types are {}",
                config.prediction_type,
                PredictionType::NAMES.join(", ")
            ))
        })?,
    };
    Ok(Setup {
        config: config.clone(),
        steps: opts.steps,
        karras: opts.karras,
        eta: opts.eta,
        spacing,
        prediction,
        clip_sample,
        set_alpha_to_one,
    })
}

/// The error for a step index past the end of the schedule.
pub(crate) fn check_index(step_index: usize, len: usize) -> Result<()> {
    if step_index >= len {
        return Err(Error::invalid(format!(
            "step index {step_index} is out of range: this schedule has {len} entries"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
