//! Scheduler config: the fields of diffusers' `scheduler/scheduler_config.json` shared by the
//! schedulers Pigment implements, with diffusers' defaults. Fields a given scheduler class does
//! not know are ignored, as `Scheduler.from_config` does.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    /// `linear`, `scaled_linear` or `squaredcos_cap_v2`.
    pub beta_schedule: String,
    pub trained_betas: Option<Vec<f64>>,
    /// `epsilon`, `v_prediction` or `sample`.
    pub prediction_type: String,
    /// `leading`, `trailing` or `linspace`.
    pub timestep_spacing: String,
    pub steps_offset: usize,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    pub set_alpha_to_one: bool,
    pub rescale_betas_zero_snr: bool,
}

impl Default for SchedulerConfig {
    /// What SD1.x / SD2.x checkpoints ship (PNDM/DDIM config of runwayml/stable-diffusion-v1-5).
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: "scaled_linear".into(),
            trained_betas: None,
            prediction_type: "epsilon".into(),
            timestep_spacing: "leading".into(),
            steps_offset: 1,
            clip_sample: false,
            clip_sample_range: 1.0,
            set_alpha_to_one: false,
            rescale_betas_zero_snr: false,
        }
    }
}
