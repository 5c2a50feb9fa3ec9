//! Non-maximum suppression of Canny, with OpenCV's integer direction tests
//! (modules/imgproc/src/canny.cpp, `parallelCanny::operator()`).

/// A pixel that is not an edge.
pub(crate) const NOT_EDGE: u8 = 1;
/// A local maximum above the low threshold only: an edge if connected to a strong one.
pub(crate) const WEAK: u8 = 0;
/// A local maximum above the high threshold: an edge.
pub(crate) const STRONG: u8 = 2;

/// tan(22.5 deg) in Q15, OpenCV's `TG22`.
const CANNY_SHIFT: u32 = 15;
const TG22: i64 = 13573; // (0.41421356... * (1 << 15) + 0.5) as int

/// The gradient of every pixel: direction (`dx`, `dy`) and L1 magnitude.
pub(crate) struct Gradient {
    pub width: usize,
    pub height: usize,
    pub dx: Vec<i32>,
    pub dy: Vec<i32>,
    pub magnitude: Vec<i32>,
}

/// Classifies each pixel as [`NOT_EDGE`], [`WEAK`] or [`STRONG`].
///
/// A pixel is kept when its magnitude is `> low` and it is a maximum along its gradient
/// direction, quantised to 0/45/90/135 degrees with `|dy| / |dx|` against tan 22.5 and
/// tan 67.5 in Q15 fixed point. Ties follow OpenCV exactly: `>` against the left/upper
/// neighbour, `>=` against the right/lower one, `>` against both diagonal ones. Magnitudes
/// outside the image count as 0.
pub(crate) fn non_max_suppression(grad: &Gradient, low: i32, high: i32) -> Vec<u8> {
    let (w, h) = (grad.width, grad.height);
    let mag = |x: isize, y: isize| -> i32 {
        if x < 0 || y < 0 || x >= w as isize || y >= h as isize {
            0
        } else {
            grad.magnitude[y as usize * w + x as usize]
        }
    };
    let mut map = vec![NOT_EDGE; w * h];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let m = grad.magnitude[i];
            if m <= low {
                continue;
            }
            let (xs, ys) = (grad.dx[i], grad.dy[i]);
            let ax = i64::from(xs.abs());
            let ay = i64::from(ys.abs()) << CANNY_SHIFT;
            let tg22x = ax * TG22;
            let (xi, yi) = (x as isize, y as isize);
            let is_max = if ay < tg22x {
                // Mostly horizontal gradient: compare left and right.
                m > mag(xi - 1, yi) && m >= mag(xi + 1, yi)
            } else {
                let tg67x = tg22x + (ax << (CANNY_SHIFT + 1));
                if ay > tg67x {
                    // Mostly vertical gradient: compare above and below.
                    m > mag(xi, yi - 1) && m >= mag(xi, yi + 1)
                } else {
                    // Diagonal: same signs -> the "\" diagonal, opposite -> "/".
                    let s: isize = if (xs ^ ys) < 0 { -1 } else { 1 };
                    m > mag(xi - s, yi - 1) && m > mag(xi + s, yi + 1)
                }
            };
            if is_max {
                map[i] = if m > high { STRONG } else { WEAK };
            }
        }
    }
    map
}
