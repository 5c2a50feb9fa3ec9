//! Perception: what objects an image shows. Foreground pixels (far from the estimated
//! background) are grouped into 8-connected components; each component gets a palette colour
//! by unmixing it from the background, a crisp mask at 50% coverage, and a shape by template
//! matching: the IoU of the mask with each shape drawn over the mask's bounding box, corrected
//! by the mask's up-down symmetry (robust to blur, which rounds a small star into a blob).

use ::image::RgbImage;

use super::background::{distance_to_segment, BackgroundModel};
use super::shapes::{extent, signed_distance};
use super::world::{rgb_distance, Background, Colour, Shape, Size};

/// Components smaller than this fraction of the image are specks, not objects.
const MIN_AREA: f32 = 0.0035;
/// Weight of "the core does not reach this colour" against "the core is off this colour's line".
const SHORTFALL_WEIGHT: f32 = 0.5;

/// Geometry of one component's mask, the inputs of `classify`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapeFeatures {
    /// Intersection over union of the mask with each shape (in `Shape::ALL` order) drawn to
    /// fill the mask's bounding box.
    pub template: [f32; 6],
    /// Intersection over union of the mask and its upside-down mirror: 1 for circle, square,
    /// ring and cross, 1/3 for the triangle, about 0.49 for the star (one point up, two down).
    pub symmetry: f32,
}

/// One object the analyser sees.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub colour: Colour,
    pub shape: Shape,
    pub size: Size,
    /// Centroid, as fractions of width and height (x right, y down).
    pub x: f32,
    pub y: f32,
    /// Largest bounding-box side as a fraction of the image side.
    pub diameter: f32,
    /// Mask area as a fraction of the image.
    pub area: f32,
    pub features: ShapeFeatures,
}

/// Everything the analyser sees in an image.
#[derive(Debug, Clone, PartialEq)]
pub struct Perception {
    /// None only for an empty (0-pixel) image.
    pub background: Option<Background>,
    /// Largest first.
    pub objects: Vec<Detection>,
}

pub fn perceive(img: &RgbImage) -> Perception {
    let Some(bg) = BackgroundModel::estimate(img) else {
        return Perception {
            background: None,
            objects: vec![],
        };
    };
    let (w, h) = (img.width() as usize, img.height() as usize);
    let pixels: Vec<[f32; 3]> = img.pixels().map(|p| p.0.map(f32::from)).collect();
    let foreground = bg.foreground(&pixels);
    let min_area = (MIN_AREA * (w * h) as f32).max(3.0);
    let mut objects: Vec<Detection> = components(&foreground, w, h)
        .into_iter()
        .filter(|c| c.len() as f32 >= min_area)
        .filter_map(|c| describe(&c, &pixels, &bg, w, h, min_area))
        .collect();
    objects.sort_by(|a, b| b.area.total_cmp(&a.area));
    Perception {
        background: Some(bg.seen),
        objects,
    }
}

/// 8-connected components of `mask`, as lists of pixel indices.
fn components(mask: &[bool], w: usize, h: usize) -> Vec<Vec<usize>> {
    let mut seen = vec![false; mask.len()];
    let mut out = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        let mut stack = vec![start];
        let mut members = Vec::new();
        while let Some(i) = stack.pop() {
            members.push(i);
            let (x, y) = (i % w, i / w);
            for ny in y.saturating_sub(1)..(y + 2).min(h) {
                for nx in x.saturating_sub(1)..(x + 2).min(w) {
                    let j = ny * w + nx;
                    if mask[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        out.push(members);
    }
    out
}

fn describe(
    members: &[usize],
    pixels: &[[f32; 3]],
    bg: &BackgroundModel,
    w: usize,
    h: usize,
    min_area: f32,
) -> Option<Detection> {
    let colour = unmix_colour(members, pixels, bg, w)?;
    let target = colour.rgb().map(f32::from);
    // The crisp mask: pixels at least half-way from the background to the object's colour.
    let mask: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&i| distance_to_segment(pixels[i], bg.at(i % w, i / w), target).1 >= 0.5)
        .collect();
    if (mask.len() as f32) < min_area {
        return None;
    }
    let (x0, x1) = min_max(mask.iter().map(|&i| i % w));
    let (y0, y1) = min_max(mask.iter().map(|&i| i / w));
    let (bw, bh) = (x1 - x0 + 1, y1 - y0 + 1);
    let mut local = vec![false; bw * bh];
    for &i in &mask {
        local[(i / w - y0) * bw + (i % w - x0)] = true;
    }
    let features = shape_features(&local, bw, bh);
    let n = mask.len() as f32;
    let cx = mask.iter().map(|&i| (i % w) as f32 + 0.5).sum::<f32>() / n;
    let cy = mask.iter().map(|&i| (i / w) as f32 + 0.5).sum::<f32>() / n;
    let diameter = (bw as f32 / w as f32).max(bh as f32 / h as f32);
    Some(Detection {
        colour,
        shape: classify(&features),
        size: if diameter >= Size::threshold() {
            Size::Large
        } else {
            Size::Small
        },
        x: cx / w as f32,
        y: cy / h as f32,
        diameter,
        area: n / (w * h) as f32,
        features,
    })
}

/// The palette colour that best explains the component's core (its pixels farthest from the
/// background) as a blend of background and object: off the blend line costs its distance,
/// falling short of the colour (blur, thin strokes) costs half as much.
fn unmix_colour(
    members: &[usize],
    pixels: &[[f32; 3]],
    bg: &BackgroundModel,
    w: usize,
) -> Option<Colour> {
    let local_bg = |i: usize| bg.at(i % w, i / w);
    let mut distances: Vec<f32> = members
        .iter()
        .map(|&i| rgb_distance(pixels[i], local_bg(i)))
        .collect();
    distances.sort_by(f32::total_cmp);
    let high = *distances.get(distances.len() * 95 / 100)?;
    let core: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&i| rgb_distance(pixels[i], local_bg(i)) >= 0.7 * high)
        .collect();
    let background_colours = bg.seen.colours();
    let mut best: Option<(f32, Colour)> = None;
    for colour in Colour::ALL {
        if background_colours.contains(&colour) {
            continue;
        }
        let target = colour.rgb().map(f32::from);
        let cost: f32 = core
            .iter()
            .map(|&i| {
                let b = local_bg(i);
                let (off_line, t) = distance_to_segment(pixels[i], b, target);
                off_line + SHORTFALL_WEIGHT * (1.0 - t).max(0.0) * rgb_distance(b, target)
            })
            .sum();
        if best.is_none_or(|(c, _)| cost < c) {
            best = Some((cost, colour));
        }
    }
    best.map(|(_, c)| c)
}

fn min_max(values: impl Iterator<Item = usize>) -> (usize, usize) {
    values.fold((usize::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// Features of a `w x h` mask that fills its bounding box edge to edge.
pub fn shape_features(mask: &[bool], w: usize, h: usize) -> ShapeFeatures {
    ShapeFeatures {
        template: Shape::ALL.map(|shape| template_iou(mask, w, h, shape)),
        symmetry: up_down_symmetry(mask, w, h),
    }
}

/// Soft IoU of `mask` with `shape` stretched over the same `w x h` box (2x2 supersampled),
/// upright or upside down, whichever fits better (a triangle pointing down is a triangle).
fn template_iou(mask: &[bool], w: usize, h: usize, shape: Shape) -> f32 {
    let (ex, ey) = extent(shape);
    let mut best = 0.0f32;
    for flip in [1.0, -1.0] {
        let (mut inter, mut union) = (0.0f32, 0.0f32);
        for y in 0..h {
            for x in 0..w {
                let mut t = 0.0;
                for (sx, sy) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
                    let u = ((x as f32 + sx) / w as f32 * 2.0 - 1.0) * ex;
                    let v = ((y as f32 + sy) / h as f32 * 2.0 - 1.0) * ey * flip;
                    if signed_distance(shape, u, v) < 0.0 {
                        t += 0.25;
                    }
                }
                let m = if mask[y * w + x] { 1.0 } else { 0.0 };
                inter += f32::min(m, t);
                union += f32::max(m, t);
            }
        }
        best = best.max(inter / union.max(1e-6));
    }
    best
}

fn up_down_symmetry(mask: &[bool], w: usize, h: usize) -> f32 {
    let (mut both, mut either) = (0usize, 0usize);
    for y in 0..h {
        for x in 0..w {
            let (a, b) = (mask[y * w + x], mask[(h - 1 - y) * w + x]);
            both += usize::from(a && b);
            either += usize::from(a || b);
        }
    }
    both as f32 / either.max(1) as f32
}

/// Up-down symmetry of each shape in `Shape::ALL` order (see `ShapeFeatures::symmetry`).
pub const IDEAL_SYMMETRY: [f32; 6] = [1.0, 1.0, 1.0 / 3.0, 0.49, 1.0, 1.0];
/// How much a symmetry mismatch costs against template IoU. Blur turns a small star into a
/// blob whose best template is the circle; its asymmetry still gives it away.
const SYMMETRY_WEIGHT: f32 = 0.5;

/// The shape whose template fits best, corrected by how well its symmetry matches.
pub fn classify(f: &ShapeFeatures) -> Shape {
    let score = |i: usize| f.template[i] - SYMMETRY_WEIGHT * (f.symmetry - IDEAL_SYMMETRY[i]).abs();
    let best = (0..6).max_by(|&a, &b| score(a).total_cmp(&score(b)));
    Shape::ALL[best.unwrap_or(0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template_mask(shape: Shape, n: usize) -> (Vec<bool>, usize, usize) {
        let (ex, ey) = extent(shape);
        let h = ((n as f32) * ey / ex).round() as usize;
        let mask = (0..n * h)
            .map(|i| {
                let u = (((i % n) as f32 + 0.5) / n as f32 * 2.0 - 1.0) * ex;
                let v = (((i / n) as f32 + 0.5) / h as f32 * 2.0 - 1.0) * ey;
                signed_distance(shape, u, v) < 0.0
            })
            .collect();
        (mask, n, h)
    }

    #[test]
    fn templates_classify_themselves_and_ideal_symmetry_is_right() {
        for (i, shape) in Shape::ALL.into_iter().enumerate() {
            let (mask, w, h) = template_mask(shape, 120);
            let f = shape_features(&mask, w, h);
            assert!(f.template[i] > 0.97, "{shape:?} {f:?}");
            assert!(
                (f.symmetry - IDEAL_SYMMETRY[i]).abs() < 0.02,
                "{shape:?} {f:?}"
            );
            assert_eq!(classify(&f), shape);
        }
    }

    #[test]
    fn empty_and_tiny_masks_do_not_panic() {
        let f = shape_features(&[], 0, 0);
        classify(&f);
        let f = shape_features(&[true], 1, 1);
        classify(&f);
    }
}
