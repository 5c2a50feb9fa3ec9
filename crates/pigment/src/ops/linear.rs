//! `Linear` (torch.nn.Linear) that trains fast on the CPU: candle_nn's multiplies a [B, T, in]
//! input by a broadcast weight, so its weight gradient is a sum over a leading dimension and its
//! bias gradient a sum over two, both on candle's slow generic reduction. While training this one
//! flattens to [B*T, in] (one GEMM, weight gradient included) and adds the bias with
//! [`super::add_channel_bias`]. CPU f32 inference runs [`super::dense`] (one GEMM into the
//! bias rows), skinny inputs `forward_skinny`, anything else candle_nn's forward. With `--weights
//! f16|q8` the weight is held packed ([`super::packed_weight`]) and widened in each forward.

use std::sync::Arc;

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::channel::add_channel_bias;
use super::layer_adapter::{adapted, adapter_for, LayerAdapter, LayerGeometry};
use super::packed_weight::PackedWeight;

#[derive(Clone, Debug)]
pub struct Linear {
    inner: candle_nn::Linear,
    /// The weight packed; `inner`'s weight is then an empty placeholder.
    packed: Option<Arc<PackedWeight>>,
    /// A run-time adapter (LoRA) whose term is added to the output ([`super::layer_adapter`]).
    adapter: Option<Arc<dyn LayerAdapter>>,
}

/// Packs the weight when a [`super::WeightFormatScope`] asks for it.
fn build(weight: Tensor, bias: Option<Tensor>) -> Result<Linear> {
    let packed = PackedWeight::pack_current(&weight)
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?
        .map(Arc::new);
    let weight = match packed {
        Some(_) => Tensor::zeros(0, weight.dtype(), weight.device())?,
        None => weight,
    };
    Ok(Linear {
        inner: candle_nn::Linear::new(weight, bias),
        packed,
        adapter: None,
    })
}

/// Same weights, names and initialisation as `candle_nn::linear`.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let adapter = adapter_for(&vb.prefix(), LayerGeometry::Linear);
    let inner = candle_nn::linear(in_dim, out_dim, vb)?;
    let mut layer = build(inner.weight().clone(), inner.bias().cloned())?;
    layer.adapter = adapter;
    Ok(layer)
}

/// Same as `candle_nn::linear_no_bias`.
pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let adapter = adapter_for(&vb.prefix(), LayerGeometry::Linear);
    let inner = candle_nn::linear_no_bias(in_dim, out_dim, vb)?;
    let mut layer = build(inner.weight().clone(), None)?;
    layer.adapter = adapter;
    Ok(layer)
}

impl Linear {
    /// The weight [out, in] in the compute dtype (unpacked into a new tensor when it is held
    /// packed).
    pub fn weight(&self) -> Result<Tensor> {
        match &self.packed {
            Some(packed) => packed.unpack(),
            None => Ok(self.inner.weight().clone()),
        }
    }

    /// Whether a run-time adapter (LoRA) adds to this layer's output now.
    pub fn has_active_adapter(&self) -> bool {
        self.adapter.as_ref().is_some_and(|a| a.is_active())
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.forward_layer(x, None)?;
        adapted(self.adapter.as_ref(), x, y)
    }
}

impl Linear {
    /// forward(x) + residual, the add done in the GEMM's pass where the fused CPU path runs (a
    /// transformer block's residual connections: one pass over the output fewer each).
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let y = self.forward_layer(x, Some(residual))?;
        adapted(self.adapter.as_ref(), x, y)
    }
}

/// Inputs of at most this many rows (a prompt's 77 tokens, a batch of them) take
/// [`Linear::forward_skinny`].
const SKINNY_ROWS: usize = 256;

impl Linear {
    /// y = x W^T + b for a few rows, computed as (W x^T)^T: the `gemm` crate then packs the
    /// small x^T instead of gathering the whole transposed weight on every call, which made
    /// CLIP's 3072 -> 768 projection at 77 tokens run at 75-90 GFLOP/s; this way 180-220
    /// (2 threads and 1; SD1.5's text encoder forward, 2 threads: 0.22 -> 0.15 s).
    fn forward_skinny(&self, x: &Tensor, rows: usize, in_dim: usize) -> Result<Tensor> {
        let weight = self.inner.weight();
        let y = weight
            .matmul(&x.reshape((rows, in_dim))?.t()?)?
            .t()?
            .contiguous()?;
        let y = match self.inner.bias() {
            Some(bias) => y.broadcast_add(bias)?,
            None => y,
        };
        let mut dims = x.dims().to_vec();
        let last = dims.len() - 1;
        dims[last] = weight.dim(0)?;
        y.reshape(dims)
    }

    /// The layer's own output plus `residual`, without its run-time adapter.
    fn forward_layer(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        if let Some(y) = self.forward_fused(x, residual)? {
            return Ok(y);
        }
        let y = self.forward_plain(x)?;
        match residual {
            Some(r) => y + r,
            None => Ok(y),
        }
    }

    /// The one-pass GEMM of [`super::dense`] (CPU f32 inference, more than SKINNY_ROWS rows).
    fn forward_fused(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Option<Tensor>> {
        let rows = x.elem_count() / x.dims().last().copied().unwrap_or(1).max(1);
        if x.track_op() || x.rank() < 2 || rows <= SKINNY_ROWS {
            return Ok(None);
        }
        let bias = self.inner.bias();
        match &self.packed {
            Some(packed) => super::dense::dense_forward(x, &packed.unpack()?, bias, residual),
            None => super::dense::dense_forward(x, self.inner.weight(), bias, residual),
        }
    }

    /// The layer's own output by candle's ops (or the skinny GEMM).
    fn forward_plain(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(packed) = &self.packed {
            let dense = candle_nn::Linear::new(packed.unpack()?, self.inner.bias().cloned());
            return dense.forward(x);
        }
        let weight = self.inner.weight();
        let training = x.track_op() || weight.track_op();
        if !training && x.rank() >= 2 && x.device().is_cpu() {
            let in_dim = x.dim(x.rank() - 1)?;
            let rows = x.elem_count() / in_dim.max(1);
            if rows <= SKINNY_ROWS {
                return self.forward_skinny(x, rows, in_dim);
            }
        }
        if !training || x.rank() < 2 {
            return self.inner.forward(x);
        }
        let dims = x.dims().to_vec();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim.max(1);
        let y = x.reshape((rows, in_dim))?.matmul(&weight.t()?)?;
        let y = match self.inner.bias() {
            Some(bias) => add_channel_bias(&y, bias, 1)?,
            None => y,
        };
        let mut out_dims = dims;
        let last = out_dims.len() - 1;
        out_dims[last] = weight.dim(0)?;
        y.reshape(out_dims)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Module, Tensor};

    use super::*;
    use crate::ops::max_abs_diff;

    /// The few-row path gives candle_nn's x W^T + b (up to the summation order's rounding) for
    /// 2-D and 3-D inputs, with and without bias, and the many-row path is untouched.
    #[test]
    fn skinny_rows_match_candle_nn() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.1, (48, 96), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, 48, &dev).unwrap();
        for shape in [vec![77, 96], vec![2, 77, 96], vec![1, SKINNY_ROWS + 1, 96]] {
            let x = Tensor::randn(0f32, 1.0, shape.as_slice(), &dev).unwrap();
            for bias in [None, Some(b.clone())] {
                let ours = build(w.clone(), bias.clone()).unwrap().forward(&x).unwrap();
                let reference = candle_nn::Linear::new(w.clone(), bias).forward(&x).unwrap();
                assert_eq!(ours.dims(), reference.dims());
                let diff = max_abs_diff(&ours, &reference);
                // f32 sums of 96 products of magnitude ~0.1: rounding ~1e-6.
                assert!(diff < 1e-5, "{shape:?}: {diff}");
            }
        }
    }
}
