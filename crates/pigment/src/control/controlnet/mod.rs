//! ControlNet (Zhang et al. 2023, "Adding Conditional Control to Text-to-Image Diffusion
//! Models"): diffusers' `ControlNetModel`, loaded from a diffusers folder or an original
//! single file, whose residuals enter the UNet through `UNetExtras` (see
//! `pipelines::controlnet` for the sampling loop and `MultiControlNet`-style summing).

mod cond_embedding;
mod config;
mod load;
mod model;
mod single_file_keys;

pub use config::ControlNetConfig;
pub use load::load_controlnet;
pub use model::{ControlNetModel, ControlNetOutput};
