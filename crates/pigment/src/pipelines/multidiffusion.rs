//! MultiDiffusion panoramas (Bar-Tal et al. 2023, "MultiDiffusion: Fusing Diffusion Paths for
//! Controlled Image Generation"): at every step the latent canvas is cut into overlapping windows
//! the model was trained on, each window is denoised with classifier-free guidance and stepped by
//! its own sampler, and the stepped windows are averaged where they overlap (the paper's eq. 5,
//! whose closed-form solution for plain crops is the per-cell mean).
//!
//! Mirrors diffusers' StableDiffusionPanoramaPipeline
//! (diffusers/pipelines/deprecated/stable_diffusion_panorama/pipeline_stable_diffusion_panorama.py):
//! one noise draw for the whole canvas as txt2img; views grouped `view_batch_size` at a time into
//! one UNet call; one scheduler state per view batch (`views_scheduler_status`), so multistep
//! samplers (DPM++ 2M) keep each window's own history and Heun its own half-step, and samplers
//! that draw noise draw it per view batch in diffusers' order.
//!
//! Where Pigment deliberately differs:
//! - Window and stride are in latent cells and the canvas is divided by the model's own VAE factor
//!   (diffusers' `get_views` divides by a hard-coded 8, and its `__call__` always uses window 64 and
//!   stride 8). With factor-8 VAEs and the same window and stride the views are identical.
//! - When the stride does not divide (canvas - window), diffusers leaves the last cells of a row or
//!   column outside every view; they come out as zeros (a blank strip). Pigment adds one more view
//!   flush with that edge, so every cell is covered. Where the stride divides, views are the same.
//! - A window larger than the canvas is refused (diffusers silently crops it).
//! - With several images per prompt, diffusers interleaves the doubled view batch
//!   (`repeat_interleave`) against non-interleaved prompt embeddings, pairing images with the wrong
//!   half of the guidance; Pigment pairs each image with its own [uncond; cond] rows.
//! - Circular padding (diffusers' `circular_padding`, a horizontally seamless 360-degree
//!   panorama) wraps views past the right edge as diffusers does and decodes with 8 latent
//!   columns wrapped onto each side (`decode_latents_with_padding`); diffusers' accumulation of a
//!   wrapped view indexes the view by canvas rows, which works only for a single row of windows,
//!   and Pigment wraps views in any row.
//!
//! Region prompts (the paper's section 4.2, "region-based text-to-image" with tight masks, eq. 5
//! with binary masks W_i): each [`RegionPrompt`] is denoised in every window its box touches,
//! with its own prompt and its own samplers, and enters the per-cell weighted mean only inside
//! its box; the main prompt covers the whole canvas (the paper's background). diffusers' core
//! has no region pipeline to compare with; the paper's bootstrapping phase is not implemented.

use std::time::Instant;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::guidance;
use crate::image::GenerationParameters;
use crate::pipelines::conditioning::ScheduledConditioning;
use crate::pipelines::prompt::repeat_rows;
use crate::pipelines::{Progress, StableDiffusion, Txt2ImgOutput, Txt2ImgRequest};
use crate::rng::TorchGenerator;
use crate::samplers::{build_sampler, Sampler, SamplerOptions};

/// A text-to-image request on a canvas larger than the model's window.
#[derive(Debug, Clone)]
pub struct PanoramaRequest {
    /// Prompt, sampler, seed and the full canvas size in pixels.
    pub base: Txt2ImgRequest,
    /// Side of the square window in latent cells (diffusers' `window_size`, 64 for SD 1.x).
    pub window: usize,
    /// Step between neighbouring windows in latent cells (diffusers' `stride`, 8).
    pub stride: usize,
    /// Windows denoised in one UNet call (diffusers' `view_batch_size`).
    pub view_batch_size: usize,
    /// Extra prompts, each over a box of the canvas (empty: a plain panorama).
    pub regions: Vec<RegionPrompt>,
    /// Wrap windows around the left/right edges: a seamless 360-degree panorama (diffusers'
    /// `circular_padding`).
    pub circular: bool,
}

/// A prompt that applies inside a box of the canvas, in pixels (multiples of the VAE factor).
#[derive(Debug, Clone, PartialEq)]
pub struct RegionPrompt {
    pub prompt: String,
    pub left: usize,
    pub top: usize,
    pub width: usize,
    pub height: usize,
}

impl RegionPrompt {
    /// The box in latent cells, checked against a `width` x `height` pixel canvas.
    fn cells(&self, factor: usize, width: usize, height: usize) -> Result<View> {
        let fields = [
            ("left", self.left),
            ("top", self.top),
            ("width", self.width),
            ("height", self.height),
        ];
        if let Some((name, value)) = fields.iter().find(|(_, v)| v % factor != 0) {
            return Err(Error::invalid(format!(
                "region `{}`: {name} {value} is not a multiple of {factor} (the VAE's scale factor)",
                self.prompt
            )));
        }
        if self.width == 0
            || self.height == 0
            || self.left + self.width > width
            || self.top + self.height > height
        {
            return Err(Error::invalid(format!(
                "region `{}`: the box {}x{} at ({}, {}) must be non-empty and inside the {width}x{height} canvas",
                self.prompt, self.width, self.height, self.left, self.top
            )));
        }
        Ok(View {
            top: self.top / factor,
            left: self.left / factor,
            height: self.height / factor,
            width: self.width / factor,
        })
    }
}

impl PanoramaRequest {
    /// diffusers' defaults for a request: window = the UNet's native latent size, stride = 1/8 of
    /// it (64 and 8 for SD 1.x), one view per UNet call.
    pub fn new(base: Txt2ImgRequest, model: &StableDiffusion) -> Self {
        let window = model.unet_config().sample_size.max(1);
        Self {
            base,
            window,
            stride: (window / 8).max(1),
            view_batch_size: 1,
            regions: Vec::new(),
            circular: false,
        }
    }

    /// The PNG record: txt2img's plus the MultiDiffusion window and stride.
    pub fn parameters(&self, model_name: &str) -> GenerationParameters {
        let mut params = self.base.parameters(model_name);
        params.extra.push((
            "MultiDiffusion".into(),
            format!(
                "window {}, stride {}{}",
                self.window,
                self.stride,
                if self.circular { ", circular" } else { "" }
            ),
        ));
        params
    }

    /// Reject what would fail later or leave cells undenoised, with the fix in the message.
    pub fn validate(&self, model: &StableDiffusion) -> Result<()> {
        self.base.validate(model)?;
        let factor = model.vae_scale_factor();
        views_with(
            self.base.height / factor,
            self.base.width / factor,
            self.window,
            self.stride,
            self.circular,
        )?;
        for region in &self.regions {
            region.cells(factor, self.base.width, self.base.height)?;
        }
        if self.view_batch_size == 0 {
            return Err(Error::invalid(
                "view batch size 0: at least one window per UNet call is needed (1 is diffusers' default)",
            ));
        }
        Ok(())
    }
}

/// One window on the latent canvas, in latent cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// Start offsets of windows of `window` cells, `stride` apart, along an axis of `len` cells
/// (diffusers' `(len - window) // stride + 1` blocks), plus one flush with the far edge when the
/// stride leaves the last cells uncovered.
fn starts(len: usize, window: usize, stride: usize) -> Vec<usize> {
    let mut out: Vec<usize> = (0..=(len - window) / stride).map(|k| k * stride).collect();
    if out.last().is_some_and(|&s| s + window < len) {
        out.push(len - window);
    }
    out
}

/// The windows covering a `height` x `width` latent canvas, row by row as diffusers' `get_views`
/// lists them (its mappings F_i, eq. 7 of the paper). Every cell is covered by at least one.
pub fn views(height: usize, width: usize, window: usize, stride: usize) -> Result<Vec<View>> {
    views_with(height, width, window, stride, false)
}

/// [`views`], or with `circular` diffusers' wrapping columns: `width // stride` windows (one if
/// the canvas is no wider than the window), the last ones running past the right edge onto the
/// left.
pub fn views_with(
    height: usize,
    width: usize,
    window: usize,
    stride: usize,
    circular: bool,
) -> Result<Vec<View>> {
    if window == 0 {
        return Err(Error::invalid(
            "--window 0: the window must be at least one latent cell (the model's native latent size, e.g. 64 for SD 1.x, is best)",
        ));
    }
    if window > height || window > width {
        return Err(Error::invalid(format!(
            "--window {window}: larger than the {height}x{width}-cell latent canvas; use a window of at most {} cells or a larger --width/--height",
            height.min(width)
        )));
    }
    if stride == 0 || stride > window {
        return Err(Error::invalid(format!(
            "--stride {stride}: must be between 1 and the window ({window}) so that windows overlap or touch; {} (window / 8) is diffusers' default",
            (window / 8).max(1)
        )));
    }
    let rows = starts(height, window, stride);
    let cols = if circular && width > window {
        (0..width / stride).map(|k| k * stride).collect()
    } else {
        starts(width, window, stride)
    };
    Ok(rows
        .iter()
        .flat_map(|&top| {
            cols.iter().map(move |&left| View {
                top,
                left,
                height: window,
                width: window,
            })
        })
        .collect())
}

/// The canvas columns of `view` as (start, len) spans: one, or two when it wraps past the right
/// edge of a `width`-cell canvas (circular panoramas).
fn spans(view: &View, width: usize) -> Vec<(usize, usize)> {
    if view.left + view.width <= width {
        vec![(view.left, view.width)]
    } else {
        let first = width - view.left;
        vec![(view.left, first), (0, view.width - first)]
    }
}

/// `t` ([B, C, h, w], the content of `view`) placed on a zero canvas of `height` x `width` cells.
fn place(t: &Tensor, view: &View, height: usize, width: usize) -> Result<Tensor> {
    let mut offset = 0;
    let mut out: Option<Tensor> = None;
    for (start, len) in spans(view, width) {
        let part = t
            .narrow(3, offset, len)?
            .pad_with_zeros(2, view.top, height - view.top - view.height)?
            .pad_with_zeros(3, start, width - start - len)?;
        offset += len;
        out = Some(match out {
            Some(o) => (o + part)?,
            None => part,
        });
    }
    out.ok_or_else(|| Error::invalid("an empty MultiDiffusion view"))
}

/// The latents under `view`, wrapping past the right edge as diffusers' circular padding does.
fn crop(latents: &Tensor, view: &View) -> Result<Tensor> {
    let rows = latents.narrow(2, view.top, view.height)?;
    let parts = spans(view, latents.dim(3)?)
        .into_iter()
        .map(|(start, len)| rows.narrow(3, start, len))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 3)?)
}

/// Whether `view` (possibly wrapping) touches the region box `b`.
fn overlaps(view: &View, b: &View, width: usize) -> bool {
    view.top < b.top + b.height
        && b.top < view.top + view.height
        && spans(view, width)
            .iter()
            .any(|&(start, len)| start < b.left + b.width && b.left < start + len)
}

/// One UNet call per step: a batch of windows under one prompt, with its own sampler state.
struct Job {
    views: Vec<View>,
    context: ScheduledConditioning,
    sampler: Box<dyn Sampler>,
    /// The region's binary mask on the canvas ([1, 1, H, W]); None for the main prompt.
    mask: Option<Tensor>,
}

impl StableDiffusion {
    /// Generate a panorama (or any canvas larger than the model's window) with MultiDiffusion.
    pub fn panorama(&self, req: &PanoramaRequest, progress: Progress) -> Result<Txt2ImgOutput> {
        req.validate(self)?;
        self.require_loaded()?;
        let base = &req.base;
        let start = Instant::now();
        let factor = self.vae_scale_factor();
        let (height, width) = (base.height / factor, base.width / factor);
        let views = views_with(height, width, req.window, req.stride, req.circular)?;
        let options = SamplerOptions {
            steps: base.steps,
            karras: base.karras,
            eta: base.eta,
            ..SamplerOptions::default()
        };
        let do_cfg = guidance::guidance_enabled(base.cfg_scale);
        let batch = base.batch_size;
        let encode = |text: &str| {
            self.encode_prompt_schedule(text, base.prompt_syntax, base.steps, base.clip_skip)
        };
        let uncond = if do_cfg {
            Some(encode(&base.negative_prompt)?)
        } else {
            None
        };
        // Conditioning for `rows` window crops: [uncond x rows; cond x rows] when guiding, for
        // every step.
        let context_for = |cond: &[(usize, Tensor)], rows: usize| {
            self.pair_schedules(
                cond,
                uncond.as_deref(),
                base.prompt_syntax,
                base.clip_skip,
                &|c, u| {
                    let c = repeat_rows(c, rows)?;
                    match u {
                        Some(u) => Ok(Tensor::cat(&[repeat_rows(u, rows)?, c], 0)?),
                        None => Ok(c),
                    }
                },
            )
        };
        // The main prompt over every window, then each region over the windows its box touches;
        // one sampler per view batch (diffusers' `views_scheduler_status`).
        let mut prompts = vec![(base.prompt.as_str(), None)];
        for region in &req.regions {
            let cells = region.cells(factor, base.width, base.height)?;
            prompts.push((region.prompt.as_str(), Some(cells)));
        }
        let mut jobs = Vec::new();
        for (prompt, cells) in prompts {
            let cond = encode(prompt)?;
            let mask = match cells {
                Some(c) => {
                    let ones = Tensor::ones((1, 1, c.height, c.width), self.dtype, &self.device)?;
                    Some(place(&ones, &c, height, width)?)
                }
                None => None,
            };
            let touched: Vec<View> = views
                .iter()
                .filter(|v| cells.is_none_or(|c| overlaps(v, &c, width)))
                .copied()
                .collect();
            for chunk in touched.chunks(req.view_batch_size) {
                jobs.push(Job {
                    views: chunk.to_vec(),
                    context: context_for(&cond, chunk.len() * batch)?,
                    sampler: build_sampler(base.sampler, &self.scheduler_config, &options)?,
                    mask: mask.clone(),
                });
            }
        }

        let shape = [batch, self.vae.config().latent_channels, height, width];
        let mut rng = TorchGenerator::new(base.seed);
        let noise = rng.randn_tensor(&shape, &self.device)?;
        let mut latents = (noise * jobs[0].sampler.init_noise_sigma())?.to_dtype(self.dtype)?;

        // The per-cell weight of eq. 5: how many windows (times their region masks) cover it.
        let ones = Tensor::ones(
            (batch, shape[1], req.window, req.window),
            self.dtype,
            &self.device,
        )?;
        let mut count = Tensor::zeros(&shape, self.dtype, &self.device)?;
        for job in &jobs {
            for view in &job.views {
                let placed = place(&ones, view, height, width)?;
                count = match &job.mask {
                    Some(m) => (count + placed.broadcast_mul(m)?)?,
                    None => (count + placed)?,
                };
            }
        }

        let timesteps = jobs[0].sampler.timesteps().to_vec();
        let total = timesteps.len();
        for (i, &t) in timesteps.iter().enumerate() {
            let mut value = Tensor::zeros(&shape, self.dtype, &self.device)?;
            for job in &mut jobs {
                let crops = job
                    .views
                    .iter()
                    .map(|v| crop(&latents, v))
                    .collect::<Result<Vec<_>>>()?;
                let x = Tensor::cat(&crops, 0)?;
                let model_input = if do_cfg {
                    Tensor::cat(&[&x, &x], 0)?
                } else {
                    x.clone()
                };
                let model_input = job.sampler.scale_model_input(&model_input, i)?;
                let prediction = self.unet_forward(&model_input, t, job.context.at_step(i))?;
                let prediction = if do_cfg {
                    guidance::combine_rescaled(&prediction, base.cfg_scale, base.guidance_rescale)?
                } else {
                    prediction
                };
                let stepped = job.sampler.step(&prediction, i, &x, &mut rng)?;
                for (k, view) in job.views.iter().enumerate() {
                    let placed = place(&stepped.narrow(0, k * batch, batch)?, view, height, width)?;
                    value = match &job.mask {
                        Some(m) => (value + placed.broadcast_mul(m)?)?,
                        None => (value + placed)?,
                    };
                }
            }
            latents = (value / &count)?;
            progress(i + 1, total);
        }

        let sampling_time = start.elapsed();
        let decode_start = Instant::now();
        let decoded = if req.circular {
            // diffusers' decode_latents_with_padding: wrap 8 latent columns onto each side so
            // that the decoder sees the seam from both sides, then cut them off.
            let pad = width.min(8);
            let padded = Tensor::cat(
                &[
                    &latents.narrow(3, width - pad, pad)?,
                    &latents,
                    &latents.narrow(3, 0, pad)?,
                ],
                3,
            )?;
            self.decode_latents(&padded)?
                .narrow(3, pad * factor, width * factor)?
        } else {
            self.decode_latents(&latents)?
        };
        Ok(Txt2ImgOutput {
            decoded,
            latents: latents.to_dtype(DType::F32)?,
            evaluations: total * jobs.len(),
            sampling_time,
            decode_time: decode_start.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts_of(v: &[View]) -> Vec<(usize, usize)> {
        v.iter().map(|v| (v.top, v.left)).collect()
    }

    #[test]
    fn views_match_diffusers_get_views_when_the_stride_divides() {
        // get_views(64, 192, window_size=8, stride=4): one row, (24 - 8) / 4 + 1 = 5 columns.
        let v = views(8, 24, 8, 4).unwrap();
        assert_eq!(
            starts_of(&v),
            vec![(0, 0), (0, 4), (0, 8), (0, 12), (0, 16)]
        );
        // get_views(128, 128, 8, 4): 3 x 3, row by row.
        let v = views(16, 16, 8, 4).unwrap();
        assert_eq!(v.len(), 9);
        assert_eq!(
            v[1],
            View {
                top: 0,
                left: 4,
                height: 8,
                width: 8
            }
        );
        assert_eq!(
            v[3],
            View {
                top: 4,
                left: 0,
                height: 8,
                width: 8
            }
        );
    }

    #[test]
    fn a_stride_that_does_not_divide_gets_a_view_flush_with_the_edge() {
        let v = views(8, 23, 8, 4).unwrap();
        assert_eq!(
            starts_of(&v),
            vec![(0, 0), (0, 4), (0, 8), (0, 12), (0, 15)]
        );
        let v = views(8, 8, 8, 3).unwrap();
        assert_eq!(starts_of(&v), vec![(0, 0)]);
    }

    #[test]
    fn circular_views_wrap_and_crop_place_round_trip() {
        // get_views(64, 192, 8, 4, circular_padding=True): 24 // 4 = 6 columns.
        let v = views_with(8, 24, 8, 4, true).unwrap();
        let lefts: Vec<usize> = v.iter().map(|v| v.left).collect();
        assert_eq!(lefts, vec![0, 4, 8, 12, 16, 20]);
        assert_eq!(spans(&v[5], 24), vec![(20, 4), (0, 4)]);
        let canvas = Tensor::arange(0f32, 24.0, &candle_core::Device::Cpu)
            .unwrap()
            .reshape((1, 1, 1, 24))
            .unwrap()
            .repeat((1, 1, 8, 1))
            .unwrap();
        let c = crop(&canvas, &v[5]).unwrap();
        let row: Vec<f32> = c
            .narrow(2, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(row, vec![20., 21., 22., 23., 0., 1., 2., 3.]);
        let back = place(&c, &v[5], 8, 24).unwrap();
        let row: Vec<f32> = back
            .narrow(2, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want: Vec<f32> = (0..24)
            .map(|i| if !(4..20).contains(&i) { i as f32 } else { 0.0 })
            .collect();
        assert_eq!(row, want);
        let region = View {
            top: 0,
            left: 1,
            height: 2,
            width: 2,
        };
        assert!(overlaps(&v[5], &region, 24) && !overlaps(&v[2], &region, 24));
    }

    #[test]
    fn bad_windows_and_strides_are_refused_with_the_fix() {
        let e = views(8, 24, 16, 4).unwrap_err().to_string();
        assert!(e.contains("--window 16") && e.contains("at most 8"), "{e}");
        let e = views(8, 24, 8, 0).unwrap_err().to_string();
        assert!(e.contains("--stride 0"), "{e}");
        let e = views(8, 24, 8, 9).unwrap_err().to_string();
        assert!(
            e.contains("--stride 9") && e.contains("between 1 and the window"),
            "{e}"
        );
        assert!(views(8, 24, 0, 1).is_err());
    }
}
