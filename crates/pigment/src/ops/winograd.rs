//! CPU f32 3x3 stride-1 convolution by Winograd's minimal filtering (Lavin & Gray 2015, "Fast
//! Algorithms for Convolutional Neural Networks", eq. 8): an m x m output tile is
//! Y = A^T [ (G g G^T) .* (B^T d B) ] A for a 3x3 kernel g and the (m+2) x (m+2) input tile d.
//! Summed over input channels, the element-wise product becomes one GEMM per tile element:
//! M[e] [out, tiles] = U[e] [out, in] x V[e] [in, tiles], (m+2)^2 GEMMs that do 9 / (m+2)^2 * m^2
//! of the direct convolution's multiplies (F(4x4, 3x3): 36 GEMMs, 4x fewer; F(2x2, 3x3): 16, 2.25x).
//!
//! Memory stays bounded: the transformed weights U ((m+2)^2 / 9 times the weights) are never
//! kept between calls, nor whole: each task transforms the weights of its chunk of output
//! channels right before its GEMMs. The transformed input V is built for a block of whole tile
//! rows within a budget, so a 512x512 VAE layer is a few blocks (see [`Blocking`]).
//!
//! The transforms are straight-line formulas applied to whole rows (over pixels, tiles or input
//! channels), which the compiler vectorises; they are compiled for AVX-512 and AVX2 as well and
//! picked at run time.
//!
//! Rounding: the F(4x4) transforms mix values with weights up to 5 (B) and 8 (A), so its f32
//! result has a larger error than the direct sum's: on SD-like data ~11x the direct kernel's
//! rms error (3e-6 of the output's rms) and 27-39x its max error; F(2x2) 1.4-1.7x (measured
//! in the tests below). Every parity suite passes with either tile forced on every conv.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use candle_core::{Error, Result};
use rayon::prelude::*;

use super::conv_kernel::ConvGeometry;
use super::gemm::{gemm_f32_serial, Operand};

static WINOGRAD: AtomicBool = AtomicBool::new(true);

/// Turns the Winograd path of `Conv2d`'s CPU f32 3x3 stride-1 convolutions on or off for the
/// whole process (on by default; `PIGMENT_WINOGRAD=0` in the environment turns it off too): for
/// before/after timings and for checking a suspicion against the implicit-GEMM kernel.
pub fn set_winograd_conv(enabled: bool) {
    WINOGRAD.store(enabled, Ordering::Relaxed);
}

/// Which tile sizes `Conv2d` uses (`PIGMENT_WINOGRAD`: `0`/`off` none, `f2` / `f4` that tile
/// for every 3x3 stride-1 conv whatever its size (for checking a suspicion); unset: by size,
/// see [`winograd_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allowed {
    Off,
    AlwaysF2,
    AlwaysF4,
    BySize,
}

fn allowed() -> Allowed {
    static ENV: std::sync::OnceLock<Allowed> = std::sync::OnceLock::new();
    let env = *ENV.get_or_init(|| {
        match std::env::var("PIGMENT_WINOGRAD")
            .unwrap_or_default()
            .to_ascii_lowercase()
            .as_str()
        {
            "0" | "off" | "false" => Allowed::Off,
            "f2" | "2" => Allowed::AlwaysF2,
            "f4" | "4" => Allowed::AlwaysF4,
            _ => Allowed::BySize,
        }
    });
    if WINOGRAD.load(Ordering::Relaxed) {
        env
    } else {
        Allowed::Off
    }
}

/// The Winograd tile size for this call of `Conv2d`'s fast path, or None for the direct
/// kernel. Only 3x3 stride 1. The weight transform costs the same for any image size while
/// the GEMMs scale with the tile count, so small images go to the smaller tile or the direct
/// kernel. Thresholds from examples/conv_bench.rs (2 threads, AVX-512), SD1.5's shapes:
/// F(4x4) wins from 32 4x4 tiles per call (UNet 1280@16 at batch 2: 34 vs 57 ms direct);
/// below that F(2x2) wins from 32 2x2 tiles (1280@8 at batch 2: 15 vs 22 ms; 1280@16 at
/// batch 1: 20 vs 28 ms, F(4x4) 24 ms).
pub(crate) fn winograd_for(g: &ConvGeometry) -> Option<WinogradTile> {
    const MIN_TILES: usize = 32;
    if g.kernel != 3 || g.stride != 1 {
        return None;
    }
    let tiles = |m: usize| {
        let (oh, ow) = (g.height + 2 * g.padding, g.width + 2 * g.padding);
        g.batch * oh.saturating_sub(2).div_ceil(m) * ow.saturating_sub(2).div_ceil(m)
    };
    match allowed() {
        Allowed::Off => None,
        Allowed::AlwaysF2 => Some(WinogradTile::F2),
        Allowed::AlwaysF4 => Some(WinogradTile::F4),
        Allowed::BySize if tiles(4) >= MIN_TILES => Some(WinogradTile::F4),
        Allowed::BySize if tiles(2) >= MIN_TILES => Some(WinogradTile::F2),
        Allowed::BySize => None,
    }
}

/// The output tile size m of F(m x m, 3 x 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WinogradTile {
    /// F(2x2, 3x3): 4x4 input tiles, 16 GEMMs, transforms with weights 0, +-1, 1/2.
    F2,
    /// F(4x4, 3x3): 6x6 input tiles, 36 GEMMs, interpolation points 0, +-1, +-2, infinity.
    F4,
}

/// One tile size's transforms as formulas on up to 6 values (Lavin & Gray 2015, section 4.1
/// for F(2x2, 3x3), 4.2 for F(4x4, 3x3)); entries past N (or M) are unused.
trait Kind: Sync {
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

struct F2;
struct F4;

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

/// How one call splits its work.
#[derive(Debug, Clone, Copy)]
struct Blocking {
    /// Bytes the transformed input V of one block of tile rows may take.
    block_bytes: usize,
    /// Bytes one task's transformed weights U, and its GEMM results M, may each take (sets the
    /// output channels per task, and with `block_bytes` the tile rows per block).
    task_bytes: usize,
}

impl Blocking {
    /// 10 MB blocks and 6 MB task buffers: at most 10 MB + 2 * 6 MB per thread of temporaries
    /// (`PIGMENT_WINOGRAD_BYTES` / `PIGMENT_WINOGRAD_TASK_BYTES` override them, for tuning).
    fn from_env() -> Self {
        let var = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
                .max(1)
        };
        Blocking {
            block_bytes: var("PIGMENT_WINOGRAD_BYTES", 10 << 20),
            task_bytes: var("PIGMENT_WINOGRAD_TASK_BYTES", 6 << 20),
        }
    }
}

/// R consecutive rows of `len` from `buf` (which the caller sized for them).
fn rows<const R: usize>(buf: &mut [f32], len: usize) -> [&mut [f32]; R] {
    let mut it = buf.chunks_exact_mut(len);
    std::array::from_fn(|_| it.next().expect("scratch buffer sized for its rows"))
}

/// Splits `buf`, seen as blocks of `stride` elements, into one list per range: the range's
/// part of every block (ranges sorted and disjoint, within 0..stride).
fn split_strided<'a>(
    buf: &'a mut [f32],
    stride: usize,
    ranges: &[Range<usize>],
) -> Vec<Vec<&'a mut [f32]>> {
    let mut groups: Vec<Vec<&'a mut [f32]>> = ranges.iter().map(|_| Vec::new()).collect();
    for block in buf.chunks_exact_mut(stride) {
        let mut rest = block;
        let mut pos = 0;
        for (group, r) in groups.iter_mut().zip(ranges) {
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(r.start - pos);
            let (mine, tail) = tail.split_at_mut(r.len());
            group.push(mine);
            rest = tail;
            pos = r.end;
        }
    }
    groups
}

/// `count` items in `parts` near-equal contiguous ranges (empty ones dropped).
fn even_ranges(count: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, count.max(1));
    (0..parts)
        .map(|i| (i * count / parts)..((i + 1) * count / parts))
        .filter(|r| !r.is_empty())
        .collect()
}

/// Sizes shared by the steps of one call.
#[derive(Clone, Copy)]
struct Plan {
    height: usize,
    width: usize,
    padding: usize,
    cin: usize,
    cout: usize,
    oh: usize,
    ow: usize,
    tiles_x: usize,
    /// Row length of the horizontally padded input band: column j is input column j - padding;
    /// (tiles_x + 1) * m, so that every tile's n columns and the m phases fit.
    band: usize,
}

/// Scratch of one input-transform task.
struct InputScratch {
    /// 6 rows of `band`: B^T applied down the columns.
    t: Vec<f32>,
    /// 4 phases of tiles_x + 1.
    phases: Vec<f32>,
    /// 2 spare rows of tiles_x (F(2x2) writes 4 of its 6 results).
    stage: Vec<f32>,
    /// A row of zeros for input rows outside the image.
    zeros: Vec<f32>,
}

impl InputScratch {
    fn new(p: &Plan) -> Self {
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
fn input_row_generic<K: Kind>(
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
fn output_row_generic<K: Kind>(
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
fn weights_generic<K: Kind>(
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
        fn $name<K: Kind>($($arg: $ty),*) {
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

/// y = conv2d(x, W) + bias for a 3x3 kernel at stride 1 (any padding), NCHW f32 `x`
/// (contiguous), W tap-major [3, 3, out, in] as for [`super::conv_kernel::conv2d_f32`], whose
/// result it matches up to rounding. Returns the [batch, out, oh, ow] output, contiguous.
pub(crate) fn winograd_conv2d_f32(
    x: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
    tile: WinogradTile,
) -> Result<Vec<f32>> {
    winograd_with(x, taps, bias, g, tile, Blocking::from_env())
}

fn winograd_with(
    x: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
    tile: WinogradTile,
    blocking: Blocking,
) -> Result<Vec<f32>> {
    match tile {
        WinogradTile::F2 => run::<F2>(x, taps, bias, g, blocking),
        WinogradTile::F4 => run::<F4>(x, taps, bias, g, blocking),
    }
}

/// Scratch of one GEMM task.
#[derive(Default)]
struct TaskScratch {
    /// Transformed weights [chunk out][n*n][in].
    u: Vec<f32>,
    /// Weights transformed down the columns, [6][3][in].
    t: Vec<f32>,
    /// GEMM results M [n*n][chunk out][tiles].
    mm: Vec<f32>,
    /// Output transform rows.
    s: Vec<f32>,
    stage: Vec<f32>,
}

fn run<K: Kind>(
    x: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
    blocking: Blocking,
) -> Result<Vec<f32>> {
    let (oh, ow) = g.output_size()?;
    let (cin, cout) = (g.in_channels, g.out_channels);
    if g.kernel != 3 || g.stride != 1 {
        return Err(Error::Msg(format!(
            "winograd conv2d: only 3x3 stride 1, got kernel {} stride {}",
            g.kernel, g.stride
        )));
    }
    let item_in = cin * g.height * g.width;
    if x.len() != g.batch * item_in
        || taps.len() != 9 * cout * cin
        || bias.is_some_and(|b| b.len() != cout)
    {
        return Err(Error::Msg(format!(
            "winograd conv2d: input has {} values, the weight {} and the bias {:?}, expected {}, {} and {cout}",
            x.len(),
            taps.len(),
            bias.map(|b| b.len()),
            g.batch * item_in,
            9 * cout * cin
        )));
    }
    let mut out = vec![0f32; g.batch * cout * oh * ow];
    if out.is_empty() || cin == 0 {
        if let Some(bias) = bias {
            for (plane, &b) in out.chunks_exact_mut(oh * ow).zip(bias.iter().cycle()) {
                plane.fill(b);
            }
        }
        return Ok(out);
    }
    let (tiles_x, tiles_y) = (ow.div_ceil(K::M), oh.div_ceil(K::M));
    let p = Plan {
        height: g.height,
        width: g.width,
        padding: g.padding,
        cin,
        cout,
        oh,
        ow,
        tiles_x,
        band: (tiles_x + 1) * K::M,
    };
    let nn = K::N * K::N;
    let threads = candle_core::utils::get_num_threads().max(1);
    // Output-channel chunks whose U fits the task budget, a multiple of 16 (the GEMM kernel's
    // row block) where possible, sized so that the threads finish together: the size with the
    // fewest rows on the busiest thread, the largest of equals.
    let co_max = (blocking.task_bytes / (nn * cin * 4)).max(1);
    let per_chunk = if co_max < 16 || cout < 16 {
        co_max.min(cout)
    } else {
        (1..=co_max.min(cout.next_multiple_of(16)) / 16)
            .map(|k| 16 * k)
            .min_by_key(|&per| (cout.div_ceil(per).div_ceil(threads) * per, usize::MAX - per))
            .unwrap_or(16)
    };
    let chunks: Vec<Range<usize>> = (0..cout)
        .step_by(per_chunk)
        .map(|c| c..(c + per_chunk).min(cout))
        .collect();
    // Blocks of whole tile rows (over the batch) whose V (all input channels) fits the block
    // budget and whose M (one chunk's GEMM results) the task budget.
    let rows_total = g.batch * tiles_y;
    let rows_max = (blocking.block_bytes / (nn * cin * tiles_x * 4))
        .min(blocking.task_bytes / (nn * per_chunk * tiles_x * 4))
        .max(1);
    let row_blocks = even_ranges(rows_total, rows_total.div_ceil(rows_max));
    let in_groups = even_ranges(cin, threads * 4);
    // V for the largest block, allocated once (every element is written before it is read).
    let max_rows = row_blocks.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut v_buf = vec![0f32; nn * cin * max_rows * tiles_x];
    // One scratch per pool thread, reused by every task and block of this call.
    let scratches: Vec<Mutex<TaskScratch>> = (0..rayon::current_num_threads().max(1))
        .map(|_| Mutex::default())
        .collect();
    for rows in row_blocks {
        let tiles = rows.len() * tiles_x;
        let v = &mut v_buf[..nn * cin * tiles];
        // 1. Input transform, parallel over channel groups.
        let parts: Vec<Range<usize>> = in_groups
            .iter()
            .map(|r| r.start * tiles..r.end * tiles)
            .collect();
        split_strided(v, cin * tiles, &parts)
            .into_par_iter()
            .zip(in_groups.par_iter())
            .for_each_init(
                || InputScratch::new(&p),
                |scratch, (mut v_group, channels)| {
                    for (cl, c) in channels.clone().enumerate() {
                        for (ri, row) in rows.clone().enumerate() {
                            let (b, ty) = (row / tiles_y, row % tiles_y);
                            let plane =
                                &x[(b * cin + c) * g.height * g.width..][..g.height * g.width];
                            let col0 = cl * tiles + ri * tiles_x;
                            input_row::<K>(&p, plane, ty, &mut v_group, col0, scratch);
                        }
                    }
                },
            );
        // 2. Per output-channel chunk: weight transform, n*n GEMMs, output transform.
        let planes: Vec<Range<usize>> = chunks
            .iter()
            .map(|r| r.start * oh * ow..r.end * oh * ow)
            .collect();
        let v = &*v;
        split_strided(&mut out, cout * oh * ow, &planes)
            .into_par_iter()
            .zip(chunks.par_iter())
            .try_for_each(|(mut out_items, co)| {
                let slot = rayon::current_thread_index().unwrap_or(0) % scratches.len();
                let mut scratch = scratches[slot].lock().unwrap_or_else(|e| e.into_inner());
                let TaskScratch { u, t, mm, s, stage } = &mut *scratch;
                let per_e = co.len() * tiles;
                u.resize(co.len() * nn * cin, 0.0);
                t.resize(18 * cin, 0.0);
                mm.resize(nn * per_e, 0.0);
                s.resize(6 * 4 * tiles_x, 0.0);
                stage.resize(4 * ow, 0.0);
                weights::<K>(&p, taps, co, u, t);
                for (e, dst) in mm.chunks_exact_mut(per_e).enumerate() {
                    gemm_f32_serial(
                        dst,
                        tiles,
                        Operand {
                            data: u,
                            offset: e * cin,
                            row_stride: nn * cin,
                            col_stride: 1,
                        },
                        Operand {
                            data: v,
                            offset: e * cin * tiles,
                            row_stride: tiles,
                            col_stride: 1,
                        },
                        (co.len(), tiles, cin),
                        false,
                    )?;
                }
                for (ol, o) in co.clone().enumerate() {
                    let bias_o = bias.map_or(0.0, |b| b[o]);
                    for (ri, row) in rows.clone().enumerate() {
                        let (b, ty) = (row / tiles_y, row % tiles_y);
                        let plane = &mut out_items[b][ol * oh * ow..][..oh * ow];
                        let base = ol * tiles + ri * tiles_x;
                        let m_rows: [&[f32]; 36] = std::array::from_fn(|e| {
                            if e < nn {
                                &mm[e * per_e + base..][..tiles_x]
                            } else {
                                &mm[..0]
                            }
                        });
                        output_row::<K>(&p, &m_rows, bias_o, ty, plane, s, stage);
                    }
                }
                Ok::<(), Error>(())
            })?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv_kernel::{conv2d_f32, pack_taps};

    /// A small deterministic generator (xorshift) of values in [-1, 1): the tests need no seed
    /// plumbing through candle.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 23) as f32) - 1.0
            })
            .collect()
    }

    /// N(0, std^2) values (Box-Muller on [`values`]).
    fn normal(len: usize, seed: u64, std: f32) -> Vec<f32> {
        let u = values(2 * len, seed);
        u.chunks_exact(2)
            .map(|p| {
                let (u1, u2) = ((p[0] + 1.0) * 0.5, (p[1] + 1.0) * 0.5);
                let r = (-2.0 * (1.0 - u1 as f64).ln()).sqrt();
                (r * (std::f64::consts::TAU * u2 as f64).cos()) as f32 * std
            })
            .collect()
    }

    /// Straightforward f64 direct convolution (cross-correlation, as torch's conv2d):
    /// weight [out, in, 3, 3].
    fn reference(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeometry) -> Vec<f64> {
        let (oh, ow) = g.output_size().unwrap();
        let (h, wd, pad) = (g.height as isize, g.width as isize, g.padding as isize);
        let mut out = vec![0f64; g.batch * g.out_channels * oh * ow];
        for b in 0..g.batch {
            for o in 0..g.out_channels {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut sum = bias.map_or(0.0, |bs| bs[o] as f64);
                        for i in 0..g.in_channels {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let iy = (oy + ky) as isize - pad;
                                    let ix = (ox + kx) as isize - pad;
                                    if iy < 0 || ix < 0 || iy >= h || ix >= wd {
                                        continue;
                                    }
                                    let xv = x[(((b * g.in_channels + i) as isize * h + iy) * wd
                                        + ix)
                                        as usize];
                                    let wv = w[((o * g.in_channels + i) * 3 + ky) * 3 + kx];
                                    sum += xv as f64 * wv as f64;
                                }
                            }
                        }
                        out[((b * g.out_channels + o) * oh + oy) * ow + ox] = sum;
                    }
                }
            }
        }
        out
    }

    fn show(e: (f64, f64, f64)) -> String {
        format!("{:.2e} / {:.2e} / {:.2e}", e.0, e.1, e.2)
    }

    /// (max |error|, max |error| / max |reference|, rms error / rms reference).
    fn errors(got: &[f32], want: &[f64]) -> (f64, f64, f64) {
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(want)
            .fold(0f64, |m, (&a, &b)| m.max((a as f64 - b).abs()));
        let sq_err: f64 = got
            .iter()
            .zip(want)
            .map(|(&a, &b)| (a as f64 - b).powi(2))
            .sum();
        let sq_ref: f64 = want.iter().map(|b| b * b).sum();
        (
            err,
            err / scale.max(1e-30),
            (sq_err / sq_ref.max(1e-300)).sqrt(),
        )
    }

    fn geometry(b: usize, cin: usize, cout: usize, h: usize, w: usize, pad: usize) -> ConvGeometry {
        ConvGeometry {
            batch: b,
            in_channels: cin,
            out_channels: cout,
            height: h,
            width: w,
            kernel: 3,
            stride: 1,
            padding: pad,
        }
    }

    /// Both tile sizes match the f64 direct convolution within a relative error (max |error| /
    /// max |output|) of 2e-5 for F(2x2) and 1e-4 for F(4x4) (f32 epsilon 1.2e-7; the direct
    /// f32 kernel stays near 1e-6 here), on odd sizes, sizes that are not a multiple of the
    /// tile, 1x1 and 2x2 images, padding 0 and 1, 1..70 channels, batch 1..3, bias on and off.
    #[test]
    fn matches_f64_direct_convolution_on_many_shapes() {
        // (batch, in, out, height, width, padding)
        let shapes = [
            (1, 1, 1, 1, 1, 1),
            (1, 3, 2, 2, 2, 1),
            (2, 4, 5, 7, 9, 1),
            (3, 2, 3, 5, 5, 0),
            (1, 7, 9, 13, 11, 0),
            (2, 70, 33, 10, 6, 1),
            (1, 33, 70, 9, 17, 1),
            (1, 16, 16, 3, 3, 0),
            (2, 5, 64, 12, 12, 1),
            (1, 9, 3, 1, 8, 1),
            (1, 4, 4, 6, 1, 1),
            (3, 1, 70, 4, 4, 1),
        ];
        for (k, &(b, cin, cout, h, w, pad)) in shapes.iter().enumerate() {
            let g = geometry(b, cin, cout, h, w, pad);
            let x = values(b * cin * h * w, 3 * k as u64 + 1);
            let w_oikk = values(cout * cin * 9, 3 * k as u64 + 2);
            let bias = values(cout, 3 * k as u64 + 3);
            let taps = pack_taps(&w_oikk, cout, cin, 3);
            for bias in [Some(&bias[..]), None] {
                let want = reference(&x, &w_oikk, bias, &g);
                for (tile, tol) in [(WinogradTile::F2, 2e-5), (WinogradTile::F4, 1e-4)] {
                    let got = winograd_conv2d_f32(&x, &taps, bias, &g, tile).unwrap();
                    let (abs, rel, _) = errors(&got, &want);
                    assert!(
                        rel <= tol,
                        "{tile:?} b{b} {cin}->{cout} {h}x{w} p{pad} bias {}: \
                         max error {abs:.3e}, relative {rel:.3e} > {tol:e}",
                        bias.is_some()
                    );
                }
            }
        }
    }

    /// Small blocks and chunks (several tile-row blocks that split batch items, more output
    /// chunks than channels per thread) give the same result as one block.
    #[test]
    fn blocking_does_not_change_the_result() {
        let g = geometry(3, 6, 10, 11, 13, 1);
        let x = values(3 * 6 * 11 * 13, 7);
        let taps = pack_taps(&values(10 * 6 * 9, 8), 10, 6, 3);
        let bias = values(10, 9);
        let run = |block_bytes, task_bytes| {
            let blocking = Blocking {
                block_bytes,
                task_bytes,
            };
            winograd_with(&x, &taps, Some(&bias), &g, WinogradTile::F4, blocking).unwrap()
        };
        let whole = run(1 << 30, 1 << 10);
        for blocked in [run(1, 1), run(1, 1000), run(40_000, 4000)] {
            let diff = whole
                .iter()
                .zip(&blocked)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff <= 1e-5, "blocked result differs by {diff}");
        }
    }

    #[test]
    fn rejects_other_kernels_and_wrong_sizes() {
        let mut g = geometry(1, 2, 2, 5, 5, 1);
        let x = values(50, 1);
        let taps = values(36, 2);
        assert!(winograd_conv2d_f32(&x, &taps, None, &g, WinogradTile::F4).is_ok());
        assert!(winograd_conv2d_f32(&x[1..], &taps, None, &g, WinogradTile::F4).is_err());
        assert!(winograd_conv2d_f32(&x, &taps[1..], None, &g, WinogradTile::F4).is_err());
        assert!(winograd_conv2d_f32(&x, &taps, Some(&[1.0]), &g, WinogradTile::F4).is_err());
        g.stride = 2;
        assert!(winograd_conv2d_f32(&x, &taps, None, &g, WinogradTile::F4).is_err());
    }

    /// Accuracy on SD-like data: N(0, 1) inputs, weights N(0, 1/(9 in)), 320 channels at 20x20
    /// (`WG_C` to change), against f64; the direct f32 kernel's error is the
    /// yardstick. Measured (64 / 320 / 1280 channels), max abs / rms error as multiples of the
    /// direct kernel's: F(2x2) 1.5 / 1.6, 1.4 / 1.7, 1.7 / 1.6; F(4x4) 27 / 11, 30 / 11, 39 / 11
    /// (relative to the output: F(4x4) rms 1.5e-6 .. 3.7e-6, direct 1.4e-7 .. 3.3e-7). The
    /// bounds below leave headroom over those. Prints the numbers
    /// (`cargo test -p pigment --lib winograd_error -- --nocapture`).
    #[test]
    fn winograd_error_against_direct() {
        let c: usize = std::env::var("WG_C")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(320);
        let (b, hw) = (1, 20);
        let g = geometry(b, c, c, hw, hw, 1);
        let x = normal(b * c * hw * hw, 11, 1.0);
        let w_oikk = normal(c * c * 9, 12, 1.0 / (9.0 * c as f32).sqrt());
        let bias = values(c, 13);
        let taps = pack_taps(&w_oikk, c, c, 3);
        let want = reference(&x, &w_oikk, Some(&bias), &g);
        let direct = errors(&conv2d_f32(&x, &taps, Some(&bias), &g).unwrap(), &want);
        let f2 = errors(
            &winograd_conv2d_f32(&x, &taps, Some(&bias), &g, WinogradTile::F2).unwrap(),
            &want,
        );
        let f4 = errors(
            &winograd_conv2d_f32(&x, &taps, Some(&bias), &g, WinogradTile::F4).unwrap(),
            &want,
        );
        println!(
            "{c} channels: max abs / max relative / rms relative error vs f64: direct {}, \
             F(2x2) {}, F(4x4) {}",
            show(direct),
            show(f2),
            show(f4)
        );
        assert!(
            f4.0 <= 50.0 * direct.0 && f4.2 <= 15.0 * direct.2,
            "F(4x4) {f4:?} vs direct {direct:?}"
        );
        assert!(
            f2.0 <= 3.0 * direct.0 && f2.2 <= 2.5 * direct.2,
            "F(2x2) {f2:?} vs direct {direct:?}"
        );
    }
}
