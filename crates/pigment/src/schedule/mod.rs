//! Noise schedules: the training schedule (betas, alphas_cumprod), which timesteps a sampler
//! visits (timestep spacing), and noise levels as sigmas (Karras schedule, sigma <-> timestep).
//! The samplers in `crate::samplers` are built from these.

pub mod betas;
pub mod config;
pub mod numerics;
pub mod sigmas;
pub mod spacing;

pub use betas::{alphas_cumprod, betas, rescale_zero_terminal_snr, training_alphas_cumprod};
pub use config::{ConfigFlag, SchedulerConfig};
pub use sigmas::{karras_sigmas, sigma_at, training_sigmas, SigmaToTimestep};
pub use spacing::TimestepSpacing;
