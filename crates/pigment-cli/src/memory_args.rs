//! Memory options of `pigment generate`: VAE tiling and low-memory mode.

use anyhow::Result;
use clap::Args;
use pigment::pipelines::StableDiffusion;
use pigment::vae::VaeTiling;

#[derive(Args, Debug, Clone)]
pub struct MemoryArgs {
    /// VAE decode/encode in overlapping, blended tiles of the VAE's native size (diffusers'
    /// enable_tiling): auto = only for images of 1024x1024 pixels or more, on, or off.
    #[arg(long, value_name = "auto|on|off", default_value = "auto")]
    pub vae_tiling: String,
    /// Free the text encoder as soon as the prompt is encoded and the UNet as soon as the
    /// latents are denoised (plain txt2img; the same image with a lower peak memory).
    #[arg(long)]
    pub low_memory: bool,
}

impl MemoryArgs {
    /// Checks the values before the model loads.
    pub fn tiling(&self) -> Result<VaeTiling> {
        Ok(self.vae_tiling.parse()?)
    }

    /// Sets the model's VAE tiling.
    pub fn apply(&self, model: &mut StableDiffusion) -> Result<()> {
        model.vae.set_tiling(self.tiling()?);
        Ok(())
    }

    /// `--low-memory` where it has no effect: a note on stderr naming the mode that ignores it.
    pub fn warn_unused(&self, mode: &str) {
        if self.low_memory {
            eprintln!("note: --low-memory frees the text encoder and UNet in plain txt2img only; {mode} runs without it");
        }
    }
}
