//! diffusers `ControlNetConditioningEmbedding` (models/controlnets/controlnet.py): the small conv
//! encoder E(.) of Zhang et al. 2023, sec. 3.3, taking the control image to latent resolution.
//! conv_in, then per step a 3x3 conv and a stride-2 3x3 conv, each followed by SiLU, then the
//! zero-initialised conv_out to `block_out_channels[0]`.

use candle_core::{Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::error::Result;
use crate::ops::Conv2d;

pub(crate) struct ConditioningEmbedding {
    conv_in: Conv2d,
    /// In forward order: (3x3, stride-2 3x3) per resolution step.
    blocks: Vec<Conv2d>,
    conv_out: Conv2d,
}

fn conv3(vb: VarBuilder, cin: usize, cout: usize, stride: usize) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        stride,
        ..Default::default()
    };
    crate::ops::conv2d(cin, cout, 3, cfg, vb)
}

impl ConditioningEmbedding {
    pub fn new(
        vb: VarBuilder,
        conditioning_channels: usize,
        channels: &[usize],
        embedding_channels: usize,
    ) -> Result<Self> {
        let mut blocks = Vec::with_capacity(2 * channels.len().saturating_sub(1));
        for (i, pair) in channels.windows(2).enumerate() {
            let (cin, cout) = (pair[0], pair[1]);
            blocks.push(conv3(vb.pp("blocks").pp(2 * i), cin, cin, 1)?);
            blocks.push(conv3(vb.pp("blocks").pp(2 * i + 1), cin, cout, 2)?);
        }
        let last = channels.last().copied().unwrap_or(conditioning_channels);
        Ok(Self {
            conv_in: conv3(vb.pp("conv_in"), conditioning_channels, channels[0], 1)?,
            blocks,
            conv_out: conv3(vb.pp("conv_out"), last, embedding_channels, 1)?,
        })
    }

    /// `[B, conditioning_channels, H, W]` -> `[B, embedding_channels, H / 2^steps, W / 2^steps]`.
    pub fn forward(&self, cond: &Tensor) -> Result<Tensor> {
        let mut x = self.conv_in.forward(cond)?.silu()?;
        for block in &self.blocks {
            x = block.forward(&x)?.silu()?;
        }
        Ok(self.conv_out.forward(&x)?)
    }

    /// How many times the embedding halves the control image's size.
    pub fn downscale_steps(&self) -> usize {
        self.blocks.len() / 2
    }
}
