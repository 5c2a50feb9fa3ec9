//! CPU f32 3x3 stride-2 convolution (the UNet's and the VAE encoder's down-samplers) with a
//! Winograd-style split: 25 instead of 36 multiplies per 2x2 output tile.
//!
//! Along one axis a stride-2 output pair reads five inputs x0..x4:
//! y0 = w0 x0 + w1 x1 + w2 x2 and y1 = w0 x2 + w1 x3 + w2 x4. The even taps (w0, w2) over the
//! even inputs (x0, x2, x4) are a 2-output, 2-tap filter, done as Winograd's F(2, 2) (Lavin &
//! Gray 2015, eq. 5 with r = 2) in three products: m0 = (x0 - x2) w0, m1 = x2 (w0 + w2),
//! m2 = (x4 - x2) w2; the odd tap is two plain products m3 = x1 w1, m4 = x3 w1. Then
//! y0 = m0 + m1 + m3 and y1 = m1 + m2 + m4. In matrix form (this file's `input_1d`,
//! `G_ROWS`, `output_1d`): m = (G w) .* (B^T x), y = A^T m, 5 products for 2 outputs instead of
//! 6. Nested over both axes: 25 GEMMs M[e] [out, tiles] = U[e] [out, in] x V[e] [in, tiles]
//! (e = one of the 5 x 5 transformed positions), 25/36 of the direct convolution's multiplies.
//! The transforms only add and subtract, so the rounding is the direct sum's order of magnitude.
//!
//! Why it pays only with `packed_gemm`: these GEMMs reduce over K = in channels only, where the
//! `gemm` crate ran at ~62% of its deep-K speed (a first version on it was slower than im2col's
//! one deep GEMM). The packed kernel runs K = 320 GEMMs at the cores' FMA peak, and the
//! transforms write V and U straight into its panel layouts, so nothing is packed twice.
//!
//! Layouts (both per depth chunk (k0, kc) of the input channels, chunks contiguous):
//! U [e][out panel][kk][MR] for every output channel, made once per call (25/9 of the
//! weights); V [e][tile panel][kk][NR] and M [e][out][tile] per task, a band of tile rows of one
//! batch item sized by `task_bytes` but at least `MIN_BAND_TILES` tiles.

use std::ops::Range;

use candle_core::{Error, Result};
use rayon::prelude::*;

use super::driver::{checked_output, even_ranges, split_strided, Blocking, Prepared};
use crate::ops::conv_kernel::ConvGeometry;
use crate::ops::packed_gemm::{self, MR, NR};

/// Transformed positions per tile: 5 along each axis.
const POINTS: usize = 25;

/// Fewest 2x2 output tiles per call for which this path beats im2col (examples/conv_bench.rs):
/// UNet 320@64 at batch 2 has 512; 640@32 has 128 and 1280@16 32, where streaming U (25/9 of
/// the weights) per few GEMM columns costs more than the multiplies saved.
const MIN_TILES: usize = 256;

/// Tiles a task's band holds at least where the image has them: each U panel then feeds enough
/// GEMM columns to pay for streaming it.
const MIN_BAND_TILES: usize = 256;

/// B^T x for the five inputs of one output pair: (x0 - x2, x2, x4 - x2, x1, x3).
#[inline(always)]
fn input_1d(x: [f32; 5]) -> [f32; 5] {
    [x[0] - x[2], x[2], x[4] - x[2], x[1], x[3]]
}

/// G w for the three taps, (w0, w0 + w2, w2, w1, w1), as the taps each row of G sums.
const G_ROWS: [&[usize]; 5] = [&[0], &[0, 2], &[2], &[1], &[1]];

/// A^T m: the output pair (m0 + m1 + m3, m1 + m2 + m4).
#[inline(always)]
fn output_1d(m: [f32; 5]) -> [f32; 2] {
    [m[0] + m[1] + m[3], m[1] + m[2] + m[4]]
}

/// Whether `Conv2d` runs this convolution here: 3x3, stride 2, the packed kernel available,
/// and enough tiles for the per-call weight transform to pay.
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    if g.kernel != 3 || g.stride != 2 || !packed_gemm::available() || !super::enabled() {
        return false;
    }
    g.output_size()
        .is_ok_and(|(oh, ow)| g.batch * oh.div_ceil(2) * ow.div_ceil(2) >= MIN_TILES)
}

/// Sizes of one call.
struct Plan {
    cin: usize,
    height: usize,
    width: usize,
    padding: usize,
    oh: usize,
    ow: usize,
    tiles_y: usize,
    tiles_x: usize,
}

/// y = conv2d(x, W, stride 2) + bias for a 3x3 kernel, NCHW f32 `x` and W [out, in, 3, 3]
/// (both contiguous), any padding. Returns the [batch, out, oh, ow] output, contiguous.
pub(crate) fn conv2d_stride2_f32(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
) -> Result<Vec<f32>> {
    conv_with(x, weight, bias, g, Bands::default())
}

/// How tasks cut the image into bands of tile rows.
#[derive(Debug, Clone, Copy)]
struct Bands {
    /// Bytes a task's V and M may each take.
    task_bytes: usize,
    /// Tiles a band holds at least (`MIN_BAND_TILES`; tests make it smaller).
    min_tiles: usize,
}

impl Default for Bands {
    /// The stride-1 driver's task budget (`PIGMENT_WINOGRAD_TASK_BYTES`), MIN_BAND_TILES.
    fn default() -> Self {
        Bands {
            task_bytes: Blocking::from_env().task_bytes,
            min_tiles: MIN_BAND_TILES,
        }
    }
}

fn conv_with(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
    bands: Bands,
) -> Result<Vec<f32>> {
    let (oh, ow) = g.output_size()?;
    let (cin, cout) = (g.in_channels, g.out_channels);
    if g.kernel != 3 || g.stride != 2 || !packed_gemm::available() {
        return Err(Error::Msg(format!(
            "stride-2 winograd conv2d: only 3x3 stride 2 with AVX-512, got kernel {} stride {}",
            g.kernel, g.stride
        )));
    }
    let item_in = cin * g.height * g.width;
    let mut out = match checked_output(x, weight.len(), bias, g, "stride-2 winograd conv2d")? {
        Prepared::Done(out) => return Ok(out),
        Prepared::Zeros(out) => out,
    };
    let p = Plan {
        cin,
        height: g.height,
        width: g.width,
        padding: g.padding,
        oh,
        ow,
        tiles_y: oh.div_ceil(2),
        tiles_x: ow.div_ceil(2),
    };
    let threads = rayon::current_num_threads().max(1);
    let chunks: Vec<(usize, usize)> = (0..cin)
        .step_by(packed_gemm::DEPTH_CHUNK)
        .map(|k0| (k0, packed_gemm::DEPTH_CHUNK.min(cin - k0)))
        .collect();
    let co_pad = cout.next_multiple_of(MR);
    // 1. U for every output channel, once per call, parallel over output panels.
    let mut u = crate::ops::buffers::zeros(POINTS * co_pad * cin);
    transform_weights(&p, weight, cout, &chunks, co_pad, &mut u);
    // 2. Tasks: bands of tile rows of one batch item, each with its own V and M.
    let per_tile = POINTS * 4 * cin.max(co_pad);
    let band_tiles = (bands.task_bytes / per_tile).max(bands.min_tiles);
    let mut bands_per_item = p.tiles_y.div_ceil((band_tiles / p.tiles_x).max(1));
    // Enough bands to give every thread work, in a count that shares out evenly if possible.
    while bands_per_item < p.tiles_y && !(g.batch * bands_per_item).is_multiple_of(threads) {
        bands_per_item += 1;
    }
    let item_bands = even_ranges(p.tiles_y, bands_per_item);
    let row_ranges: Vec<Range<usize>> = item_bands
        .iter()
        .map(|r| 2 * r.start * ow..(2 * r.end).min(oh) * ow)
        .collect();
    let mut tasks = Vec::new();
    for (b, item_out) in out.chunks_exact_mut(cout * oh * ow).enumerate() {
        let planes = split_strided(item_out, oh * ow, &row_ranges);
        for (band, planes) in item_bands.iter().zip(planes) {
            tasks.push((b, band.clone(), planes));
        }
    }
    let u = &*u;
    tasks.into_par_iter().for_each(|(b, band, mut planes)| {
        SCRATCH.with_borrow_mut(|(v, mm)| {
            let padded = (band.len() * p.tiles_x).next_multiple_of(NR);
            let v = grown(v, POINTS * cin * padded);
            let mm = grown(mm, POINTS * co_pad * padded);
            let x_item = &x[b * item_in..][..item_in];
            for &(k0, kc) in &chunks {
                let region = &mut v[POINTS * k0 * padded..][..POINTS * kc * padded];
                // SAFETY: `conv_with` returned early unless AVX-512F is available.
                unsafe { transform_input(&p, x_item, &band, k0, kc, padded, region) };
            }
            for (e, m_e) in mm.chunks_exact_mut(co_pad * padded).enumerate() {
                for (i, &(k0, kc)) in chunks.iter().enumerate() {
                    let left = &u[POINTS * co_pad * k0 + e * co_pad * kc..][..co_pad * kc];
                    let right = &v[POINTS * padded * k0 + e * kc * padded..][..kc * padded];
                    packed_gemm::multiply_chunk(m_e, padded, left, right, kc, i > 0);
                }
            }
            // SAFETY: as for `transform_input` above.
            unsafe { transform_output(&p, mm, cout, co_pad, padded, &band, bias, &mut planes) };
        });
    });
    Ok(out)
}

thread_local! {
    /// One task's V and M, kept by each pool thread between calls: every element a task reads
    /// it has written first (the padding lanes of the last tile panel only feed M columns that
    /// are never read), so a buffer is cleared once, when it grows, not per call (zeroing
    /// 2 x 8 MB per task was 8% of SD's 320@64 down-sampler). At most V + M of the largest
    /// band per thread: 16 MB for SD1.5's UNet at 512x512.
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const {
        std::cell::RefCell::new((Vec::new(), Vec::new()))
    };
}

/// The first `len` elements of `buf`, grown (with zeros) if it is shorter.
fn grown(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// V for input channels k0..k0+kc of one batch item `x` [in, h, w] and its tile rows `rows`
/// into `region` ([e][tile panel][kk][NR], tiles numbered row by row from the band's first).
/// Compiled for AVX-512 (callers check it is there): every step is a loop over contiguous
/// pixels or tiles. First along y over whole input rows (d0 = r0 - r2, d1 = r2, d2 = r4 - r2, d3 = r1,
/// d4 = r3), then each of those 5 rows split into its 4 pixel phases (the stride-4 reads as
/// one interleaved loop) and combined along x the same way.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
unsafe fn transform_input(
    p: &Plan,
    x: &[f32],
    rows: &Range<usize>,
    k0: usize,
    kc: usize,
    padded: usize,
    region: &mut [f32],
) {
    let tx_n = p.tiles_x;
    // The y-transformed rows, padded to whole tiles: pixel ix sits at ix + padding, with room
    // for the last tile's fifth pixel. Only [padding, padding + used) is ever written, so the
    // zeros around it stay (the convolution's zero padding).
    let span = 4 * tx_n + 4;
    let used = p.width.min(span - p.padding);
    let mut yrows = vec![0f32; 5 * span];
    let mut phases = vec![0f32; 4 * (tx_n + 1)];
    let mut vals = vec![0f32; POINTS * tx_n];
    let zero_row = vec![0f32; used];
    let plane_len = p.height * p.width;
    // Tile rows outside, channels inside: consecutive channels write consecutive NR-wide rows
    // of each point's panel, so the 25 write streams stay sequential (channels outside jumped
    // between panels: 45% of this function's time went to the stores).
    for (ri, ty) in rows.clone().enumerate() {
        for kk in 0..kc {
            let plane = &x[(k0 + kk) * plane_len..][..plane_len];
            let input_row = |i: usize| match (4 * ty + i)
                .checked_sub(p.padding)
                .filter(|&iy| iy < p.height)
            {
                Some(iy) => &plane[iy * p.width..][..used],
                None => &zero_row[..],
            };
            // Along y, straight from the input rows.
            {
                let (r0, r1, r2, r3, r4) = (
                    input_row(0),
                    input_row(1),
                    input_row(2),
                    input_row(3),
                    input_row(4),
                );
                // Each d_a starts `padding` into its row of `yrows`.
                let (d0, rest) = yrows.split_at_mut(p.padding + span);
                let (d1, rest) = rest.split_at_mut(span);
                let (d2, rest) = rest.split_at_mut(span);
                let (d3, d4) = rest.split_at_mut(span);
                let (d0, d1) = (&mut d0[p.padding..][..used], &mut d1[..used]);
                let (d2, d3, d4) = (&mut d2[..used], &mut d3[..used], &mut d4[..used]);
                for ix in 0..used {
                    let d = input_1d([r0[ix], r1[ix], r2[ix], r3[ix], r4[ix]]);
                    d0[ix] = d[0];
                    d1[ix] = d[1];
                    d2[ix] = d[2];
                    d3[ix] = d[3];
                    d4[ix] = d[4];
                }
            }
            // Along x: y-transformed row a gives points a*5 + 0..5.
            for (a, yrow) in yrows.chunks_exact(span).enumerate() {
                let (q0, rest) = phases.split_at_mut(tx_n + 1);
                let (q1, rest) = rest.split_at_mut(tx_n + 1);
                let (q2, q3) = rest.split_at_mut(tx_n + 1);
                // Zipped iterators, no indices: the loops vectorise without bounds checks.
                let lanes = q0
                    .iter_mut()
                    .zip(q1.iter_mut())
                    .zip(q2.iter_mut().zip(q3.iter_mut()));
                for (s, ((a0, a1), (a2, a3))) in yrow.chunks_exact(4).zip(lanes) {
                    *a0 = s[0];
                    *a1 = s[1];
                    *a2 = s[2];
                    *a3 = s[3];
                }
                let v = &mut vals[a * 5 * tx_n..][..5 * tx_n];
                let (v0, rest) = v.split_at_mut(tx_n);
                let (v1, rest) = rest.split_at_mut(tx_n);
                let (v2, rest) = rest.split_at_mut(tx_n);
                let (v3, v4) = rest.split_at_mut(tx_n);
                let (q0, q0_next) = (&q0[..tx_n], &q0[1..=tx_n]);
                let (q1, q2, q3) = (&q1[..tx_n], &q2[..tx_n], &q3[..tx_n]);
                for tx in 0..tx_n {
                    let d = input_1d([q0[tx], q1[tx], q2[tx], q3[tx], q0_next[tx]]);
                    v0[tx] = d[0];
                    v1[tx] = d[1];
                    v2[tx] = d[2];
                    v3[tx] = d[3];
                    v4[tx] = d[4];
                }
            }
            // Into the panels: runs of consecutive tiles share a panel's lanes.
            let t0 = ri * tx_n;
            for (e, src) in vals.chunks_exact(tx_n).enumerate() {
                let point = &mut region[e * kc * padded..][..kc * padded];
                let mut tx = 0;
                while tx < tx_n {
                    let t = t0 + tx;
                    let lane = t % NR;
                    let run = (NR - lane).min(tx_n - tx);
                    let dst = &mut point[(t / NR) * kc * NR + kk * NR + lane..][..run];
                    for (d, &v) in dst.iter_mut().zip(&src[tx..tx + run]) {
                        *d = v;
                    }
                    tx += run;
                }
            }
        }
    }
}

/// U for all `cout` output channels into `u` (per depth chunk: [e][out panel][kk][MR], rows
/// past `cout` left zero), parallel over output panels.
fn transform_weights(
    p: &Plan,
    weight: &[f32],
    cout: usize,
    chunks: &[(usize, usize)],
    co_pad: usize,
    u: &mut [f32],
) {
    let panels = co_pad / MR;
    // pieces[panel]: that panel's [kc][MR] slice of every (chunk, e), in that order.
    let mut pieces: Vec<Vec<&mut [f32]>> = (0..panels).map(|_| Vec::new()).collect();
    let mut rest = u;
    for &(_, kc) in chunks {
        let (region, tail) = std::mem::take(&mut rest).split_at_mut(POINTS * co_pad * kc);
        rest = tail;
        for (i, panel) in region.chunks_exact_mut(kc * MR).enumerate() {
            pieces[i % panels].push(panel);
        }
    }
    pieces
        .into_par_iter()
        .enumerate()
        .for_each(|(panel, mut slots)| {
            let mut taps = Vec::new();
            for (ci, &(k0, kc)) in chunks.iter().enumerate() {
                // taps[tap][kk][r]: this panel's weights, gathered so the transform below runs
                // over contiguous [kc][MR] blocks (rows past cout stay 0).
                taps.clear();
                taps.resize(9 * kc * MR, 0.0);
                for r in 0..MR.min(cout.saturating_sub(panel * MR)) {
                    let o = panel * MR + r;
                    for kk in 0..kc {
                        let w = &weight[(o * p.cin + k0 + kk) * 9..][..9];
                        for (tap, &v) in w.iter().enumerate() {
                            taps[tap * kc * MR + kk * MR + r] = v;
                        }
                    }
                }
                let tap = |i: usize| &taps[i * kc * MR..][..kc * MR];
                let dst = &mut slots[ci * POINTS..][..POINTS];
                // SAFETY: this path runs only where AVX-512F is available.
                unsafe { transform_weight_block(std::array::from_fn(tap), dst) };
            }
        });
}

/// U = G W G^T over a block: `taps[ky * 3 + kx]` holds one tap for every (kk, r) of the block,
/// `dst[a * 5 + b]` receives transformed position (a, b) for the same elements. Row a of G
/// sums the taps in `G_ROWS[a]`, so U[a][b] is the sum of w[ky][kx] over ky in G_ROWS[a] and
/// kx in G_ROWS[b]: one contiguous loop per position.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
unsafe fn transform_weight_block(taps: [&[f32]; 9], dst: &mut [&mut [f32]]) {
    let n = taps[0].len();
    for (e, out) in dst.iter_mut().enumerate().take(POINTS) {
        let out = &mut out[..n];
        out.fill(0.0);
        for &ky in G_ROWS[e / 5] {
            for &kx in G_ROWS[e % 5] {
                for (o, &w) in out.iter_mut().zip(&taps[ky * 3 + kx][..n]) {
                    *o += w;
                }
            }
        }
    }
}

/// Y = A^T M A for each tile of the band `rows` of every output channel, plus the bias, into
/// `planes[o]`: output rows 2 * rows.start .. of channel o's plane. Compiled for AVX-512
/// (callers check it is there), as loops over the tiles of a tile row: along x
/// (s[a][j] from M's rows a*5 + 0..5), along y, then each tile's 2 output columns interleaved
/// into the output rows.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
unsafe fn transform_output(
    p: &Plan,
    mm: &[f32],
    cout: usize,
    co_pad: usize,
    padded: usize,
    rows: &Range<usize>,
    bias: Option<&[f32]>,
    planes: &mut [&mut [f32]],
) {
    let tx_n = p.tiles_x;
    // s[(a * 2 + j) * tx_n + tx] and y[(i * 2 + j) * tx_n + tx].
    let mut s = vec![0f32; 10 * tx_n];
    let mut y = vec![0f32; 4 * tx_n];
    for (ol, plane) in planes.iter_mut().enumerate().take(cout) {
        let bias_o = bias.map_or(0.0, |b| b[ol]);
        for (ri, ty) in rows.clone().enumerate() {
            let t0 = ri * tx_n;
            let m = |e: usize| &mm[(e * co_pad + ol) * padded + t0..][..tx_n];
            for a in 0..5 {
                let (m0, m1, m2) = (m(a * 5), m(a * 5 + 1), m(a * 5 + 2));
                let (m3, m4) = (m(a * 5 + 3), m(a * 5 + 4));
                let (s0, s1) = s[a * 2 * tx_n..][..2 * tx_n].split_at_mut(tx_n);
                for tx in 0..tx_n {
                    let r = output_1d([m0[tx], m1[tx], m2[tx], m3[tx], m4[tx]]);
                    s0[tx] = r[0];
                    s1[tx] = r[1];
                }
            }
            let (y_top, y_bottom) = y.split_at_mut(2 * tx_n);
            for j in 0..2 {
                let sa = |a: usize| &s[(a * 2 + j) * tx_n..][..tx_n];
                let (sa0, sa1, sa2, sa3, sa4) = (sa(0), sa(1), sa(2), sa(3), sa(4));
                let y0 = &mut y_top[j * tx_n..][..tx_n];
                let y1 = &mut y_bottom[j * tx_n..][..tx_n];
                for tx in 0..tx_n {
                    let r = output_1d([sa0[tx], sa1[tx], sa2[tx], sa3[tx], sa4[tx]]);
                    y0[tx] = r[0] + bias_o;
                    y1[tx] = r[1] + bias_o;
                }
            }
            for i in 0..2 {
                let oy = 2 * ty + i;
                if oy >= p.oh {
                    break;
                }
                let (ya, yb) = y[i * 2 * tx_n..][..2 * tx_n].split_at(tx_n);
                let out_row = &mut plane[(oy - 2 * rows.start) * p.ow..][..p.ow];
                let full = p.ow / 2;
                for (pair, (&a, &b)) in out_row.chunks_exact_mut(2).zip(ya.iter().zip(yb)) {
                    pair[0] = a;
                    pair[1] = b;
                }
                if p.ow % 2 == 1 {
                    out_row[p.ow - 1] = ya[full];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::reference;
    use super::*;
    use crate::ops::test_values;

    /// G w from `G_ROWS`.
    fn weight_1d(w: [f32; 3]) -> [f32; 5] {
        G_ROWS.map(|taps| taps.iter().map(|&t| w[t]).sum())
    }

    #[test]
    fn the_one_dimensional_split_is_the_stride_2_pair() {
        // Small integers: every sum is exact in f32.
        for seed in 0..20u64 {
            let v: Vec<f32> = test_values(8, seed)
                .iter()
                .map(|v| (v * 8.0).round())
                .collect();
            let (x, w) = ([v[0], v[1], v[2], v[3], v[4]], [v[5], v[6], v[7]]);
            let (g, d) = (weight_1d(w), input_1d(x));
            let y = output_1d(std::array::from_fn(|i| g[i] * d[i]));
            let direct = [
                w[0] * x[0] + w[1] * x[1] + w[2] * x[2],
                w[0] * x[2] + w[1] * x[3] + w[2] * x[4],
            ];
            assert_eq!(y, direct, "x {x:?} w {w:?}");
        }
    }

    fn check(g: ConvGeometry, with_bias: bool, bands: Bands) {
        let x = test_values(g.batch * g.in_channels * g.height * g.width, 3);
        let w = test_values(g.out_channels * g.in_channels * 9, 4);
        let bias = test_values(g.out_channels, 5);
        let bias = with_bias.then_some(bias.as_slice());
        let got = conv_with(&x, &w, bias, &g, bands).unwrap();
        let want = reference(&x, &w, bias, &g);
        assert_eq!(got.len(), want.len());
        // Adds and subtracts only: the error stays near the direct sum's (inputs in [-1, 1)).
        let tol = 1e-5 * (9.0 * g.in_channels as f64).sqrt() * 4.0;
        for (i, (&a, &b)) in got.iter().zip(&want).enumerate() {
            assert!((a as f64 - b).abs() < tol, "{g:?} at {i}: {a} vs {b}");
        }
    }

    fn geometry(
        batch: usize,
        cin: usize,
        cout: usize,
        h: usize,
        w: usize,
        pad: usize,
    ) -> ConvGeometry {
        ConvGeometry {
            batch,
            in_channels: cin,
            out_channels: cout,
            height: h,
            width: w,
            kernel: 3,
            stride: 2,
            padding: pad,
        }
    }

    #[test]
    fn matches_the_direct_sum_on_odd_shapes() {
        if !packed_gemm::available() {
            eprintln!("no AVX-512F: Conv2d does not take this path here");
            return;
        }
        let roomy = Bands::default();
        // Odd and even sizes (tiles cut by the image edge), padding 1 (UNet) and 0 (the VAE
        // encoder's pre-padded input), channel counts off the MR / depth-chunk grid.
        check(geometry(2, 5, 17, 9, 11, 1), true, roomy);
        check(geometry(1, 3, 4, 8, 8, 1), false, roomy);
        check(geometry(1, 7, 15, 13, 13, 0), true, roomy);
        check(geometry(2, 33, 30, 16, 20, 1), true, roomy);
        check(geometry(1, 600, 20, 6, 7, 1), true, roomy);
        // Tiny budgets: one tile row per band.
        let tight = Bands {
            task_bytes: 1,
            min_tiles: 1,
        };
        check(geometry(2, 9, 31, 14, 10, 1), true, tight);
        check(geometry(1, 4, 3, 17, 15, 0), false, tight);
    }

    #[test]
    fn wrong_sizes_are_errors() {
        if !packed_gemm::available() {
            return;
        }
        let g = geometry(1, 2, 3, 8, 8, 1);
        let x = vec![0f32; 2 * 64];
        assert!(conv2d_stride2_f32(&x, &[0.0; 53], None, &g).is_err());
        assert!(conv2d_stride2_f32(&x[..100], &[0.0; 54], None, &g).is_err());
        assert!(conv2d_stride2_f32(&x, &[0.0; 54], Some(&[0.0; 2]), &g).is_err());
    }
}
