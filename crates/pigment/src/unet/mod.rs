pub mod config;
pub use config::{PerBlock, UNet2DConditionConfig};
