//! `Linear` (torch.nn.Linear) that trains fast on the CPU: candle_nn's multiplies a [B, T, in]
//! input by a broadcast weight, so its weight gradient is a sum over a leading dimension and its
//! bias gradient a sum over two, both on candle's slow generic reduction. While training this one
//! flattens to [B*T, in] (one GEMM, weight gradient included) and adds the bias with
//! [`super::add_channel_bias`]. Inference runs candle_nn's forward unchanged.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::channel::add_channel_bias;

#[derive(Clone, Debug)]
pub struct Linear {
    inner: candle_nn::Linear,
}

/// Same weights, names and initialisation as `candle_nn::linear`.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    Ok(Linear {
        inner: candle_nn::linear(in_dim, out_dim, vb)?,
    })
}

/// Same as `candle_nn::linear_no_bias`.
pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    Ok(Linear {
        inner: candle_nn::linear_no_bias(in_dim, out_dim, vb)?,
    })
}

impl Linear {
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let weight = self.inner.weight();
        let training = x.track_op() || weight.track_op();
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
