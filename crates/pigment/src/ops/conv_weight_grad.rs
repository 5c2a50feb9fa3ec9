//! The weight gradient of a stride-1 convolution on the CPU, without an im2col copy per tap.
//!
//! With the input zero-padded by p and each channel flattened (rows of Wp = W + 2p), and dY
//! widened with zeros to rows of Wp (dY'), the correlation that gives the gradient is
//!
//!   dW[o, c, ky, kx] = sum_b sum_{j < oh*Wp} dY'[b, o, j] * Xp[b, c, j + ky*Wp + kx]
//!
//! so each tap reads a contiguous window of every padded plane, shifted by ky*Wp + kx, which
//! the GEMM takes as a strided operand in place. Columns x >= ow of dY' are zero, so the window
//! running on past a row's end (into the next row, or at the plane's end into the next plane or
//! the buffer's slack) adds nothing. This replaces nine strided copies of the input per 3x3
//! convolution, a tenth of a CPU training step (perf).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::buffers::contiguous_f32;
use super::gemm::{gemm_f32, gemm_f32_serial, Operand};

/// dW [out, in, k, k] of y = conv2d(x, w) with stride 1 and padding `padding`, given dL/dy
/// `grad`: `x` [B, in, H, W] and `grad` [B, out, H + 2p - k + 1, W + 2p - k + 1], f32 on the
/// CPU.
pub(crate) fn weight_grad_stride1(
    x: &Tensor,
    grad: &Tensor,
    kernel: usize,
    padding: usize,
) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&grad.contiguous()?, &WeightGrad { kernel, padding })
}

#[derive(Debug, Clone, Copy)]
struct WeightGrad {
    kernel: usize,
    padding: usize,
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "pigment-conv2d-weight-grad-stride1"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, in_c, height, width) = xl.shape().dims4()?;
        let (g_batch, out_c, oh, ow) = gl.shape().dims4()?;
        let (k, p) = (self.kernel, self.padding);
        let (hp, wp) = (height + 2 * p, width + 2 * p);
        if g_batch != batch || k == 0 || hp < k || oh != hp - k + 1 || ow != wp - k + 1 {
            candle_core::bail!(
                "conv2d weight gradient: input {:?} and output gradient {:?} do not fit a \
                 stride-1 {k}x{k} convolution with padding {p}",
                xl.shape(),
                gl.shape()
            );
        }
        let x = contiguous_f32(xs, xl, "conv2d weight gradient")?;
        let dy = contiguous_f32(gs, gl, "conv2d weight gradient")?;

        // Xp: every plane padded, then k elements of slack for the last window's run-on.
        let plane = hp * wp;
        let mut xp = vec![0f32; batch * in_c * plane + k];
        xp[..batch * in_c * plane]
            .par_chunks_mut(plane)
            .zip(x.par_chunks(height * width))
            .for_each(|(dst, src)| {
                for (row, src_row) in src.chunks(width).enumerate() {
                    let start = (row + p) * wp + p;
                    dst[start..start + width].copy_from_slice(src_row);
                }
            });
        // dY': rows widened from ow to wp with zeros.
        let span = oh * wp;
        let mut dyp = vec![0f32; batch * out_c * span];
        dyp.par_chunks_mut(span)
            .zip(dy.par_chunks(oh * ow))
            .for_each(|(dst, src)| {
                for (row, src_row) in src.chunks(ow).enumerate() {
                    dst[row * wp..row * wp + ow].copy_from_slice(src_row);
                }
            });

        let tap_gradient = |tap: usize| -> Result<Vec<f32>> {
            let shift = (tap / k) * wp + tap % k;
            let mut dst = vec![0f32; out_c * in_c];
            for b in 0..batch {
                // [out, span] @ [span, in]: rhs element (j, c) = Xp[b, c, shift + j].
                let lhs = Operand {
                    data: &dyp,
                    offset: b * out_c * span,
                    row_stride: span,
                    col_stride: 1,
                };
                let rhs = Operand {
                    data: &xp,
                    offset: b * in_c * plane + shift,
                    row_stride: 1,
                    col_stride: plane,
                };
                let shape = (out_c, in_c, span);
                if k == 1 {
                    gemm_f32(&mut dst, in_c, lhs, rhs, shape, b > 0)?;
                } else {
                    gemm_f32_serial(&mut dst, in_c, lhs, rhs, shape, b > 0)?;
                }
            }
            Ok(dst)
        };
        // One task per tap (each GEMM on one thread); a 1x1 kernel's single GEMM is threaded.
        let taps: Vec<Vec<f32>> = (0..k * k)
            .into_par_iter()
            .map(tap_gradient)
            .collect::<Result<_>>()?;

        let mut dw = vec![0f32; out_c * in_c * k * k];
        for (tap, values) in taps.iter().enumerate() {
            for (oc, &v) in values.iter().enumerate() {
                dw[oc * k * k + tap] = v;
            }
        }
        Ok((CpuStorage::F32(dw), Shape::from((out_c, in_c, k, k))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::max_abs_diff;
    use candle_core::{Device, Var};

    /// Against candle's own conv2d gradient, on odd sizes, 1x1 and 3x3, padded and not.
    #[test]
    fn matches_candle_weight_gradient() {
        let dev = Device::Cpu;
        for (b, cin, cout, h, w, k, p) in [
            (2, 3, 5, 7, 9, 3, 1),
            (1, 4, 6, 8, 8, 3, 0),
            (3, 6, 3, 5, 5, 1, 0),
            (2, 2, 4, 6, 5, 3, 2),
        ] {
            let x = Tensor::randn(0f32, 1., (b, cin, h, w), &dev).unwrap();
            let wt = Var::from_tensor(&Tensor::randn(0f32, 1., (cout, cin, k, k), &dev).unwrap())
                .unwrap();
            let y = x.conv2d(&wt, p, 1, 1, 1).unwrap();
            let probe = Tensor::randn(0f32, 1., y.dims(), &dev).unwrap();
            let grads = (&y * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let theirs = grads.get(wt.as_tensor()).unwrap();
            let ours = weight_grad_stride1(&x, &probe, k, p).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            let diff = max_abs_diff(&ours, theirs);
            assert!(diff < 1e-3, "{b} {cin} {cout} {h}x{w} k{k} p{p}: {diff}");
        }
        let x = Tensor::zeros((1, 2, 4, 4), candle_core::DType::F32, &dev).unwrap();
        let wrong = Tensor::zeros((1, 3, 4, 4), candle_core::DType::F32, &dev).unwrap();
        assert!(weight_grad_stride1(&x, &wrong, 3, 0).is_err());
    }
}
