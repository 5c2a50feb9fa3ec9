//! The transforms of one tile size as formulas on up to 6 values.

/// One tile size's transforms as formulas on up to 6 values (Lavin & Gray 2015, section 4.1
/// for F(2x2, 3x3), 4.2 for F(4x4, 3x3)); entries past N (or M) are unused.
pub(super) trait Kind: Sync {
    /// Output tile size m.
    const M: usize;
    /// Input tile size n = m + 2.
    const N: usize;
    /// B^T d.
    fn bt(d: [f32; 6]) -> [f32; 6];
    /// G g.
    fn g(w: [f32; 3]) -> [f32; 6];
    /// A^T v.
    fn at(v: [f32; 6]) -> [f32; 4];
    /// The n input values of tile `tx` from the m phases of a row (phase c holds the row's
    /// columns k * m + c).
    fn load(phases: &[&mut [f32]; 4], tx: usize) -> [f32; 6];
}

pub(super) struct F2;
pub(super) struct F4;

impl Kind for F2 {
    const M: usize = 2;
    const N: usize = 4;
    #[inline(always)]
    fn bt(d: [f32; 6]) -> [f32; 6] {
        [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3], 0.0, 0.0]
    }
    #[inline(always)]
    fn g(w: [f32; 3]) -> [f32; 6] {
        let (s, t) = (0.5 * (w[0] + w[2]), 0.5 * w[1]);
        [w[0], s + t, s - t, w[2], 0.0, 0.0]
    }
    #[inline(always)]
    fn at(v: [f32; 6]) -> [f32; 4] {
        [v[0] + v[1] + v[2], v[1] - v[2] - v[3], 0.0, 0.0]
    }
    #[inline(always)]
    fn load(p: &[&mut [f32]; 4], tx: usize) -> [f32; 6] {
        [p[0][tx], p[1][tx], p[0][tx + 1], p[1][tx + 1], 0.0, 0.0]
    }
}

impl Kind for F4 {
    const M: usize = 4;
    const N: usize = 6;
    #[inline(always)]
    fn bt(d: [f32; 6]) -> [f32; 6] {
        // Rows of B^T: [4 0 -5 0 1 0], [0 -4 -4 1 1 0], [0 4 -4 -1 1 0], [0 -2 -1 2 1 0],
        // [0 2 -1 -2 1 0], [0 4 0 -5 0 1].
        let (a, b) = (d[4] - 4.0 * d[2], d[3] - 4.0 * d[1]);
        let (c, e) = (d[4] - d[2], 2.0 * (d[3] - d[1]));
        [
            4.0 * d[0] - 5.0 * d[2] + d[4],
            a + b,
            a - b,
            c + e,
            c - e,
            4.0 * d[1] - 5.0 * d[3] + d[5],
        ]
    }
    #[inline(always)]
    fn g(w: [f32; 3]) -> [f32; 6] {
        // Rows of G: [1/4 0 0], -1/6 [1 1 1], -1/6 [1 -1 1], [1/24 1/12 1/6], [1/24 -1/12 1/6],
        // [0 0 1].
        let (s, t) = (w[0] + w[2], w[1]);
        let (p, q) = (
            w[0] * (1.0 / 24.0) + w[2] * (1.0 / 6.0),
            w[1] * (1.0 / 12.0),
        );
        [
            0.25 * w[0],
            -(s + t) * (1.0 / 6.0),
            -(s - t) * (1.0 / 6.0),
            p + q,
            p - q,
            w[2],
        ]
    }
    #[inline(always)]
    fn at(v: [f32; 6]) -> [f32; 4] {
        // Rows of A^T: [1 1 1 1 1 0], [0 1 -1 2 -2 0], [0 1 1 4 4 0], [0 1 -1 8 -8 1].
        let (a, b) = (v[1] + v[2], v[1] - v[2]);
        let (c, d) = (v[3] + v[4], v[3] - v[4]);
        [v[0] + a + c, b + 2.0 * d, a + 4.0 * c, b + 8.0 * d + v[5]]
    }
    #[inline(always)]
    fn load(p: &[&mut [f32]; 4], tx: usize) -> [f32; 6] {
        [
            p[0][tx],
            p[1][tx],
            p[2][tx],
            p[3][tx],
            p[0][tx + 1],
            p[1][tx + 1],
        ]
    }
}
