//! CPU f32 convolution with stride > 1 (the UNet's and the VAE encoder's 3x3 stride-2
//! down-samplers) as im2col in blocks of output pixels: each block is ONE GEMM
//! W [out, in*k*k] x cols [in*k*k, pixels] that reduces over all taps and channels at once
//! (K = 2880 for SD's 320-channel down-sampler), instead of k*k GEMMs with K = in that each
//! read and write the whole output block (`conv_kernel`'s implicit GEMM with polyphase input:
//! 20 ms against 13 ms for that down-sampler at batch 2 on 2 threads; gemm reaches its peak
//! only with a deep K).
//!
//! Blocks are tasks: one per thread at a time, each builds its own column block and GEMM result
//! (together bounded by `PIGMENT_IM2COL_BYTES`, 8 MiB by default, so temporary memory does not
//! grow with the image), runs a single-threaded GEMM, then copies its [out, pixels] result
//! (plus bias) into its column range of the NCHW output. So the im2col work runs on every
//! thread at once and the GEMMs without gemm's thread synchronisation (one shared block at a
//! time, built in parallel and multiplied by gemm's own threading, measured 1.3-2x slower on SD's shapes, 2 threads, best of 3 runs on a busy machine).
//!
//! On AVX-512 CPUs the 3x3 stride-2 convolutions with >= 256 output tiles do not come here but
//! go to winograd/stride2.rs (each 1-D output pair split into its even taps, done as F(2, 2),
//! and its odd tap: 25 instead of 36 multiplies per 2x2 tile). A first version of that split on
//! the `gemm` crate lost to this kernel (13-14.7 ms against 11.9-12.6 on SD's 320-channel
//! down-sampler): its 25 GEMMs reduce over K = in channels only, where `gemm` ran at ~62% of
//! its deep-K speed. It wins on ops/packed_gemm.rs's kernel, which runs them at the FMA peak.
//! Also slower than this kernel: the GEMM turned
//! round ([pixels, out] = cols^T W^T, then transposed into the planes; 14-16 ms), although
//! candle's matmul runs that orientation faster on contiguous operands (364 against 331
//! GFLOP/s for 4096x2880x320 against 320x2880x4096).
//!
//! Row r = (c * k + ky) * k + kx of the column matrix holds, for every output pixel (oy, ox) of
//! the block, the input pixel x[c, s*oy + ky - p, s*ox + kx - p] (0 outside the image), so the
//! weight is the layer's own [out, in, k, k] = [out, in*k*k] matrix, and the k*k rows of one
//! channel read the same input plane while it is in cache (the order (ky, kx, c) streamed the
//! whole input k*k times: im2col 1.3x slower).

use std::ops::Range;
use std::sync::Mutex;

use candle_core::{Error, Result};
use rayon::prelude::*;

use super::conv_kernel::ConvGeometry;
use super::gemm::{gemm_f32_serial, Operand};

/// Bytes of one im2col block, read once per process from `PIGMENT_IM2COL_BYTES` (for tuning).
fn block_bytes() -> usize {
    static BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        std::env::var("PIGMENT_IM2COL_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(8 << 20)
    })
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The pixel ranges one batch item's output is cut into: each block's column matrix within
/// `max_cols`, enough blocks over the batch to give every thread work, and a block count over
/// the batch that is a multiple of `threads` (equal shares). Boundaries fall on multiples of
/// 64 pixels where the blocks are large enough: gemm's AVX-512 kernel covers 64 columns at a
/// time and runs a slower one on a remainder (5% of the samples with 341-column blocks).
fn pixel_ranges(pixels: usize, batch: usize, max_cols: usize, threads: usize) -> Vec<Range<usize>> {
    let threads = threads.max(1);
    let batch = batch.max(1);
    let parts = pixels
        .div_ceil(max_cols.max(1))
        .max(threads.div_ceil(batch))
        .next_multiple_of(threads / gcd(batch, threads))
        .clamp(1, pixels.max(1));
    let align = if pixels / parts >= 128 { 64 } else { 1 };
    let bound = |i: usize| {
        if i == parts {
            pixels
        } else {
            (i * pixels / parts + align / 2) / align * align
        }
    };
    (0..parts)
        .map(|i| bound(i)..bound(i + 1))
        .filter(|r| !r.is_empty())
        .collect()
}

/// Fills one im2col row (`dst`, one value per column of `cols`) for input channel plane `plane`
/// [h, w] and tap (ky, kx).
fn im2col_row(
    dst: &mut [f32],
    plane: &[f32],
    g: &ConvGeometry,
    ow: usize,
    (ky, kx): (usize, usize),
    (start, end): (usize, usize),
) {
    let (s, p, h, w) = (g.stride, g.padding, g.height, g.width);
    // Output columns whose input column s*ox + kx - p lies inside [0, w).
    let ox_lo = p.saturating_sub(kx).div_ceil(s).min(ow);
    let ox_hi = (w + p).saturating_sub(kx).div_ceil(s).clamp(ox_lo, ow);
    let mut j = 0;
    let mut pixel = start;
    while pixel < end {
        let (oy, ox0) = (pixel / ow, pixel % ow);
        let ox1 = ow.min(ox0 + end - pixel);
        let seg = &mut dst[j..j + ox1 - ox0];
        let iy = (s * oy + ky).checked_sub(p).filter(|&iy| iy < h);
        match iy {
            None => seg.fill(0.0),
            Some(iy) => {
                let row = &plane[iy * w..][..w];
                let (a, b) = (ox_lo.clamp(ox0, ox1), ox_hi.clamp(ox0, ox1));
                seg[..a - ox0].fill(0.0);
                seg[b - ox0..].fill(0.0);
                let inner = &mut seg[a - ox0..b - ox0];
                if !inner.is_empty() {
                    // Input column of output column a; a >= ox_lo keeps it >= 0.
                    let first = s * a + kx - p;
                    if s == 2 {
                        // Pairs of known length let the compiler vectorise the gather
                        // (`step_by(2)` stays scalar: 1.3x slower).
                        let pairs = inner.len().min((w - first) / 2);
                        let src = &row[first..first + 2 * pairs];
                        for (d, pair) in inner.iter_mut().zip(src.chunks_exact(2)) {
                            *d = pair[0];
                        }
                        if pairs < inner.len() {
                            inner[pairs] = row[first + 2 * pairs];
                        }
                    } else {
                        for (d, &v) in inner.iter_mut().zip(row[first..].iter().step_by(s)) {
                            *d = v;
                        }
                    }
                }
            }
        }
        j += ox1 - ox0;
        pixel += ox1 - ox0;
    }
}

/// Fills the column matrix `cols` [in*k*k, range.len()] for output pixels `range` of the batch
/// item `x_item` [in, h, w]. (An AVX-512 build of this, and 16-wide masked gathers, measured
/// no faster: the time goes to fetching the input, not to the gather.)
fn im2col_block(
    cols: &mut [f32],
    x_item: &[f32],
    g: &ConvGeometry,
    ow: usize,
    range: &Range<usize>,
) {
    let k = g.kernel;
    let plane_len = g.height * g.width;
    for (r, dst) in cols.chunks_exact_mut(range.len()).enumerate() {
        let (c, tap) = (r / (k * k), r % (k * k));
        let plane = &x_item[c * plane_len..][..plane_len];
        im2col_row(
            dst,
            plane,
            g,
            ow,
            (tap / k, tap % k),
            (range.start, range.end),
        );
    }
}

/// One task: a pixel range of one batch item, and that range of each output channel's plane.
struct Task<'a> {
    item: usize,
    pixels: Range<usize>,
    dst: Vec<&'a mut [f32]>,
}

/// y = conv2d(x, W) + bias for NCHW f32 `x` and `weight` [out, in, k, k] (both contiguous).
/// Returns the [batch, out, oh, ow] output, contiguous. Any kernel, stride and padding; meant
/// for stride > 1, where `conv_kernel`'s tap-by-tap GEMMs have a shallow K.
pub(crate) fn conv2d_im2col_f32(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
) -> Result<Vec<f32>> {
    let (oh, ow) = g.output_size()?;
    let (cin, cout, k) = (g.in_channels, g.out_channels, g.kernel);
    let item_in = cin * g.height * g.width;
    let depth = k * k * cin;
    if x.len() != g.batch * item_in
        || weight.len() != cout * depth
        || bias.is_some_and(|b| b.len() != cout)
    {
        return Err(Error::Msg(format!(
            "conv2d: input has {} values, the weight {} and the bias {:?}, expected {}, {} and {cout}",
            x.len(),
            weight.len(),
            bias.map(|b| b.len()),
            g.batch * item_in,
            cout * depth
        )));
    }
    let pixels = oh * ow;
    let item_out = cout * pixels;
    let mut out = super::buffers::zeros(g.batch * item_out);
    if out.is_empty() {
        return Ok(out);
    }
    let threads = rayon::current_num_threads().max(1);
    // Each column costs `depth` floats of im2col and `cout` of GEMM result.
    let max_cols = block_bytes() / (4 * (depth + cout));
    let ranges = pixel_ranges(pixels, g.batch, max_cols, threads);
    // Cut every output plane into the ranges: task (item, range) owns that range of each plane.
    let mut tasks = Vec::with_capacity(g.batch * ranges.len());
    for (item, planes) in out.chunks_exact_mut(item_out).enumerate() {
        let mut dsts: Vec<Vec<&mut [f32]>> =
            ranges.iter().map(|_| Vec::with_capacity(cout)).collect();
        for mut rest in planes.chunks_exact_mut(pixels) {
            for (dst, range) in dsts.iter_mut().zip(&ranges) {
                let (mine, tail) = std::mem::take(&mut rest).split_at_mut(range.len());
                dst.push(mine);
                rest = tail;
            }
        }
        tasks.extend(ranges.iter().zip(dsts).map(|(range, dst)| Task {
            item,
            pixels: range.clone(),
            dst,
        }));
    }
    // One (columns, GEMM result) scratch per pool thread, reused by its tasks.
    let scratches: Vec<Mutex<(Vec<f32>, Vec<f32>)>> =
        (0..threads).map(|_| Mutex::default()).collect();
    tasks.into_par_iter().try_for_each(|mut task| {
        let slot = rayon::current_thread_index().unwrap_or(0) % scratches.len();
        let mut scratch = scratches[slot].lock().unwrap_or_else(|e| e.into_inner());
        let (cols, result) = &mut *scratch;
        let n = task.pixels.len();
        cols.resize(depth * n, 0.0);
        result.resize(cout * n, 0.0);
        let x_item = &x[task.item * item_in..][..item_in];
        im2col_block(cols, x_item, g, ow, &task.pixels);
        gemm_f32_serial(
            result,
            n,
            Operand {
                data: weight,
                offset: 0,
                row_stride: depth,
                col_stride: 1,
            },
            Operand {
                data: cols,
                offset: 0,
                row_stride: n,
                col_stride: 1,
            },
            (cout, n, depth),
            false,
        )?;
        for (o, (dst, src)) in task.dst.iter_mut().zip(result.chunks_exact(n)).enumerate() {
            let b = bias.map_or(0.0, |bias| bias[o]);
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = v + b;
            }
        }
        Ok::<(), Error>(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward f64 convolution, weight [out, in, k, k].
    fn reference(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeometry) -> Vec<f64> {
        let (oh, ow) = g.output_size().unwrap();
        let (cin, cout, k, s, p) = (g.in_channels, g.out_channels, g.kernel, g.stride, g.padding);
        let (h, wd) = (g.height, g.width);
        let mut y = vec![0f64; g.batch * cout * oh * ow];
        for b in 0..g.batch {
            for o in 0..cout {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = bias.map_or(0.0, |bv| bv[o] as f64);
                        for c in 0..cin {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let (iy, ix) = (s * oy + ky, s * ox + kx);
                                    if iy < p || ix < p || iy - p >= h || ix - p >= wd {
                                        continue;
                                    }
                                    let xv = x[((b * cin + c) * h + iy - p) * wd + ix - p];
                                    let wv = w[((o * cin + c) * k + ky) * k + kx];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                        y[((b * cout + o) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        y
    }

    use crate::ops::test_values as values;

    /// Tolerance: 2e-6 per summed term (each |x w| < 1, plus the bias), far above f32 rounding
    /// (~6e-8 per term) and far below one wrong or missing term.
    fn check(g: ConvGeometry, with_bias: bool) {
        let (cin, cout, k) = (g.in_channels, g.out_channels, g.kernel);
        let x = values(g.batch * cin * g.height * g.width, 1 + cin as u64);
        let w = values(cout * cin * k * k, 7 + cout as u64);
        let bias = values(cout, 3);
        let bias = with_bias.then_some(&bias[..]);
        let want = reference(&x, &w, bias, &g);
        let got = conv2d_im2col_f32(&x, &w, bias, &g).unwrap();
        assert_eq!(got.len(), want.len(), "{g:?}");
        let tolerance = 2e-6 * (cin * k * k + 1) as f64;
        for (i, (&a, &b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a as f64 - b).abs() <= tolerance,
                "{g:?} bias {with_bias}: element {i}: {a} vs {b}"
            );
        }
    }

    #[test]
    fn matches_f64_reference_on_odd_shapes() {
        // (batch, in, out, h, w, kernel, stride, padding)
        let cases = [
            (1, 1, 1, 5, 5, 3, 2, 1),
            (2, 3, 5, 9, 7, 3, 2, 1),
            (3, 70, 9, 7, 11, 3, 2, 0),
            (1, 17, 70, 13, 13, 3, 2, 1),
            (2, 8, 6, 8, 8, 3, 2, 0),
            (1, 5, 4, 9, 9, 3, 2, 0),
            (1, 6, 3, 12, 10, 5, 3, 2),
            (2, 4, 7, 6, 5, 1, 2, 0),
            (1, 9, 4, 3, 3, 3, 2, 1),
            (2, 33, 12, 10, 10, 3, 1, 1),
            (1, 2, 3, 4, 4, 3, 2, 2),
            // 400 output pixels: blocks cut at multiples of 64 pixels, mid-row.
            (1, 3, 4, 40, 40, 3, 2, 1),
        ];
        for (batch, in_channels, out_channels, height, width, kernel, stride, padding) in cases {
            let g = ConvGeometry {
                batch,
                in_channels,
                out_channels,
                height,
                width,
                kernel,
                stride,
                padding,
            };
            check(g, true);
            check(g, false);
        }
    }

    #[test]
    fn wrong_weight_size_is_an_error() {
        let g = ConvGeometry {
            batch: 1,
            in_channels: 2,
            out_channels: 3,
            height: 5,
            width: 5,
            kernel: 3,
            stride: 2,
            padding: 1,
        };
        let x = vec![0f32; 50];
        assert!(conv2d_im2col_f32(&x, &[0.0; 53], None, &g).is_err());
        assert!(conv2d_im2col_f32(&x[..49], &[0.0; 54], None, &g).is_err());
    }

    #[test]
    fn pixel_ranges_cover_each_pixel_once_in_bounded_shares() {
        // (pixels, batch, max_cols, threads)
        for (pixels, batch, max_cols, threads) in [
            (1024, 2, 364, 2),
            (64, 2, 91, 2),
            (64, 1, 91, 2),
            (7, 3, 1, 2),
            (1, 1, 0, 4),
            (65536, 1, 910, 2),
            (256, 3, 1000, 4),
        ] {
            let ranges = pixel_ranges(pixels, batch, max_cols, threads);
            let mut next = 0;
            for r in &ranges {
                assert_eq!(r.start, next, "{ranges:?}");
                assert!(!r.is_empty());
                // Within the budget, up to the 64-pixel rounding.
                assert!(
                    r.len() <= max_cols.max(1) + 64,
                    "{ranges:?} over {max_cols}"
                );
                next = r.end;
            }
            assert_eq!(next, pixels);
            // Every thread gets a share when there are enough pixels.
            assert!(
                batch * ranges.len() >= threads.min(batch * pixels),
                "{ranges:?}"
            );
        }
        // Equal shares for 2 threads on one image: an even count of 64-aligned ranges.
        let ranges = pixel_ranges(65536, 1, 910, 2);
        assert_eq!(ranges.len() % 2, 0);
        assert!(ranges.iter().all(|r| r.start % 64 == 0));
    }
}
