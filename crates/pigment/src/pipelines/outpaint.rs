//! Outpainting: grow the canvas on some sides and paint the new area, as a convenience over
//! inpainting (AUTOMATIC1111's "Poor man's outpainting" script, scripts/poor_mans_outpainting.py,
//! done in one pass).
//!
//! 1. The init image is placed on a larger canvas. The new border is filled with
//!    **edge-replicated pixels** (each new pixel copies the nearest pixel of the old image), not
//!    with A1111's "fill" (modules/masking.py: repeated Gaussian blurs of the masked image): edge
//!    replication needs no blur cascade, keeps the colours that meet the seam, and at strength 1
//!    (the default for outpainting in the CLI) the fill only seeds the latents anyway.
//! 2. The mask is white over the new area. With a mask blur of `sigma` pixels, the white area
//!    first grows `2 * sigma` pixels into the old image on the padded sides (as A1111's script
//!    draws it, `mask_blur * 2`), so that after the blur (and the pipeline's cut at 0.5) the seam
//!    itself is repainted and the blurred mask fades into the old image.
//! 3. The inpainting pipeline runs on the padded image and mask ([`StableDiffusion::inpaint`]:
//!    dedicated 9-channel UNets and ordinary models alike).
//! 4. The result is composited over the padded image with the blurred mask as alpha, as A1111's
//!    `apply_overlay` does: pixels where the mask is 0 keep the init image exactly (they do not go
//!    through the VAE), and the blur feathers the new content into the old image.

use std::fmt;
use std::str::FromStr;

use ::image::{GrayImage, Luma, RgbImage};
use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::image::{image_to_tensor, GenerationParameters};
use crate::pipelines::inpaint::blur_mask;
use crate::pipelines::txt2img::{Progress, Txt2ImgOutput, Txt2ImgRequest};
use crate::pipelines::{InpaintRequest, StableDiffusion};

/// Pixels added on each side of the canvas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutpaintPadding {
    pub left: usize,
    pub right: usize,
    pub top: usize,
    pub bottom: usize,
}

impl OutpaintPadding {
    /// The canvas size for an image of `width` x `height`.
    pub fn padded_size(&self, width: usize, height: usize) -> (usize, usize) {
        (
            width + self.left + self.right,
            height + self.top + self.bottom,
        )
    }

    /// The padded size must be a multiple of `factor` (the VAE's 8) on both sides and something
    /// must be added; the message says how many pixels to add or remove.
    pub fn check(&self, width: usize, height: usize, factor: usize) -> Result<()> {
        if *self == Self::default() {
            return Err(Error::invalid(
                "--outpaint adds nothing: give at least one side a positive number of pixels, \
                 e.g. --outpaint right=128",
            ));
        }
        let (w, h) = self.padded_size(width, height);
        for (side, total, old, a, b) in [
            ("width", w, width, "left", "right"),
            ("height", h, height, "top", "bottom"),
        ] {
            if total % factor != 0 {
                let up = factor - total % factor;
                let down = total % factor;
                return Err(Error::invalid(format!(
                    "--outpaint makes the {side} {old} + {} = {total}, not a multiple of \
                     {factor}: add {up} more pixels to {a} or {b} (or {down} fewer), so the \
                     canvas is {} or {}",
                    total - old,
                    total + up,
                    total - down
                )));
            }
        }
        Ok(())
    }

    /// `image` on the larger canvas, the border filled with its nearest edge pixel.
    pub fn pad_image(&self, image: &RgbImage) -> RgbImage {
        let (w, h) = (image.width() as usize, image.height() as usize);
        let (pw, ph) = self.padded_size(w, h);
        RgbImage::from_fn(pw as u32, ph as u32, |x, y| {
            let sx = (x as usize)
                .saturating_sub(self.left)
                .min(w.saturating_sub(1));
            let sy = (y as usize)
                .saturating_sub(self.top)
                .min(h.saturating_sub(1));
            *image.get_pixel(sx as u32, sy as u32)
        })
    }

    /// The unblurred mask for an image of `width` x `height`: 255 over the new area and, on each
    /// padded side, `grow` pixels into the old image; 0 elsewhere.
    pub fn mask(&self, width: usize, height: usize, grow: usize) -> GrayImage {
        let (pw, ph) = self.padded_size(width, height);
        let grow_by = |pad: usize| if pad > 0 { pad + grow } else { 0 };
        let (x0, x1) = (grow_by(self.left), pw.saturating_sub(grow_by(self.right)));
        let (y0, y1) = (grow_by(self.top), ph.saturating_sub(grow_by(self.bottom)));
        GrayImage::from_fn(pw as u32, ph as u32, |x, y| {
            let (x, y) = (x as usize, y as usize);
            let kept = x >= x0 && x < x1 && y >= y0 && y < y1;
            Luma([if kept { 0 } else { 255 }])
        })
    }
}

impl FromStr for OutpaintPadding {
    type Err = Error;

    /// `left=128,right=128,top=0,bottom=64`: any subset of the four sides, each at most once.
    fn from_str(spec: &str) -> Result<Self> {
        let usage = "write it as SIDE=PIXELS[,SIDE=PIXELS...] with sides left, right, top, \
                     bottom, e.g. --outpaint left=128,right=128,bottom=64";
        let mut pad = Self::default();
        let mut seen = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((side, value)) = part.split_once('=') else {
                return Err(Error::invalid(format!(
                    "--outpaint {spec:?}: `{part}` has no `=`; {usage}"
                )));
            };
            let side = side.trim().to_ascii_lowercase();
            let value = value.trim();
            let pixels: usize = value.parse().map_err(|_| {
                Error::invalid(format!(
                    "--outpaint {spec:?}: `{value}` for {side} is not a whole number of pixels \
                     (0 or more); {usage}"
                ))
            })?;
            let slot = match side.as_str() {
                "left" => &mut pad.left,
                "right" => &mut pad.right,
                "top" => &mut pad.top,
                "bottom" => &mut pad.bottom,
                _ => {
                    return Err(Error::invalid(format!(
                        "--outpaint {spec:?}: unknown side `{side}`; {usage}"
                    )))
                }
            };
            if seen.contains(&side) {
                return Err(Error::invalid(format!(
                    "--outpaint {spec:?}: {side} is given twice; {usage}"
                )));
            }
            *slot = pixels;
            seen.push(side);
        }
        if seen.is_empty() {
            return Err(Error::invalid(format!(
                "--outpaint {spec:?}: no side given; {usage}"
            )));
        }
        Ok(pad)
    }
}

impl fmt::Display for OutpaintPadding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "left={},right={},top={},bottom={}",
            self.left, self.right, self.top, self.bottom
        )
    }
}

/// Grow `init_image` by `padding` and paint the new area.
#[derive(Debug, Clone)]
pub struct OutpaintRequest {
    /// Prompt, sampler, steps, seed, ...; `width` and `height` are set to the padded size.
    pub base: Txt2ImgRequest,
    /// The image to extend, at its own size.
    pub init_image: RgbImage,
    pub padding: OutpaintPadding,
    /// As img2img's, in (0, 1]; 1 paints the new area from pure noise.
    pub strength: f64,
    /// Gaussian feathering of the seam in pixels (0 = a hard edge).
    pub mask_blur: f64,
}

impl OutpaintRequest {
    /// `base` with its size set to the padded canvas.
    pub fn new(
        mut base: Txt2ImgRequest,
        init_image: RgbImage,
        padding: OutpaintPadding,
        strength: f64,
    ) -> Self {
        let (w, h) = padding.padded_size(init_image.width() as usize, init_image.height() as usize);
        base.width = w;
        base.height = h;
        Self {
            base,
            init_image,
            padding,
            strength,
            mask_blur: 0.0,
        }
    }

    /// The inpainting request it runs: padded image, mask grown `2 * mask_blur` pixels into
    /// the old image (the blur itself is applied by the inpainting pipeline).
    pub fn inpaint_request(&self) -> InpaintRequest {
        let (w, h) = (
            self.init_image.width() as usize,
            self.init_image.height() as usize,
        );
        let grow = (2.0 * self.mask_blur.max(0.0)).round() as usize;
        let mut req = InpaintRequest::new(
            self.base.clone(),
            self.padding.pad_image(&self.init_image),
            self.padding.mask(w, h, grow),
            self.strength,
        );
        req.mask_blur = self.mask_blur;
        req
    }

    /// The inpainting record plus AUTOMATIC1111-style "Outpaint" padding.
    pub fn parameters(&self, model_name: &str) -> GenerationParameters {
        let mut params = self.inpaint_request().parameters(model_name);
        params
            .extra
            .push(("Outpaint".into(), self.padding.to_string()));
        params
    }

    /// Reject what would fail later, with the fix in the message.
    pub fn validate(&self, model: &StableDiffusion) -> Result<()> {
        let (w, h) = (
            self.init_image.width() as usize,
            self.init_image.height() as usize,
        );
        self.padding.check(w, h, model.vae_scale_factor())?;
        if (self.base.width, self.base.height) != self.padding.padded_size(w, h) {
            let (pw, ph) = self.padding.padded_size(w, h);
            return Err(Error::invalid(format!(
                "--outpaint makes a {pw}x{ph} canvas but {}x{} was requested: leave out \
                 --width/--height when outpainting",
                self.base.width, self.base.height
            )));
        }
        self.inpaint_request().validate(model)
    }
}

impl StableDiffusion {
    /// Outpaint: inpaint the padded canvas, then put the init image back wherever the blurred
    /// mask is below 1 (alpha compositing, as A1111's `apply_overlay`).
    pub fn outpaint(&self, req: &OutpaintRequest, progress: Progress) -> Result<Txt2ImgOutput> {
        req.validate(self)?;
        self.require_loaded()?;
        let inpaint = req.inpaint_request();
        let mut output = self.inpaint(&inpaint, progress)?;
        let alpha = blur_mask(&inpaint.mask, inpaint.mask_blur);
        let (w, h) = (alpha.width() as usize, alpha.height() as usize);
        let alpha: Vec<f32> = alpha.as_raw().iter().map(|&v| v as f32 / 255.0).collect();
        let alpha = Tensor::from_vec(alpha, (1, 1, h, w), &self.device)?;
        let known = image_to_tensor(&inpaint.image.init_image, &self.device)?;
        let decoded = output.decoded.to_dtype(DType::F32)?;
        let keep = (1.0 - &alpha)?;
        output.decoded = decoded
            .broadcast_mul(&alpha)?
            .broadcast_add(&known.broadcast_mul(&keep)?)?;
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_any_subset_of_sides() {
        let pad: OutpaintPadding = "left=128, right=128,top=0,bottom=64".parse().unwrap();
        assert_eq!(
            pad,
            OutpaintPadding {
                left: 128,
                right: 128,
                top: 0,
                bottom: 64
            }
        );
        assert_eq!(pad.to_string(), "left=128,right=128,top=0,bottom=64");
        let right: OutpaintPadding = "RIGHT=8".parse().unwrap();
        assert_eq!(right.right, 8);
        assert_eq!(right.left + right.top + right.bottom, 0);
    }

    #[test]
    fn bad_specs_name_the_problem() {
        for (spec, needle) in [
            ("left=-8", "not a whole number"),
            ("middle=8", "unknown side `middle`"),
            ("left8", "has no `=`"),
            ("left=8,left=16", "given twice"),
            ("", "no side given"),
        ] {
            let err = spec.parse::<OutpaintPadding>().unwrap_err().to_string();
            assert!(err.contains(needle), "{spec}: {err}");
        }
    }

    #[test]
    fn sizes_must_end_multiples_of_eight() {
        let pad: OutpaintPadding = "right=12".parse().unwrap();
        let err = pad.check(64, 64, 8).unwrap_err().to_string();
        assert!(err.contains("width 64 + 12 = 76"), "{err}");
        assert!(
            err.contains("add 4 more") && err.contains("4 fewer"),
            "{err}"
        );
        assert!("right=16"
            .parse::<OutpaintPadding>()
            .unwrap()
            .check(64, 64, 8)
            .is_ok());
        // An odd image is fine when the padding evens it out.
        assert!("top=3"
            .parse::<OutpaintPadding>()
            .unwrap()
            .check(64, 61, 8)
            .is_ok());
        let nothing: OutpaintPadding = "left=0".parse().unwrap();
        assert!(nothing.check(64, 64, 8).is_err());
    }

    #[test]
    fn padding_replicates_edges_and_mask_covers_the_new_area() {
        let img = RgbImage::from_fn(2, 2, |x, y| ::image::Rgb([x as u8 * 100, y as u8 * 100, 7]));
        let pad = OutpaintPadding {
            left: 1,
            right: 2,
            top: 0,
            bottom: 1,
        };
        let big = pad.pad_image(&img);
        assert_eq!(big.dimensions(), (5, 3));
        assert_eq!(big.get_pixel(0, 0), img.get_pixel(0, 0));
        assert_eq!(big.get_pixel(1, 1), img.get_pixel(0, 1));
        assert_eq!(big.get_pixel(4, 2), img.get_pixel(1, 1));
        assert_eq!(big.get_pixel(2, 0), img.get_pixel(1, 0));

        let mask = pad.mask(2, 2, 0);
        let row = |y| {
            (0..5)
                .map(|x| mask.get_pixel(x, y).0[0])
                .collect::<Vec<_>>()
        };
        assert_eq!(row(0), vec![255, 0, 0, 255, 255]);
        assert_eq!(row(2), vec![255; 5]);
        // Growing by 1 eats into the old image on the padded sides only (top has no padding).
        let grown = pad.mask(2, 2, 1);
        assert_eq!(
            (0..5)
                .map(|x| grown.get_pixel(x, 0).0[0])
                .collect::<Vec<_>>(),
            vec![255, 255, 255, 255, 255]
        );
        let wide = OutpaintPadding {
            left: 1,
            ..Default::default()
        };
        let grown = wide.mask(4, 1, 1);
        assert_eq!(grown.as_raw(), &vec![255, 255, 0, 0, 0]);
    }
}
