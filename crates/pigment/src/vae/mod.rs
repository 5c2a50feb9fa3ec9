//! AutoencoderKL: the VAE of latent diffusion (Rombach 2022).
mod blocks;
pub mod config;
mod decoder;
mod encoder;
mod gaussian;
mod model;
pub mod tiling;

pub use config::AutoencoderKLConfig;
pub use gaussian::DiagonalGaussian;
pub use model::AutoencoderKL;
pub use tiling::VaeTiling;
