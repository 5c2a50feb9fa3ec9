//! Low-memory text to image: the text encoder's weights are freed as soon as the prompts are
//! encoded, so the denoising loop and the VAE decoder run without them (SD1.5: 0.46 GiB of f32
//! weights; SD2.1: 1.3 GiB), and the UNet's as soon as the loop ends, so the VAE decoder (whose
//! activations at 512x512 and up are the largest of a run) runs beside the VAE weights only
//! (SD1.5: 3.2 GiB of f32 weights). A model from [`StableDiffusion::load_deferred`] also loads
//! each of them, and the VAE, only when the run reaches it (see [`crate::pipelines::deferred`]), so no two
//! of the three components are ever held at once, and every run can be repeated. The same
//! numbers as [`StableDiffusion::txt2img`].

use std::time::Instant;

use crate::error::Result;
use crate::pipelines::txt2img::NoHooks;
use crate::pipelines::{Progress, StableDiffusion, Txt2ImgOutput, Txt2ImgRequest};

impl StableDiffusion {
    /// [`StableDiffusion::txt2img`] that holds one component at a time: loads the text encoder
    /// if it is released, encodes, frees it; loads the UNet if released, denoises, frees it;
    /// loads the VAE if released, decodes (and frees it if the model can load it again). A model without a source to load them from (one from [`Self::load`]) runs this
    /// once and can then only decode (see [`Self::load_released`]).
    pub fn txt2img_low_memory(
        &mut self,
        req: &Txt2ImgRequest,
        progress: Progress,
    ) -> Result<Txt2ImgOutput> {
        req.validate(self)?;
        let start = Instant::now();
        self.ensure_text_encoder()?;
        let context = self.conditioning_schedule(req)?;
        self.release_text_encoder()?;
        self.ensure_unet()?;
        let sampled =
            self.sample_from_conditioning(req, &context, start, progress, &mut NoHooks)?;
        drop(context);
        self.release_unet()?;
        self.ensure_vae()?;
        let output = self.decode_sampled(sampled);
        self.release_vae_if_deferred();
        output
    }
}
