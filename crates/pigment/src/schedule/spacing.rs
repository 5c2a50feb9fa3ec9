//! Which training timesteps a sampler visits: diffusers' `timestep_spacing` (table 2 of Lin et
//! al. 2023 compares them). Each diffusers scheduler family writes the rule slightly
//! differently; the functions here reproduce each family's `set_timesteps` exactly.
//!
//! One deliberate difference: for some step counts (61, 103, ...) numpy's float `arange` in
//! diffusers' `trailing` rule yields one timestep too many (the extra one is -1, which diffusers
//! would use as alphas_cumprod[-1]); Pigment keeps exactly the requested number.

use std::str::FromStr;

use super::numerics::{numpy_arange, numpy_linspace};
use crate::error::{Error, Result};

/// diffusers' `timestep_spacing`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestepSpacing {
    /// `0, r, 2r, ...` with `r = train_steps // steps`, plus `steps_offset` (SD1's default).
    Leading,
    /// Counting back from the last training timestep: `T - 1, T - 1 - r, ...` with `r = T / steps`.
    Trailing,
    /// Evenly from 0 to T - 1, both included.
    Linspace,
}

impl TimestepSpacing {
    pub const NAMES: [&'static str; 3] = ["leading", "trailing", "linspace"];

    pub fn name(&self) -> &'static str {
        match self {
            TimestepSpacing::Leading => "leading",
            TimestepSpacing::Trailing => "trailing",
            TimestepSpacing::Linspace => "linspace",
        }
    }
}

impl FromStr for TimestepSpacing {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "leading" => Ok(TimestepSpacing::Leading),
            "trailing" => Ok(TimestepSpacing::Trailing),
            "linspace" => Ok(TimestepSpacing::Linspace),
            _ => Err(Error::invalid(format!(
                "unknown timestep spacing '{s}'; valid spacings are {}",
                Self::NAMES.join(", ")
            ))),
        }
    }
}

/// `numpy.arange(start, 0, -train_steps / steps).round() - 1`, cut to `steps` entries.
fn trailing(start: usize, train_steps: usize, steps: usize) -> Vec<f64> {
    let ratio = train_steps as f64 / steps as f64;
    let mut t: Vec<f64> = numpy_arange(start as f64, 0.0, -ratio)
        .into_iter()
        .map(|v| v.round_ties_even() - 1.0)
        .collect();
    t.truncate(steps);
    t
}

/// The timesteps of DDPM, DDIM, Euler, Euler ancestral and Heun (their `set_timesteps`),
/// in descending order. With `linspace`, DDPM and DDIM round to integers
/// (`round_linspace = true`) while the Euler family keeps the float32 values.
pub fn spaced_timesteps(
    spacing: TimestepSpacing,
    train_steps: usize,
    steps: usize,
    steps_offset: usize,
    round_linspace: bool,
) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Linspace => numpy_linspace(0.0, (train_steps - 1) as f64, steps, true)
            .into_iter()
            .rev()
            .map(|v| {
                if round_linspace {
                    v.round_ties_even()
                } else {
                    v as f32 as f64
                }
            })
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = train_steps / steps;
            (0..steps)
                .rev()
                .map(|i| (i * ratio + steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => trailing(train_steps, train_steps, steps),
    }
}

/// The timesteps of DPMSolverMultistepScheduler.set_timesteps: `steps + 1` points with the last
/// (0) dropped for `linspace` and `leading` (whose ratio is `T // (steps + 1)`).
pub fn dpm_solver_timesteps(
    spacing: TimestepSpacing,
    train_steps: usize,
    steps: usize,
    steps_offset: usize,
) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Linspace => numpy_linspace(0.0, (train_steps - 1) as f64, steps + 1, true)
            .into_iter()
            .rev()
            .take(steps)
            .map(|v| v.round_ties_even())
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = train_steps / (steps + 1);
            (1..=steps)
                .rev()
                .map(|i| (i * ratio + steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => trailing(train_steps, train_steps, steps),
    }
}

/// Integer timesteps index alphas_cumprod: all must lie below `train_steps`. Only `leading`
/// with a `steps_offset` and as many steps as training timesteps can overshoot.
pub fn check_in_range(timesteps: &[f64], train_steps: usize, steps_offset: usize) -> Result<()> {
    match timesteps.iter().find(|&&t| t >= train_steps as f64) {
        Some(&t) => Err(Error::invalid(format!(
            "{} steps with steps_offset {steps_offset} would reach timestep {t}, past the model's last ({}); use fewer steps",
            timesteps.len(),
            train_steps - 1
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_spacing() {
        assert_eq!(
            "Trailing".parse::<TimestepSpacing>().unwrap(),
            TimestepSpacing::Trailing
        );
        let err = "karras".parse::<TimestepSpacing>().unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
        assert!(err.to_string().contains("leading, trailing, linspace"));
    }

    #[test]
    fn sd_defaults() {
        let t = spaced_timesteps(TimestepSpacing::Leading, 1000, 4, 1, true);
        assert_eq!(t, vec![751.0, 501.0, 251.0, 1.0]);
        let t = spaced_timesteps(TimestepSpacing::Trailing, 1000, 4, 0, true);
        assert_eq!(t, vec![999.0, 749.0, 499.0, 249.0]);
        let t = spaced_timesteps(TimestepSpacing::Linspace, 1000, 7, 0, false);
        assert_eq!(t[1], 832.5);
        let t = spaced_timesteps(TimestepSpacing::Linspace, 1000, 7, 0, true);
        assert_eq!(t[1], 832.0); // round half to even, as numpy
        assert_eq!(
            spaced_timesteps(TimestepSpacing::Trailing, 1000, 61, 0, true).len(),
            61
        );
    }

    #[test]
    fn dpm_solver_rules() {
        let t = dpm_solver_timesteps(TimestepSpacing::Leading, 1000, 4, 1);
        assert_eq!(t, vec![801.0, 601.0, 401.0, 201.0]);
        let t = dpm_solver_timesteps(TimestepSpacing::Linspace, 1000, 4, 0);
        assert_eq!(t, vec![999.0, 749.0, 500.0, 250.0]);
    }
}
