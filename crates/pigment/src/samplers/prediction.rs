//! What the model predicts (diffusers' `prediction_type`).

use std::str::FromStr;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictionType {
    /// The noise epsilon (Ho et al. 2020): SD 1.x, SD 2.x base.
    Epsilon,
    /// The velocity v = alpha_t eps - sigma_t x_0 (Salimans & Ho 2022): SD 2.x 768.
    VPrediction,
    /// The clean sample x_0 itself.
    Sample,
}

impl PredictionType {
    pub const NAMES: [&'static str; 3] = ["epsilon", "v_prediction", "sample"];
}

impl FromStr for PredictionType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "epsilon" => Ok(PredictionType::Epsilon),
            "v_prediction" => Ok(PredictionType::VPrediction),
            "sample" => Ok(PredictionType::Sample),
            _ => Err(Error::invalid(format!(
                "unknown prediction type '{s}'; valid types are {}",
                Self::NAMES.join(", ")
            ))),
        }
    }
}
