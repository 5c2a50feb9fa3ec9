//! Imperfect copies of rendered images, standing in for what a generator produces: a gaussian
//! blur, a per-image colour cast and per-pixel colour noise. Used to test that the analyser
//! tolerates them, and usable as training augmentation.

use ::image::{Rgb, RgbImage};

use super::prng::SplitMix64;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Degradation {
    /// Gaussian blur standard deviation, in pixels (0: none).
    pub blur_sigma: f32,
    /// Standard deviation of independent per-pixel, per-channel noise (0..255 scale).
    pub noise: f32,
    /// Largest per-channel colour cast added to the whole image (0..255 scale).
    pub cast: f32,
}

impl Default for Degradation {
    /// A moderate degradation: blur of 0.8 px, noise 8, cast up to 12.
    fn default() -> Self {
        Self {
            blur_sigma: 0.8,
            noise: 8.0,
            cast: 12.0,
        }
    }
}

/// A degraded copy of `img`; deterministic in `seed`.
pub fn degrade(img: &RgbImage, how: &Degradation, seed: u64) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut buf: Vec<[f32; 3]> = img.pixels().map(|p| p.0.map(f32::from)).collect();
    if how.blur_sigma > 0.0 && w > 0 && h > 0 {
        let kernel = gaussian_kernel(how.blur_sigma);
        buf = blur_pass(&buf, w, h, &kernel, true);
        buf = blur_pass(&buf, w, h, &kernel, false);
    }
    let mut rng = SplitMix64::new(seed);
    let cast: [f32; 3] = std::array::from_fn(|_| rng.range_f32(-how.cast, how.cast));
    let mut out = RgbImage::new(img.width(), img.height());
    for (dst, src) in out.pixels_mut().zip(buf) {
        let v: [u8; 3] = std::array::from_fn(|k| {
            (src[k] + cast[k] + how.noise * rng.normal())
                .round()
                .clamp(0.0, 255.0) as u8
        });
        *dst = Rgb(v);
    }
    out
}

fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil().clamp(1.0, 32.0) as i32;
    let weights: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = weights.iter().sum();
    weights.into_iter().map(|v| v / total).collect()
}

/// One separable pass, clamping at the edges.
fn blur_pass(
    buf: &[[f32; 3]],
    w: usize,
    h: usize,
    kernel: &[f32],
    horizontal: bool,
) -> Vec<[f32; 3]> {
    let radius = (kernel.len() / 2) as isize;
    let mut out = vec![[0.0; 3]; buf.len()];
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0.0f32; 3];
            for (k, weight) in kernel.iter().enumerate() {
                let offset = k as isize - radius;
                let (sx, sy) = if horizontal {
                    ((x as isize + offset).clamp(0, w as isize - 1) as usize, y)
                } else {
                    (x, (y as isize + offset).clamp(0, h as isize - 1) as usize)
                };
                let p = buf[sy * w + sx];
                for c in 0..3 {
                    acc[c] += weight * p[c];
                }
            }
            out[y * w + x] = acc;
        }
    }
    out
}
