//! Scribble-style control images from edges, and the 3-channel control image.
//!
//! The scribble is modelled on ControlNet's `gradio_fake_scribble2image.py`, which turns an
//! edge map (there HED soft edges after `nms`) into hand-drawn-looking strokes with
//! `GaussianBlur(map, (0, 0), 3.0)` followed by `map > 4 -> 255`: thin 1-pixel edges become
//! strokes a few pixels wide with rounded ends, and small gaps close up. Here it is applied to
//! Canny edges (or any 0/255 edge map).

use image::{GrayImage, RgbImage};

use super::blur::gaussian_blur;
use crate::error::{Error, Result};

/// Gaussian sigma of ControlNet's fake-scribble post-process.
pub const SCRIBBLE_SIGMA: f32 = 3.0;
/// Blurred 8-bit level above which a pixel is part of a stroke (ControlNet: `> 4`).
pub const SCRIBBLE_THRESHOLD: u8 = 4;

/// Scribble strokes (255) on black, from an edge map, with ControlNet's constants.
pub fn scribble_from_edges(edges: &GrayImage) -> GrayImage {
    // The constants are valid, so this cannot fail; fall back to the edges unchanged.
    scribble_from_edges_with(edges, SCRIBBLE_SIGMA, SCRIBBLE_THRESHOLD)
        .unwrap_or_else(|_| edges.clone())
}

/// [`scribble_from_edges`] with a chosen blur `sigma` (stroke width grows with it) and
/// `threshold` on the rounded blurred 8-bit level (lower gives thicker strokes).
pub fn scribble_from_edges_with(edges: &GrayImage, sigma: f32, threshold: u8) -> Result<GrayImage> {
    if !(sigma.is_finite() && sigma > 0.0 && sigma <= 100.0) {
        return Err(Error::InvalidArgument(format!(
            "scribble: blur sigma {sigma} is out of range; give a number in (0, 100] \
             (ControlNet uses {SCRIBBLE_SIGMA})"
        )));
    }
    let (width, height) = edges.dimensions();
    if width == 0 || height == 0 {
        return Err(Error::InvalidArgument(format!(
            "scribble: the edge map is empty ({width}x{height}); give one at least 1x1"
        )));
    }
    let blurred = gaussian_blur(edges.as_raw(), width as usize, height as usize, sigma);
    let strokes = blurred
        .iter()
        .map(|&v| {
            if v.round() > f32::from(threshold) {
                255
            } else {
                0
            }
        })
        .collect();
    GrayImage::from_raw(width, height, strokes)
        .ok_or_else(|| Error::Image("scribble: stroke buffer has the wrong size".into()))
}

/// The edge map copied into R, G and B: the 3-channel control image ControlNet pipelines take
/// (ControlNet's `HWC3`, diffusers' `np.concatenate([image] * 3, axis=2)`).
pub fn control_image_from_edges(edges: &GrayImage) -> RgbImage {
    let (width, height) = edges.dimensions();
    RgbImage::from_fn(width, height, |x, y| {
        let v = edges.get_pixel(x, y).0[0];
        image::Rgb([v, v, v])
    })
}
