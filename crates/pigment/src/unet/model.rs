//! UNet2DConditionModel (diffusers models/unets/unet_2d_condition.py), the latent-diffusion
//! denoiser (Rombach et al. 2022): conv_in, down blocks collecting skip tensors, a cross-attention
//! mid block, up blocks consuming the skips in reverse, GroupNorm + SiLU + conv_out. Built
//! entirely from the config; computes in the dtype of its weights.

use candle_core::{DType, Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use super::config::UNet2DConditionConfig;
use super::down_block::DownBlock;
use super::embeddings::{timestep_embedding, timestep_embeddings, TimestepEmbedding};
use super::hooks::UNetExtras;
use super::mid_block::MidBlockCrossAttn;
use super::plan::UNetPlan;
use super::resnet::ResnetSettings;
use super::up_block::{UpBlock, UpChannels};
use crate::error::{Error, Result};
use crate::ops::{Conv2d, GroupNorm};

pub struct UNet2DConditionModel {
    config: UNet2DConditionConfig,
    plan: UNetPlan,
    dtype: DType,
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlockCrossAttn>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

/// A stride-1 conv with "same" padding, as the UNet's (and ControlNet's) in/out convs.
pub(crate) fn conv(vb: VarBuilder, cin: usize, cout: usize, kernel: usize) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: (kernel - 1) / 2,
        ..Default::default()
    };
    crate::ops::conv2d(cin, cout, kernel, cfg, vb)
}

impl UNet2DConditionModel {
    /// `vb` rooted at the UNet's weights (keys like `conv_in.weight`,
    /// `down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight`); its dtype is the
    /// compute dtype. Unsupported config values are an `Error::Config` naming the field.
    pub fn new(vb: VarBuilder, cfg: &UNet2DConditionConfig) -> Result<Self> {
        let plan = UNetPlan::new(cfg)?;
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
        }

        let mid_block = match &plan.mid {
            Some(spec) => Some(MidBlockCrossAttn::new(
                vb.pp("mid_block"),
                boc[n - 1],
                spec,
                ResnetSettings {
                    output_scale_factor: cfg.mid_block_scale_factor,
                    ..resnet
                },
            )?),
            None => None,
        };

        let mut up_blocks = Vec::with_capacity(n);
        for (i, spec) in plan.up.iter().enumerate() {
            let ch = UpChannels {
                prev_output: boc[n - i.max(1)],
                input: boc[n - 1 - (i + 1).min(n - 1)],
            };
            let path = format!("up_blocks.{i}");
            up_blocks.push(UpBlock::new(
                vb.pp(&path),
                spec,
                ch,
                resnet,
                i + 1 < n,
                &path,
            )?);
        }

        Ok(Self {
            dtype: vb.dtype(),
            conv_in: conv(
                vb.pp("conv_in"),
                cfg.in_channels,
                boc[0],
                cfg.conv_in_kernel,
            )?,
            time_embedding: TimestepEmbedding::new(
                vb.pp("time_embedding"),
                plan.time_proj_dim,
                plan.time_embed_dim,
                cfg.time_cond_proj_dim,
            )?,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: crate::ops::group_norm(
                cfg.norm_num_groups,
                boc[0],
                cfg.norm_eps,
                vb.pp("conv_norm_out"),
            )?,
            conv_out: conv(
                vb.pp("conv_out"),
                boc[0],
                cfg.out_channels,
                cfg.conv_out_kernel,
            )?,
            config: cfg.clone(),
            plan,
        })
    }

    pub fn config(&self) -> &UNet2DConditionConfig {
        &self.config
    }

    /// The compute dtype (that of the weights); the output has it too.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// `sample` [B, in_channels, h, w], `timestep` (may be fractional; the same for the whole
    /// batch), `encoder_hidden_states` [B, seq, cross_attention_dim] -> [B, out_channels, h, w].
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
    ) -> Result<Tensor> {
        self.forward_with(
            sample,
            timestep,
            encoder_hidden_states,
            &UNetExtras::default(),
        )
    }

    /// [`Self::forward`] with the hook points: ControlNet residuals, LCM's timestep condition,
    /// an attention hook.
    pub fn forward_with(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
        extras: &UNetExtras,
    ) -> Result<Tensor> {
        self.check_inputs(sample, timestep, encoder_hidden_states, extras)?;
        let (batch, _, _, _) = sample.dims4()?;
        let features = timestep_embedding(
            timestep,
            batch,
            self.plan.time_proj_dim,
            self.config.flip_sin_to_cos,
            self.config.freq_shift,
            sample.device(),
        )?;
        self.forward_features(sample, features, encoder_hidden_states, extras)
    }

    /// [`Self::forward_with`] with one timestep per sample (`timesteps.len()` = batch), as
    /// diffusion training draws them; each row is exactly what `forward` gives for its timestep.
    pub fn forward_timesteps(
        &self,
        sample: &Tensor,
        timesteps: &[f64],
        encoder_hidden_states: &Tensor,
        extras: &UNetExtras,
    ) -> Result<Tensor> {
        let batch = sample.dims().first().copied().unwrap_or(0);
        if timesteps.len() != batch {
            return Err(Error::invalid(format!(
                "{} timesteps given for a batch of {batch} samples: give one per sample",
                timesteps.len()
            )));
        }
        self.check_inputs(sample, 0.0, encoder_hidden_states, extras)?;
        if let Some(t) = timesteps.iter().find(|t| !t.is_finite()) {
            return Err(Error::invalid(format!(
                "timestep {t} is not a finite number"
            )));
        }
        let features = timestep_embeddings(
            timesteps,
            self.plan.time_proj_dim,
            self.config.flip_sin_to_cos,
            self.config.freq_shift,
            sample.device(),
        )?;
        self.forward_features(sample, features, encoder_hidden_states, extras)
    }

    /// The network after the sinusoidal timestep features `[batch, time_proj_dim]` (f32).
    fn forward_features(
        &self,
        sample: &Tensor,
        features: Tensor,
        encoder_hidden_states: &Tensor,
        extras: &UNetExtras,
    ) -> Result<Tensor> {
        let (_, _, height, width) = sample.dims4()?;
        let hook = extras.attention_hook;
        let mut x = sample.to_dtype(self.dtype)?;
        let context = encoder_hidden_states.to_dtype(self.dtype)?;
        if self.config.center_input_sample {
            x = x.affine(2.0, -1.0)?;
        }

        // Time embedding: sinusoidal features in f32, then the MLP in the compute dtype.
        let features = features.to_dtype(self.dtype)?;
        let cond = match extras.timestep_cond {
            Some(c) => Some(c.to_dtype(self.dtype)?),
            None => None,
        };
        let emb = self.time_embedding.forward(&features, cond.as_ref())?;
        let temb_act = emb.silu()?;

        let mut x = self.conv_in.forward(&x)?;
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            let (out, block_skips) = block.forward(&x, &temb_act, &context, hook)?;
            x = out;
            skips.extend(block_skips);
        }
        if let Some(residuals) = extras.down_block_residuals {
            for (skip, r) in skips.iter_mut().zip(residuals) {
                *skip = (&*skip + r.to_dtype(self.dtype)?)?;
            }
        }
        if let Some(mid) = &self.mid_block {
            x = mid.forward(&x, &temb_act, &context, hook)?;
        }
        if let Some(r) = extras.mid_block_residual {
            x = (x + r.to_dtype(self.dtype)?)?;
        }

        // diffusers forwards explicit upsample sizes when h or w is not a multiple of the
        // overall up factor, so each upsampler lands on its skip's size.
        let factor = 1usize << (self.up_blocks.len() - 1);
        let forward_upsample_size = !height.is_multiple_of(factor) || !width.is_multiple_of(factor);
        for (i, block) in self.up_blocks.iter().enumerate() {
            let block_skips = skips.split_off(skips.len() - block.num_resnets());
            let is_final = i + 1 == self.up_blocks.len();
            let upsample_size = match skips.last() {
                Some(next) if forward_upsample_size && !is_final => {
                    let (_, _, h, w) = next.dims4()?;
                    Some((h, w))
                }
                _ => None,
            };
            x = block.forward(&x, &block_skips, &temb_act, &context, hook, upsample_size)?;
        }

        let x = self.conv_norm_out.forward_silu(&x)?;
        Ok(self.conv_out.forward(&x)?)
    }

    /// Shapes of the skip tensors of the down path for a latent of `height` x `width`: what
    /// ControlNet's `down_block_residuals` must match, in order.
    pub fn down_residual_shapes(
        &self,
        batch: usize,
        height: usize,
        width: usize,
    ) -> Vec<[usize; 4]> {
        let mut shapes = vec![[batch, self.config.block_out_channels[0], height, width]];
        let (mut h, mut w) = (height, width);
        let n = self.plan.down.len();
        for (i, spec) in self.plan.down.iter().enumerate() {
            for _ in 0..spec.layers {
                shapes.push([batch, spec.out_channels, h, w]);
            }
            if i + 1 < n {
                // 3x3 stride-2 conv with `downsample_padding` on both sides (padding 0 means
                // one zero row/column appended, see Downsample2D).
                let p = self.config.downsample_padding;
                let pad = if p == 0 { 1 } else { 2 * p };
                let down = |s: usize| (s + pad).saturating_sub(3) / 2 + 1;
                h = down(h);
                w = down(w);
                shapes.push([batch, spec.out_channels, h, w]);
            }
        }
        shapes
    }

    fn check_inputs(
        &self,
        sample: &Tensor,
        timestep: f64,
        ehs: &Tensor,
        extras: &UNetExtras,
    ) -> Result<()> {
        let cfg = &self.config;
        let &[b, c, h, w] = sample.dims() else {
            return Err(Error::invalid(format!(
                "UNet sample must be [batch, {}, height, width], got shape {:?}",
                cfg.in_channels,
                sample.dims()
            )));
        };
        if c != cfg.in_channels {
            return Err(Error::invalid(format!(
                "UNet sample has {c} channels but this UNet takes {} (in_channels); \
                 inpainting UNets take 9 (latent, mask, masked-image latent), InstructPix2Pix 8",
                cfg.in_channels
            )));
        }
        if h == 0 || w == 0 {
            return Err(Error::invalid("UNet sample has zero height or width"));
        }
        if !timestep.is_finite() {
            return Err(Error::invalid(format!(
                "timestep {timestep} is not a finite number"
            )));
        }
        let &[eb, _, ed] = ehs.dims() else {
            return Err(Error::invalid(format!(
                "encoder_hidden_states must be [batch, tokens, dim], got shape {:?}",
                ehs.dims()
            )));
        };
        if eb != b {
            return Err(Error::invalid(format!(
                "encoder_hidden_states has batch {eb} but the sample has batch {b}: give one \
                 text embedding per latent"
            )));
        }
        let dims = self
            .plan
            .down
            .iter()
            .chain(&self.plan.up)
            .filter(|s| s.cross_attention)
            .map(|s| s.transformer.cross_attention_dim)
            .chain(self.plan.mid.iter().map(|m| m.cross_attention_dim));
        for d in dims {
            if d != ed {
                return Err(Error::invalid(format!(
                    "encoder_hidden_states have width {ed} but this UNet's cross-attention takes \
                     {d} (cross_attention_dim): is the text encoder from the same model family?"
                )));
            }
        }
        if let Some(cond) = extras.timestep_cond {
            let Some(dim) = cfg.time_cond_proj_dim else {
                return Err(Error::invalid(
                    "timestep_cond given but this UNet has no time_cond_proj_dim (it is not an \
                     LCM-distilled UNet)",
                ));
            };
            if cond.dims() != [b, dim] {
                return Err(Error::invalid(format!(
                    "timestep_cond must be [{b}, {dim}], got {:?}",
                    cond.dims()
                )));
            }
        }
        if let Some(res) = extras.down_block_residuals {
            let expected = self.down_residual_shapes(b, h, w);
            if res.len() != expected.len() {
                return Err(Error::invalid(format!(
                    "{} ControlNet down-block residuals given but this UNet has {} skip \
                     connections: is the ControlNet built for this UNet?",
                    res.len(),
                    expected.len()
                )));
            }
            for (i, (r, e)) in res.iter().zip(&expected).enumerate() {
                if r.dims() != e {
                    return Err(Error::invalid(format!(
                        "ControlNet down-block residual {i} has shape {:?}, expected {e:?}",
                        r.dims()
                    )));
                }
            }
        }
        if let Some(r) = extras.mid_block_residual {
            let last = self.down_residual_shapes(b, h, w);
            let e = last.last().map(|s| s.to_vec()).unwrap_or_default();
            if r.dims() != e.as_slice() {
                return Err(Error::invalid(format!(
                    "ControlNet mid-block residual has shape {:?}, expected {e:?}",
                    r.dims()
                )));
            }
        }
        Ok(())
    }
}
