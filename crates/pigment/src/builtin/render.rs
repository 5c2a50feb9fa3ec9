//! Rasterising a scene: backgrounds, then objects in order, anti-aliased by 4x4 supersampling
//! of the pixels that an outline crosses (pixels far inside or outside are decided by the
//! signed distance at their centre, which keeps a 128x128 render well under a millisecond).

use ::image::{Rgb, RgbImage};

use super::shapes::signed_distance;
use super::world::{Background, Halves, Scene};

/// Subsamples per pixel side on outline pixels.
const SUPERSAMPLE: usize = 4;

/// Render `scene` as a `size x size` image. Any size is accepted (0 gives an empty image).
pub fn render(scene: &Scene, size: u32) -> RgbImage {
    let n = size as usize;
    let mut buf = background_pixels(&scene.background, n);
    for object in &scene.objects {
        let radius = 0.5 * object.diameter * n as f32;
        if radius <= 0.0 || !radius.is_finite() {
            continue;
        }
        let (cx, cy) = (object.x * n as f32, object.y * n as f32);
        let colour = object.colour.rgb().map(f32::from);
        let clamp = |v: f32| (v.max(0.0) as usize).min(n);
        let (x0, x1) = (clamp(cx - radius - 1.0), clamp(cx + radius + 2.0));
        let (y0, y1) = (clamp(cy - radius - 1.0), clamp(cy + radius + 2.0));
        for py in y0..y1 {
            for px in x0..x1 {
                let coverage = coverage(object.shape, px, py, cx, cy, radius);
                if coverage > 0.0 {
                    let p = &mut buf[py * n + px];
                    for k in 0..3 {
                        p[k] += (colour[k] - p[k]) * coverage;
                    }
                }
            }
        }
    }
    let mut img = RgbImage::new(size, size);
    for (dst, src) in img.pixels_mut().zip(buf) {
        *dst = Rgb(src.map(|v| v.round().clamp(0.0, 255.0) as u8));
    }
    img
}

/// Fraction of pixel (px, py) covered by the shape centred at (cx, cy) with half-diameter
/// `radius`, all in pixels.
fn coverage(
    shape: super::world::Shape,
    px: usize,
    py: usize,
    cx: f32,
    cy: f32,
    radius: f32,
) -> f32 {
    let inv = 1.0 / radius;
    let centre = signed_distance(
        shape,
        (px as f32 + 0.5 - cx) * inv,
        (py as f32 + 0.5 - cy) * inv,
    );
    // Half the pixel diagonal is 0.707 px: beyond that the pixel is entirely on one side.
    let margin = 0.75 * inv;
    if centre < -margin {
        return 1.0;
    }
    if centre > margin {
        return 0.0;
    }
    let step = 1.0 / SUPERSAMPLE as f32;
    let mut inside = 0;
    for sy in 0..SUPERSAMPLE {
        for sx in 0..SUPERSAMPLE {
            let x = px as f32 + (sx as f32 + 0.5) * step - cx;
            let y = py as f32 + (sy as f32 + 0.5) * step - cy;
            if signed_distance(shape, x * inv, y * inv) < 0.0 {
                inside += 1;
            }
        }
    }
    inside as f32 / (SUPERSAMPLE * SUPERSAMPLE) as f32
}

/// The background as float RGB; a two-tone background splits at the middle of the image.
fn background_pixels(background: &Background, n: usize) -> Vec<[f32; 3]> {
    let mut buf = Vec::with_capacity(n * n);
    for y in 0..n {
        for x in 0..n {
            let c = match *background {
                Background::Plain(c) => c,
                Background::TwoTone {
                    first,
                    second,
                    halves,
                } => {
                    let t = if halves == Halves::LeftRight { x } else { y };
                    if 2 * t + 1 < n {
                        first
                    } else {
                        second
                    }
                }
            };
            buf.push(c.rgb().map(f32::from));
        }
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::world::{Colour, Object, Shape, Size};

    fn one(shape: Shape, diameter: f32) -> Scene {
        Scene {
            objects: vec![Object {
                shape,
                colour: Colour::Red,
                size: Size::Large,
                x: 0.5,
                y: 0.5,
                diameter,
            }],
            background: Background::Plain(Colour::White),
        }
    }

    #[test]
    fn square_covers_its_area_with_antialiased_edges() {
        let img = render(&one(Shape::Square, 0.3), 100);
        let red = img.pixels().filter(|p| p.0 == Colour::Red.rgb()).count();
        assert_eq!(red, 30 * 30);
        let circle = render(&one(Shape::Circle, 0.31), 100);
        let partial = circle
            .pixels()
            .filter(|p| p.0 != Colour::Red.rgb() && p.0 != Colour::White.rgb())
            .count();
        assert!(partial > 40, "anti-aliased outline expected, got {partial}");
    }

    #[test]
    fn two_tone_background_splits_in_the_middle() {
        let scene = Scene {
            objects: vec![],
            background: Background::TwoTone {
                first: Colour::Black,
                second: Colour::White,
                halves: Halves::TopBottom,
            },
        };
        let img = render(&scene, 64);
        assert_eq!(img.get_pixel(10, 31).0, Colour::Black.rgb());
        assert_eq!(img.get_pixel(10, 32).0, Colour::White.rgb());
    }

    #[test]
    fn degenerate_sizes_do_not_panic() {
        for size in [0, 1, 2, 3] {
            let img = render(&one(Shape::Star, 0.3), size);
            assert_eq!(img.width(), size);
        }
        let mut scene = one(Shape::Ring, f32::NAN);
        scene.objects[0].x = -3.0;
        render(&scene, 16);
    }
}
