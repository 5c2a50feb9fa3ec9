//! Scheduler config: the fields of diffusers' `scheduler/scheduler_config.json` shared by the
//! schedulers Pigment implements. Fields a given scheduler class does not know are ignored, as
//! `Scheduler.from_config` does.
//!
//! A key missing from the file takes the diffusers *class* default, and some of those differ by
//! class: a PNDM config (what SD1.x folders ship) has no `clip_sample`, so diffusers' DDIM built
//! from it clips (DDIMScheduler's default is `clip_sample=True`) while Euler does not have the
//! option at all. Those fields are `Option`s here and each sampler resolves `None` to its own
//! class default (samplers/mod.rs).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct SchedulerConfig {
    #[serde(default = "default_train_timesteps")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    /// `linear`, `scaled_linear` or `squaredcos_cap_v2`.
    #[serde(default = "default_beta_schedule")]
    pub beta_schedule: String,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    /// `epsilon`, `v_prediction` or `sample`.
    #[serde(default = "default_prediction_type")]
    pub prediction_type: String,
    /// `leading`, `trailing` or `linspace`; `None`: the sampler class's default (leading for
    /// DDPM / DDIM / LCM, linspace for Euler / Heun / DPM-Solver).
    #[serde(default)]
    pub timestep_spacing: Option<String>,
    #[serde(default)]
    pub steps_offset: usize,
    /// `None`: the sampler class's default (true for DDPM and DDIM, false otherwise).
    #[serde(default)]
    pub clip_sample: Option<bool>,
    #[serde(default = "default_clip_sample_range")]
    pub clip_sample_range: f64,
    /// `None`: the sampler class's default (true for DDIM and LCM).
    #[serde(default)]
    pub set_alpha_to_one: Option<bool>,
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
}

fn default_train_timesteps() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    0.0001
}
fn default_beta_end() -> f64 {
    0.02
}
fn default_beta_schedule() -> String {
    "linear".into()
}
fn default_prediction_type() -> String {
    "epsilon".into()
}
fn default_clip_sample_range() -> f64 {
    1.0
}

impl Default for SchedulerConfig {
    /// What diffusers uses for a single-file SD checkpoint, which carries no scheduler config:
    /// `SCHEDULER_DEFAULT_CONFIG` of diffusers/loaders/single_file_utils.py (no `clip_sample`).
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: "scaled_linear".into(),
            trained_betas: None,
            prediction_type: "epsilon".into(),
            timestep_spacing: Some("leading".into()),
            steps_offset: 1,
            clip_sample: None,
            clip_sample_range: 1.0,
            set_alpha_to_one: Some(false),
            rescale_betas_zero_snr: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_keys_take_class_defaults_not_sd_defaults() {
        let cfg: SchedulerConfig = serde_json::from_str(r#"{"beta_start": 0.00085}"#).unwrap();
        assert_eq!(cfg.beta_start, 0.00085);
        assert_eq!(cfg.beta_end, 0.02);
        assert_eq!(cfg.steps_offset, 0);
        assert_eq!(cfg.clip_sample, None);
        assert_eq!(cfg.timestep_spacing, None);
    }
}
