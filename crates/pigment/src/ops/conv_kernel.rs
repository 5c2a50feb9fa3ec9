//! CPU f32 convolution as implicit GEMM: no im2col matrix (9x the activation for a 3x3 conv), but
//! one zero-padded copy of the input, and per kernel tap one GEMM that accumulates
//! W_tap [out, in] x X_shifted [in, pixels] into the output.
//!
//! The trick: in a zero-padded image stored row-major with row length `wp`, the input pixel that
//! tap (ky, kx) reads for output pixel (oy, ox) (stride 1) sits at `(oy + ky) * wp + ox + kx` =
//! `j + tap_offset` with `j = oy * wp + ox`. So for a fixed tap the "shifted input" is the padded
//! image itself seen from an offset: a [in, oh * wp] matrix with row stride = the padded plane
//! size. Output columns ox in [ow, wp) are computed and dropped (2 of every 66 at 64x64).
//! Stride s > 1 is the same after splitting the padded image into s*s phases (polyphase):
//! phase (py, px) holds the pixels (s*i + py, s*j + px), and tap (ky, kx) reads phase
//! (ky % s, kx % s) at (oy + ky / s, ox + kx / s), again a plain shift.

use candle_core::{Error, Result};

use rayon::prelude::*;

use super::gemm::{gemm_f32, gemm_f32_serial, Operand};

/// Convolution geometry for one call: NCHW input, square kernel, groups = 1, dilation = 1.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvGeometry {
    /// (out height, out width), or an error when the kernel does not fit the padded input.
    pub fn output_size(&self) -> Result<(usize, usize)> {
        let (hp, wp) = (
            self.height + 2 * self.padding,
            self.width + 2 * self.padding,
        );
        if self.kernel == 0 || self.stride == 0 || hp < self.kernel || wp < self.kernel {
            return Err(Error::Msg(format!(
                "conv2d: kernel {} (stride {}) does not fit a {}x{} input with padding {}",
                self.kernel, self.stride, self.height, self.width, self.padding
            )));
        }
        Ok((
            (hp - self.kernel) / self.stride + 1,
            (wp - self.kernel) / self.stride + 1,
        ))
    }
}

/// The weight [out, in, k, k] rearranged once into k*k tap matrices [out, in] (row-major), for
/// callers that build a weight on the fly (the training conv's flipped kernels); `Conv2d` gets
/// the same layout from a tensor permute at load.
#[allow(dead_code)]
pub(crate) fn pack_taps(weight: &[f32], out_c: usize, in_c: usize, kernel: usize) -> Vec<f32> {
    let taps = kernel * kernel;
    let mut packed = vec![0f32; weight.len()];
    for o in 0..out_c {
        for i in 0..in_c {
            let src = &weight[(o * in_c + i) * taps..][..taps];
            for (t, &v) in src.iter().enumerate() {
                packed[(t * out_c + o) * in_c + i] = v;
            }
        }
    }
    packed
}

/// The phase images of one batch item: [s*s phases][in][ph][pw], zero where padding.
struct Phases {
    data: Vec<f32>,
    ph: usize,
    pw: usize,
}

impl Phases {
    fn plane(&self) -> usize {
        self.ph * self.pw
    }
}

fn build_phases(x: &[f32], g: &ConvGeometry, oh: usize) -> Phases {
    let s = g.stride;
    let p = g.padding;
    let (h, w) = (g.height, g.width);
    let pw = (w + 2 * p).div_ceil(s);
    // Rows read for valid outputs: oy + ky/s < oh + (k-1)/s. One more row keeps the reads of
    // the dropped columns (which run past a row's end) inside the plane.
    let ph = (h + 2 * p).div_ceil(s).max(oh + (g.kernel - 1) / s + 1);
    let plane = ph * pw;
    let mut data = vec![0f32; s * s * g.in_channels * plane];
    for c in 0..g.in_channels {
        let src_plane = &x[c * h * w..][..h * w];
        for (iy, src_row) in src_plane.chunks_exact(w).enumerate() {
            let (py, row) = ((iy + p) % s, (iy + p) / s);
            if s == 1 {
                let dst = &mut data[c * plane + row * pw + p..][..w];
                dst.copy_from_slice(src_row);
                continue;
            }
            for px in 0..s {
                let base = ((py * s + px) * g.in_channels + c) * plane + row * pw;
                // Input columns ix with (ix + p) % s == px land at (ix + p) / s.
                let first = (px + s - p % s) % s;
                for ix in (first..w).step_by(s) {
                    data[base + (ix + p) / s] = src_row[ix];
                }
            }
        }
    }
    Phases { data, ph, pw }
}

/// How many output columns (pixels) one round of the k*k tap GEMMs covers: all taps accumulate
/// into the same [out, band] block of the output, which should stay in cache between taps
/// instead of streaming a whole large image's output through memory k*k times.
fn column_band(cin: usize, cout: usize, cols: usize) -> usize {
    let budget: usize = std::env::var("PIGMENT_BAND_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4 << 20);
    (budget / (4 * (cin + cout))).max(256).min(cols)
}

/// y = conv2d(x, W) + bias for NCHW f32 `x` (contiguous), taps from [`pack_taps`]. Returns the
/// [batch, out, oh, ow] output, contiguous.
pub(crate) fn conv2d_f32(
    x: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
) -> Result<Vec<f32>> {
    let (oh, ow) = g.output_size()?;
    let (cin, cout, k, s) = (g.in_channels, g.out_channels, g.kernel, g.stride);
    let item_in = cin * g.height * g.width;
    if x.len() != g.batch * item_in || taps.len() != k * k * cout * cin {
        return Err(Error::Msg(format!(
            "conv2d: input has {} values and the weight {}, expected {} and {}",
            x.len(),
            taps.len(),
            g.batch * item_in,
            k * k * cout * cin
        )));
    }
    if k == 1 && s == 1 && g.padding == 0 {
        return pointwise(x, taps, bias, g);
    }
    let mut out = super::buffers::zeros(g.batch * cout * oh * ow);
    for b in 0..g.batch {
        let x_item = &x[b * item_in..][..item_in];
        let phases = build_phases(x_item, g, oh);
        let (src, plane, pw) = (&phases.data[..], phases.plane(), phases.pw);
        let cols = oh * pw;
        let out_item = &mut out[b * cout * oh * ow..][..cout * oh * ow];
        // When no columns are dropped the GEMM writes straight into the output.
        let mut scratch = if pw == ow {
            Vec::new()
        } else {
            vec![0f32; cout * cols]
        };
        let dst: &mut [f32] = if pw == ow { out_item } else { &mut scratch };
        if let Some(bias) = bias {
            for (row, &bv) in dst.chunks_exact_mut(cols).zip(bias) {
                row.fill(bv);
            }
        }
        let band = column_band(cin, cout, cols);
        for c0 in (0..cols).step_by(band) {
            let n = band.min(cols - c0);
            for ky in 0..k {
                for kx in 0..k {
                    let t = ky * k + kx;
                    let phase = (ky % s) * s + kx % s;
                    let offset = phase * cin * plane + (ky / s) * pw + kx / s;
                    gemm_f32(
                        &mut dst[c0..],
                        cols,
                        Operand {
                            data: taps,
                            offset: t * cout * cin,
                            row_stride: cin,
                            col_stride: 1,
                        },
                        Operand {
                            data: src,
                            offset: offset + c0,
                            row_stride: plane,
                            col_stride: 1,
                        },
                        (cout, n, cin),
                        bias.is_some() || t > 0,
                    )?;
                }
            }
        }
        if pw != ow {
            let out_item = &mut out[b * cout * oh * ow..][..cout * oh * ow];
            for (dst_row, src_row) in out_item.chunks_exact_mut(ow).zip(scratch.chunks_exact(pw)) {
                dst_row.copy_from_slice(&src_row[..ow]);
            }
        }
    }
    Ok(out)
}

/// A 1x1 stride-1 unpadded conv: per batch item one plain GEMM W [out, in] x X [in, h*w] on
/// the NCHW input as it is, straight into the output. Tasks are (item, output-channel chunk)
/// pairs on the thread pool with single-threaded GEMMs, at least one per thread: gemm's own
/// threading of the 320x640x4096 GEMMs of SD's 640->320 shortcut, in 1092-column bands,
/// reached 230 GFLOP/s on 2 threads, below torch's 310.
fn pointwise(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
) -> Result<Vec<f32>> {
    let (cin, cout) = (g.in_channels, g.out_channels);
    let pixels = g.height * g.width;
    let item_out = cout * pixels;
    let mut out = super::buffers::zeros(g.batch * item_out);
    if out.is_empty() {
        return Ok(out);
    }
    if let Some(bias) = bias {
        for (row, &bv) in out.chunks_exact_mut(pixels).zip(bias.iter().cycle()) {
            row.fill(bv);
        }
    }
    let threads = rayon::current_num_threads().max(1);
    let chunks = threads.div_ceil(g.batch).min(cout.div_ceil(16)).max(1);
    let per_chunk = cout.div_ceil(chunks).next_multiple_of(16).min(cout);
    let mut tasks = Vec::with_capacity(g.batch * cout.div_ceil(per_chunk));
    for (item, planes) in out.chunks_exact_mut(item_out).enumerate() {
        for (chunk, dst) in planes.chunks_mut(per_chunk * pixels).enumerate() {
            tasks.push((item, chunk * per_chunk, dst));
        }
    }
    tasks.into_par_iter().try_for_each(|(item, o0, dst)| {
        let rows = dst.len() / pixels;
        gemm_f32_serial(
            dst,
            pixels,
            Operand {
                data: weight,
                offset: o0 * cin,
                row_stride: cin,
                col_stride: 1,
            },
            Operand {
                data: x,
                offset: item * cin * pixels,
                row_stride: pixels,
                col_stride: 1,
            },
            (rows, pixels, cin),
            bias.is_some(),
        )
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::ops::test_values as values;

    /// The 1x1 path against an f64 sum, on channel counts that do not fill whole 16-channel
    /// chunks and batches below, at and above the thread count. Tolerance: 2e-6 per summed term
    /// (each term |x w| < 1), far above f32 rounding (~6e-8 per term) and far below a wrong or
    /// missing term.
    #[test]
    fn pointwise_matches_f64_sums() {
        for (batch, cin, cout, h, w) in [(1, 3, 70, 5, 7), (2, 70, 17, 4, 4), (3, 16, 33, 1, 9)] {
            let g = ConvGeometry {
                batch,
                in_channels: cin,
                out_channels: cout,
                height: h,
                width: w,
                kernel: 1,
                stride: 1,
                padding: 0,
            };
            let x = values(batch * cin * h * w, 11);
            let wt = values(cout * cin, 5);
            let bias = values(cout, 9);
            for bias in [Some(&bias[..]), None] {
                let got = conv2d_f32(&x, &wt, bias, &g).unwrap();
                assert_eq!(got.len(), batch * cout * h * w);
                for b in 0..batch {
                    for o in 0..cout {
                        for p in 0..h * w {
                            let mut want = bias.map_or(0.0, |bv| bv[o] as f64);
                            for c in 0..cin {
                                want +=
                                    wt[o * cin + c] as f64 * x[(b * cin + c) * h * w + p] as f64;
                            }
                            let y = got[(b * cout + o) * h * w + p] as f64;
                            assert!(
                                (y - want).abs() <= 2e-6 * (cin + 1) as f64,
                                "{g:?}: item {b} channel {o} pixel {p}: {y} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
