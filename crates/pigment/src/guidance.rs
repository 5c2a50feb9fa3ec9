//! Classifier-free guidance (Ho & Salimans 2022; GLIDE, Nichol 2021, eq. 6):
//! eps = eps_uncond + scale * (eps_cond - eps_uncond).
//!
//! The denoiser is run once on a batch that stacks the unconditional half first and the
//! conditional half second, as diffusers' StableDiffusionPipeline does (`torch.cat([latents] * 2)`
//! with `prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds])`).

use crate::error::Result;
use candle_core::Tensor;

/// Whether guidance changes anything: diffusers skips the unconditional pass when scale <= 1.
pub fn guidance_enabled(scale: f64) -> bool {
    scale > 1.0
}

/// Combine the two halves of a doubled-batch prediction.
pub fn combine(prediction: &Tensor, scale: f64) -> Result<Tensor> {
    let half = prediction.dim(0)? / 2;
    let uncond = prediction.narrow(0, 0, half)?;
    let cond = prediction.narrow(0, half, half)?;
    let delta = (cond - &uncond)?;
    Ok((uncond + (delta * scale)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn combines_uncond_first() {
        let p = Tensor::new(&[[1f32, 2.0], [3.0, 6.0]], &Device::Cpu).unwrap();
        let out = combine(&p, 7.5).unwrap().to_vec2::<f32>().unwrap();
        // uncond [1,2], cond [3,6]: 1 + 7.5*2 = 16, 2 + 7.5*4 = 32.
        assert_eq!(out, vec![vec![16.0, 32.0]]);
        assert!(!guidance_enabled(1.0));
        assert!(guidance_enabled(1.5));
    }
}
