//! The training noise schedule: betas and the cumulative products of alphas that define the
//! forward process q(x_t | x_0) = N(sqrt(alphas_cumprod[t]) x_0, (1 - alphas_cumprod[t]) I)
//! (Ho et al. 2020, eq. 4).
//!
//! Values are float32 and computed as diffusers computes them (`__init__` of every scheduler in
//! diffusers/schedulers/), so that timesteps and sigmas derived from them agree to the bit.

use super::numerics::{torch_cumprod_f32, torch_linspace_f32};
use super::SchedulerConfig;
use crate::error::{Error, Result};

/// The beta schedule named by `config.beta_schedule` (or `config.trained_betas`), before any
/// zero-terminal-SNR rescaling.
pub fn betas(config: &SchedulerConfig) -> Result<Vec<f32>> {
    let n = config.num_train_timesteps;
    if n < 2 {
        return Err(Error::Config(format!(
            "scheduler num_train_timesteps is {n}; it must be at least 2 (Stable Diffusion uses 1000)"
        )));
    }
    if let Some(trained) = &config.trained_betas {
        if trained.len() != n {
            return Err(Error::Config(format!(
                "scheduler trained_betas has {} values but num_train_timesteps is {n}; they must agree",
                trained.len()
            )));
        }
        return Ok(trained.iter().map(|&b| b as f32).collect());
    }
    match config.beta_schedule.as_str() {
        "linear" => Ok(torch_linspace_f32(config.beta_start, config.beta_end, n)),
        // Linear in sqrt(beta), as the LDM / Stable Diffusion code trains.
        "scaled_linear" => Ok(torch_linspace_f32(
            config.beta_start.powf(0.5),
            config.beta_end.powf(0.5),
            n,
        )
        .into_iter()
        .map(|b| b * b)
        .collect()),
        "squaredcos_cap_v2" => Ok(cosine_betas(n)),
        other => Err(Error::Config(format!(
            "unknown scheduler beta_schedule '{other}'; Pigment supports linear, scaled_linear and squaredcos_cap_v2"
        ))),
    }
}

/// Improved-DDPM cosine schedule (Nichol & Dhariwal 2021, eq. 17), betas capped at 0.999:
/// diffusers' `betas_for_alpha_bar(n, alpha_transform_type="cosine")`, in float64, then f32.
fn cosine_betas(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// Rescale betas to zero terminal SNR (Lin et al. 2023, "Common Diffusion Noise Schedules and
/// Sample Steps are Flawed", Algorithm 1): shift and scale sqrt(alphas_cumprod) so that its
/// last value is 0 and its first unchanged. diffusers' `rescale_zero_terminal_snr`, in f32.
/// (torch's `Tensor.sqrt` goes through MKL's vsSqrt, which is not correctly rounded: 5 of SD's
/// 1000 values differ from IEEE sqrt by one ulp, so rescaled schedules agree to ~1e-7, not to
/// the bit.)
pub fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let mut sqrt_bar: Vec<f32> = torch_cumprod_f32(&alphas)
        .iter()
        .map(|a| a.sqrt())
        .collect();
    let first = sqrt_bar[0];
    let last = sqrt_bar[sqrt_bar.len() - 1];
    let scale = first / (first - last);
    for v in sqrt_bar.iter_mut() {
        *v -= last;
        *v *= scale;
    }
    let bar: Vec<f32> = sqrt_bar.iter().map(|v| v * v).collect();
    let mut rescaled = Vec::with_capacity(bar.len());
    rescaled.push(1.0 - bar[0]);
    for i in 1..bar.len() {
        rescaled.push(1.0 - bar[i] / bar[i - 1]);
    }
    rescaled
}

/// `alphas_cumprod[t] = prod_{s <= t} (1 - betas[s])`, float32 as torch's cumprod gives it.
pub fn alphas_cumprod(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    torch_cumprod_f32(&alphas)
}

/// The alphas_cumprod the config trains with: its betas, rescaled to zero terminal SNR when
/// `rescale_betas_zero_snr` is set. (The sigma-based samplers then replace the final 0 by
/// 2^-24, as diffusers does, to keep sigma finite.)
pub fn training_alphas_cumprod(config: &SchedulerConfig) -> Result<Vec<f32>> {
    let betas = betas(config)?;
    if config.rescale_betas_zero_snr {
        Ok(alphas_cumprod(&rescale_zero_terminal_snr(&betas)))
    } else {
        Ok(alphas_cumprod(&betas))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd_schedule_endpoints() {
        let betas = betas(&SchedulerConfig::default()).unwrap();
        assert_eq!(betas.len(), 1000);
        assert!((betas[0] as f64 - 0.00085).abs() < 1e-9);
        assert!((betas[999] as f64 - 0.012).abs() < 1e-8);
        let ac = alphas_cumprod(&betas);
        // torch's values, bit for bit (torch.cumprod(1 - betas) of diffusers' scaled_linear).
        assert_eq!(ac[0].to_bits(), 0x3f7f_c84b);
        assert_eq!(ac[500].to_bits(), 0x3e8d_7b73);
        assert_eq!(ac[999].to_bits(), 0x3b98_b3b6);
    }

    #[test]
    fn zero_snr_ends_at_zero_and_keeps_first() {
        let cfg = SchedulerConfig {
            rescale_betas_zero_snr: true,
            ..Default::default()
        };
        let ac = training_alphas_cumprod(&cfg).unwrap();
        let plain = training_alphas_cumprod(&SchedulerConfig::default()).unwrap();
        assert_eq!(ac[999], 0.0);
        assert!((ac[0] - plain[0]).abs() < 1e-6);
    }

    #[test]
    fn bad_configs_are_errors() {
        let cfg = SchedulerConfig {
            beta_schedule: "sigmoid".into(),
            ..Default::default()
        };
        assert!(matches!(betas(&cfg), Err(Error::Config(_))));
        let cfg = SchedulerConfig {
            trained_betas: Some(vec![0.1; 10]),
            ..Default::default()
        };
        assert!(matches!(betas(&cfg), Err(Error::Config(_))));
    }
}
