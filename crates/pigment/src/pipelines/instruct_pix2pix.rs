//! InstructPix2Pix (Brooks et al. 2022, "InstructPix2Pix: Learning to Follow Image Editing
//! Instructions"): edit an image by a written instruction. Mirrors diffusers'
//! StableDiffusionInstructPix2PixPipeline
//! (pipelines/stable_diffusion/pipeline_stable_diffusion_instruct_pix2pix.py) step for step, so
//! that the same seed gives the same image:
//! - the UNet takes 8 input channels: the scaled noisy latents and the image's latents;
//! - the image latents are the VAE posterior's MODE (`retrieve_latents(..., sample_mode=
//!   "argmax")`), NOT multiplied by the VAE scaling factor, and cost no random draw;
//! - the denoising starts from pure noise (`noise * init_noise_sigma`) over the whole schedule;
//! - guidance is three-way (eq. 3, [`guidance::combine_pix2pix`]) on the batch
//!   [text + image, negative text + image, negative text + zero image latents], and runs only
//!   when `cfg > 1 and image_cfg >= 1` ([`guidance::pix2pix_guidance_enabled`]).
//!
//! As img2img, the image is not resampled: it must be a multiple of 8 on both sides.

use std::time::Instant;

use ::image::RgbImage;
use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::guidance;
use crate::image::{image_to_tensor, GenerationParameters};
use crate::pipelines::prompt::repeat_rows;
use crate::pipelines::txt2img::{Progress, Txt2ImgOutput, Txt2ImgRequest};
use crate::pipelines::StableDiffusion;
use crate::rng::TorchGenerator;

/// diffusers' default `image_guidance_scale`.
pub const DEFAULT_IMAGE_CFG: f64 = 1.5;

/// A text-to-image request (the prompt is the edit instruction) plus the image to edit and how
/// strongly to stay with it.
#[derive(Debug, Clone)]
pub struct InstructPix2PixRequest {
    /// Instruction, sampler, steps, seed, text guidance (`cfg_scale`), ...; `width` and
    /// `height` must equal the image's.
    pub base: Txt2ImgRequest,
    /// The image to edit.
    pub image: RgbImage,
    /// Image guidance scale s_I: higher stays closer to the image (diffusers' default 1.5;
    /// below 1 turns all guidance off, as in diffusers).
    pub image_cfg_scale: f64,
}

impl InstructPix2PixRequest {
    /// `base` with its width and height set to the image's.
    pub fn new(mut base: Txt2ImgRequest, image: RgbImage, image_cfg_scale: f64) -> Self {
        base.width = image.width() as usize;
        base.height = image.height() as usize;
        Self {
            base,
            image,
            image_cfg_scale,
        }
    }

    /// Whether the three-way guidance runs (else one UNet pass per step).
    pub fn guidance_enabled(&self) -> bool {
        guidance::pix2pix_guidance_enabled(self.base.cfg_scale, self.image_cfg_scale)
    }

    /// The AUTOMATIC1111-style record, with the instruct-pix2pix extension's "Image CFG scale".
    pub fn parameters(&self, model_name: &str) -> GenerationParameters {
        let mut params = self.base.parameters(model_name);
        params
            .extra
            .push(("Image CFG scale".into(), self.image_cfg_scale.to_string()));
        params
    }

    /// Reject what would fail later or mean something else, with the fix in the message.
    pub fn validate(&self, model: &StableDiffusion) -> Result<()> {
        check_pix2pix_unet(model)?;
        let (w, h) = (self.image.width() as usize, self.image.height() as usize);
        let factor = model.vae_scale_factor();
        if w % factor != 0 || h % factor != 0 || w == 0 || h == 0 {
            return Err(Error::invalid(format!(
                "image is {w}x{h}: both sides must be positive multiples of {factor} (the VAE's \
                 scale factor); Pigment does not resample, so crop or resize it to {}x{} first",
                (w / factor).max(1) * factor,
                (h / factor).max(1) * factor
            )));
        }
        if (w, h) != (self.base.width, self.base.height) {
            return Err(Error::invalid(format!(
                "image is {w}x{h} but {}x{} was requested: the edit keeps the image's size",
                self.base.width, self.base.height
            )));
        }
        if !self.image_cfg_scale.is_finite() {
            return Err(Error::invalid("--image-cfg must be a finite number"));
        }
        if self.base.guidance_rescale != 0.0 {
            return Err(Error::invalid(
                "--guidance-rescale is not used by InstructPix2Pix's three-way guidance (diffusers \
                 has none there either): leave it out",
            ));
        }
        self.base.validate(model)
    }
}

/// An InstructPix2Pix UNet takes the noisy latents and the image latents: twice the VAE's
/// latent channels (8 for SD).
pub fn check_pix2pix_unet(model: &StableDiffusion) -> Result<()> {
    let channels = model.unet_config().in_channels;
    let latent = model.vae.config().latent_channels;
    if channels != 2 * latent {
        return Err(Error::invalid(format!(
            "this model's UNet takes in_channels {channels}; instruction editing needs an \
             InstructPix2Pix model whose UNet takes in_channels {} (noisy latents + image \
             latents), e.g. timbrooks/instruct-pix2pix; for an ordinary model use `generate \
             --init-image` (img2img) instead",
            2 * latent
        )));
    }
    Ok(())
}

impl StableDiffusion {
    /// Edit an image by the instruction in `req.base.prompt` and decode the result.
    pub fn instruct_pix2pix(
        &self,
        req: &InstructPix2PixRequest,
        progress: Progress,
    ) -> Result<Txt2ImgOutput> {
        req.validate(self)?;
        self.require_loaded()?;
        let base = &req.base;
        let start = Instant::now();
        let mut sampler = base.sampler(&self.scheduler_config)?;
        let do_cfg = req.guidance_enabled();
        let batch = base.batch_size;

        // _encode_prompt: [prompt, negative, negative] when guiding (per step with A1111
        // prompt editing).
        let encode = |text: &str| {
            self.encode_prompt_schedule(text, base.prompt_syntax, base.steps, base.clip_skip)
        };
        let cond = encode(&base.prompt)?;
        let uncond = if do_cfg {
            Some(encode(&base.negative_prompt)?)
        } else {
            None
        };
        let context = self.pair_schedules(
            &cond,
            uncond.as_deref(),
            base.prompt_syntax,
            base.clip_skip,
            &|c, u| {
                let c = repeat_rows(c, batch)?;
                match u {
                    Some(u) => {
                        let u = repeat_rows(u, batch)?;
                        Ok(Tensor::cat(&[&c, &u, &u], 0)?)
                    }
                    None => Ok(c),
                }
            },
        )?;

        // prepare_image_latents: the posterior mode, unscaled; [image, image, zeros] when
        // guiding.
        let pixels = image_to_tensor(&req.image, &self.device)?.to_dtype(self.dtype)?;
        let image_latents = repeat_rows(&self.vae.encode(&pixels)?.mode(), batch)?;
        let image_latents = if do_cfg {
            let zeros = image_latents.zeros_like()?;
            Tensor::cat(&[&image_latents, &image_latents, &zeros], 0)?
        } else {
            image_latents
        };

        // prepare_latents: the first random draw is the noise.
        let factor = self.vae_scale_factor();
        let shape = [
            batch,
            self.vae.config().latent_channels,
            base.height / factor,
            base.width / factor,
        ];
        let mut rng = TorchGenerator::new(base.seed);
        let noise = rng.randn_tensor(&shape, &self.device)?;
        let mut latents = (noise * sampler.init_noise_sigma())?.to_dtype(self.dtype)?;

        let timesteps = sampler.timesteps().to_vec();
        let total = timesteps.len();
        for (i, &t) in timesteps.iter().enumerate() {
            let model_input = if do_cfg {
                Tensor::cat(&[&latents, &latents, &latents], 0)?
            } else {
                latents.clone()
            };
            let scaled = sampler.scale_model_input(&model_input, i)?;
            let model_input = Tensor::cat(&[&scaled, &image_latents], 1)?;
            let prediction = self.unet_forward(&model_input, t, context.at_step(i))?;
            let prediction = if do_cfg {
                guidance::combine_pix2pix(&prediction, base.cfg_scale, req.image_cfg_scale)?
            } else {
                prediction
            };
            latents = sampler.step(&prediction, i, &latents, &mut rng)?;
            progress(i + 1, total);
        }

        let sampling_time = start.elapsed();
        let decode_start = Instant::now();
        let decoded = self.decode_latents(&latents)?;
        Ok(Txt2ImgOutput {
            decoded,
            latents,
            evaluations: total,
            sampling_time,
            decode_time: decode_start.elapsed(),
        })
    }
}
