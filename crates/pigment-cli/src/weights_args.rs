//! `--weights`: how the UNet's and text encoder's weights are held in memory.

use anyhow::Result;
use clap::Args;
use pigment::ops::WeightFormat;

#[derive(Args, Clone, Debug)]
pub struct WeightsArgs {
    /// How the UNet's and text encoder's linear and convolution weights are held in memory;
    /// the arithmetic stays in --dtype. f32: as --dtype, no packing (the default). f16: half
    /// the memory of f32. q8: 8-bit per-output-channel int8, about a quarter of f32's memory,
    /// at a small quality cost (see README). The VAE is not packed.
    #[arg(long = "weights", default_value = "f32", value_name = "f32|f16|q8")]
    pub weights: String,
}

impl WeightsArgs {
    pub fn format(&self) -> Result<WeightFormat> {
        Ok(self.weights.parse()?)
    }
}
