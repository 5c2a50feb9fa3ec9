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

/// Whether InstructPix2Pix's three-way guidance runs, as diffusers'
/// StableDiffusionInstructPix2PixPipeline.do_classifier_free_guidance:
/// `guidance_scale > 1 and image_guidance_scale >= 1`. Otherwise the UNet runs once, on the
/// text and the image, and neither scale is used.
pub fn pix2pix_guidance_enabled(text_scale: f64, image_scale: f64) -> bool {
    text_scale > 1.0 && image_scale >= 1.0
}

/// InstructPix2Pix guidance (Brooks et al. 2022, "InstructPix2Pix", eq. 3):
/// `e = e(0,0) + s_I (e(c_I,0) - e(0,0)) + s_T (e(c_I,c_T) - e(c_I,0))`, on a tripled-batch
/// prediction in diffusers' order (pipeline_stable_diffusion_instruct_pix2pix.py):
/// [text + image, image only (negative text), neither (negative text, zero image latents)],
/// combined as diffusers writes it: `uncond + s_T (text - image) + s_I (image - uncond)`.
pub fn combine_pix2pix(prediction: &Tensor, text_scale: f64, image_scale: f64) -> Result<Tensor> {
    let third = prediction.dim(0)? / 3;
    let text = prediction.narrow(0, 0, third)?;
    let image = prediction.narrow(0, third, third)?;
    let uncond = prediction.narrow(0, 2 * third, third)?;
    let text_delta = ((text - &image)? * text_scale)?;
    let image_delta = ((image - &uncond)? * image_scale)?;
    Ok(((uncond + text_delta)? + image_delta)?)
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

    #[test]
    fn pix2pix_combines_text_image_uncond_in_that_order() {
        let p = Tensor::new(&[[5f32], [3.0], [1.0]], &Device::Cpu).unwrap();
        let out = combine_pix2pix(&p, 7.5, 1.5)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // uncond 1, image 3, text 5: 1 + 7.5 * (5 - 3) + 1.5 * (3 - 1) = 19.
        assert_eq!(out, vec![vec![19.0]]);
        assert!(pix2pix_guidance_enabled(7.5, 1.0));
        assert!(!pix2pix_guidance_enabled(1.0, 1.5));
        assert!(!pix2pix_guidance_enabled(7.5, 0.99));
    }
}
