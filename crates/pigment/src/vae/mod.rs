//! AutoencoderKL: the VAE of latent diffusion (Rombach 2022).
pub mod config;
pub use config::AutoencoderKLConfig;
