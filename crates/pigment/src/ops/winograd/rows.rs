//! The input, output and weight transforms applied to whole rows (of pixels, tiles or input
//! channels), compiled for AVX-512 and AVX2 as well and picked at run time.
//!
//! Each writes its formula's results to its rows as separately named slices cut to the row
//! length (`d0[i] = v[0]; ...`): a generic "spread over R rows" helper measured 15-30% slower
//! on SD's shapes (conv_bench), so the repetition stays.

use std::ops::Range;

use super::tiles::Kind;

/// R consecutive rows of `len` from `buf` (which the caller sized for them).
pub(super) fn rows<const R: usize>(buf: &mut [f32], len: usize) -> [&mut [f32]; R] {
    let mut it = buf.chunks_exact_mut(len);
    std::array::from_fn(|_| it.next().expect("scratch buffer sized for its rows"))
}

/// Sizes shared by the steps of one call.
#[derive(Clone, Copy)]
pub(super) struct Plan {
    pub(super) height: usize,
    pub(super) width: usize,
    pub(super) padding: usize,
    pub(super) cin: usize,
    pub(super) cout: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
    pub(super) tiles_x: usize,
    /// Row length of the horizontally padded input band: column j is input column j - padding;
    /// (tiles_x + 1) * m, so that every tile's n columns and the m phases fit.
    pub(super) band: usize,
}

/// Scratch of one input-transform task.
pub(super) struct InputScratch {
    /// 6 rows of `band`: B^T applied down the columns.
    pub(super) t: Vec<f32>,
    /// 4 phases of tiles_x + 1.
    pub(super) phases: Vec<f32>,
    /// 2 spare rows of tiles_x (F(2x2) writes 4 of its 6 results).
    pub(super) stage: Vec<f32>,
    /// A row of zeros for input rows outside the image.
    pub(super) zeros: Vec<f32>,
}

impl InputScratch {
    pub(super) fn new(p: &Plan) -> Self {
        InputScratch {
            t: vec![0.0; 6 * p.band],
            phases: vec![0.0; 4 * (p.tiles_x + 1)],
            stage: vec![0.0; 2 * p.tiles_x],
            zeros: vec![0.0; p.width],
        }
    }
}

/// v[e][col0 .. col0 + tiles_x] = (B^T d B)[e] for the tiles of tile row `ty` of one input
/// channel plane (`v[e]`: a part of V's element e, `col0` where this channel and row start).
#[inline(always)]
pub(super) fn input_row_generic<K: Kind>(
    p: &Plan,
    plane: &[f32],
    ty: usize,
    v: &mut [&mut [f32]],
    col0: usize,
    s: &mut InputScratch,
) {
    let (w, band, tx_n) = (p.width, p.band, p.tiles_x);
    // Vertical: t[r'] = B^T (input rows ty*m - pad ..), zero outside the image.
    let src: [&[f32]; 6] = std::array::from_fn(|r| {
        let y = (ty * K::M + r).wrapping_sub(p.padding);
        if r < K::N && y < p.height {
            &plane[y * w..][..w]
        } else {
            &s.zeros[..w]
        }
    });
    {
        let mut t = rows::<6>(&mut s.t, band);
        for row in t.iter_mut() {
            row[..p.padding].fill(0.0);
            row[p.padding + w..].fill(0.0);
        }
        let [t0, t1, t2, t3, t4, t5] = &mut t;
        let (t0, t1, t2) = (
            &mut t0[p.padding..][..w],
            &mut t1[p.padding..][..w],
            &mut t2[p.padding..][..w],
        );
        let (t3, t4, t5) = (
            &mut t3[p.padding..][..w],
            &mut t4[p.padding..][..w],
            &mut t5[p.padding..][..w],
        );
        for j in 0..w {
            let d = K::bt([
                src[0][j], src[1][j], src[2][j], src[3][j], src[4][j], src[5][j],
            ]);
            t0[j] = d[0];
            t1[j] = d[1];
            t2[j] = d[2];
            t3[j] = d[3];
            t4[j] = d[4];
            t5[j] = d[5];
        }
    }
    // Horizontal, per row r': split the row into its m phases, so that each tile's n values
    // are at the same index of (up to) six contiguous rows; then B^T along the row.
    for r2 in 0..K::N {
        let t_row = &s.t[r2 * band..][..band];
        let [p0, p1, p2, p3] = rows::<4>(&mut s.phases, tx_n + 1);
        let cols = t_row.chunks_exact(K::M);
        if K::M == 4 {
            for (c, (a, (b, (d, e)))) in cols.zip(
                p0.iter_mut()
                    .zip(p1.iter_mut().zip(p2.iter_mut().zip(p3.iter_mut()))),
            ) {
                (*a, *b, *d, *e) = (c[0], c[1], c[2], c[3]);
            }
        } else {
            for (c, (a, b)) in cols.zip(p0.iter_mut().zip(p1.iter_mut())) {
                (*a, *b) = (c[0], c[1]);
            }
        }
        let ph = [p0, p1, p2, p3];
        // Straight into V where this row's n elements go (spare rows of `stage` past n).
        let mut dst_rows = v[r2 * K::N..(r2 + 1) * K::N].iter_mut();
        let mut spare = s.stage.chunks_exact_mut(tx_n);
        let [o0, o1, o2, o3, o4, o5]: [&mut [f32]; 6] =
            std::array::from_fn(|_| match dst_rows.next() {
                Some(row) => &mut row[col0..col0 + tx_n],
                None => spare.next().expect("stage holds the spare rows"),
            });
        let (o0, o1, o2) = (&mut o0[..tx_n], &mut o1[..tx_n], &mut o2[..tx_n]);
        let (o3, o4, o5) = (&mut o3[..tx_n], &mut o4[..tx_n], &mut o5[..tx_n]);
        for tx in 0..tx_n {
            let d = K::bt(K::load(&ph, tx));
            o0[tx] = d[0];
            o1[tx] = d[1];
            o2[tx] = d[2];
            o3[tx] = d[3];
            o4[tx] = d[4];
            o5[tx] = d[5];
        }
    }
}

/// The output rows of tile row `ty` of one output channel: Y = A^T M A + bias, from that
/// channel's M[e] for the row's tiles (`mm[e]`, tiles_x long). `s`: 6 * 4 * tiles_x scratch,
/// `stage`: 4 * ow scratch for the rows past the image's bottom.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn output_row_generic<K: Kind>(
    p: &Plan,
    mm: &[&[f32]; 36],
    bias: f32,
    ty: usize,
    plane: &mut [f32],
    s: &mut [f32],
    stage: &mut [f32],
) {
    let (tx_n, ow) = (p.tiles_x, p.ow);
    let row_len = tx_n * K::M;
    // Horizontal: s[r'][tx * m + j] = sum_c' M[r'][c'] A^T[j][c'] (each tile's m values
    // side by side, so that the row is laid out like the output row).
    for r2 in 0..K::N {
        let src: [&[f32]; 6] =
            std::array::from_fn(|c2| &mm[if c2 < K::N { r2 * K::N + c2 } else { 0 }][..tx_n]);
        let dst = &mut s[r2 * row_len..][..row_len];
        for (tx, d) in dst.chunks_exact_mut(K::M).enumerate() {
            let y = K::at([
                src[0][tx], src[1][tx], src[2][tx], src[3][tx], src[4][tx], src[5][tx],
            ]);
            d.copy_from_slice(&y[..K::M]);
        }
    }
    // Vertical, element-wise along the row: y[i] = bias + sum_r' A^T[i][r'] s[r'], straight
    // into the output rows (rows past the bottom go to `stage`).
    let valid = (p.oh - ty * K::M).min(K::M);
    let mut out_rows = plane[ty * K::M * ow..].chunks_exact_mut(ow).take(valid);
    let mut spare = stage.chunks_exact_mut(ow);
    let [y0, y1, y2, y3]: [&mut [f32]; 4] = std::array::from_fn(|_| {
        out_rows
            .next()
            .or_else(|| spare.next())
            .expect("stage holds the rows past the bottom")
    });
    let (y0, y1, y2, y3) = (&mut y0[..ow], &mut y1[..ow], &mut y2[..ow], &mut y3[..ow]);
    let src: [&[f32]; 6] = std::array::from_fn(|r2| &s[r2.min(K::N - 1) * row_len..][..ow]);
    for k in 0..ow {
        let y = K::at([
            src[0][k], src[1][k], src[2][k], src[3][k], src[4][k], src[5][k],
        ]);
        y0[k] = y[0] + bias;
        y1[k] = y[1] + bias;
        y2[k] = y[2] + bias;
        y3[k] = y[3] + bias;
    }
}

/// The transformed weights of output channels `co`: u[ol][e][..cin] = (G g G^T)[e] for each
/// output channel o = co.start + ol, from the tap-major weights [3, 3, out, in]. `t`: scratch
/// of 18 * cin.
#[inline(always)]
pub(super) fn weights_generic<K: Kind>(
    p: &Plan,
    taps: &[f32],
    co: &Range<usize>,
    u: &mut [f32],
    t: &mut [f32],
) {
    let cin = p.cin;
    let tap = |ky: usize, kx: usize, o: usize| &taps[((ky * 3 + kx) * p.cout + o) * cin..][..cin];
    for (ol, o) in co.clone().enumerate() {
        // Down the columns: t[r][kx] = sum_ky G[r][ky] g[ky][kx].
        for kx in 0..3 {
            let (g0, g1, g2) = (tap(0, kx, o), tap(1, kx, o), tap(2, kx, o));
            let mut dst: [&mut [f32]; 6] = std::array::from_fn(|_| -> &mut [f32] { &mut [] });
            for (r, slot) in t
                .chunks_exact_mut(cin)
                .skip(kx)
                .step_by(3)
                .take(6)
                .enumerate()
            {
                dst[r] = slot;
            }
            let [d0, d1, d2, d3, d4, d5] = &mut dst;
            let (d0, d1, d2) = (&mut d0[..cin], &mut d1[..cin], &mut d2[..cin]);
            let (d3, d4, d5) = (&mut d3[..cin], &mut d4[..cin], &mut d5[..cin]);
            for i in 0..cin {
                let v = K::g([g0[i], g1[i], g2[i]]);
                d0[i] = v[0];
                d1[i] = v[1];
                d2[i] = v[2];
                d3[i] = v[3];
                d4[i] = v[4];
                d5[i] = v[5];
            }
        }
        // Along the rows: u[r][c] = sum_kx G[c][kx] t[r][kx].
        let u_o = &mut u[ol * K::N * K::N * cin..][..K::N * K::N * cin];
        for r in 0..K::N {
            let src = &t[r * 3 * cin..][..3 * cin];
            let (a, rest) = src.split_at(cin);
            let (b, c) = rest.split_at(cin);
            let block = &mut u_o[r * K::N * cin..][..K::N * cin];
            if K::N == 6 {
                let [d0, d1, d2, d3, d4, d5] = rows::<6>(block, cin);
                let (d0, d1, d2) = (&mut d0[..cin], &mut d1[..cin], &mut d2[..cin]);
                let (d3, d4, d5) = (&mut d3[..cin], &mut d4[..cin], &mut d5[..cin]);
                for i in 0..cin {
                    let v = K::g([a[i], b[i], c[i]]);
                    d0[i] = v[0];
                    d1[i] = v[1];
                    d2[i] = v[2];
                    d3[i] = v[3];
                    d4[i] = v[4];
                    d5[i] = v[5];
                }
            } else {
                let [d0, d1, d2, d3] = rows::<4>(block, cin);
                let (d0, d1, d2, d3) = (
                    &mut d0[..cin],
                    &mut d1[..cin],
                    &mut d2[..cin],
                    &mut d3[..cin],
                );
                for i in 0..cin {
                    let v = K::g([a[i], b[i], c[i]]);
                    d0[i] = v[0];
                    d1[i] = v[1];
                    d2[i] = v[2];
                    d3[i] = v[3];
                }
            }
        }
    }
}

/// Compiles `$generic` for AVX-512 and AVX2 as well and picks the best the CPU has at run time
/// (the code is the same; only the vector width LLVM may use differs).
macro_rules! multiversion {
    ($name:ident, $generic:ident, ($($arg:ident: $ty:ty),*)) => {
        #[allow(clippy::too_many_arguments)]
        pub(super) fn $name<K: Kind>($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                #[allow(clippy::too_many_arguments)]
                fn v4<K: Kind>($($arg: $ty),*) {
                    $generic::<K>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn v3<K: Kind>($($arg: $ty),*) {
                    $generic::<K>($($arg),*)
                }
                if std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked just above).
                    return unsafe { v4::<K>($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has AVX2 and FMA (checked just above).
                    return unsafe { v3::<K>($($arg),*) };
                }
            }
            $generic::<K>($($arg),*)
        }
    };
}

multiversion!(input_row, input_row_generic, (p: &Plan, plane: &[f32], ty: usize, v: &mut [&mut [f32]], col0: usize, s: &mut InputScratch));
multiversion!(output_row, output_row_generic, (p: &Plan, mm: &[&[f32]; 36], bias: f32, ty: usize, plane: &mut [f32], s: &mut [f32], stage: &mut [f32]));
multiversion!(weights, weights_generic, (p: &Plan, taps: &[f32], co: &Range<usize>, u: &mut [f32], t: &mut [f32]));
