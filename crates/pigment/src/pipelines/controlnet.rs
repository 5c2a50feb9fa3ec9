//! ControlNet sampling (Zhang et al. 2023) as diffusers' StableDiffusionControlNetPipeline
//! (pipelines/controlnet/pipeline_controlnet.py) runs it, with several ControlNets summed as
//! `MultiControlNetModel` does (models/controlnets/multicontrolnet.py). The ControlNets enter the
//! shared denoising loop through `DenoiseHooks::unet_residuals`; nothing else of txt2img changes.

use std::sync::Arc;

use ::image::RgbImage;
use candle_core::{Device, Tensor};

use crate::control::ControlNetModel;
use crate::error::{Error, Result};
use crate::guidance;
use crate::pipelines::prompt::repeat_rows;
use crate::pipelines::txt2img::{DenoiseHooks, Progress, Txt2ImgOutput, Txt2ImgRequest};
use crate::pipelines::{Img2ImgRequest, StableDiffusion};

/// One ControlNet with its control image and schedule.
#[derive(Clone)]
pub struct ControlNetUnit {
    pub model: Arc<ControlNetModel>,
    /// The control image, `[1, channels, height, width]` in [0, 1] (see
    /// [`control_image_tensor`]); it must have the output's size.
    pub image: Tensor,
    /// `controlnet_conditioning_scale`: every residual is multiplied by it.
    pub scale: f64,
    /// `control_guidance_start` / `_end`: the fraction of the model evaluations during which
    /// this ControlNet acts, 0 <= start < end <= 1.
    pub start: f64,
    pub end: f64,
}

/// ControlNets for a txt2img run.
#[derive(Clone, Default)]
pub struct ControlNetRequest {
    pub units: Vec<ControlNetUnit>,
    /// diffusers' `guess_mode`: the ControlNets see the conditional half only (the unconditional
    /// half gets no residuals) and their residuals are weighted 0.1 .. 1 from shallow to deep.
    /// Always on for `global_pool_conditions` ControlNets, as in diffusers.
    pub guess_mode: bool,
}

/// An RGB image as a control image tensor `[1, 3, H, W]`, each value `byte / 255` in f32, as
/// diffusers' `control_image_processor.preprocess` (VaeImageProcessor without normalisation)
/// makes it.
pub fn control_image_tensor(img: &RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let data: Vec<f32> = img.as_raw().iter().map(|&v| v as f32 / 255.0).collect();
    Ok(Tensor::from_vec(data, (1, h, w, 3), device)?
        .permute((0, 3, 1, 2))?
        .contiguous()?)
}

/// diffusers' `controlnet_keep[i]`: 1 while evaluation `i` of `n` lies in [start, end], else 0
/// (`1.0 - float(i / n < start or (i + 1) / n > end)`).
pub fn controlnet_keep(i: usize, n: usize, start: f64, end: f64) -> f64 {
    let (i, n) = (i as f64, n as f64);
    if i / n < start || (i + 1.0) / n > end {
        0.0
    } else {
        1.0
    }
}

impl ControlNetRequest {
    /// Reject units that cannot run with `model` at `req`'s size, naming the fix.
    pub fn validate(&self, model: &StableDiffusion, req: &Txt2ImgRequest) -> Result<()> {
        let unet = model.unet_config();
        for (k, unit) in self.units.iter().enumerate() {
            let cfg = unit.model.config();
            if !(0.0..=1.0).contains(&unit.start) || !(0.0..=1.0).contains(&unit.end) {
                return Err(Error::invalid(format!(
                    "ControlNet {k}: start {} / end {} must lie in [0, 1] (fractions of the steps)",
                    unit.start, unit.end
                )));
            }
            if unit.start >= unit.end {
                return Err(Error::invalid(format!(
                    "ControlNet {k}: start {} must be below end {}; e.g. --control-start 0 \
                     --control-end 1 acts on every step",
                    unit.start, unit.end
                )));
            }
            if !unit.scale.is_finite() {
                return Err(Error::invalid(format!(
                    "ControlNet {k}: the scale must be a finite number"
                )));
            }
            let unet_cross = unet.cross_attention_dim.get(0);
            if cfg.cross_attention_dim != unet_cross {
                return Err(Error::invalid(format!(
                    "ControlNet {k} takes text embeddings of width {} (cross_attention_dim) but \
                     the model's UNet takes {unet_cross}: use a ControlNet made for this model \
                     family (SD1.x: 768, SD2.x: 1024)",
                    cfg.cross_attention_dim
                )));
            }
            if cfg.block_out_channels != unet.block_out_channels
                || cfg.in_channels != model.vae.config().latent_channels
                || cfg.layers_per_block != unet.layers_per_block.get(0)
            {
                return Err(Error::invalid(format!(
                    "ControlNet {k} (block_out_channels {:?}, in_channels {}, layers_per_block \
                     {}) does not fit the model's UNet (block_out_channels {:?}, {} latent \
                     channels, layers_per_block {:?}): use a ControlNet made for this model",
                    cfg.block_out_channels,
                    cfg.in_channels,
                    cfg.layers_per_block,
                    unet.block_out_channels,
                    model.vae.config().latent_channels,
                    unet.layers_per_block
                )));
            }
            if unit.model.control_scale_factor() != model.vae_scale_factor() {
                return Err(Error::invalid(format!(
                    "ControlNet {k} reduces its control image {} times but the VAE {} times: it \
                     does not fit this model",
                    unit.model.control_scale_factor(),
                    model.vae_scale_factor()
                )));
            }
            let dims = unit.image.dims();
            let expected = [1, cfg.conditioning_channels, req.height, req.width];
            if dims.len() != 4 || dims[2] != req.height || dims[3] != req.width {
                let (h, w) = (
                    dims.get(2).copied().unwrap_or(0),
                    dims.get(3).copied().unwrap_or(0),
                );
                return Err(Error::invalid(format!(
                    "control image {k} is {w}x{h} but the output is {}x{}: resize the control \
                     image to {}x{}, or pass --width {w} --height {h}",
                    req.width, req.height, req.width, req.height
                )));
            }
            if dims != expected {
                return Err(Error::invalid(format!(
                    "control image {k} has shape {dims:?}; ControlNet {k} takes {expected:?} \
                     ({} channels)",
                    cfg.conditioning_channels
                )));
            }
        }
        Ok(())
    }

    fn guess_mode(&self) -> bool {
        self.guess_mode
            || self
                .units
                .first()
                .is_some_and(|u| u.model.config().global_pool_conditions)
    }
}

impl StableDiffusion {
    /// Text to image under ControlNet guidance: diffusers' StableDiffusionControlNetPipeline with
    /// one ControlNet, or with several (MultiControlNet: residuals summed).
    pub fn txt2img_controlnet(
        &self,
        req: &Txt2ImgRequest,
        control: &ControlNetRequest,
        progress: Progress,
    ) -> Result<Txt2ImgOutput> {
        req.validate(self)?;
        self.require_loaded()?;
        let mut hooks = self.control_hooks(req, control)?;
        self.txt2img_with(req, progress, &mut hooks)
    }

    /// Image to image (SDEdit) under ControlNet guidance: diffusers'
    /// StableDiffusionControlNetImg2ImgPipeline; start/end count over the steps actually run.
    pub fn img2img_controlnet(
        &self,
        req: &Img2ImgRequest,
        control: &ControlNetRequest,
        progress: Progress,
    ) -> Result<Txt2ImgOutput> {
        req.validate(self)?;
        self.require_loaded()?;
        let mut hooks = self.control_hooks(&req.base, control)?;
        self.img2img_with(req, progress, &mut hooks)
    }

    /// Checks `control` against the model and request, and prepares the control images as
    /// diffusers' `prepare_image` does.
    fn control_hooks(
        &self,
        req: &Txt2ImgRequest,
        control: &ControlNetRequest,
    ) -> Result<ControlHooks> {
        control.validate(self, req)?;
        let do_cfg = guidance::guidance_enabled(req.cfg_scale);
        let guess_mode = control.guess_mode();
        let mut units = Vec::with_capacity(control.units.len());
        for unit in &control.units {
            // prepare_image: repeated per image, doubled for [uncond; cond] unless guess mode
            // runs the ControlNet on the conditional half only.
            let image = repeat_rows(&unit.image.to_device(&self.device)?, req.batch_size)?;
            let image = if do_cfg && !guess_mode {
                Tensor::cat(&[&image, &image], 0)?
            } else {
                image
            };
            units.push(PreparedUnit {
                unit: unit.clone(),
                image,
            });
        }
        let factor = self.vae_scale_factor();
        Ok(ControlHooks {
            units,
            skip_shapes: self.unet.down_residual_shapes(
                req.batch_size,
                req.height / factor,
                req.width / factor,
            ),
            guess_mode,
            do_cfg,
        })
    }
}

struct PreparedUnit {
    unit: ControlNetUnit,
    image: Tensor,
}

struct ControlHooks {
    units: Vec<PreparedUnit>,
    /// The UNet's skip tensor shapes (only the spatial sizes are used: pooled residuals are
    /// broadcast to them).
    skip_shapes: Vec<[usize; 4]>,
    guess_mode: bool,
    do_cfg: bool,
}

impl DenoiseHooks for ControlHooks {
    fn unet_residuals(
        &mut self,
        step: usize,
        steps: usize,
        t: f64,
        scaled: &Tensor,
        context: &Tensor,
    ) -> Result<Option<(Vec<Tensor>, Tensor)>> {
        let cond_only = self.guess_mode && self.do_cfg;
        let (input, ctx) = if cond_only {
            let half = scaled.dim(0)? / 2;
            (
                scaled.narrow(0, half, half)?,
                context.narrow(0, half, half)?,
            )
        } else {
            (scaled.clone(), context.clone())
        };
        let mut sum: Option<(Vec<Tensor>, Tensor)> = None;
        for p in &self.units {
            let u = &p.unit;
            let scale = u.scale * controlnet_keep(step, steps, u.start, u.end);
            if scale == 0.0 {
                // diffusers still runs it and adds zeros; x + 0 is x, so skip the work.
                continue;
            }
            let out = u
                .model
                .forward(&input, t, &ctx, &p.image, scale, self.guess_mode)?;
            sum = Some(match sum {
                None => (out.down, out.mid),
                Some((down, mid)) => (
                    down.iter()
                        .zip(&out.down)
                        .map(|(a, b)| a.broadcast_add(b))
                        .collect::<candle_core::Result<_>>()?,
                    mid.broadcast_add(&out.mid)?,
                ),
            });
        }
        let Some((down, mid)) = sum else {
            return Ok(None);
        };
        // global_pool_conditions gives [B, C, 1, 1] residuals; the UNet adds them broadcast.
        let full = |r: &Tensor, shape: &[usize; 4]| -> Result<Tensor> {
            let (b, c, _, _) = r.dims4()?;
            if r.dims()[2..] == shape[2..] {
                return Ok(r.clone());
            }
            Ok(r.broadcast_as((b, c, shape[2], shape[3]))?.contiguous()?)
        };
        let mut down: Vec<Tensor> = down
            .iter()
            .zip(&self.skip_shapes)
            .map(|(r, shape)| full(r, shape))
            .collect::<Result<_>>()?;
        let mid_shape = self.skip_shapes.last().copied().unwrap_or_default();
        let mut mid = full(&mid, &mid_shape)?;
        if cond_only {
            // Inferred on the conditional half only: zeros for the unconditional half.
            down = down
                .iter()
                .map(|d| Ok(Tensor::cat(&[&d.zeros_like()?, d], 0)?))
                .collect::<Result<_>>()?;
            mid = Tensor::cat(&[&mid.zeros_like()?, &mid], 0)?;
        }
        Ok(Some((down, mid)))
    }
}
