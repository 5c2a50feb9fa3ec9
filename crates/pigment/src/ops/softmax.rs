//! Softmax over the last dimension that gradients flow through.
//!
//! candle-nn's `softmax_last_dim` is a fused kernel built with `apply_op1_no_bwd`: its result
//! is cut from the autograd graph, so a model trained through it gets no gradient into the
//! attention scores, and its query and key projections (and everything that feeds only them,
//! like the norm before cross-attention) never learn. When the input is tracked this takes the
//! composite exp(x - max) / sum(exp(x - max)) of differentiable ops instead (the max is a
//! constant shift the softmax does not depend on, so it is detached); otherwise the fused
//! kernel, which inference uses.

use candle_core::{Result, Tensor, D};

pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !x.track_op() {
        return candle_nn::ops::softmax_last_dim(x);
    }
    let max = x.max_keepdim(D::Minus1)?.detach();
    let exp = x.broadcast_sub(&max)?.exp()?;
    let sum = exp.sum_keepdim(D::Minus1)?;
    exp.broadcast_div(&sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The tracked path equals the fused kernel, and its gradient is p * (g - sum(g p)), the
    /// softmax Jacobian-vector product, checked here in closed form.
    #[test]
    fn tracked_softmax_matches_the_kernel_and_its_jacobian() -> Result<()> {
        let dev = Device::Cpu;
        let values = crate::ops::test_values(2 * 3 * 7, 5);
        let x = Var::from_vec(values.iter().map(|v| v * 4.0).collect(), (2, 3, 7), &dev)?;
        let weights = Tensor::from_vec(crate::ops::test_values(42, 9), (2, 3, 7), &dev)?;
        let p = softmax_last_dim(x.as_tensor())?;
        let fused = candle_nn::ops::softmax_last_dim(&x.as_tensor().detach())?;
        assert!(crate::ops::max_abs_diff(&p, &fused) < 1e-6);
        let loss = (&p * &weights)?.sum_all()?;
        let grad = loss
            .backward()?
            .get(x.as_tensor())
            .cloned()
            .expect("a gradient");
        let inner = (&weights * &fused)?.sum_keepdim(D::Minus1)?;
        let expected = (&fused * weights.broadcast_sub(&inner)?)?;
        assert!(crate::ops::max_abs_diff(&grad, &expected) < 1e-6);
        Ok(())
    }
}
