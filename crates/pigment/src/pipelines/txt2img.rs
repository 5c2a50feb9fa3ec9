//! Text to image: the latent-diffusion sampling loop (Rombach 2022) with classifier-free
//! guidance, in the order diffusers' StableDiffusionPipeline.__call__ does each step, so that the
//! same seed gives the same image.

use std::time::{Duration, Instant};

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::guidance;
use crate::image::GenerationParameters;
use crate::pipelines::conditioning::{PromptSyntax, ScheduledConditioning};
use crate::pipelines::prompt::repeat_rows;
use crate::pipelines::StableDiffusion;
use crate::rng::TorchGenerator;
use crate::samplers::{build_sampler, Sampler, SamplerKind, SamplerOptions};
use crate::schedule::SchedulerConfig;
use crate::unet::UNetExtras;

/// Everything a text-to-image run needs besides the model.
#[derive(Debug, Clone)]
pub struct Txt2ImgRequest {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    pub cfg_scale: f64,
    /// Guidance rescale phi in [0, 1] (diffusers' `guidance_rescale`, Lin et al. 2023): 0 is
    /// plain classifier-free guidance; 0.7 is the paper's value. Only used while guiding.
    pub guidance_rescale: f64,
    pub sampler: SamplerKind,
    pub karras: bool,
    /// DDIM's eta (0 = deterministic).
    pub eta: f64,
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    pub batch_size: usize,
    /// AUTOMATIC1111's clip skip: 1 = last text-encoder layer.
    pub clip_skip: usize,
    /// How the prompts are read: plain (diffusers, the default) or AUTOMATIC1111's syntax
    /// (emphasis, BREAK, prompt editing, alternation, long prompts).
    pub prompt_syntax: PromptSyntax,
}

impl Default for Txt2ImgRequest {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            steps: 20,
            cfg_scale: 7.5,
            guidance_rescale: 0.0,
            sampler: SamplerKind::EulerAncestral,
            karras: false,
            eta: 0.0,
            seed: 0,
            width: 512,
            height: 512,
            batch_size: 1,
            clip_skip: 1,
            prompt_syntax: PromptSyntax::Plain,
        }
    }
}

/// Per-step additions to the shared denoising loop (`StableDiffusion::denoise_with`); the
/// defaults change nothing.
pub(crate) trait DenoiseHooks {
    /// The UNet's input, given the sampler-scaled latents ([uncond; cond] rows when guiding).
    fn model_input(&mut self, scaled: Tensor) -> Result<Tensor> {
        Ok(scaled)
    }
    /// Sees the text context of model evaluation `step` (0 = the run's first), just before
    /// the UNet uses it.
    fn observe_context(&mut self, _step: usize, _context: &Tensor) {}
    /// Residuals for the UNet's skip connections and mid block at model evaluation `step` of
    /// `steps` (counted from the run's first), timestep `t`, given the sampler-scaled latents
    /// and the text context (both [uncond; cond] rows when guiding): ControlNet's
    /// `(down_block_additional_residuals, mid_block_additional_residual)`.
    fn unet_residuals(
        &mut self,
        _step: usize,
        _steps: usize,
        _t: f64,
        _scaled: &Tensor,
        _context: &Tensor,
    ) -> Result<Option<(Vec<Tensor>, Tensor)>> {
        Ok(None)
    }
    /// The latents after `sampler.step` at entry `step_index` of `sampler.timesteps()`.
    fn after_step(
        &mut self,
        latents: Tensor,
        _step_index: usize,
        _sampler: &dyn Sampler,
    ) -> Result<Tensor> {
        Ok(latents)
    }
}

/// Plain txt2img / img2img: no extra channels, no blending.
/// Denoised latents before the decode, with what [`Txt2ImgOutput`] reports about the loop.
pub(crate) struct SampledLatents {
    latents: Tensor,
    evaluations: usize,
    sampling_time: Duration,
}

pub(crate) struct NoHooks;

impl DenoiseHooks for NoHooks {}

/// No extra channels or blending; shows each step's context to a callback.
struct Observer<'a>(&'a mut dyn FnMut(usize, &Tensor));

impl DenoiseHooks for Observer<'_> {
    fn observe_context(&mut self, step: usize, context: &Tensor) {
        (self.0)(step, context)
    }
}

/// Called after every model evaluation with (done, total).
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize);

/// What a run produced.
pub struct Txt2ImgOutput {
    /// Decoded images, [batch, 3, H, W] in about [-1, 1] (before clamping to 8 bits).
    pub decoded: Tensor,
    /// Final latents, unscaled by the VAE factor: [batch, C, H/f, W/f].
    pub latents: Tensor,
    /// Model evaluations made (steps; Heun makes about two per step).
    pub evaluations: usize,
    /// Time spent in the sampling loop (text encoding included) and in VAE decoding.
    pub sampling_time: Duration,
    pub decode_time: Duration,
}

impl Txt2ImgRequest {
    /// The AUTOMATIC1111-style record of this request that goes into the PNG.
    pub fn parameters(&self, model_name: &str) -> GenerationParameters {
        GenerationParameters {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            steps: self.steps,
            sampler: self.sampler.a1111_name().to_string(),
            schedule_type: self.karras.then(|| "Karras".to_string()),
            cfg_scale: self.cfg_scale,
            seed: self.seed,
            width: self.width,
            height: self.height,
            model_name: (!model_name.is_empty()).then(|| model_name.to_string()),
            model_hash: None,
            clip_skip: (self.clip_skip > 1).then_some(self.clip_skip),
            extra: {
                let mut extra = Vec::new();
                if self.sampler == SamplerKind::Ddim && self.eta != 0.0 {
                    extra.push(("Eta".into(), self.eta.to_string()));
                }
                if self.guidance_rescale != 0.0 {
                    // The name AUTOMATIC1111's CFG-rescale extension writes.
                    extra.push(("CFG Rescale phi".into(), self.guidance_rescale.to_string()));
                }
                extra
            },
        }
    }

    /// The sampler this request names, built for a model's scheduler config.
    pub(crate) fn sampler(&self, config: &SchedulerConfig) -> Result<Box<dyn Sampler>> {
        build_sampler(
            self.sampler,
            config,
            &SamplerOptions {
                steps: self.steps,
                karras: self.karras,
                eta: self.eta,
                ..SamplerOptions::default()
            },
        )
    }

    /// Reject what would fail later or mean something else, with the fix in the message.
    pub fn validate(&self, model: &StableDiffusion) -> Result<()> {
        let factor = model.vae_scale_factor();
        for (name, value) in [("width", self.width), ("height", self.height)] {
            if value == 0 || value % factor != 0 {
                let lower = (value / factor).max(1) * factor;
                return Err(Error::invalid(format!(
                    "--{name} {value}: must be a positive multiple of {factor} (the VAE's scale factor); try {lower} or {}",
                    lower + factor
                )));
            }
        }
        if self.steps == 0 {
            return Err(Error::invalid(
                "--steps 0: at least one sampling step is needed",
            ));
        }
        if self.batch_size == 0 {
            return Err(Error::invalid("--batch 0: at least one image is needed"));
        }
        if !self.cfg_scale.is_finite() {
            return Err(Error::invalid("--cfg must be a finite number"));
        }
        if !(0.0..=1.0).contains(&self.guidance_rescale) {
            return Err(Error::invalid(format!(
                "--guidance-rescale {}: must be between 0 (plain guidance) and 1; 0.7 is the usual value",
                self.guidance_rescale
            )));
        }
        Ok(())
    }
}

impl StableDiffusion {
    /// The text conditioning of a request over its steps: `[uncond; cond]` (each prompt's rows
    /// repeated per image) when guidance is on, as diffusers' encode_prompt + the pipeline's
    /// `torch.cat([negative_prompt_embeds, prompt_embeds])`; otherwise `cond` alone. With
    /// A1111 syntax it may change during the run (prompt editing, alternation).
    pub fn conditioning_schedule(&self, req: &Txt2ImgRequest) -> Result<ScheduledConditioning> {
        let (cond, uncond) = self.prompt_pair_schedules(req, &req.prompt)?;
        let batch = req.batch_size;
        self.pair_schedules(
            &cond,
            uncond.as_deref(),
            req.prompt_syntax,
            req.clip_skip,
            &|c, u| {
                let c = repeat_rows(c, batch)?;
                match u {
                    Some(u) => Ok(Tensor::cat(&[repeat_rows(u, batch)?, c], 0)?),
                    None => Ok(c),
                }
            },
        )
    }

    /// The schedules of `prompt` and, when the request guides, of its negative prompt.
    #[allow(clippy::type_complexity)]
    pub(crate) fn prompt_pair_schedules(
        &self,
        req: &Txt2ImgRequest,
        prompt: &str,
    ) -> Result<(Vec<(usize, Tensor)>, Option<Vec<(usize, Tensor)>>)> {
        let encode = |text: &str| {
            self.encode_prompt_schedule(text, req.prompt_syntax, req.steps, req.clip_skip)
        };
        let cond = encode(prompt)?;
        let uncond = if guidance::guidance_enabled(req.cfg_scale) {
            Some(encode(&req.negative_prompt)?)
        } else {
            None
        };
        Ok((cond, uncond))
    }

    /// Run text-to-image sampling and decode the result.
    pub fn txt2img(&self, req: &Txt2ImgRequest, progress: Progress) -> Result<Txt2ImgOutput> {
        self.txt2img_observed(req, progress, &mut |_, _| {})
    }

    /// [`StableDiffusion::txt2img`] that shows `observe` the text context of every model
    /// evaluation (its index from 0, the context) before the UNet uses it: for tests and tools
    /// that follow prompt editing step by step.
    pub fn txt2img_observed(
        &self,
        req: &Txt2ImgRequest,
        progress: Progress,
        observe: &mut dyn FnMut(usize, &Tensor),
    ) -> Result<Txt2ImgOutput> {
        self.txt2img_with(req, progress, &mut Observer(observe))
    }

    /// [`StableDiffusion::txt2img`] with `hooks` in the denoising loop (ControlNet).
    pub(crate) fn txt2img_with(
        &self,
        req: &Txt2ImgRequest,
        progress: Progress,
        hooks: &mut dyn DenoiseHooks,
    ) -> Result<Txt2ImgOutput> {
        req.validate(self)?;
        self.require_loaded()?;
        let start = Instant::now();
        let context = self.conditioning_schedule(req)?;
        self.txt2img_from_conditioning(req, &context, start, progress, hooks)
    }

    /// The rest of [`Self::txt2img_with`] once the request's conditioning is encoded: noise,
    /// denoising loop, decode. `start` is when the run began (for the sampling time).
    pub(crate) fn txt2img_from_conditioning(
        &self,
        req: &Txt2ImgRequest,
        context: &ScheduledConditioning,
        start: Instant,
        progress: Progress,
        hooks: &mut dyn DenoiseHooks,
    ) -> Result<Txt2ImgOutput> {
        let sampled = self.sample_from_conditioning(req, context, start, progress, hooks)?;
        self.decode_sampled(sampled)
    }

    /// The noise and the denoising loop of [`Self::txt2img_from_conditioning`], without the
    /// decode (which low-memory mode runs after freeing the UNet).
    pub(crate) fn sample_from_conditioning(
        &self,
        req: &Txt2ImgRequest,
        context: &ScheduledConditioning,
        start: Instant,
        progress: Progress,
        hooks: &mut dyn DenoiseHooks,
    ) -> Result<SampledLatents> {
        let mut sampler = req.sampler(&self.scheduler_config)?;

        // Initial noise from the torch-compatible generator, one draw for the whole batch as
        // diffusers' prepare_latents does with a single generator.
        let factor = self.vae_scale_factor();
        let shape = [
            req.batch_size,
            self.vae.config().latent_channels,
            req.height / factor,
            req.width / factor,
        ];
        let mut rng = TorchGenerator::new(req.seed);
        let noise = rng.randn_tensor(&shape, &self.device)?;
        let latents = (noise * sampler.init_noise_sigma())?.to_dtype(self.dtype)?;

        let evaluations = sampler.timesteps().len();
        let latents = self.denoise_with(
            sampler.as_mut(),
            latents,
            context,
            (req.cfg_scale, req.guidance_rescale),
            0,
            &mut rng,
            progress,
            hooks,
        )?;

        Ok(SampledLatents {
            latents,
            evaluations,
            sampling_time: start.elapsed(),
        })
    }

    /// The VAE decode that ends a txt2img run.
    pub(crate) fn decode_sampled(&self, sampled: SampledLatents) -> Result<Txt2ImgOutput> {
        let decode_start = Instant::now();
        let decoded = self.decode_latents(&sampled.latents)?;
        Ok(Txt2ImgOutput {
            decoded,
            latents: sampled.latents,
            evaluations: sampled.evaluations,
            sampling_time: sampled.sampling_time,
            decode_time: decode_start.elapsed(),
        })
    }

    /// The denoising loop of diffusers' StableDiffusionPipeline.__call__ (and of the img2img
    /// pipeline, which starts it part way): for each entry of `sampler.timesteps()` from
    /// `first_index` on, scale the input, run the UNet on [uncond; cond] when guiding, combine
    /// (Ho & Salimans 2022) and step. `context` is [uncond; cond] when guiding, else cond, for
    /// each model evaluation (counted from `first_index`). `hooks` see the scaled model input,
    /// may add UNet residuals (ControlNet) and act after every step (the inpainting pipeline's
    /// extra input channels and known-region blend); `NoHooks` is the plain loop.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn denoise_with(
        &self,
        sampler: &mut dyn Sampler,
        mut latents: Tensor,
        context: &ScheduledConditioning,
        (cfg_scale, guidance_rescale): (f64, f64),
        first_index: usize,
        rng: &mut TorchGenerator,
        progress: Progress,
        hooks: &mut dyn DenoiseHooks,
    ) -> Result<Tensor> {
        let do_cfg = guidance::guidance_enabled(cfg_scale);
        let timesteps = sampler.timesteps().to_vec();
        let total = timesteps.len().saturating_sub(first_index);
        for (i, &t) in timesteps.iter().enumerate().skip(first_index) {
            let model_input = if do_cfg {
                Tensor::cat(&[&latents, &latents], 0)?
            } else {
                latents.clone()
            };
            let scaled = sampler.scale_model_input(&model_input, i)?;
            let context = context.at_step(i - first_index);
            let residuals = hooks.unet_residuals(i - first_index, total, t, &scaled, context)?;
            let model_input = hooks.model_input(scaled)?;
            hooks.observe_context(i - first_index, context);
            let extras = UNetExtras {
                down_block_residuals: residuals.as_ref().map(|(down, _)| down.as_slice()),
                mid_block_residual: residuals.as_ref().map(|(_, mid)| mid),
                attention_hook: self.adapter_attention_hook(),
                ..UNetExtras::default()
            };
            let prediction = self.unet.forward_with(&model_input, t, context, &extras)?;
            let prediction = if do_cfg {
                guidance::combine_rescaled(&prediction, cfg_scale, guidance_rescale)?
            } else {
                prediction
            };
            latents = sampler.step(&prediction, i, &latents, rng)?;
            latents = hooks.after_step(latents, i, &*sampler)?;
            progress(i + 1 - first_index, total);
        }
        Ok(latents)
    }

    /// VAE-decode sampler latents (undoing the config's scaling and shift factors).
    pub fn decode_latents(&self, latents: &Tensor) -> Result<Tensor> {
        let cfg = self.vae.config();
        let mut z = (latents / cfg.scaling_factor)?;
        if let Some(shift) = cfg.shift_factor {
            z = (z + shift)?;
        }
        Ok(self.vae.decode(&z)?.to_dtype(candle_core::DType::F32)?)
    }
}
