//! `--outpaint`: grow the canvas of `generate --init-image` and paint the new area (a
//! convenience over inpainting; see `pigment::pipelines::outpaint`).

use anyhow::Result;
use clap::Args;
use image::RgbImage;
use pigment::pipelines::{Img2ImgRequest, OutpaintPadding, OutpaintRequest};

use crate::generate::GenerateArgs;

#[derive(Args, Clone, Debug)]
pub struct OutpaintArgs {
    /// With --init-image: outpaint. Pads the image by these pixels (any of left, right, top,
    /// bottom; e.g. left=128,right=128,bottom=64), fills the border with the image's edge
    /// pixels, and paints it with the inpainting pipeline (any model); the old image is kept
    /// exactly except where --mask-blur N feathers the seam into it (by about 4N pixels). The
    /// new size must be a multiple of 8. --strength defaults to 1 here.
    #[arg(long, value_name = "SIDE=PX,...")]
    pub outpaint: Option<String>,
}

impl OutpaintArgs {
    /// The padding, checked against the other flags and the init image's size before the model
    /// loads; None without --outpaint.
    pub fn plan(
        &self,
        args: &GenerateArgs,
        init_image: Option<&RgbImage>,
    ) -> Result<Option<OutpaintPadding>> {
        let Some(spec) = &self.outpaint else {
            return Ok(None);
        };
        let padding: OutpaintPadding = spec.parse()?;
        let Some(init) = init_image else {
            anyhow::bail!("--outpaint needs the image to extend: pass --init-image FILE as well");
        };
        if args.mask.is_some() {
            anyhow::bail!(
                "--outpaint builds its own mask (white = the new area): drop --mask, or drop \
                 --outpaint to inpaint with your mask"
            );
        }
        if args.width.is_some() || args.height.is_some() {
            anyhow::bail!(
                "--outpaint sets the size (the image plus the padding): drop --width/--height"
            );
        }
        if !args.control.controlnets.is_empty() {
            anyhow::bail!("--outpaint does not combine with --controlnet; drop one of them");
        }
        // Every Stable Diffusion VAE downsamples by 8; the library checks the model's own
        // factor again before sampling.
        padding.check(init.width() as usize, init.height() as usize, 8)?;
        Ok(Some(padding))
    }
}

/// The outpainting request for the img2img request `generate` built (its prompt, sampler,
/// seed, strength and init image).
pub fn request(
    padding: OutpaintPadding,
    img2img: &Img2ImgRequest,
    mask_blur: f64,
) -> OutpaintRequest {
    let mut req = OutpaintRequest::new(
        img2img.base.clone(),
        img2img.init_image.clone(),
        padding,
        img2img.strength,
    );
    req.mask_blur = mask_blur;
    req
}
