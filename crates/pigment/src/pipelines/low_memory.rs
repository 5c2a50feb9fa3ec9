//! Low-memory text to image: the text encoder's weights are freed as soon as the prompts are
//! encoded, so the denoising loop and the VAE decoder run without them (SD1.5: 0.46 GiB of f32
//! weights; SD2.1: 1.3 GiB), and the UNet's as soon as the loop ends, so the VAE decoder (whose
//! activations at 512x512 and up are the largest of a run) runs beside the VAE weights only
//! (SD1.5: 3.2 GiB of f32 weights). The same numbers as [`StableDiffusion::txt2img`]; the model
//! then holds only its VAE (decode, encode) until loaded again, as after A1111's or ComfyUI's
//! model unloading.

use std::time::Instant;

use candle_nn::VarBuilder;

use crate::error::Result;
use crate::pipelines::txt2img::NoHooks;
use crate::pipelines::{Progress, StableDiffusion, Txt2ImgOutput, Txt2ImgRequest};
use crate::text::{ClipTextConfig, ClipTextModel};
use crate::unet::{PerBlock, UNet2DConditionConfig, UNet2DConditionModel};

impl StableDiffusion {
    /// Frees the text encoder's weights. What stays is a weightless stand-in with one position,
    /// so any later prompt encoding fails with an error (it never gives wrong numbers): load
    /// the model again to encode another prompt.
    pub fn release_text_encoder(&mut self) -> Result<()> {
        let stand_in = ClipTextConfig {
            vocab_size: 1,
            hidden_size: 1,
            intermediate_size: 1,
            num_hidden_layers: 0,
            num_attention_heads: 1,
            max_position_embeddings: 1,
            projection_dim: 1,
            ..ClipTextConfig::default()
        };
        self.text_encoder =
            ClipTextModel::new(VarBuilder::zeros(self.dtype, &self.device), &stand_in)?;
        Ok(())
    }

    /// Frees the UNet's weights. What stays is a weightless one-channel stand-in, so any later
    /// denoising step fails with an error (a channel mismatch), never with wrong numbers: load
    /// the model again to sample again.
    pub fn release_unet(&mut self) -> Result<()> {
        let stand_in = UNet2DConditionConfig {
            in_channels: 1,
            out_channels: 1,
            block_out_channels: vec![1],
            down_block_types: vec!["DownBlock2D".into()],
            up_block_types: vec!["UpBlock2D".into()],
            mid_block_type: None,
            layers_per_block: PerBlock::One(1),
            norm_num_groups: 1,
            ..UNet2DConditionConfig::default()
        };
        self.unet =
            UNet2DConditionModel::new(VarBuilder::zeros(self.dtype, &self.device), &stand_in)?;
        Ok(())
    }

    /// [`StableDiffusion::txt2img`] that frees the text encoder (see
    /// [`Self::release_text_encoder`]) once the request's conditioning is computed and the UNet
    /// (see [`Self::release_unet`]) once the latents are denoised: the same image, a lower peak
    /// memory, and a model that can only decode afterwards.
    pub fn txt2img_low_memory(
        &mut self,
        req: &Txt2ImgRequest,
        progress: Progress,
    ) -> Result<Txt2ImgOutput> {
        req.validate(self)?;
        let start = Instant::now();
        let context = self.conditioning_schedule(req)?;
        self.release_text_encoder()?;
        let sampled =
            self.sample_from_conditioning(req, &context, start, progress, &mut NoHooks)?;
        drop(context);
        self.release_unet()?;
        self.decode_sampled(sampled)
    }
}
