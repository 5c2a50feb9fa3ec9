//! diffusers `ControlNetModel` (models/controlnets/controlnet.py; Zhang et al. 2023): a trainable
//! copy of the UNet's conv_in, time embedding, down blocks and mid block, fed `conv_in(sample) +
//! E(control image)`, whose skip tensors and mid output each pass a zero-initialised 1x1 conv and
//! become the residuals the UNet adds to its own (`UNetExtras::down_block_residuals` /
//! `mid_block_residual`). Built entirely from the config; computes in the dtype of its weights.

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;

use crate::unet::same_padding_conv as conv;

use super::cond_embedding::ConditioningEmbedding;
use super::config::ControlNetConfig;
use crate::error::{Error, Result};
use crate::ops::Conv2d;
use crate::unet::down_block::DownBlock;
use crate::unet::embeddings::{timestep_embedding, TimestepEmbedding};
use crate::unet::mid_block::MidBlockCrossAttn;
use crate::unet::plan::UNetPlan;
use crate::unet::resnet::ResnetSettings;

/// What one ControlNet evaluation hands the UNet, already multiplied by the conditioning scale.
#[derive(Debug, Clone)]
pub struct ControlNetOutput {
    /// One per UNet skip connection, in diffusers' order (`down_block_res_samples`). With
    /// `global_pool_conditions` each is `[B, C, 1, 1]` (averaged over space), as in diffusers.
    pub down: Vec<Tensor>,
    /// `mid_block_res_sample`.
    pub mid: Tensor,
}

pub struct ControlNetModel {
    config: ControlNetConfig,
    plan: UNetPlan,
    dtype: DType,
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    cond_embedding: ConditioningEmbedding,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlockCrossAttn,
    /// The zero convolutions of the skips (`controlnet_down_blocks.N`).
    zero_convs: Vec<Conv2d>,
    /// `controlnet_mid_block`.
    zero_conv_mid: Conv2d,
}

impl ControlNetModel {
    /// `vb` rooted at the ControlNet's diffusers names (`conv_in.weight`,
    /// `controlnet_cond_embedding.blocks.0.weight`, `controlnet_down_blocks.0.weight`, ...); its
    /// dtype is the compute dtype.
    pub fn new(vb: VarBuilder, cfg: &ControlNetConfig) -> Result<Self> {
        let plan = UNetPlan::new(&cfg.encoder_config()?)?;
        let boc = &cfg.block_out_channels;
        let n = boc.len();
        let resnet = ResnetSettings {
            groups: cfg.norm_num_groups,
            eps: cfg.norm_eps,
            temb_channels: Some(plan.time_embed_dim),
            scale_shift: plan.scale_shift,
            output_scale_factor: 1.0,
        };
        let mut down_blocks = Vec::with_capacity(n);
        let mut zero_convs = vec![conv(vb.pp("controlnet_down_blocks.0"), boc[0], boc[0], 1)?];
        for (i, spec) in plan.down.iter().enumerate() {
            let input = if i == 0 { boc[0] } else { boc[i - 1] };
            let padding = (i + 1 < n).then_some(cfg.downsample_padding);
            let path = format!("down_blocks.{i}");
            down_blocks.push(DownBlock::new(
                vb.pp(&path),
                spec,
                input,
                resnet,
                padding,
                &path,
            )?);
            let skips = spec.layers + usize::from(i + 1 < n);
            for _ in 0..skips {
                let path = format!("controlnet_down_blocks.{}", zero_convs.len());
                zero_convs.push(conv(vb.pp(path), boc[i], boc[i], 1)?);
            }
        }
        let Some(mid_spec) = &plan.mid else {
            return Err(Error::Config("ControlNet has no mid block".into()));
        };
        let mid_block = MidBlockCrossAttn::new(
            vb.pp("mid_block"),
            boc[n - 1],
            mid_spec,
            ResnetSettings {
                output_scale_factor: cfg.mid_block_scale_factor,
                ..resnet
            },
        )?;
        Ok(Self {
            dtype: vb.dtype(),
            conv_in: conv(vb.pp("conv_in"), cfg.in_channels, boc[0], 3)?,
            time_embedding: TimestepEmbedding::new(
                vb.pp("time_embedding"),
                plan.time_proj_dim,
                plan.time_embed_dim,
                None,
            )?,
            cond_embedding: ConditioningEmbedding::new(
                vb.pp("controlnet_cond_embedding"),
                cfg.conditioning_channels,
                &cfg.conditioning_embedding_out_channels,
                boc[0],
            )?,
            down_blocks,
            mid_block,
            zero_convs,
            zero_conv_mid: conv(vb.pp("controlnet_mid_block"), boc[n - 1], boc[n - 1], 1)?,
            config: cfg.clone(),
            plan,
        })
    }

    pub fn config(&self) -> &ControlNetConfig {
        &self.config
    }

    /// The compute dtype (that of the weights).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// How many times smaller than the control image the latent is (8 for SD ControlNets).
    pub fn control_scale_factor(&self) -> usize {
        1 << self.cond_embedding.downscale_steps()
    }

    /// diffusers' `ControlNetModel.forward`: `sample` [B, in_channels, h, w], `timestep`,
    /// `encoder_hidden_states` [B, seq, cross_attention_dim], `controlnet_cond` [B,
    /// conditioning_channels, h * f, w * f] (RGB in [0, 1]). Every residual is multiplied by
    /// `conditioning_scale`; in `guess_mode` (without `global_pool_conditions`) residual k of
    /// the n + 1 (down skips, then mid) is multiplied by `conditioning_scale *
    /// 10^(-1 + k / n)` instead (torch.logspace(-1, 0, n + 1): shallow skips 0.1, mid 1.0).
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
        controlnet_cond: &Tensor,
        conditioning_scale: f64,
        guess_mode: bool,
    ) -> Result<ControlNetOutput> {
        self.check_inputs(sample, timestep, encoder_hidden_states, controlnet_cond)?;
        let (batch, _, _, _) = sample.dims4()?;
        let mut cond = controlnet_cond.to_dtype(self.dtype)?;
        if self.config.controlnet_conditioning_channel_order == "bgr" {
            let channels = cond.dim(1)?;
            let flipped: Vec<Tensor> = (0..channels)
                .rev()
                .map(|c| cond.narrow(1, c, 1))
                .collect::<candle_core::Result<_>>()?;
            cond = Tensor::cat(&flipped, 1)?;
        }
        let features = timestep_embedding(
            timestep,
            batch,
            self.plan.time_proj_dim,
            self.config.flip_sin_to_cos,
            self.config.freq_shift,
            sample.device(),
        )?
        .to_dtype(self.dtype)?;
        let temb_act = self.time_embedding.forward(&features, None)?.silu()?;
        let context = encoder_hidden_states.to_dtype(self.dtype)?;

        let x = self.conv_in.forward(&sample.to_dtype(self.dtype)?)?;
        let mut x = (x + self.cond_embedding.forward(&cond)?)?;
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            let (out, block_skips) = block.forward(&x, &temb_act, &context, None)?;
            x = out;
            skips.extend(block_skips);
        }
        let x = self.mid_block.forward(&x, &temb_act, &context, None)?;

        let mut down = Vec::with_capacity(skips.len());
        for (skip, zero_conv) in skips.iter().zip(&self.zero_convs) {
            down.push(zero_conv.forward(skip)?);
        }
        let mut mid = self.zero_conv_mid.forward(&x)?;

        let pool = self.config.global_pool_conditions;
        if guess_mode && !pool {
            let n = down.len();
            for (k, d) in down.iter_mut().enumerate() {
                *d = (&*d * (guess_scale(k, n) * conditioning_scale))?;
            }
            mid = (mid * (guess_scale(n, n) * conditioning_scale))?;
        } else {
            for d in down.iter_mut() {
                *d = (&*d * conditioning_scale)?;
            }
            mid = (mid * conditioning_scale)?;
        }
        if pool {
            for d in down.iter_mut() {
                *d = d.mean_keepdim(3)?.mean_keepdim(2)?;
            }
            mid = mid.mean_keepdim(3)?.mean_keepdim(2)?;
        }
        Ok(ControlNetOutput { down, mid })
    }

    fn check_inputs(
        &self,
        sample: &Tensor,
        timestep: f64,
        ehs: &Tensor,
        cond: &Tensor,
    ) -> Result<()> {
        let cfg = &self.config;
        let &[b, c, h, w] = sample.dims() else {
            return Err(Error::invalid(format!(
                "ControlNet sample must be [batch, {}, height, width], got shape {:?}",
                cfg.in_channels,
                sample.dims()
            )));
        };
        if c != cfg.in_channels {
            return Err(Error::invalid(format!(
                "ControlNet sample has {c} channels but this ControlNet takes {} (in_channels)",
                cfg.in_channels
            )));
        }
        if !timestep.is_finite() {
            return Err(Error::invalid(format!(
                "timestep {timestep} is not a finite number"
            )));
        }
        match ehs.dims() {
            &[eb, _, ed] if eb == b && ed == cfg.cross_attention_dim => {}
            other => {
                return Err(Error::invalid(format!(
                    "ControlNet encoder_hidden_states must be [{b}, tokens, {}] \
                     (cross_attention_dim), got {other:?}: is the ControlNet made for this \
                     model family?",
                    cfg.cross_attention_dim
                )))
            }
        }
        let f = self.control_scale_factor();
        let expected = [b, cfg.conditioning_channels, h * f, w * f];
        if cond.dims() != expected {
            return Err(Error::invalid(format!(
                "ControlNet control image tensor has shape {:?} but this latent needs {expected:?} \
                 ({} x {} pixels, {} channels)",
                cond.dims(),
                w * f,
                h * f,
                cfg.conditioning_channels
            )));
        }
        Ok(())
    }
}

/// Guess mode's weight of residual `k` of `n` down residuals (+ the mid one at `k = n`):
/// torch.logspace(-1, 0, n + 1)[k] = 10^(-1 + k / n), computed in f32 as torch does.
fn guess_scale(k: usize, n: usize) -> f64 {
    let exponent = -1.0f32 + k as f32 * (1.0f32 / n as f32);
    f64::from(10f32.powf(exponent))
}
