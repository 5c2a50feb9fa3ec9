//! What DDPM, DDIM and LCM share: integer timesteps indexing alphas_cumprod, the x_0 estimate
//! from a model output (Ho et al. 2020 eq. 15; Salimans & Ho 2022 for v), and the forward
//! process q(x_t | x_0) for img2img.

use candle_core::Tensor;

use super::ops::{div, lin2, mul};
use super::PredictionType;
use crate::error::Result;

/// x_0 from the model output at a timestep with cumulative alpha `alpha_prod`:
/// epsilon: (x - sqrt(1 - a) eps) / sqrt(a); v: sqrt(a) x - sqrt(1 - a) v; sample: the output.
pub fn predict_x0(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    alpha_prod: f32,
) -> Result<Tensor> {
    let beta_prod = 1.0 - alpha_prod;
    Ok(match prediction {
        PredictionType::Epsilon => div(
            &(sample - mul(model_output, beta_prod.sqrt())?)?,
            alpha_prod.sqrt(),
        )?,
        PredictionType::VPrediction => {
            (mul(sample, alpha_prod.sqrt())? - mul(model_output, beta_prod.sqrt())?)?
        }
        PredictionType::Sample => model_output.clone(),
    })
}

/// `sqrt(a) x_0 + sqrt(1 - a) noise` (Ho et al. 2020, eq. 4).
pub fn add_noise_alpha(original: &Tensor, noise: &Tensor, alpha_prod: f32) -> Result<Tensor> {
    lin2(
        alpha_prod.sqrt(),
        original,
        (1.0 - alpha_prod).sqrt(),
        noise,
    )
}

/// Clamp to [-range, range] when the config asks (`clip_sample`).
pub(crate) fn clip(x: Tensor, range: Option<f32>) -> Result<Tensor> {
    Ok(match range {
        Some(r) => x.clamp(-r, r)?,
        None => x,
    })
}
