//! Scheduler config: the fields of diffusers' `scheduler/scheduler_config.json` shared by the
//! schedulers Pigment implements. Fields a given scheduler class does not know are ignored, as
//! `Scheduler.from_config` does.
//!
//! A key missing from the file takes the diffusers *class* default, and some of those differ by
//! class: a PNDM config (what SD1.x folders ship) has no `clip_sample`, so diffusers' DDIM built
//! from it clips (DDIMScheduler's default is `clip_sample=True`) while Euler does not have the
//! option at all. Those fields are `Option`s or [`ConfigFlag`]s here and each sampler resolves
//! a missing key to its own class default (samplers/mod.rs).

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
    /// Missing: the sampler class's default (true for DDPM and DDIM, false otherwise).
    #[serde(default, skip_serializing_if = "ConfigFlag::is_missing")]
    pub clip_sample: ConfigFlag,
    #[serde(default = "default_clip_sample_range")]
    pub clip_sample_range: f64,
    /// Missing: the sampler class's default (true for DDIM and LCM).
    #[serde(default, skip_serializing_if = "ConfigFlag::is_missing")]
    pub set_alpha_to_one: ConfigFlag,
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
}

/// A boolean scheduler option whose absence and explicit `null` mean different things to
/// diffusers. A missing key takes the scheduler class's default (`clip_sample=True` for DDIM);
/// `null` is passed on as `None` by `ConfigMixin.extract_init_dict`, and the scheduler's
/// `if self.config.clip_sample:` reads it as false.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConfigFlag {
    #[default]
    Missing,
    Null,
    Set(bool),
}

impl ConfigFlag {
    pub fn is_missing(&self) -> bool {
        *self == ConfigFlag::Missing
    }

    /// The value a diffusers scheduler whose class default is `class_default` would use.
    pub fn resolve(self, class_default: bool) -> bool {
        match self {
            ConfigFlag::Missing => class_default,
            ConfigFlag::Null => false,
            ConfigFlag::Set(value) => value,
        }
    }
}

impl<'de> Deserialize<'de> for ConfigFlag {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Option::<bool>::deserialize(deserializer)?.map_or(ConfigFlag::Null, ConfigFlag::Set))
    }
}

impl Serialize for ConfigFlag {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ConfigFlag::Set(value) => serializer.serialize_bool(*value),
            ConfigFlag::Missing | ConfigFlag::Null => serializer.serialize_none(),
        }
    }
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
            clip_sample: ConfigFlag::Missing,
            clip_sample_range: 1.0,
            set_alpha_to_one: ConfigFlag::Set(false),
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
        assert_eq!(cfg.clip_sample, ConfigFlag::Missing);
        assert!(cfg.clip_sample.resolve(true));
        assert_eq!(cfg.timestep_spacing, None);
    }

    /// diffusers 0.42: `DDIMScheduler.from_config({"clip_sample": None, ...}).config.clip_sample`
    /// is None (no clipping), and without the key it is True.
    #[test]
    fn explicit_null_is_false_not_the_class_default() {
        let cfg: SchedulerConfig =
            serde_json::from_str(r#"{"clip_sample": null, "set_alpha_to_one": null}"#).unwrap();
        assert_eq!(cfg.clip_sample, ConfigFlag::Null);
        assert!(!cfg.clip_sample.resolve(true));
        assert!(!cfg.set_alpha_to_one.resolve(true));
        let cfg: SchedulerConfig = serde_json::from_str(r#"{"clip_sample": true}"#).unwrap();
        assert!(cfg.clip_sample.resolve(false));
    }

    #[test]
    fn written_config_keeps_missing_keys_missing_and_null_null() {
        let mut cfg: SchedulerConfig = serde_json::from_str("{}").unwrap();
        cfg.set_alpha_to_one = ConfigFlag::Null;
        let json = serde_json::to_value(&cfg).unwrap();
        assert!(json.get("clip_sample").is_none());
        assert!(json["set_alpha_to_one"].is_null());
        let back: SchedulerConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, cfg);
    }
}
