//! CPU f32 convolution with stride > 1 (the UNet's and the VAE encoder's 3x3 stride-2
//! down-samplers) as im2col in blocks of output pixels: each block is ONE GEMM
//! W [out, k*k*in] x cols [k*k*in, pixels] with the reduction over all taps and channels at
//! once (K = 2880 for SD's 320-channel down-sampler), instead of k*k GEMMs with K = in that each
//! read and write the whole output block (`conv_kernel`'s implicit GEMM, 1.7x slower here: gemm
//! reaches its peak only with a deep K). The im2col block is bounded (`PIGMENT_IM2COL_BYTES`,
//! 8 MiB by default), so the temporary memory does not grow with the image.
//!
//! Row r = (c * k + ky) * k + kx of the column matrix holds, for every output pixel (oy, ox) of
//! the block, the input pixel x[c, s*oy + ky - p, s*ox + kx - p] (0 outside the image), so the
//! weight is the layer's own [out, in, k, k] = [out, k*k*in] matrix, and the k*k rows of one
//! channel read the same input plane while it is in cache (the order (ky, kx, c) streamed the
//! whole input k*k times: im2col 1.5x slower).

use candle_core::{Error, Result};
use rayon::prelude::*;

use super::conv_kernel::ConvGeometry;
use super::gemm::{gemm_f32, Operand};

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

/// The blocks of one call: column ranges of the flattened (batch item, output pixel) axis.
/// A block is either whole items (when one item's pixels fit the budget: the 1280-channel
/// down-sampler has 64 pixels per item, too few for a GEMM alone) or a range inside one item.
fn blocks(batch: usize, pixels: usize, depth: usize) -> Vec<(usize, usize)> {
    let max_cols = (block_bytes() / (4 * depth.max(1))).max(64);
    let total = batch * pixels;
    if pixels <= max_cols {
        let items = (max_cols / pixels).min(batch);
        let count = batch.div_ceil(items);
        // Even item counts per block.
        (0..count)
            .map(|i| (i * batch / count * pixels, (i + 1) * batch / count * pixels))
            .collect()
    } else {
        let per_item = pixels.div_ceil(max_cols);
        let mut out = Vec::with_capacity(batch * per_item);
        for b in 0..batch {
            for i in 0..per_item {
                out.push((
                    b * pixels + i * pixels / per_item,
                    b * pixels + (i + 1) * pixels / per_item,
                ));
            }
        }
        debug_assert_eq!(out.last().map(|r| r.1), Some(total));
        out
    }
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
                        // (`step_by(2)` stays scalar: 4x slower, a quarter of the conv's time).
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

/// y = conv2d(x, W) + bias for NCHW f32 `x` and `weight` [out, in, k, k] (both contiguous). Returns the [batch, out, oh, ow] output, contiguous. Any stride and padding;
/// meant for stride > 1, where `conv_kernel`'s tap-by-tap GEMMs have a shallow K.
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
    if x.len() != g.batch * item_in || weight.len() != cout * depth {
        return Err(Error::Msg(format!(
            "conv2d: input has {} values and the weight {}, expected {} and {}",
            x.len(),
            weight.len(),
            g.batch * item_in,
            cout * depth
        )));
    }
    let pixels = oh * ow;
    let item_out = cout * pixels;
    let mut out = vec![0f32; g.batch * item_out];
    if let Some(bias) = bias {
        for (row, &bv) in out.chunks_exact_mut(pixels).zip(bias.iter().cycle()) {
            row.fill(bv);
        }
    }
    if pixels == 0 || cout == 0 {
        return Ok(out);
    }
    let plan = blocks(g.batch, pixels, depth);
    let max_cols = plan.iter().map(|r| r.1 - r.0).max().unwrap_or(0);
    let mut cols_buf = vec![0f32; depth * max_cols];
    // GEMM results of blocks that span several items, before they go to their items' planes.
    let mut staged = Vec::new();
    for (start, end) in plan {
        let n = end - start;
        let cols = &mut cols_buf[..depth * n];
        cols.par_chunks_mut(n).enumerate().for_each(|(r, dst)| {
            let (c, tap) = (r / (k * k), r % (k * k));
            let mut j = 0;
            // The block's pieces per batch item.
            let mut col = start;
            while col < end {
                let (b, pixel) = (col / pixels, col % pixels);
                let stop = end.min((b + 1) * pixels);
                let plane = &x[b * item_in + c * g.height * g.width..][..g.height * g.width];
                let len = stop - col;
                im2col_row(
                    &mut dst[j..j + len],
                    plane,
                    g,
                    ow,
                    (tap / k, tap % k),
                    (pixel, pixel + len),
                );
                j += len;
                col = stop;
            }
        });
        let lhs = Operand {
            data: weight,
            offset: 0,
            row_stride: depth,
            col_stride: 1,
        };
        let rhs = Operand {
            data: cols,
            offset: 0,
            row_stride: n,
            col_stride: 1,
        };
        let (b, pixel) = (start / pixels, start % pixels);
        if end <= (b + 1) * pixels {
            // Inside one item: straight into its output plane (row stride = the plane).
            let dst = &mut out[b * item_out + pixel..];
            gemm_f32(dst, pixels, lhs, rhs, (cout, n, depth), bias.is_some())?;
        } else {
            // Whole items: GEMM into a staging block, then copy each item's part out.
            staged.resize(cout * n, 0.0);
            gemm_f32(&mut staged, n, lhs, rhs, (cout, n, depth), false)?;
            for (o, row) in staged.chunks_exact(n).enumerate() {
                for (bi, part) in row.chunks_exact(pixels).enumerate() {
                    let dst = &mut out[(b + bi) * item_out + o * pixels..][..pixels];
                    for (d, &v) in dst.iter_mut().zip(part) {
                        *d += v;
                    }
                }
            }
        }
    }
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

    /// Deterministic values in [-1, 1) (a small LCG: no test depends on a random seed).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Max error relative to sum |x| |w| over the reduction (the f32 rounding bound's scale):
    /// 1e-5 of it, about 100 f32 ulps of the largest possible term sum.
    fn check(g: ConvGeometry, with_bias: bool) {
        let (cin, cout, k) = (g.in_channels, g.out_channels, g.kernel);
        let x = values(g.batch * cin * g.height * g.width, 1 + cin as u64);
        let w = values(cout * cin * k * k, 7 + cout as u64);
        let bias = values(cout, 3);
        let bias = with_bias.then_some(&bias[..]);
        let want = reference(&x, &w, bias, &g);
        let got = conv2d_im2col_f32(&x, &w, bias, &g).unwrap();
        assert_eq!(got.len(), want.len(), "{g:?}");
        let scale = (cin * k * k) as f64;
        for (i, (&a, &b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a as f64 - b).abs() <= 1e-5 * scale,
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
    fn blocks_cover_every_column_once() {
        for (batch, pixels, depth) in [(2, 1024, 2880), (2, 64, 11520), (3, 7, 9), (1, 65536, 1152)]
        {
            let plan = blocks(batch, pixels, depth);
            let mut next = 0;
            for &(start, end) in &plan {
                assert_eq!(start, next);
                assert!(end > start);
                // A block inside one item, or whole items.
                let same_item = start / pixels == (end - 1) / pixels;
                assert!(same_item || (start % pixels == 0 && end % pixels == 0));
                next = end;
            }
            assert_eq!(next, batch * pixels);
        }
    }
}
