//! The VAE's blocks (diffusers models/unets/unet_2d_blocks.py): `DownEncoderBlock2D`,
//! `UpDecoderBlock2D` and `UNetMidBlock2D` (resnet, single-head self-attention, resnet), all
//! without time embedding, GroupNorm eps 1e-6.

use candle_core::{Module, Tensor};
use candle_nn::{GroupNorm, VarBuilder};

use crate::error::Result;
use crate::unet::attention::{Attention, AttentionSettings};
use crate::unet::resample::{Downsample2D, Upsample2D};
use crate::unet::resnet::{ResnetBlock2D, ResnetSettings};

/// The VAE resnets' settings for `groups` GroupNorm groups.
pub(crate) fn vae_resnet(groups: usize) -> ResnetSettings {
    ResnetSettings {
        groups,
        eps: 1e-6,
        temb_channels: None,
        scale_shift: false,
        output_scale_factor: 1.0,
    }
}

/// `layers` resnets, then (unless last) a stride-2 conv with diffusers' (0, 1, 0, 1) padding.
pub struct DownEncoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    downsampler: Option<Downsample2D>,
}

impl DownEncoderBlock2D {
    pub fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        layers: usize,
        groups: usize,
        add_downsample: bool,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|i| {
                let c = if i == 0 { cin } else { cout };
                ResnetBlock2D::new(vb.pp("resnets").pp(i), c, cout, vae_resnet(groups))
            })
            .collect::<Result<Vec<_>>>()?;
        let downsampler = if add_downsample {
            Some(Downsample2D::new(vb.pp("downsamplers.0"), cout, 0)?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            downsampler,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for r in &self.resnets {
            x = r.forward(&x, None)?;
        }
        match &self.downsampler {
            Some(d) => d.forward(&x),
            None => Ok(x),
        }
    }
}

/// `layers` resnets, then (unless last) nearest 2x upsampling and a 3x3 conv.
pub struct UpDecoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Upsample2D>,
}

impl UpDecoderBlock2D {
    pub fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        layers: usize,
        groups: usize,
        add_upsample: bool,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|i| {
                let c = if i == 0 { cin } else { cout };
                ResnetBlock2D::new(vb.pp("resnets").pp(i), c, cout, vae_resnet(groups))
            })
            .collect::<Result<Vec<_>>>()?;
        let upsampler = if add_upsample {
            Some(Upsample2D::new(vb.pp("upsamplers.0"), cout)?)
        } else {
            None
        };
        Ok(Self { resnets, upsampler })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for r in &self.resnets {
            x = r.forward(&x, None)?;
        }
        match &self.upsampler {
            Some(u) => u.forward(&x, None),
            None => Ok(x),
        }
    }
}

/// diffusers `Attention` as UNetMidBlock2D builds it: GroupNorm, one head spanning all channels,
/// q/k/v with bias, softmax in f32 (`upcast_softmax`), and a residual connection.
struct SpatialSelfAttention {
    group_norm: GroupNorm,
    attention: Attention,
}

impl SpatialSelfAttention {
    fn new(vb: VarBuilder, channels: usize, groups: usize) -> Result<Self> {
        let settings = AttentionSettings {
            query_dim: channels,
            context_dim: None,
            heads: 1,
            head_dim: channels,
            qkv_bias: true,
            upcast_attention: false,
        };
        Ok(Self {
            group_norm: candle_nn::group_norm(groups, channels, 1e-6, vb.pp("group_norm"))?,
            attention: Attention::new(vb, settings, "mid_block.attentions.0".into())?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let tokens = self
            .group_norm
            .forward(x)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let out = self.attention.forward(&tokens, None, None, (h, w))?;
        let out = out.transpose(1, 2)?.reshape((b, c, h, w))?;
        Ok((out + x)?)
    }
}

/// UNetMidBlock2D with one layer: resnet, [attention], resnet.
pub struct MidBlock2D {
    resnet_in: ResnetBlock2D,
    attention: Option<SpatialSelfAttention>,
    resnet_out: ResnetBlock2D,
}

impl MidBlock2D {
    pub fn new(
        vb: VarBuilder,
        channels: usize,
        groups: usize,
        add_attention: bool,
    ) -> Result<Self> {
        let s = vae_resnet(groups);
        Ok(Self {
            resnet_in: ResnetBlock2D::new(vb.pp("resnets.0"), channels, channels, s)?,
            attention: if add_attention {
                Some(SpatialSelfAttention::new(
                    vb.pp("attentions.0"),
                    channels,
                    groups,
                )?)
            } else {
                None
            },
            resnet_out: ResnetBlock2D::new(vb.pp("resnets.1"), channels, channels, s)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.resnet_in.forward(x, None)?;
        if let Some(a) = &self.attention {
            x = a.forward(&x)?;
        }
        self.resnet_out.forward(&x, None)
    }
}
