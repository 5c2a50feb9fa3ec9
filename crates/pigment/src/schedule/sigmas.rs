//! Noise levels in the "sigma" parametrisation of Karras et al. 2022 (EDM): x_t = x_0 + sigma n
//! up to the scale 1/sqrt(1 + sigma^2), with sigma_t = sqrt((1 - alphas_cumprod[t]) /
//! alphas_cumprod[t]). The Euler, Heun and DPM-Solver samplers walk these.

use super::numerics::{numpy_interp_unit_grid, numpy_linspace, numpy_log_f32};

/// sigma of every training timestep, in float32 as diffusers' torch expression
/// `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5` gives it.
pub fn training_sigmas(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod
        .iter()
        .map(|&a| ((1.0 - a) / a).sqrt())
        .collect()
}

/// sigma at a (possibly fractional) timestep: linear interpolation between training timesteps,
/// as `np.interp(t, arange(T), sigmas)`.
pub fn sigma_at(timestep: f64, training_sigmas: &[f32]) -> f64 {
    numpy_interp_unit_grid(timestep, training_sigmas)
}

/// The Karras et al. 2022 schedule (eq. 5, rho = 7): `n` sigmas from `sigma_max` down to
/// `sigma_min`, evenly spaced in sigma^(1/rho). diffusers' `_convert_to_karras`, in float64.
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    const RHO: f64 = 7.0;
    let min_inv_rho = sigma_min.powf(1.0 / RHO);
    let max_inv_rho = sigma_max.powf(1.0 / RHO);
    numpy_linspace(0.0, 1.0, n, true)
        .into_iter()
        .map(|ramp| (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)).powf(RHO))
        .collect()
}

/// The inverse of sigma(t): the fractional timestep whose sigma is the given one, by linear
/// interpolation in log-sigma between neighbouring training timesteps (diffusers'
/// `_sigma_to_t`, which k-diffusion introduced). Used to give the UNet the timestep of a
/// Karras sigma.
#[derive(Clone, Debug)]
pub struct SigmaToTimestep {
    /// `np.log(sigmas)` of the float32 training sigmas, as numpy computes it.
    log_sigmas: Vec<f32>,
}

impl SigmaToTimestep {
    pub fn new(training_sigmas: &[f32]) -> Self {
        Self {
            log_sigmas: training_sigmas.iter().map(|&s| numpy_log_f32(s)).collect(),
        }
    }

    pub fn timestep(&self, sigma: f64) -> f64 {
        let log_sigma = sigma.max(1e-10).ln();
        let n = self.log_sigmas.len();
        // The last index whose log-sigma is <= log_sigma (0 if none), at most n - 2.
        let low = self
            .log_sigmas
            .iter()
            .rposition(|&l| log_sigma - l as f64 >= 0.0)
            .unwrap_or(0)
            .min(n - 2);
        let (lo, hi) = (self.log_sigmas[low], self.log_sigmas[low + 1]);
        // numpy: (float32 - float64) / (float32 - float32 in float32)
        let w = ((lo as f64 - log_sigma) / (lo - hi) as f64).clamp(0.0, 1.0);
        (1.0 - w) * low as f64 + w * (low + 1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{betas, SchedulerConfig};

    fn sd_sigmas() -> Vec<f32> {
        let cfg = SchedulerConfig::default();
        training_sigmas(&betas::training_alphas_cumprod(&cfg).unwrap())
    }

    #[test]
    fn sigma_to_t_inverts_the_training_sigmas() {
        let sigmas = sd_sigmas();
        let inv = SigmaToTimestep::new(&sigmas);
        for t in [0usize, 1, 250, 500, 998, 999] {
            let back = inv.timestep(sigmas[t] as f64);
            assert!((back - t as f64).abs() < 1e-3, "{t} -> {back}");
        }
        // Between two training sigmas: between their timesteps.
        let mid = (sigmas[300] as f64 * sigmas[301] as f64).sqrt();
        let t = inv.timestep(mid);
        assert!(t > 300.0 && t < 301.0, "{t}");
    }

    #[test]
    fn karras_endpoints() {
        let k = karras_sigmas(0.03, 14.6, 5);
        assert!((k[0] - 14.6).abs() < 1e-12 && (k[4] - 0.03).abs() < 1e-12);
        assert!(k.windows(2).all(|w| w[0] > w[1]));
    }
}
