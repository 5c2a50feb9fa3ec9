//! Signed distance functions of the six shapes, in units of the object's half-diameter R, with
//! the object's `2R x 2R` box centred on the origin (x right, y down). Negative inside.
//!
//! Formulas follow Inigo Quilez's 2D distance functions (iquilezles.org/articles/distfunctions2d):
//! `sdBox`, `sdCircle`, `sdPolygon`; unions are `min`, intersections `max`.

use super::world::Shape;

/// Inner radius of a ring, as a fraction of its outer radius.
pub const RING_INNER: f32 = 0.55;
/// Half-width of a cross's arms, as a fraction of R.
pub const CROSS_ARM: f32 = 0.36;
/// Inner radius of a star, as a fraction of its outer radius (fat arms survive low resolutions).
pub const STAR_INNER: f32 = 0.48;

/// Signed distance from `(x, y)` to the shape's outline, in units of R.
pub fn signed_distance(shape: Shape, x: f32, y: f32) -> f32 {
    match shape {
        Shape::Circle => x.hypot(y) - 1.0,
        Shape::Ring => {
            let r = x.hypot(y);
            (r - 1.0).max(RING_INNER - r)
        }
        Shape::Square => sd_box(x, y, 1.0, 1.0),
        Shape::Cross => sd_box(x, y, 1.0, CROSS_ARM).min(sd_box(x, y, CROSS_ARM, 1.0)),
        Shape::Triangle => sd_polygon(x, y, &TRIANGLE),
        Shape::Star => sd_polygon(x, y, STAR.get_or_init(star_vertices)),
    }
}

/// Half-extents (x, y) of the shape's own bounding box, in units of R: the shape fills
/// `[-x, x] x [-y, y]` edge to edge (the triangle and star are a little wider than tall).
pub fn extent(shape: Shape) -> (f32, f32) {
    match shape {
        Shape::Triangle => (1.0, 0.866_025_4),
        // (1 + cos 36 deg) / 2 * outer radius, with outer = 1 / sin 72 deg.
        Shape::Star => (1.0, 0.951_056_5),
        _ => (1.0, 1.0),
    }
}

/// Equilateral triangle pointing up: width 2, height sqrt(3), centred in its box.
const TRIANGLE: [(f32, f32); 3] = [(0.0, -0.866_025_4), (1.0, 0.866_025_4), (-1.0, 0.866_025_4)];

static STAR: std::sync::OnceLock<[(f32, f32); 10]> = std::sync::OnceLock::new();

/// Five-pointed star, one point up, scaled so its width is exactly 2 and shifted so that its
/// bounding box is centred on the origin.
fn star_vertices() -> [(f32, f32); 10] {
    use std::f32::consts::PI;
    let outer = 1.0 / (0.4 * PI).sin(); // width = 2 * outer * sin(72 deg)
    let shift = outer * (1.0 - (0.2 * PI).cos()) / 2.0; // top at -outer, bottom at outer*cos(36)
    let mut v = [(0.0, 0.0); 10];
    for (k, p) in v.iter_mut().enumerate() {
        let angle = -PI / 2.0 + k as f32 * PI / 5.0;
        let r = if k % 2 == 0 {
            outer
        } else {
            outer * STAR_INNER
        };
        *p = (r * angle.cos(), r * angle.sin() + shift);
    }
    v
}

fn sd_box(x: f32, y: f32, half_w: f32, half_h: f32) -> f32 {
    let qx = x.abs() - half_w;
    let qy = y.abs() - half_h;
    qx.max(0.0).hypot(qy.max(0.0)) + qx.max(qy).min(0.0)
}

fn sd_polygon(x: f32, y: f32, v: &[(f32, f32)]) -> f32 {
    let n = v.len();
    let mut d = (x - v[0].0).powi(2) + (y - v[0].1).powi(2);
    let mut sign = 1.0;
    let mut j = n - 1;
    for i in 0..n {
        let (ex, ey) = (v[j].0 - v[i].0, v[j].1 - v[i].1);
        let (wx, wy) = (x - v[i].0, y - v[i].1);
        let t = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0.0, 1.0);
        let (bx, by) = (wx - ex * t, wy - ey * t);
        d = d.min(bx * bx + by * by);
        let c1 = y >= v[i].1;
        let c2 = y < v[j].1;
        let c3 = ex * wy > ey * wx;
        if (c1 && c2 && c3) || (!c1 && !c2 && !c3) {
            sign = -sign;
        }
        j = i;
    }
    sign * d.sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Area fraction of the 2x2 box covered by the shape, by dense sampling.
    fn fill(shape: Shape) -> f32 {
        let n = 400;
        let mut inside = 0;
        for i in 0..n {
            for j in 0..n {
                let x = -1.0 + 2.0 * (i as f32 + 0.5) / n as f32;
                let y = -1.0 + 2.0 * (j as f32 + 0.5) / n as f32;
                if signed_distance(shape, x, y) < 0.0 {
                    inside += 1;
                }
            }
        }
        inside as f32 / (n * n) as f32
    }

    #[test]
    fn areas_match_geometry() {
        let pi4 = std::f32::consts::FRAC_PI_4;
        assert!((fill(Shape::Square) - 1.0).abs() < 0.01);
        assert!((fill(Shape::Circle) - pi4).abs() < 0.01);
        assert!((fill(Shape::Ring) - pi4 * (1.0 - RING_INNER * RING_INNER)).abs() < 0.01);
        assert!((fill(Shape::Triangle) - 0.433).abs() < 0.01); // sqrt(3)/4
        let a = CROSS_ARM;
        assert!((fill(Shape::Cross) - (2.0 * a - a * a)).abs() < 0.01);
        assert!(fill(Shape::Star) > 0.3 && fill(Shape::Star) < 0.45);
    }

    #[test]
    fn every_shape_fits_its_box_and_touches_the_sides() {
        for shape in Shape::ALL {
            assert!(signed_distance(shape, 1.02, 0.0) > 0.0);
            assert!(signed_distance(shape, 0.0, 1.02) > 0.0);
            assert!(signed_distance(shape, 0.0, -1.02) > 0.0);
            assert!(signed_distance(shape, 1.05, 1.05) > 0.0);
        }
        // The star's side points reach x = +-1 (they sit above the centre line).
        let reaches_side =
            (0..200).any(|k| signed_distance(Shape::Star, 0.98, -1.0 + k as f32 / 100.0) < 0.0);
        assert!(reaches_side);
    }
}
