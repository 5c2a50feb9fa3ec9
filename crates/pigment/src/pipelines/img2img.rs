//! Image to image: SDEdit (Meng et al. 2021, "SDEdit: Guided Image Synthesis and Editing with
//! Stochastic Differential Equations"): noise the encoded init image to an intermediate level and
//! denoise from there. Mirrors diffusers' StableDiffusionImg2ImgPipeline
//! (pipelines/stable_diffusion/pipeline_stable_diffusion_img2img.py) step for step, so that the
//! same seed gives the same image.
//!
//! Sizes: diffusers silently resizes an init image to a multiple of the VAE factor (and to the
//! requested width/height). Pigment does not resample: the init image must already be the
//! requested size, a multiple of 8; anything else is rejected with the size to use, so that what
//! is encoded is exactly the file the user gave.

use std::time::Instant;

use ::image::RgbImage;
use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::image::{image_to_tensor, GenerationParameters};
use crate::pipelines::prompt::repeat_rows;
use crate::pipelines::txt2img::{DenoiseHooks, NoHooks, Progress, Txt2ImgOutput, Txt2ImgRequest};
use crate::pipelines::StableDiffusion;
use crate::rng::TorchGenerator;
use crate::samplers::SamplerKind;

/// A text-to-image request plus the image to start from and how far to move away from it.
#[derive(Debug, Clone)]
pub struct Img2ImgRequest {
    /// Prompt, sampler, steps, seed, ...; `width` and `height` must equal the init image's.
    pub base: Txt2ImgRequest,
    /// The image to edit, exactly `base.width` x `base.height`.
    pub init_image: RgbImage,
    /// In (0, 1]: the fraction of the schedule that is re-run (1 = start from pure noise level,
    /// the image only seeds the latents; small = stay close to the image).
    pub strength: f64,
}

impl Img2ImgRequest {
    /// `base` with its width and height set to the image's.
    pub fn new(mut base: Txt2ImgRequest, init_image: RgbImage, strength: f64) -> Self {
        base.width = init_image.width() as usize;
        base.height = init_image.height() as usize;
        Self {
            base,
            init_image,
            strength,
        }
    }

    /// Denoising steps actually run, as diffusers' `get_timesteps`:
    /// `min(int(steps * strength), steps)`.
    pub fn steps_run(&self) -> usize {
        ((self.base.steps as f64 * self.strength) as usize).min(self.base.steps)
    }

    /// The fewest `steps` for which this strength runs at least one step.
    fn min_steps(&self) -> usize {
        let mut steps = (1.0 / self.strength).floor().max(1.0) as usize;
        // `as` saturates for tiny strengths; the loop then stops at once.
        while (steps as f64 * self.strength) < 1.0 && steps < usize::MAX {
            steps += 1;
        }
        steps
    }

    /// The AUTOMATIC1111-style record, with its "Denoising strength" key.
    pub fn parameters(&self, model_name: &str) -> GenerationParameters {
        let mut params = self.base.parameters(model_name);
        params
            .extra
            .push(("Denoising strength".into(), self.strength.to_string()));
        params
    }

    /// Reject what would fail later or mean something else, with the fix in the message.
    pub fn validate(&self, model: &StableDiffusion) -> Result<()> {
        if !(self.strength > 0.0 && self.strength <= 1.0) {
            return Err(Error::invalid(format!(
                "--strength {}: must be in (0, 1] (0.3 stays close to the init image, 0.75 is \
                 typical, 1 keeps only its rough layout)",
                self.strength
            )));
        }
        let (w, h) = (
            self.init_image.width() as usize,
            self.init_image.height() as usize,
        );
        let factor = model.vae_scale_factor();
        if w % factor != 0 || h % factor != 0 || w == 0 || h == 0 {
            return Err(Error::invalid(format!(
                "init image is {w}x{h}: both sides must be positive multiples of {factor} (the \
                 VAE's scale factor); Pigment does not resample, so crop or resize it to {}x{} \
                 first",
                (w / factor).max(1) * factor,
                (h / factor).max(1) * factor
            )));
        }
        if (w, h) != (self.base.width, self.base.height) {
            return Err(Error::invalid(format!(
                "init image is {w}x{h} but {}x{} was requested: leave out --width/--height (the \
                 image's size is used) or resize the image to that size",
                self.base.width, self.base.height
            )));
        }
        self.base.validate(model)?;
        if self.steps_run() == 0 {
            return Err(Error::invalid(format!(
                "--steps {} with --strength {} runs no denoising step (int(steps * strength) is \
                 0); raise --steps to at least {} or raise --strength",
                self.base.steps,
                self.strength,
                self.min_steps()
            )));
        }
        Ok(())
    }
}

impl StableDiffusion {
    /// Run image-to-image sampling and decode the result. `evaluations` in the output counts
    /// the model evaluations actually made (fewer than txt2img's when strength < 1).
    pub fn img2img(&self, req: &Img2ImgRequest, progress: Progress) -> Result<Txt2ImgOutput> {
        self.img2img_with(req, progress, &mut NoHooks)
    }

    /// [`StableDiffusion::img2img`] with `hooks` in the denoising loop (ControlNet).
    pub(crate) fn img2img_with(
        &self,
        req: &Img2ImgRequest,
        progress: Progress,
        hooks: &mut dyn DenoiseHooks,
    ) -> Result<Txt2ImgOutput> {
        req.validate(self)?;
        self.require_loaded()?;
        let base = &req.base;
        let start = Instant::now();
        let mut sampler = base.sampler(&self.scheduler_config)?;
        let context = self.conditioning_schedule(base)?;

        // get_timesteps: skip the first `steps - steps_run` steps of the full schedule; Heun's
        // timesteps hold two entries per step (scheduler.order = 2), so it starts on an even
        // index (diffusers: timesteps[t_start * order:], set_begin_index(t_start * order)).
        let t_start = base.steps - req.steps_run();
        let order = if base.sampler == SamplerKind::Heun {
            2
        } else {
            1
        };
        let first_index = t_start * order;

        // prepare_latents, in diffusers' order of random draws from the one generator: the VAE
        // posterior sample of the (single) image first, then the noise for the whole batch.
        let mut rng = TorchGenerator::new(base.seed);
        let pixels = image_to_tensor(&req.init_image, &self.device)?;
        let posterior = self.vae.encode(&pixels)?;
        let image_latents = self.scale_vae_latents(&posterior.sample(&mut rng)?)?;
        let image_latents = repeat_rows(&image_latents, base.batch_size)?;
        let noise = rng.randn_tensor(image_latents.dims(), &self.device)?;
        let latents = sampler
            .add_noise(&image_latents.to_dtype(DType::F32)?, &noise, first_index)?
            .to_dtype(self.dtype)?;

        let evaluations = sampler.timesteps().len() - first_index;
        let latents = self.denoise_with(
            sampler.as_mut(),
            latents,
            &context,
            (base.cfg_scale, base.guidance_rescale),
            first_index,
            &mut rng,
            progress,
            hooks,
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

    /// VAE posterior sample -> sampler latents: the inverse of `decode_latents`
    /// (`(z - shift) * scaling_factor`; SD's VAEs have no shift, so this is diffusers'
    /// `scaling_factor * init_latents`).
    pub(crate) fn scale_vae_latents(&self, z: &Tensor) -> Result<Tensor> {
        let cfg = self.vae.config();
        let z = match cfg.shift_factor {
            Some(shift) => (z - shift)?,
            None => z.clone(),
        };
        Ok((z * cfg.scaling_factor)?)
    }
}
