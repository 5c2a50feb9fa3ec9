//! diffusers `UNetMidBlock2DCrossAttn` (models/unets/unet_2d_blocks.py): resnet, then
//! (Transformer2DModel, resnet) once; its resnets divide by `mid_block_scale_factor`.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::hooks::AttentionHook;
use super::plan::TransformerSpec;
use super::resnet::{ResnetBlock2D, ResnetSettings};
use super::transformer::Transformer2DModel;
use crate::error::Result;

pub struct MidBlockCrossAttn {
    resnet_in: ResnetBlock2D,
    attention: Transformer2DModel,
    resnet_out: ResnetBlock2D,
}

impl MidBlockCrossAttn {
    pub fn new(
        vb: VarBuilder,
        channels: usize,
        spec: &TransformerSpec,
        resnet: ResnetSettings,
    ) -> Result<Self> {
        Ok(Self {
            resnet_in: ResnetBlock2D::new(vb.pp("resnets.0"), channels, channels, resnet)?,
            attention: Transformer2DModel::new(
                vb.pp("attentions.0"),
                channels,
                spec,
                "mid_block.attentions.0",
            )?,
            resnet_out: ResnetBlock2D::new(vb.pp("resnets.1"), channels, channels, resnet)?,
        })
    }

    pub fn forward(
        &self,
        x: &Tensor,
        temb_act: &Tensor,
        context: &Tensor,
        hook: Option<&dyn AttentionHook>,
    ) -> Result<Tensor> {
        let x = self.resnet_in.forward(x, Some(temb_act))?;
        let x = self.attention.forward(&x, context, hook)?;
        self.resnet_out.forward(&x, Some(temb_act))
    }
}
