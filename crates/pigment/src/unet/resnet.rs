//! ResnetBlock2D (diffusers models/resnet.py), the residual unit of both the UNet and the VAE:
//! GroupNorm, SiLU, 3x3 conv, add (or scale-and-shift by) the projected time embedding, GroupNorm,
//! SiLU, 3x3 conv, plus a 1x1 conv shortcut when the channel count changes.

use candle_core::{Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::ops::Linear;

use crate::error::Result;
use crate::ops::{Conv2d, GroupNorm};

/// How a ResnetBlock2D is built; the channel counts come separately.
#[derive(Debug, Clone, Copy)]
pub struct ResnetSettings {
    pub groups: usize,
    pub eps: f64,
    /// Width of the time embedding; None in the VAE (no `time_emb_proj`).
    pub temb_channels: Option<usize>,
    /// `time_embedding_norm == "scale_shift"`: h = norm2(h) * (1 + scale) + shift.
    pub scale_shift: bool,
    /// The block output is divided by this (`output_scale_factor`; 1 for SD).
    pub output_scale_factor: f64,
}

pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    settings: ResnetSettings,
}

fn conv3x3(cin: usize, cout: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    crate::ops::conv2d(cin, cout, 3, cfg, vb)
}

impl ResnetBlock2D {
    pub fn new(vb: VarBuilder, cin: usize, cout: usize, s: ResnetSettings) -> Result<Self> {
        let time_emb_proj = match s.temb_channels {
            Some(t) => {
                let width = if s.scale_shift { 2 * cout } else { cout };
                Some(crate::ops::linear(t, width, vb.pp("time_emb_proj"))?)
            }
            None => None,
        };
        let conv_shortcut = if cin != cout {
            Some(crate::ops::conv2d(
                cin,
                cout,
                1,
                Default::default(),
                vb.pp("conv_shortcut"),
            )?)
        } else {
            None
        };
        Ok(Self {
            norm1: crate::ops::group_norm(s.groups, cin, s.eps, vb.pp("norm1"))?,
            conv1: conv3x3(cin, cout, vb.pp("conv1"))?,
            time_emb_proj,
            norm2: crate::ops::group_norm(s.groups, cout, s.eps, vb.pp("norm2"))?,
            conv2: conv3x3(cout, cout, vb.pp("conv2"))?,
            conv_shortcut,
            settings: s,
        })
    }

    /// `x` [B, cin, H, W]; `temb_act` = SiLU(time embedding) [B, temb_channels] (the activation
    /// is shared by every resnet, so the caller applies it once), None in the VAE.
    pub fn forward(&self, x: &Tensor, temb_act: Option<&Tensor>) -> Result<Tensor> {
        let h = self.norm1.forward_silu(x)?;
        let h = self.conv1.forward(&h)?;
        let temb = match (&self.time_emb_proj, temb_act) {
            (Some(proj), Some(t)) => Some(proj.forward(t)?.unsqueeze(2)?.unsqueeze(3)?),
            _ => None,
        };
        // SiLU(norm2(...)) before conv2; fused into the norm unless scale-shift comes between.
        let h = match (&temb, self.settings.scale_shift) {
            (Some(t), true) => {
                let (scale, shift) = t.chunk(2, 1).map(|c| (c[0].clone(), c[1].clone()))?;
                self.norm2
                    .forward(&h)?
                    .broadcast_mul(&(scale + 1.0)?)?
                    .broadcast_add(&shift)?
                    .silu()?
            }
            (Some(t), false) => self.norm2.forward_silu(&h.broadcast_add(t)?)?,
            (None, _) => self.norm2.forward_silu(&h)?,
        };
        let h = self.conv2.forward(&h)?;
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        let out = (shortcut + h)?;
        Ok(if self.settings.output_scale_factor == 1.0 {
            out
        } else {
            (out / self.settings.output_scale_factor)?
        })
    }
}
