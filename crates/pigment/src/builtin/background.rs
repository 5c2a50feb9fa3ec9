//! The analyser's estimate of an image's background from its border: plain, or two tones split
//! down the middle (left/right or top/bottom), voted by nearest palette colour and then measured
//! as the mean actual colour, so that off-colour generated backgrounds still work.

use ::image::RgbImage;

use super::world::{rgb_distance, Background, Colour, Halves};

/// A split hypothesis must explain this much more of the border than a plain background.
const SPLIT_ADVANTAGE: f32 = 0.15;

pub(crate) struct BackgroundModel {
    pub seen: Background,
    halves: Option<Halves>,
    first: [f32; 3],
    second: [f32; 3],
    width: usize,
    height: usize,
    /// A pixel this far (RGB distance) from the local background colour is foreground.
    pub threshold: f32,
    seam_band: f32,
}

impl BackgroundModel {
    /// Estimate from the image border; None for an empty image.
    pub fn estimate(img: &RgbImage) -> Option<Self> {
        let (width, height) = (img.width() as usize, img.height() as usize);
        if width == 0 || height == 0 {
            return None;
        }
        let thickness = (width.min(height) / 32).max(1);
        let mut frame = Vec::new();
        for (x, y, p) in img.enumerate_pixels() {
            let (x, y) = (x as usize, y as usize);
            let on_frame =
                x < thickness || y < thickness || x + thickness >= width || y + thickness >= height;
            if on_frame {
                let rgb = p.0.map(f32::from);
                frame.push(FramePixel {
                    x,
                    y,
                    rgb,
                    colour: Colour::nearest(rgb),
                });
            }
        }
        let first_half = |f: &FramePixel, halves: Halves| match halves {
            Halves::LeftRight => 2 * f.x + 1 < width,
            Halves::TopBottom => 2 * f.y + 1 < height,
        };
        let plain = majority(frame.iter());
        let plain_score = share(&frame, |f| f.colour == plain);
        let mut best: Option<(f32, Halves, Colour, Colour)> = None;
        for halves in [Halves::LeftRight, Halves::TopBottom] {
            let a = majority(frame.iter().filter(|f| first_half(f, halves)));
            let b = majority(frame.iter().filter(|f| !first_half(f, halves)));
            let expected = |f: &FramePixel| if first_half(f, halves) { a } else { b };
            let score = share(&frame, |f| f.colour == expected(f));
            if a != b && score >= plain_score + SPLIT_ADVANTAGE && best.is_none_or(|b| score > b.0)
            {
                best = Some((score, halves, a, b));
            }
        }
        let (halves, a, b) = match best {
            Some((_, halves, a, b)) => (Some(halves), a, b),
            None => (None, plain, plain),
        };
        let class_of = |f: &FramePixel| match halves {
            Some(h) if !first_half(f, h) => b,
            _ => a,
        };
        let matching: Vec<&FramePixel> = frame.iter().filter(|f| f.colour == class_of(f)).collect();
        let mean = |class: Colour, first: bool| {
            let pixels: Vec<[f32; 3]> = matching
                .iter()
                .filter(|f| halves.is_none_or(|h| first_half(f, h) == first) && f.colour == class)
                .map(|f| f.rgb)
                .collect();
            mean_rgb(&pixels).unwrap_or(class.rgb().map(f32::from))
        };
        let (first, second) = (mean(a, true), mean(b, false));
        // Noise level of the background decides the foreground threshold.
        let spread = matching
            .iter()
            .map(|f| {
                let m = if halves.is_none_or(|h| first_half(f, h)) {
                    first
                } else {
                    second
                };
                rgb_distance(f.rgb, m).powi(2)
            })
            .sum::<f32>()
            / matching.len().max(1) as f32;
        let seen = match halves {
            None => Background::Plain(Colour::nearest(first)),
            Some(halves) => Background::TwoTone {
                first: Colour::nearest(first),
                second: Colour::nearest(second),
                halves,
            },
        };
        Some(Self {
            seen,
            halves,
            first,
            second,
            width,
            height,
            threshold: (3.5 * spread.sqrt()).clamp(40.0, 70.0),
            seam_band: (width.min(height) as f32 / 40.0).max(1.5),
        })
    }

    /// The expected background colour at pixel (x, y).
    pub fn at(&self, x: usize, y: usize) -> [f32; 3] {
        match self.halves {
            Some(Halves::LeftRight) if 2 * x + 1 >= self.width => self.second,
            Some(Halves::TopBottom) if 2 * y + 1 >= self.height => self.second,
            _ => self.first,
        }
    }

    /// The foreground mask: pixels farther than `threshold` from their local background.
    /// Blur mixes the two tones of a two-tone background along the seam; there, a pixel that
    /// is a blend of the tones is background, unless an object crosses the seam at that place
    /// (the pixels just beyond the seam band on both sides are not both background).
    pub fn foreground(&self, pixels: &[[f32; 3]]) -> Vec<bool> {
        let (w, h) = (self.width, self.height);
        let far = |i: usize| rgb_distance(pixels[i], self.at(i % w, i / w)) > self.threshold;
        let mut mask: Vec<bool> = (0..w * h).map(far).collect();
        let Some(halves) = self.halves else {
            return mask;
        };
        let (along, across) = match halves {
            Halves::LeftRight => (h, w),
            Halves::TopBottom => (w, h),
        };
        let index = |a: usize, c: usize| match halves {
            Halves::LeftRight => a * w + c,
            Halves::TopBottom => c * w + a,
        };
        let middle = across as f32 / 2.0;
        let band = self.seam_band.ceil() as usize;
        let before = (middle as usize).saturating_sub(band + 1);
        let after = ((middle as usize) + band).min(across - 1);
        for a in 0..along {
            if mask[index(a, before)] || mask[index(a, after)] {
                continue;
            }
            for c in before..=after {
                let i = index(a, c);
                let offset = c as f32 + 0.5 - middle;
                let blend = distance_to_segment(pixels[i], self.first, self.second).0;
                if offset.abs() <= self.seam_band && blend <= self.threshold {
                    mask[i] = false;
                }
            }
        }
        mask
    }
}

struct FramePixel {
    x: usize,
    y: usize,
    rgb: [f32; 3],
    colour: Colour,
}

fn majority<'a>(pixels: impl Iterator<Item = &'a FramePixel>) -> Colour {
    let mut counts = [0usize; 12];
    for p in pixels {
        counts[Colour::ALL.iter().position(|&c| c == p.colour).unwrap_or(0)] += 1;
    }
    let best = (0..12)
        .max_by_key(|&i| (counts[i], usize::MAX - i))
        .unwrap_or(0);
    Colour::ALL[best]
}

fn share(frame: &[FramePixel], keep: impl Fn(&FramePixel) -> bool) -> f32 {
    frame.iter().filter(|f| keep(f)).count() as f32 / frame.len().max(1) as f32
}

pub(crate) fn mean_rgb(pixels: &[[f32; 3]]) -> Option<[f32; 3]> {
    if pixels.is_empty() {
        return None;
    }
    let mut sum = [0.0f32; 3];
    for p in pixels {
        for k in 0..3 {
            sum[k] += p[k];
        }
    }
    Some(sum.map(|s| s / pixels.len() as f32))
}

/// Distance from `p` to the RGB segment `a -> b`, and the unclamped position `t` of the
/// projection (0 at `a`, 1 at `b`): how far `p` is a blend of the two colours.
pub(crate) fn distance_to_segment(p: [f32; 3], a: [f32; 3], b: [f32; 3]) -> (f32, f32) {
    let v = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
    let w = [p[0] - a[0], p[1] - a[1], p[2] - a[2]];
    let vv = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
    let t = if vv > 0.0 {
        (w[0] * v[0] + w[1] * v[1] + w[2] * v[2]) / vv
    } else {
        0.0
    };
    let tc = t.clamp(0.0, 1.0);
    let closest = [a[0] + tc * v[0], a[1] + tc * v[1], a[2] + tc * v[2]];
    (rgb_distance(p, closest), t)
}
