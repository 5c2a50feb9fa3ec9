//! diffusers `CrossAttnDownBlock2D` and `DownBlock2D` (models/unets/unet_2d_blocks.py): resnets,
//! each followed by a Transformer2DModel in the cross-attention variant, then an optional
//! stride-2 downsampler. Every resnet(+attention) output and the downsampler output is a skip.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::hooks::AttentionHook;
use super::plan::BlockSpec;
use super::resample::Downsample2D;
use super::resnet::{ResnetBlock2D, ResnetSettings};
use super::transformer::Transformer2DModel;
use crate::error::Result;

pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    /// Empty for DownBlock2D.
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    /// `path`: `down_blocks.{i}`.
    pub fn new(
        vb: VarBuilder,
        spec: &BlockSpec,
        in_channels: usize,
        resnet: ResnetSettings,
        downsample_padding: Option<usize>,
        path: &str,
    ) -> Result<Self> {
        let out = spec.out_channels;
        let mut resnets = Vec::with_capacity(spec.layers);
        let mut attentions = Vec::new();
        for i in 0..spec.layers {
            let cin = if i == 0 { in_channels } else { out };
            resnets.push(ResnetBlock2D::new(
                vb.pp("resnets").pp(i),
                cin,
                out,
                resnet,
            )?);
            if spec.cross_attention {
                attentions.push(Transformer2DModel::new(
                    vb.pp("attentions").pp(i),
                    out,
                    &spec.transformer,
                    &format!("{path}.attentions.{i}"),
                )?);
            }
        }
        let downsampler = match downsample_padding {
            Some(p) => Some(Downsample2D::new(vb.pp("downsamplers").pp(0), out, p)?),
            None => None,
        };
        Ok(Self {
            resnets,
            attentions,
            downsampler,
        })
    }

    /// Returns the block output and its skip tensors, in order.
    pub fn forward(
        &self,
        x: &Tensor,
        temb_act: &Tensor,
        context: &Tensor,
        hook: Option<&dyn AttentionHook>,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut x = x.clone();
        let mut skips = Vec::with_capacity(self.resnets.len() + 1);
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(&x, Some(temb_act))?;
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(&x, context, hook)?;
            }
            skips.push(x.clone());
        }
        if let Some(down) = &self.downsampler {
            x = down.forward(&x)?;
            skips.push(x.clone());
        }
        Ok((x, skips))
    }
}
