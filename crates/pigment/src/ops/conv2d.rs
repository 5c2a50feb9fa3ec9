//! `Conv2d`: a drop-in for candle_nn's, with the same weights (`weight` [out, in, k, k],
//! `bias` [out]) and the same init hints, that runs CPU f32 through the implicit-GEMM kernel in
//! [`super::conv_kernel`] (candle 0.11's CPU conv2d is ~9x slower than torch on SD's shapes).
//! Anything else (CUDA/Metal, f16/bf16, a graph that tracks gradients) goes to candle's conv2d.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Module, Shape, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use super::conv_kernel::{conv2d_f32, ConvGeometry};
use super::conv_strided::conv2d_im2col_f32;
use super::layer_adapter::{adapted, adapter_for, LayerAdapter, LayerGeometry};
use super::packed_weight::PackedWeight;
use super::winograd::{conv2d_stride2_f32, stride2_applies, winograd_conv2d_f32, winograd_for};
use crate::error::{Error, Result};

static FAST_CONV: AtomicBool = AtomicBool::new(true);

/// Turns the CPU f32 fast path on or off for the whole process (on by default): for before/after
/// timings (examples/unet_bench.rs) and for checking a suspicion against candle's own conv2d.
pub fn set_fast_conv(enabled: bool) {
    FAST_CONV.store(enabled, Ordering::Relaxed);
}

/// A 2-D convolution with groups = 1 and dilation = 1 (every convolution of SD's UNet and VAE).
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
    /// The CPU f32 kernel and its weights; None when the weights are not CPU f32 or are
    /// variables (training needs candle's op for the backward pass).
    fast: Option<Arc<FastConv>>,
    /// f16 or int8 weights (`--weights`), widened in each forward; `weight` is then an empty
    /// placeholder.
    packed: Option<Arc<PackedWeight>>,
    /// A run-time adapter (LoRA, LoCon) whose term is added to the output
    /// ([`super::layer_adapter`]).
    adapter: Option<Arc<dyn LayerAdapter>>,
}

#[derive(Debug)]
struct FastConv {
    /// The weight's one copy, laid out for the kernel that runs it; `Conv2d::weight` is then a
    /// view of it (permuted for stride 1), so the weights are not held twice. Stride 1: tap-major
    /// [k, k, out, in] (contiguous: each tap an [out, in] matrix the GEMM reads with unit
    /// stride, 2x faster than reading the taps out of [out, in, k, k] for the UNet's
    /// 1280-channel convs at 8x8). Stride > 1: the layer's own [out, in, k, k], the im2col
    /// GEMM's [out, in*k*k] matrix (conv_strided.rs).
    taps: Tensor,
    bias: Option<Vec<f32>>,
    out_channels: usize,
    in_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// `weight` [out, in, k, k] (square kernel), `bias` [out].
    pub fn new(
        weight: Tensor,
        bias: Option<Tensor>,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let (out_c, in_c, kh, kw) = weight.dims4()?;
        if kh != kw || kh == 0 || stride == 0 {
            return Err(Error::InvalidArgument(format!(
                "Conv2d: weight {:?} with stride {stride}: need a square kernel and stride >= 1",
                weight.dims()
            )));
        }
        if let Some(b) = &bias {
            if b.dims() != [out_c] {
                return Err(Error::InvalidArgument(format!(
                    "Conv2d: bias shape {:?} does not match the weight's {out_c} output channels",
                    b.dims()
                )));
            }
        }
        let cpu_f32 = |t: &Tensor| matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32;
        let fast_ok = cpu_f32(&weight)
            && bias.as_ref().is_none_or(cpu_f32)
            && !weight.track_op()
            && !bias.as_ref().is_some_and(|b| b.track_op());
        let (weight, fast) = if fast_ok {
            let (taps, view) = if stride > 1 {
                let taps = weight.contiguous()?;
                (taps.clone(), taps)
            } else {
                let taps = weight.permute((2, 3, 0, 1))?.contiguous()?;
                let view = taps.permute((2, 3, 0, 1))?;
                (taps, view)
            };
            let fast = Arc::new(FastConv {
                taps,
                bias: bias.as_ref().map(|b| b.to_vec1::<f32>()).transpose()?,
                out_channels: out_c,
                in_channels: in_c,
                kernel: kh,
                stride,
                padding,
            });
            (view, Some(fast))
        } else {
            (weight, None)
        };
        Ok(Self {
            weight,
            bias,
            stride,
            padding,
            fast,
            packed: None,
            adapter: None,
        })
    }

    /// A convolution whose weight is held packed (see [`super::packed_weight`]).
    pub fn new_packed(
        weight: PackedWeight,
        bias: Option<Tensor>,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let placeholder = Tensor::zeros(
            0,
            bias.as_ref().map_or(DType::F32, |b| b.dtype()),
            &Device::Cpu,
        )?;
        Ok(Self {
            weight: placeholder,
            bias,
            stride,
            padding,
            fast: None,
            packed: Some(Arc::new(weight)),
            adapter: None,
        })
    }

    /// The weight [out, in, k, k] in the compute dtype (unpacked into a new tensor when it is
    /// held packed).
    pub fn weight(&self) -> candle_core::Result<Tensor> {
        match &self.packed {
            Some(packed) => packed.unpack(),
            None => Ok(self.weight.clone()),
        }
    }

    /// Whether a run-time adapter (LoRA, LoCon) adds to this layer's output now.
    pub fn has_active_adapter(&self) -> bool {
        self.adapter.as_ref().is_some_and(|a| a.is_active())
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    pub fn padding(&self) -> usize {
        self.padding
    }

    /// candle's own conv2d plus bias: the reference the fast path must match, and the path for
    /// every device, dtype and gradient-tracking case the fast kernel does not take.
    pub fn forward_reference(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = x.conv2d(&self.weight()?, self.padding, self.stride, 1, 1)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
            None => Ok(y),
        }
    }
}

impl Module for Conv2d {
    /// `x` [B, in, H, W] -> [B, out, H', W'].
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.forward_layer(x)?;
        adapted(self.adapter.as_ref(), x, y)
    }
}

impl Conv2d {
    /// The layer's own output, without its run-time adapter.
    fn forward_layer(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(packed) = &self.packed {
            // Widen this layer's weight for this call only (and take the fast path with it).
            let dense = Conv2d::new(
                packed.unpack()?,
                self.bias.clone(),
                self.stride,
                self.padding,
            )
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            return dense.forward(x);
        }
        match &self.fast {
            Some(fast)
                if matches!(x.device(), Device::Cpu)
                    && x.dtype() == DType::F32
                    && !x.track_op()
                    && FAST_CONV.load(Ordering::Relaxed) =>
            {
                x.contiguous()?.apply_op2_no_bwd(&fast.taps, fast.as_ref())
            }
            // Training on the CPU: the same kernel with GEMM gradients (conv2d_train.rs).
            _ if matches!(x.device(), Device::Cpu)
                && x.dtype() == DType::F32
                && self.weight.dtype() == DType::F32
                && FAST_CONV.load(Ordering::Relaxed) =>
            {
                let y = super::conv2d_train::conv2d_differentiable(
                    x,
                    &self.weight,
                    self.stride,
                    self.padding,
                )?;
                match &self.bias {
                    Some(b) => super::add_channel_bias(&y, b, 1),
                    None => Ok(y),
                }
            }
            // Training on CUDA: candle's forward, GEMM gradients instead of candle's
            // conv_transpose2d (conv2d_train.rs).
            _ if x.device().is_cuda()
                && (x.track_op() || self.weight.track_op())
                && cuda_gemm_backward() =>
            {
                let y = super::conv2d_train::conv2d_gemm_backward(
                    x,
                    &self.weight,
                    self.stride,
                    self.padding,
                )?;
                match &self.bias {
                    Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
                    None => Ok(y),
                }
            }
            _ => self.forward_reference(x),
        }
    }
}

/// Whether CUDA training takes [`super::conv2d_train::conv2d_gemm_backward`] (default) or
/// candle's own conv2d backward (`PIGMENT_CUDA_CONV_BACKWARD=candle`, for checking a suspicion
/// or timing the difference). Read once per process.
fn cuda_gemm_backward() -> bool {
    static GEMM: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *GEMM
        .get_or_init(|| std::env::var("PIGMENT_CUDA_CONV_BACKWARD").map_or(true, |v| v != "candle"))
}

impl CustomOp2 for FastConv {
    fn name(&self) -> &'static str {
        "pigment-conv2d"
    }

    /// `storage`/`layout`: the input x; `w_storage`/`w_layout`: the taps ([`FastConv::taps`]).
    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
        w_storage: &CpuStorage,
        w_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, in_channels, height, width) = layout.shape().dims4()?;
        if in_channels != self.in_channels {
            return Err(candle_core::Error::Msg(format!(
                "conv2d: input has {in_channels} channels, the weight expects {}",
                self.in_channels
            )));
        }
        let x = match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(data), Some((start, end))) => &data[start..end],
            _ => {
                return Err(candle_core::Error::Msg(
                    "conv2d: the fast path needs a contiguous f32 input".into(),
                ))
            }
        };
        let weight = match (w_storage, w_layout.contiguous_offsets()) {
            (CpuStorage::F32(data), Some((start, end))) => &data[start..end],
            _ => {
                return Err(candle_core::Error::Msg(
                    "conv2d: the fast path needs a contiguous f32 weight".into(),
                ))
            }
        };
        let g = ConvGeometry {
            batch,
            in_channels,
            out_channels: self.out_channels,
            height,
            width,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
        };
        let (oh, ow) = g.output_size()?;
        // 3x3 stride 1 with enough tiles: Winograd (fewer multiplies, winograd/); 3x3 stride 2
        // with enough tiles on AVX-512: the stride-2 Winograd split (winograd/stride2.rs);
        // other stride > 1: im2col blocks, one deep GEMM each (conv_strided.rs).
        let bias = self.bias.as_deref();
        let y = if stride2_applies(&g) {
            conv2d_stride2_f32(x, weight, bias, &g)?
        } else if self.stride > 1 {
            conv2d_im2col_f32(x, weight, bias, &g)?
        } else {
            match winograd_for(&g) {
                Some(tile) => winograd_conv2d_f32(x, weight, bias, &g, tile)?,
                None => conv2d_f32(x, weight, bias, &g)?,
            }
        };
        Ok((
            CpuStorage::F32(y),
            Shape::from((batch, self.out_channels, oh, ow)),
        ))
    }
}

/// Loads `weight` and `bias` under `vb` like `candle_nn::conv2d` (same shapes, same init hints,
/// so seeded training inits are unchanged). Only groups = 1 and dilation = 1 are supported.
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    if cfg.groups != 1 || cfg.dilation != 1 {
        return Err(Error::Config(format!(
            "conv2d {}: groups {} / dilation {} are not supported (only 1)",
            vb.prefix(),
            cfg.groups,
            cfg.dilation
        )));
    }
    let weight = vb.get_with_hints(
        (out_channels, in_channels, kernel_size, kernel_size),
        "weight",
        candle_nn::init::DEFAULT_KAIMING_NORMAL,
    )?;
    let bound = 1. / (in_channels as f64).sqrt();
    let bias = vb.get_with_hints(
        out_channels,
        "bias",
        candle_nn::Init::Uniform {
            lo: -bound,
            up: bound,
        },
    )?;
    let mut layer = match PackedWeight::pack_current(&weight)? {
        Some(packed) => Conv2d::new_packed(packed, Some(bias), cfg.stride, cfg.padding),
        None => Conv2d::new(weight, Some(bias), cfg.stride, cfg.padding),
    }?;
    layer.adapter = adapter_for(
        &vb.prefix(),
        LayerGeometry::Conv2d {
            stride: cfg.stride,
            padding: cfg.padding,
        },
    );
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative error max|a - b| / max|b| between the fast path and candle's conv2d.
    /// (batch, in, out, h, w, kernel, stride, padding)
    type Case = (usize, usize, usize, usize, usize, usize, usize, usize);

    fn check((b, cin, cout, h, w, k, s, p): Case) {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (b, cin, h, w), &dev).unwrap();
        let wt = Tensor::randn(0f32, 1.0, (cout, cin, k, k), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, cout, &dev).unwrap();
        for bias in [Some(bias), None] {
            let conv = Conv2d::new(wt.clone(), bias, s, p).unwrap();
            assert!(conv.fast.is_some());
            let fast = conv.forward(&x).unwrap();
            let reference = conv.forward_reference(&x).unwrap();
            assert_eq!(
                fast.dims(),
                reference.dims(),
                "shape b{b} {cin}->{cout} {h}x{w} k{k} s{s} p{p}"
            );
            let scale = reference
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let err = (fast - &reference)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                err <= 1e-4 * scale,
                "b{b} {cin}->{cout} {h}x{w} k{k} s{s} p{p}: max error {err} vs scale {scale}"
            );
        }
    }

    #[test]
    fn matches_candle_conv2d_on_many_shapes() {
        let shapes: [Case; 14] = [
            // 3x3 stride 2 with >= 256 output tiles: the stride-2 Winograd split on AVX-512
            // (winograd/stride2.rs), padding 1 (UNet) and 0 (the VAE encoder's padded input).
            (2, 6, 5, 47, 45, 3, 2, 1),
            (1, 3, 4, 65, 65, 3, 2, 0),
            (2, 8, 16, 9, 7, 3, 1, 1),
            (1, 5, 3, 8, 8, 3, 2, 1),
            (2, 6, 4, 9, 11, 3, 2, 1),
            (1, 4, 7, 10, 9, 3, 2, 0),
            (1, 4, 6, 7, 5, 3, 1, 0),
            (2, 12, 10, 5, 6, 1, 1, 0),
            (1, 3, 5, 6, 7, 1, 2, 0),
            (1, 3, 5, 6, 7, 1, 1, 1),
            (2, 33, 17, 13, 3, 3, 1, 1),
            (1, 2, 2, 3, 3, 3, 1, 0),
            (1, 16, 8, 4, 4, 5, 1, 2),
            (1, 16, 8, 12, 12, 5, 3, 2),
        ];
        for case in shapes {
            check(case);
        }
    }

    #[test]
    fn non_contiguous_input_and_wrong_channels() {
        let dev = Device::Cpu;
        let wt = Tensor::randn(0f32, 1.0, (4, 3, 3, 3), &dev).unwrap();
        let conv = Conv2d::new(wt, None, 1, 1).unwrap();
        // A transposed (non-contiguous) input gives the same result as its contiguous copy.
        let x = Tensor::randn(0f32, 1.0, (1, 3, 6, 5), &dev)
            .unwrap()
            .transpose(2, 3)
            .unwrap();
        let a = conv.forward(&x).unwrap();
        let b = conv.forward(&x.contiguous().unwrap()).unwrap();
        let diff = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0);
        let wrong = Tensor::zeros((1, 5, 6, 6), DType::F32, &dev).unwrap();
        assert!(conv.forward(&wrong).is_err());
    }

    #[test]
    fn variables_and_f16_use_candles_conv() {
        let dev = Device::Cpu;
        let var = candle_core::Var::randn(0f32, 1.0, (4, 3, 3, 3), &dev).unwrap();
        let conv = Conv2d::new(var.as_tensor().clone(), None, 1, 1).unwrap();
        assert!(
            conv.fast.is_none(),
            "a Var weight must keep candle's differentiable conv"
        );
        let x = Tensor::randn(0f32, 1.0, (1, 3, 5, 5), &dev).unwrap();
        let grads = conv
            .forward(&x)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(grads.get(var.as_tensor()).is_some());
        let w16 = Tensor::randn(0f32, 1.0, (4, 3, 3, 3), &dev)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        let conv16 = Conv2d::new(w16, None, 1, 1).unwrap();
        assert!(conv16.fast.is_none());
        let y = conv16.forward(&x.to_dtype(DType::F16).unwrap()).unwrap();
        assert_eq!(y.dims(), [1, 4, 5, 5]);
    }
}
