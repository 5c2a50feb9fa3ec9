//! Canny edge detection matching OpenCV's `cv2.Canny(img, low, high)` with its defaults
//! (apertureSize 3, L2gradient false), following modules/imgproc/src/canny.cpp:
//! integer 3x3 Sobel with replicated borders, L1 magnitude `|dx| + |dy|`, for colour images
//! the gradient of the channel with the largest magnitude, Q15 non-maximum suppression and
//! 8-connected hysteresis.

use image::{GrayImage, RgbImage};

use super::hysteresis::hysteresis;
use super::nms::{non_max_suppression, Gradient, STRONG};
use super::sobel::sobel_3x3;
use crate::error::{Error, Result};

/// An 8-bit image Canny can read: interleaved channels, row-major.
pub trait CannyInput {
    fn dimensions(&self) -> (u32, u32);
    fn channels(&self) -> usize;
    fn samples(&self) -> &[u8];
}

impl CannyInput for GrayImage {
    fn dimensions(&self) -> (u32, u32) {
        image::ImageBuffer::dimensions(self)
    }
    fn channels(&self) -> usize {
        1
    }
    fn samples(&self) -> &[u8] {
        self.as_raw()
    }
}

impl CannyInput for RgbImage {
    fn dimensions(&self) -> (u32, u32) {
        image::ImageBuffer::dimensions(self)
    }
    fn channels(&self) -> usize {
        3
    }
    fn samples(&self) -> &[u8] {
        self.as_raw()
    }
}

/// Edge map of `img`: 255 on edges, 0 elsewhere, same size as `img`.
///
/// `low` and `high` bound the L1 gradient magnitude of the 3x3 Sobel (which reaches 8 * 255
/// for a gray image): a local maximum above `high` is an edge, one above `low` is an edge when
/// 8-connected through such pixels to one above `high`. As in OpenCV, `low > high` is accepted
/// and the two are swapped, and the thresholds are floored (magnitudes are integers, so
/// `m > 90.5` means `m > 90`).
///
/// An RGB image is used as is, not converted to gray, exactly as ControlNet's canny annotator
/// calls `cv2.Canny` on the RGB array: each pixel takes the gradient of its channel with the
/// largest magnitude (the first such channel on ties, in R, G, B order).
///
/// Errors: an empty image, or a threshold that is NaN or infinite. A 1x1 image is valid and
/// has no edges (as in OpenCV).
pub fn canny<I: CannyInput>(img: &I, low: f32, high: f32) -> Result<GrayImage> {
    let (width, height) = img.dimensions();
    if width == 0 || height == 0 {
        return Err(Error::InvalidArgument(format!(
            "canny: the image is empty ({width}x{height}); give an image at least 1x1"
        )));
    }
    let (low, high) = integer_thresholds(low, high)?;
    let grad = gradient(img, width as usize, height as usize);
    let mut map = non_max_suppression(&grad, low, high);
    hysteresis(&mut map, grad.width, grad.height);
    let edges = map
        .iter()
        .map(|&v| if v == STRONG { 255 } else { 0 })
        .collect();
    GrayImage::from_raw(width, height, edges)
        .ok_or_else(|| Error::Image("canny: edge buffer has the wrong size".into()))
}

/// OpenCV's threshold handling: swap when `low > high`, then `cvFloor` each.
fn integer_thresholds(low: f32, high: f32) -> Result<(i32, i32)> {
    for (name, value) in [("low", low), ("high", high)] {
        if !value.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "canny: the {name} threshold is {value}; give a finite number \
                 (ControlNet's default is low 100, high 200)"
            )));
        }
    }
    let (low, high) = if low > high { (high, low) } else { (low, high) };
    // Float-to-int `as` saturates, which keeps huge thresholds meaning "nothing passes".
    Ok((low.floor() as i32, high.floor() as i32))
}

/// Sobel gradient per pixel; for several channels, the channel with the largest L1
/// magnitude wins (strictly larger, so the first channel wins ties), as OpenCV does.
fn gradient<I: CannyInput>(img: &I, width: usize, height: usize) -> Gradient {
    let channels = img.channels();
    let data = img.samples();
    let mut best: Option<Gradient> = None;
    for c in 0..channels {
        let (dx, dy) = sobel_3x3(data, width, height, channels, c);
        let magnitude: Vec<i32> = dx.iter().zip(&dy).map(|(a, b)| a.abs() + b.abs()).collect();
        match best.as_mut() {
            None => {
                best = Some(Gradient {
                    width,
                    height,
                    dx,
                    dy,
                    magnitude,
                })
            }
            Some(g) => {
                for i in 0..width * height {
                    if magnitude[i] > g.magnitude[i] {
                        g.magnitude[i] = magnitude[i];
                        g.dx[i] = dx[i];
                        g.dy[i] = dy[i];
                    }
                }
            }
        }
    }
    best.unwrap_or(Gradient {
        width,
        height,
        dx: vec![0; width * height],
        dy: vec![0; width * height],
        magnitude: vec![0; width * height],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_swap_and_floor_like_opencv() {
        assert_eq!(integer_thresholds(200.0, 100.0).unwrap(), (100, 200));
        assert_eq!(integer_thresholds(30.0, 90.5).unwrap(), (30, 90));
        assert!(integer_thresholds(f32::NAN, 1.0).is_err());
        assert!(integer_thresholds(1.0, f32::INFINITY).is_err());
    }
}
