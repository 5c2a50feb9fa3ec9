//! The UNet denoiser of latent diffusion: diffusers' UNet2DConditionModel and its blocks, built
//! from `unet/config.json`, with hook points for ControlNet, LCM and attention control.

pub(crate) mod attention;
pub mod config;
pub(crate) mod down_block;
pub(crate) mod embeddings;
pub mod hooks;
pub(crate) mod mid_block;
mod model;
pub(crate) mod plan;
pub(crate) mod resample;
pub(crate) mod resnet;
pub(crate) mod transformer;
mod up_block;

pub use attention::multi_head_attention;
pub use config::{PerBlock, UNet2DConditionConfig};
pub use hooks::{AttentionHook, AttentionSite, UNetExtras};
pub(crate) use model::conv as same_padding_conv;
pub use model::UNet2DConditionModel;
