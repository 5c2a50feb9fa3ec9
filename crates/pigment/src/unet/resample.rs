//! Downsample2D and Upsample2D with a conv (diffusers models/downsampling.py, upsampling.py).

use candle_core::{Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::error::Result;
use crate::ops::Conv2d;

/// 3x3 conv with stride 2. With `padding == 0` (the VAE encoder) diffusers first pads one zero
/// column on the right and one row at the bottom: F.pad(x, (0, 1, 0, 1)).
pub struct Downsample2D {
    conv: Conv2d,
    pad_right_bottom: bool,
}

impl Downsample2D {
    pub fn new(vb: VarBuilder, channels: usize, padding: usize) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding,
            stride: 2,
            ..Default::default()
        };
        Ok(Self {
            conv: crate::ops::conv2d(channels, channels, 3, cfg, vb.pp("conv"))?,
            pad_right_bottom: padding == 0,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.pad_right_bottom {
            let x = x.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
            Ok(self.conv.forward(&x)?)
        } else {
            Ok(self.conv.forward(x)?)
        }
    }
}

/// Nearest-neighbour upsampling (to 2x, or to `size` when the UNet needs to match an odd skip
/// size: diffusers' `upsample_size`), then a 3x3 conv.
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(Self {
            conv: crate::ops::conv2d(channels, channels, 3, cfg, vb.pp("conv"))?,
        })
    }

    pub fn forward(&self, x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (th, tw) = size.unwrap_or((2 * h, 2 * w));
        let x = x.upsample_nearest2d(th, tw)?;
        Ok(self.conv.forward(&x)?)
    }
}
