//! Inpainting: repaint the white part of a mask, keep the rest. Mirrors diffusers'
//! StableDiffusionInpaintPipeline (pipelines/stable_diffusion/pipeline_stable_diffusion_inpaint.py)
//! step for step, for both kinds of model it accepts:
//! - dedicated inpainting UNets (`in_channels` 9, e.g. stable-diffusion-inpainting): the UNet
//!   sees [scaled latents, mask, masked-image latents] concatenated on channels;
//! - ordinary UNets (`in_channels` 4): after every step the known region is replaced by the
//!   init image's latents noised to the next timestep,
//!   `latents = (1 - mask) * add_noise(image_latents, noise, t_next) + mask * latents`
//!   (the RePaint-style blend of Lugmayr et al. 2022, without resampling).
//!
//! Mask preprocessing as diffusers' `mask_processor` (VaeImageProcessor with do_binarize and
//! do_convert_grayscale): RGB to PIL's "L" luma, `/ 255`, binarized at 0.5 (>= 0.5: repaint);
//! then `F.interpolate(mask, size=latent_size)` (nearest: latent cell (i, j) takes pixel
//! (8i, 8j)). The masked image is `init * (mask < 0.5)` in [-1, 1] (repainted pixels become 0).
//!
//! Random draws from the one generator, in diffusers' order: the init image's VAE sample (only
//! for 4-channel models or strength < 1), the noise, the masked image's VAE sample, then the
//! sampler's own. At strength 1 the start is pure noise (`noise * init_noise_sigma`), not
//! `add_noise` at the first timestep.

use std::time::Instant;

use ::image::{GrayImage, RgbImage};
use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::guidance;
use crate::image::{image_to_tensor, GenerationParameters};
use crate::pipelines::img2img::Img2ImgRequest;
use crate::pipelines::prompt::repeat_rows;
use crate::pipelines::txt2img::{DenoiseHooks, Progress, Txt2ImgOutput, Txt2ImgRequest};
use crate::pipelines::StableDiffusion;
use crate::rng::TorchGenerator;
use crate::samplers::{Sampler, SamplerKind};

/// An image-to-image request plus the mask of what to repaint.
#[derive(Debug, Clone)]
pub struct InpaintRequest {
    /// Prompt, sampler, steps, seed, init image and strength (as img2img's; strength 1 repaints
    /// the masked region from pure noise).
    pub image: Img2ImgRequest,
    /// Same size as the init image; >= 128 (after any blur) = repaint, < 128 = keep.
    pub mask: GrayImage,
    /// Gaussian blur of the mask in pixels before it is binarized (0 = none); recorded in the
    /// PNG parameters as AUTOMATIC1111's "Mask blur".
    pub mask_blur: f64,
}

impl InpaintRequest {
    /// `base` with its width and height set to the image's, no mask blur.
    pub fn new(base: Txt2ImgRequest, init_image: RgbImage, mask: GrayImage, strength: f64) -> Self {
        Self {
            image: Img2ImgRequest::new(base, init_image, strength),
            mask,
            mask_blur: 0.0,
        }
    }

    /// The AUTOMATIC1111-style record ("Denoising strength", "Mask blur").
    pub fn parameters(&self, model_name: &str) -> GenerationParameters {
        let mut params = self.image.parameters(model_name);
        params
            .extra
            .push(("Mask blur".into(), self.mask_blur.to_string()));
        params
    }

    /// Reject what would fail later or mean something else, with the fix in the message.
    pub fn validate(&self, model: &StableDiffusion) -> Result<()> {
        self.image.validate(model)?;
        let init = &self.image.init_image;
        if self.mask.dimensions() != init.dimensions() {
            return Err(Error::invalid(format!(
                "mask is {}x{} but the init image is {}x{}: the mask must be the same size \
                 (resize or crop it to {}x{})",
                self.mask.width(),
                self.mask.height(),
                init.width(),
                init.height(),
                init.width(),
                init.height()
            )));
        }
        if !(self.mask_blur.is_finite() && self.mask_blur >= 0.0) {
            return Err(Error::invalid(format!(
                "--mask-blur {}: must be 0 (none) or a positive number of pixels",
                self.mask_blur
            )));
        }
        let channels = model.unet_config().in_channels;
        let latent = model.vae.config().latent_channels;
        if channels != latent && channels != 2 * latent + 1 {
            return Err(Error::invalid(format!(
                "this UNet takes {channels} input channels; inpainting needs an ordinary model \
                 ({latent}) or a dedicated inpainting model ({})",
                2 * latent + 1
            )));
        }
        Ok(())
    }
}

/// A mask image as luma, as PIL's `convert("L")` (ITU-R 601-2, fixed point:
/// `(19595 R + 38470 G + 7471 B + 0x8000) >> 16`), so grey and coloured masks binarize as in
/// diffusers.
pub fn mask_luma(img: &RgbImage) -> GrayImage {
    GrayImage::from_fn(img.width(), img.height(), |x, y| {
        let [r, g, b] = img.get_pixel(x, y).0;
        let l = (r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16;
        ::image::Luma([l as u8])
    })
}

/// Gaussian blur of a mask with standard deviation `sigma` pixels, as AUTOMATIC1111's
/// `--mask-blur` (modules/processing.py: `cv2.GaussianBlur` with kernel size
/// `2 * int(2.5 * sigma + 0.5) + 1` and BORDER_REFLECT_101 edges), computed in f64 and
/// rounded; it may differ from OpenCV's fixed-point result by 1 level. diffusers'
/// `mask_processor.blur` (PIL's box-approximated GaussianBlur) is not what is matched.
pub fn blur_mask(mask: &GrayImage, sigma: f64) -> GrayImage {
    if sigma <= 0.0 {
        return mask.clone();
    }
    let radius = (2.5 * sigma + 0.5) as i64;
    let weights: Vec<f64> = (-radius..=radius)
        .map(|d| (-((d * d) as f64) / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let (w, h) = (mask.width() as i64, mask.height() as i64);
    let reflect = |i: i64, n: i64| -> usize {
        if n == 1 {
            return 0;
        }
        let period = 2 * (n - 1);
        let m = i.rem_euclid(period);
        (if m < n { m } else { period - m }) as usize
    };
    let src: Vec<f64> = mask.as_raw().iter().map(|&v| v as f64).collect();
    let mut rows = vec![0f64; src.len()];
    for y in 0..h {
        for x in 0..w {
            let mut acc = 0.0;
            for (k, wt) in weights.iter().enumerate() {
                acc += wt * src[(y * w) as usize + reflect(x + k as i64 - radius, w)];
            }
            rows[(y * w + x) as usize] = acc / total;
        }
    }
    GrayImage::from_fn(w as u32, h as u32, |x, y| {
        let mut acc = 0.0;
        for (k, wt) in weights.iter().enumerate() {
            let yy = reflect(y as i64 + k as i64 - radius, h);
            acc += wt * rows[yy * w as usize + x as usize];
        }
        ::image::Luma([(acc / total).round().clamp(0.0, 255.0) as u8])
    })
}

/// The binarized mask at pixel size (1 x 1 x H x W, 1 = repaint) and at latent size
/// (nearest: every `factor`-th pixel, as `F.interpolate`'s default mode).
fn mask_tensors(mask: &GrayImage, factor: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let (w, h) = (mask.width() as usize, mask.height() as usize);
    let bin = |v: u8| if v as f32 / 255.0 >= 0.5 { 1f32 } else { 0f32 };
    let pixels: Vec<f32> = mask.as_raw().iter().map(|&v| bin(v)).collect();
    let (lw, lh) = (w / factor, h / factor);
    let latent: Vec<f32> = (0..lh * lw)
        .map(|i| pixels[(i / lw) * factor * w + (i % lw) * factor])
        .collect();
    Ok((
        Tensor::from_vec(pixels, (1, 1, h, w), device)?,
        Tensor::from_vec(latent, (1, 1, lh, lw), device)?,
    ))
}

/// What the inpainting loop adds to each step.
enum InpaintHooks {
    /// 9 channels: [scaled latents, mask, masked-image latents], the last two doubled when
    /// guiding.
    Concat { extra: Tensor },
    /// 4 channels: blend the known region back, noised to the next timestep.
    Blend {
        mask: Tensor,
        image_latents: Tensor,
        noise: Tensor,
        last_index: usize,
        dtype: DType,
    },
}

impl DenoiseHooks for InpaintHooks {
    fn model_input(&mut self, scaled: Tensor) -> Result<Tensor> {
        match self {
            Self::Concat { extra } => Ok(Tensor::cat(&[&scaled, &*extra], 1)?),
            Self::Blend { .. } => Ok(scaled),
        }
    }

    fn after_step(
        &mut self,
        latents: Tensor,
        step_index: usize,
        sampler: &dyn Sampler,
    ) -> Result<Tensor> {
        let Self::Blend {
            mask,
            image_latents,
            noise,
            last_index,
            dtype,
        } = self
        else {
            return Ok(latents);
        };
        // diffusers: `if i < len(timesteps) - 1: add_noise(image_latents, noise, timesteps[i + 1])`.
        let known = if step_index < *last_index {
            sampler.add_noise(image_latents, noise, step_index + 1)?
        } else {
            image_latents.clone()
        }
        .to_dtype(*dtype)?;
        let keep = (1.0 - &*mask)?;
        Ok((keep.broadcast_mul(&known)? + mask.broadcast_mul(&latents)?)?)
    }
}

impl StableDiffusion {
    /// Run inpainting and decode the result. `evaluations` in the output counts the model
    /// evaluations actually made.
    pub fn inpaint(&self, req: &InpaintRequest, progress: Progress) -> Result<Txt2ImgOutput> {
        req.validate(self)?;
        self.require_loaded()?;
        let img = &req.image;
        let base = &img.base;
        let start = Instant::now();
        let mut sampler = base.sampler(&self.scheduler_config)?;
        let do_cfg = guidance::guidance_enabled(base.cfg_scale);
        let context = self.conditioning_schedule(base)?;

        // get_timesteps, as img2img (Heun's doubled timesteps start on an even index).
        let order = if base.sampler == SamplerKind::Heun {
            2
        } else {
            1
        };
        let first_index = (base.steps - img.steps_run()) * order;
        let strength_max = img.strength == 1.0;
        let nine_channels = self.unet_config().in_channels != self.vae.config().latent_channels;

        let factor = self.vae_scale_factor();
        let mask = blur_mask(&req.mask, req.mask_blur);
        let (pixel_mask, latent_mask) = mask_tensors(&mask, factor, &self.device)?;
        let pixels = image_to_tensor(&img.init_image, &self.device)?;

        // prepare_latents: image latents (4 channels, or strength < 1), then the noise.
        let mut rng = TorchGenerator::new(base.seed);
        let image_latents = if !nine_channels || !strength_max {
            let posterior = self.vae.encode(&pixels.to_dtype(self.dtype)?)?;
            let z = self.scale_vae_latents(&posterior.sample(&mut rng)?)?;
            Some(repeat_rows(&z, base.batch_size)?.to_dtype(DType::F32)?)
        } else {
            None
        };
        let shape = [
            base.batch_size,
            self.vae.config().latent_channels,
            base.height / factor,
            base.width / factor,
        ];
        let noise = rng.randn_tensor(&shape, &self.device)?;
        let latents = match (&image_latents, strength_max) {
            (Some(image_latents), false) => {
                sampler.add_noise(image_latents, &noise, first_index)?
            }
            _ => (&noise * sampler.init_noise_sigma())?,
        }
        .to_dtype(self.dtype)?;

        // prepare_mask_latents: the masked image's VAE sample (drawn for both kinds of model).
        let masked_pixels = pixels.broadcast_mul(&(1.0 - &pixel_mask)?)?;
        let posterior = self.vae.encode(&masked_pixels.to_dtype(self.dtype)?)?;
        let masked_latents = self.scale_vae_latents(&posterior.sample(&mut rng)?)?;
        let masked_latents = repeat_rows(&masked_latents, base.batch_size)?.to_dtype(self.dtype)?;
        let latent_mask = repeat_rows(&latent_mask, base.batch_size)?.to_dtype(self.dtype)?;

        let last_index = sampler.timesteps().len() - 1;
        let mut hooks = match image_latents {
            Some(image_latents) if !nine_channels => InpaintHooks::Blend {
                mask: latent_mask,
                image_latents,
                noise,
                last_index,
                dtype: self.dtype,
            },
            _ => {
                let extra = Tensor::cat(&[&latent_mask, &masked_latents], 1)?;
                let extra = if do_cfg {
                    Tensor::cat(&[&extra, &extra], 0)?
                } else {
                    extra
                };
                InpaintHooks::Concat { extra }
            }
        };

        let evaluations = sampler.timesteps().len() - first_index;
        let latents = self.denoise_with(
            sampler.as_mut(),
            latents,
            &context,
            (base.cfg_scale, base.guidance_rescale),
            first_index,
            &mut rng,
            progress,
            &mut hooks,
        )?;

        let sampling_time = start.elapsed();
        let decode_start = Instant::now();
        let decoded = self.decode_latents(&latents)?;
        Ok(Txt2ImgOutput {
            decoded,
            latents,
            evaluations,
            sampling_time,
            decode_time: decode_start.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_follows_pil() {
        let img = RgbImage::from_fn(3, 1, |x, _| {
            ::image::Rgb([[100, 200, 150], [200, 100, 50], [255, 255, 255]][x as usize])
        });
        // PIL: Image.new("RGB", ...).convert("L") gives 164, 124, 255.
        assert_eq!(mask_luma(&img).as_raw(), &vec![164, 124, 255]);
    }

    #[test]
    fn blur_spreads_an_edge_symmetrically_and_keeps_flat_areas() {
        let mask = GrayImage::from_fn(16, 4, |x, _| ::image::Luma([if x < 8 { 0 } else { 255 }]));
        let blurred = blur_mask(&mask, 2.0);
        let row: Vec<u8> = (0..16).map(|x| blurred.get_pixel(x, 1).0[0]).collect();
        assert_eq!(row[0], 0);
        assert_eq!(row[15], 255);
        assert!(
            row[7] > 0 && row[7] < 128 && row[8] > 128 && row[8] < 255,
            "{row:?}"
        );
        assert_eq!(row[7] as u32 + row[8] as u32, 255, "{row:?}");
        assert_eq!(blur_mask(&mask, 0.0), mask);
    }

    #[test]
    fn latent_mask_takes_every_eighth_pixel_after_binarizing() {
        let mask = GrayImage::from_fn(16, 8, |x, y| {
            ::image::Luma([if x == 8 && y == 0 { 128 } else { 127 }])
        });
        let (pixel, latent) = mask_tensors(&mask, 8, &Device::Cpu).unwrap();
        assert_eq!(pixel.sum_all().unwrap().to_scalar::<f32>().unwrap(), 1.0);
        let latent: Vec<f32> = latent.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(latent, vec![0.0, 1.0]);
    }
}
