//! diffusers `CrossAttnUpBlock2D` and `UpBlock2D` (models/unets/unet_2d_blocks.py): each resnet
//! takes the running features concatenated (channel axis, features first) with the most recent
//! remaining skip tensor, the cross-attention variant follows it with a Transformer2DModel, and
//! an optional upsampler closes the block.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::hooks::AttentionHook;
use super::plan::BlockSpec;
use super::resample::Upsample2D;
use super::resnet::{ResnetBlock2D, ResnetSettings};
use super::transformer::Transformer2DModel;
use crate::error::Result;

pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
}

/// Channel counts as diffusers' UNet2DConditionModel computes them for up block `i`.
#[derive(Debug, Clone, Copy)]
pub struct UpChannels {
    /// Output channels of the previous up block (or of the mid block).
    pub prev_output: usize,
    /// Channels of the deepest skip this block consumes (its last resnet's skip).
    pub input: usize,
}

impl UpBlock {
    /// `path`: `up_blocks.{i}`.
    pub fn new(
        vb: VarBuilder,
        spec: &BlockSpec,
        ch: UpChannels,
        resnet: ResnetSettings,
        add_upsample: bool,
        path: &str,
    ) -> Result<Self> {
        let out = spec.out_channels;
        let mut resnets = Vec::with_capacity(spec.layers);
        let mut attentions = Vec::new();
        for i in 0..spec.layers {
            let skip = if i == spec.layers - 1 { ch.input } else { out };
            let cin = if i == 0 { ch.prev_output } else { out };
            resnets.push(ResnetBlock2D::new(
                vb.pp("resnets").pp(i),
                cin + skip,
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
        let upsampler = if add_upsample {
            Some(Upsample2D::new(vb.pp("upsamplers").pp(0), out)?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            upsampler,
        })
    }

    pub fn num_resnets(&self) -> usize {
        self.resnets.len()
    }

    /// `skips`: this block's skip tensors in down-path order (it consumes them last first).
    /// `upsample_size`: target size of the upsampler when the latent size is not a multiple of
    /// the overall down factor (diffusers' `upsample_size`).
    pub fn forward(
        &self,
        x: &Tensor,
        skips: &[Tensor],
        temb_act: &Tensor,
        context: &Tensor,
        hook: Option<&dyn AttentionHook>,
        upsample_size: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, (resnet, skip)) in self.resnets.iter().zip(skips.iter().rev()).enumerate() {
            x = Tensor::cat(&[&x, skip], 1)?;
            x = resnet.forward(&x, Some(temb_act))?;
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(&x, context, hook)?;
            }
        }
        if let Some(up) = &self.upsampler {
            x = up.forward(&x, upsample_size)?;
        }
        Ok(x)
    }
}
