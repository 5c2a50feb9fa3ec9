//! The VAE encoder (diffusers models/autoencoders/vae.py `Encoder`, double_z): image ->
//! 2 * latent_channels moments (mean and log-variance) at 1/2^(blocks-1) resolution.

use candle_core::{Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use super::blocks::{DownEncoderBlock2D, MidBlock2D};
use super::config::AutoencoderKLConfig;
use crate::error::Result;
use crate::ops::{Conv2d, GroupNorm};

pub struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<DownEncoderBlock2D>,
    mid_block: MidBlock2D,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

pub(crate) fn conv3x3(vb: VarBuilder, cin: usize, cout: usize) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    crate::ops::conv2d(cin, cout, 3, cfg, vb)
}

impl Encoder {
    pub fn new(vb: VarBuilder, cfg: &AutoencoderKLConfig) -> Result<Self> {
        let boc = &cfg.block_out_channels;
        let n = boc.len();
        let g = cfg.norm_num_groups;
        let down_blocks = (0..n)
            .map(|i| {
                let cin = if i == 0 { boc[0] } else { boc[i - 1] };
                DownEncoderBlock2D::new(
                    vb.pp("down_blocks").pp(i),
                    cin,
                    boc[i],
                    cfg.layers_per_block,
                    g,
                    i + 1 < n,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            conv_in: conv3x3(vb.pp("conv_in"), cfg.in_channels, boc[0])?,
            down_blocks,
            mid_block: MidBlock2D::new(
                vb.pp("mid_block"),
                boc[n - 1],
                g,
                cfg.mid_block_add_attention,
            )?,
            conv_norm_out: crate::ops::group_norm(g, boc[n - 1], 1e-6, vb.pp("conv_norm_out"))?,
            conv_out: conv3x3(vb.pp("conv_out"), boc[n - 1], 2 * cfg.latent_channels)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.conv_in.forward(x)?;
        for b in &self.down_blocks {
            x = b.forward(&x)?;
        }
        let x = self.mid_block.forward(&x)?;
        let x = self.conv_norm_out.forward_silu(&x)?;
        Ok(self.conv_out.forward(&x)?)
    }
}
