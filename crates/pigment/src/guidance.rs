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

/// Guidance rescale (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are
/// Flawed", section 3.4, eq. 15-16), as diffusers' `rescale_noise_cfg`: the guided prediction is
/// scaled per sample to the standard deviation of the conditional one, then mixed back,
/// `phi * guided * (std(cond) / std(guided)) + (1 - phi) * guided`, which undoes the
/// over-exposure a large guidance scale causes. std is torch's default: unbiased, over every
/// dimension but the batch; computed in f32, returned in the prediction's dtype. `phi = 0`
/// returns `guided` unchanged.
pub fn rescale(guided: &Tensor, cond: &Tensor, phi: f64) -> Result<Tensor> {
    if phi == 0.0 {
        return Ok(guided.clone());
    }
    let dtype = guided.dtype();
    let guided32 = guided.to_dtype(candle_core::DType::F32)?;
    let ratio = (sample_std(&cond.to_dtype(candle_core::DType::F32)?)? / sample_std(&guided32)?)?;
    let rescaled = guided32.broadcast_mul(&ratio)?;
    let mixed = ((rescaled * phi)? + (guided32 * (1.0 - phi))?)?;
    Ok(mixed.to_dtype(dtype)?)
}

/// Per-sample unbiased standard deviation of [B, ...] as [B, 1, ...] (torch's
/// `x.std(dim=list(range(1, x.ndim)), keepdim=True)`).
fn sample_std(x: &Tensor) -> Result<Tensor> {
    let batch = x.dim(0)?;
    let n = x.elem_count() / batch.max(1);
    let flat = x.reshape((batch, n))?;
    let centred = flat.broadcast_sub(&flat.mean_keepdim(1)?)?;
    let var = (centred.sqr()?.sum_keepdim(1)? / (n.saturating_sub(1).max(1)) as f64)?;
    let mut shape = vec![batch];
    shape.resize(x.rank(), 1);
    Ok(var.sqrt()?.reshape(shape)?)
}

/// Classifier-free guidance of a doubled-batch prediction followed by [`rescale`] against its
/// conditional half (diffusers' StableDiffusionPipeline with `guidance_rescale`).
pub fn combine_rescaled(prediction: &Tensor, scale: f64, phi: f64) -> Result<Tensor> {
    let guided = combine(prediction, scale)?;
    if phi == 0.0 {
        return Ok(guided);
    }
    let half = prediction.dim(0)? / 2;
    rescale(&guided, &prediction.narrow(0, half, half)?, phi)
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

    /// Against diffusers' rescale_noise_cfg written out in numpy (float64, std with ddof=1):
    /// per sample, phi * g * std(c) / std(g) + (1 - phi) * g.
    #[test]
    fn rescale_matches_diffusers_formula() {
        let dev = Device::Cpu;
        let g = Tensor::new(&[1f32, 2.0, 4.0, 7.0, 0.5, -1.0, 2.0, 0.0], &dev)
            .unwrap()
            .reshape((2, 1, 2, 2))
            .unwrap();
        let c = Tensor::new(&[0f32, 1.0, 1.0, 2.0, 3.0, 1.0, -2.0, 0.0], &dev)
            .unwrap()
            .reshape((2, 1, 2, 2))
            .unwrap();
        let want = [
            0.516_024_7,
            1.032_049_4,
            2.064_098_8,
            3.612_172_8,
            0.732_866_5,
            -1.465_733,
            2.931_466,
            0.0,
        ];
        let got = rescale(&g, &c, 0.7)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (a, b) in got.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{got:?} vs {want:?}");
        }
        // phi = 0 is plain guidance; the rescaled combine uses the conditional (second) half.
        let p = Tensor::cat(&[&c, &g], 0).unwrap();
        let plain = combine(&p, 7.5).unwrap();
        let unscaled = combine_rescaled(&p, 7.5, 0.0).unwrap();
        assert_eq!(
            plain.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            unscaled.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let full = combine_rescaled(&p, 7.5, 1.0).unwrap();
        let std = |t: &Tensor| {
            sample_std(t)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        for (a, b) in std(&full).iter().zip(std(&g)) {
            assert!(
                (a - b).abs() < 1e-4,
                "phi 1 gives the conditional half's std"
            );
        }
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
