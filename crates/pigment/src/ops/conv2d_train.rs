//! A differentiable CPU f32 conv2d for training, on the same implicit-GEMM kernel as inference.
//!
//! candle's own conv2d backward runs a direct convolution behind spin barriers and makes a
//! training step's backward pass about 4x its forward (examples/train_step_bench.rs). Here both
//! gradients are GEMMs:
//! - input gradient: the transposed convolution, computed as a stride-1 convolution of the
//!   output gradient (dilated by the stride, padded by k - 1 - p) with the kernel flipped in
//!   space and transposed in channels (Dumoulin & Visin 2016, "A guide to convolution
//!   arithmetic", section 4);
//! - weight gradient: for each tap (ky, kx), dW[:, :, ky, kx] = sum over the batch of
//!   dY [out, pixels] @ X_tap^T [pixels, in], X_tap the input pixels that tap reads.
//!
//! On CUDA the same backward replaces candle's ([`conv2d_gemm_backward`]): candle computes the
//! input gradient with its CUDA conv_transpose2d, a direct kernel with one thread per output
//! value and no tiling, while this one is candle's im2col + cuBLAS conv2d and cuBLAS matmuls.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::conv_kernel::{conv2d_f32, pack_taps, ConvGeometry};

/// y = conv2d(x, weight) (no bias: add it with a broadcast, which candle differentiates).
/// `x` [B, in, H, W] and `weight` [out, in, k, k] on the CPU in f32; square kernel, groups 1.
pub fn conv2d_differentiable(
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, TrainConv { stride, padding })
}

/// y = conv2d(x, weight) on any device, forward by candle's conv2d, backward by
/// [`conv_gradients`] (GEMMs) instead of candle's conv_transpose2d. `x` [B, in, H, W],
/// `weight` [out, in, k, k] (square kernel, groups 1, f32 or any float dtype candle's conv2d
/// takes on that device).
pub fn conv2d_gemm_backward(
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let y = x
        .detach()
        .conv2d(&weight.detach(), padding, stride, 1, 1)?
        .contiguous()?;
    x.apply_op3(weight, &y, GemmBackwardConv { stride, padding })
}

/// The custom op behind [`conv2d_gemm_backward`]: its forward hands back the third argument
/// (the output candle's conv2d already computed, detached), so only the backward is its own.
#[derive(Debug, Clone, Copy)]
struct GemmBackwardConv {
    stride: usize,
    padding: usize,
}

impl CustomOp3 for GemmBackwardConv {
    fn name(&self) -> &'static str {
        "pigment-conv2d-gemm-backward"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        y: &CpuStorage,
        yl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Ok((y.try_clone(yl)?, yl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        y: &candle_core::CudaStorage,
        yl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        Ok((y.try_clone(yl)?, yl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _y: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (grad_x, grad_w) =
            conv_gradients(x, weight, grad, self.stride, self.padding, |a, b, pad| {
                a.conv2d(b, pad, 1, 1, 1)
            })?;
        Ok((Some(grad_x), Some(grad_w), None))
    }
}

#[derive(Debug, Clone, Copy)]
struct TrainConv {
    stride: usize,
    padding: usize,
}

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    super::buffers::contiguous_f32(storage, layout, "conv2d (training)")
}

impl CustomOp2 for TrainConv {
    fn name(&self) -> &'static str {
        "pigment-conv2d-train"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, in_c, height, width) = xl.shape().dims4()?;
        let (out_c, w_in, kh, kw) = wl.shape().dims4()?;
        if w_in != in_c || kh != kw {
            candle_core::bail!(
                "conv2d: input {:?} and weight {:?} do not fit (square kernel, same in-channels)",
                xl.shape(),
                wl.shape()
            );
        }
        let g = ConvGeometry {
            batch,
            in_channels: in_c,
            out_channels: out_c,
            height,
            width,
            kernel: kh,
            stride: self.stride,
            padding: self.padding,
        };
        let (oh, ow) = g.output_size()?;
        let taps = pack_taps(f32_slice(ws, wl)?, out_c, in_c, kh);
        let y = conv2d_f32(f32_slice(xs, xl)?, &taps, None, &g)?;
        Ok((CpuStorage::F32(y), Shape::from((batch, out_c, oh, ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let grad_x = input_gradient(x, weight, &grad, self.stride, self.padding, |a, b, pad| {
            a.apply_op2_no_bwd(
                b,
                &TrainConv {
                    stride: 1,
                    padding: pad,
                },
            )
        })?;
        let grad_w = if self.stride == 1 {
            let k = weight.dim(3)?;
            super::conv_weight_grad::weight_grad_stride1(x, &grad, k, self.padding)?
        } else {
            weight_gradient(x, weight, &grad, self.stride, self.padding)?
        };
        Ok((Some(grad_x), Some(grad_w)))
    }
}

/// Both gradients of y = conv2d(x, weight) (stride `s`, padding `p`) given dL/dy `grad`, as
/// GEMMs (see the module doc); `conv_stride1(a, b, pad)` is a stride-1 conv2d of `a` with the
/// kernel `b` and zero padding `pad`, no gradient needed.
fn conv_gradients(
    x: &Tensor,
    weight: &Tensor,
    grad: &Tensor,
    s: usize,
    p: usize,
    conv_stride1: impl Fn(&Tensor, &Tensor, usize) -> Result<Tensor>,
) -> Result<(Tensor, Tensor)> {
    let grad = grad.contiguous()?;
    let grad_x = input_gradient(x, weight, &grad, s, p, conv_stride1)?;
    Ok((grad_x, weight_gradient(x, weight, &grad, s, p)?))
}

/// dL/dx of y = conv2d(x, weight) given a contiguous dL/dy `grad` (see [`conv_gradients`]).
fn input_gradient(
    x: &Tensor,
    weight: &Tensor,
    grad: &Tensor,
    s: usize,
    p: usize,
    conv_stride1: impl Fn(&Tensor, &Tensor, usize) -> Result<Tensor>,
) -> Result<Tensor> {
    let (_, _, height, width) = x.dims4()?;
    let (_, _, k, _) = weight.dims4()?;

    // Input gradient: dilate dY by the stride (and cover rows the forward's floor division
    // skipped), pad by k - 1 - p, convolve with the flipped, transposed kernel.
    let span_h = height + 2 * p - k + 1;
    let span_w = width + 2 * p - k + 1;
    let flipped = flip_spatial(weight)?.transpose(0, 1)?.contiguous()?;
    let edge = k - 1;
    if s == 1 && p <= edge {
        // Nothing to dilate (span = output size): the convolution pads dY itself, with no
        // padded copy.
        conv_stride1(grad, &flipped, edge - p)
    } else {
        let dilated = dilate(grad, s, span_h, span_w)?;
        let padded = dilated
            .pad_with_zeros(2, edge, edge)?
            .pad_with_zeros(3, edge, edge)?;
        let padded = if p > 0 {
            padded
                .narrow(2, p, span_h + 2 * edge - 2 * p)?
                .narrow(3, p, span_w + 2 * edge - 2 * p)?
                .contiguous()?
        } else {
            padded
        };
        conv_stride1(&padded, &flipped, 0)
    }
}

/// dL/dweight of y = conv2d(x, weight) given a contiguous dL/dy `grad`, on any device.
fn weight_gradient(
    x: &Tensor,
    weight: &Tensor,
    grad: &Tensor,
    s: usize,
    p: usize,
) -> Result<Tensor> {
    let (_, _, k, _) = weight.dims4()?;
    let (batch, out_c, oh, ow) = grad.dims4()?;
    // Weight gradient, one GEMM per tap with the batch folded into the inner dimension:
    // dY as [out, B*px] times the tap's pixels as [B*px, in] (a batched product summed over
    // the batch afterwards spent its time in candle's slow sum over dimension 0).
    let xp = x
        .contiguous()?
        .pad_with_zeros(2, p, p)?
        .pad_with_zeros(3, p, p)?;
    let dy = grad
        .transpose(0, 1)?
        .contiguous()?
        .reshape((out_c, batch * oh * ow))?;
    let mut taps = Vec::with_capacity(k * k);
    for ky in 0..k {
        for kx in 0..k {
            let tap = xp
                .narrow(2, ky, (oh - 1) * s + 1)?
                .narrow(3, kx, (ow - 1) * s + 1)?;
            let tap = subsample(&tap, s, oh, ow)?;
            let in_c = tap.dim(1)?;
            let tap = tap
                .reshape((batch, in_c, oh * ow))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((batch * oh * ow, in_c))?;
            // [out, B*px] @ [B*px, in] -> [out, in].
            taps.push(dy.matmul(&tap)?);
        }
    }
    let (out_w, in_w) = taps[0].dims2()?;
    Tensor::stack(&taps, 2)?
        .reshape((out_w, in_w, k, k))?
        .to_dtype(weight.dtype())
}

/// dY [B, C, n, m] placed at every `stride`-th position of a zero [B, C, span_h, span_w].
fn dilate(grad: &Tensor, stride: usize, span_h: usize, span_w: usize) -> Result<Tensor> {
    let (b, c, n, m) = grad.dims4()?;
    if stride == 1 {
        return grad
            .pad_with_zeros(2, 0, span_h - n)?
            .pad_with_zeros(3, 0, span_w - m);
    }
    // [B, C, n, 1, m, 1] padded to [B, C, n, s, m, s], reshaped, cropped to the span.
    let spread = grad
        .reshape((b, c, n, 1, m, 1))?
        .pad_with_zeros(3, 0, stride - 1)?
        .pad_with_zeros(5, 0, stride - 1)?
        .reshape((b, c, n * stride, m * stride))?;
    let spread = if n * stride >= span_h {
        spread.narrow(2, 0, span_h)?
    } else {
        spread.pad_with_zeros(2, 0, span_h - n * stride)?
    };
    let spread = if m * stride >= span_w {
        spread.narrow(3, 0, span_w)?
    } else {
        spread.pad_with_zeros(3, 0, span_w - m * stride)?
    };
    spread.contiguous()
}

/// Every `stride`-th row and column: [B, C, (n-1)*s+1, (m-1)*s+1] -> [B, C, n, m].
fn subsample(t: &Tensor, stride: usize, n: usize, m: usize) -> Result<Tensor> {
    if stride == 1 {
        return t.contiguous();
    }
    let (b, c, h, w) = t.dims4()?;
    t.pad_with_zeros(2, 0, n * stride - h)?
        .pad_with_zeros(3, 0, m * stride - w)?
        .contiguous()?
        .reshape((b, c, n, stride, m, stride))?
        .narrow(3, 0, 1)?
        .narrow(5, 0, 1)?
        .reshape((b, c, n, m))
}

/// The kernel rotated by 180 degrees in space: w[.., k-1-ky, k-1-kx].
fn flip_spatial(w: &Tensor) -> Result<Tensor> {
    let k = w.dim(3)?;
    let idx: Vec<u32> = (0..k as u32).rev().collect();
    let idx = Tensor::from_vec(idx, k, w.device())?;
    w.contiguous()?.index_select(&idx, 2)?.index_select(&idx, 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::max_abs_diff;
    use candle_core::{Device, Var};

    /// Output and both gradients agree with candle's conv2d, which is the definition (f32
    /// rounding of differently ordered sums: 1e-3 on values of order 10), for the CPU kernel
    /// and for the device-agnostic op CUDA training uses (run here on the CPU).
    #[test]
    fn matches_candle_conv2d_and_its_gradients() {
        let dev = Device::Cpu;
        for (b, cin, cout, h, w, k, s, p) in [
            (2, 3, 5, 7, 9, 3, 1, 1),
            (1, 4, 6, 8, 8, 3, 2, 1),
            (2, 4, 4, 9, 7, 3, 2, 1),
            (2, 6, 3, 5, 5, 1, 1, 0),
            (1, 2, 3, 6, 6, 3, 1, 0),
            (2, 3, 2, 10, 6, 3, 2, 0),
        ] {
            let x =
                Var::from_tensor(&Tensor::randn(0f32, 1., (b, cin, h, w), &dev).unwrap()).unwrap();
            let wt = Var::from_tensor(&Tensor::randn(0f32, 1., (cout, cin, k, k), &dev).unwrap())
                .unwrap();
            let theirs = x.conv2d(&wt, p, s, 1, 1).unwrap();
            for conv in [conv2d_differentiable, conv2d_gemm_backward] {
                let ours = conv(&x, &wt, s, p).unwrap();
                assert_eq!(ours.dims(), theirs.dims());
                assert!(max_abs_diff(&ours, &theirs) < 1e-4);
                let probe = Tensor::randn(0f32, 1., ours.dims(), &dev).unwrap();
                let g1 = (&ours * &probe)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let g2 = (&theirs * &probe)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                for v in [&x, &wt] {
                    let d = max_abs_diff(g1.get(v).unwrap(), g2.get(v).unwrap());
                    assert!(
                        d < 1e-3,
                        "gradient differs by {d} for {:?}",
                        (b, cin, cout, h, w, k, s, p)
                    );
                }
            }
        }
    }
}
