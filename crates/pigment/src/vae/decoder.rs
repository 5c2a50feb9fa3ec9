//! The VAE decoder (diffusers models/autoencoders/vae.py `Decoder`, norm_type "group"):
//! latents -> image, upsampling 2x in every block but the last.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use super::blocks::{MidBlock2D, UpDecoderBlock2D};
use super::config::AutoencoderKLConfig;
use super::encoder::conv3x3;
use crate::error::Result;
use crate::ops::{Conv2d, GroupNorm};

pub struct Decoder {
    conv_in: Conv2d,
    mid_block: MidBlock2D,
    up_blocks: Vec<UpDecoderBlock2D>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    pub fn new(vb: VarBuilder, cfg: &AutoencoderKLConfig) -> Result<Self> {
        let boc = &cfg.block_out_channels;
        let n = boc.len();
        let g = cfg.norm_num_groups;
        // Up block i works at reversed(block_out_channels)[i]; each has layers_per_block + 1
        // resnets.
        let up_blocks = (0..n)
            .map(|i| {
                let cin = boc[n - i.max(1)];
                UpDecoderBlock2D::new(
                    vb.pp("up_blocks").pp(i),
                    cin,
                    boc[n - 1 - i],
                    cfg.layers_per_block + 1,
                    g,
                    i + 1 < n,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            conv_in: conv3x3(vb.pp("conv_in"), cfg.latent_channels, boc[n - 1])?,
            mid_block: MidBlock2D::new(
                vb.pp("mid_block"),
                boc[n - 1],
                g,
                cfg.mid_block_add_attention,
            )?,
            up_blocks,
            conv_norm_out: crate::ops::group_norm(g, boc[0], 1e-6, vb.pp("conv_norm_out"))?,
            conv_out: conv3x3(vb.pp("conv_out"), boc[0], cfg.out_channels)?,
        })
    }

    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let x = self.conv_in.forward(z)?;
        let mut x = self.mid_block.forward(&x)?;
        for b in &self.up_blocks {
            x = b.forward(&x)?;
        }
        let x = self.conv_norm_out.forward_silu(&x)?;
        Ok(self.conv_out.forward(&x)?)
    }
}
