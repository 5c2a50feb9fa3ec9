//! `LayerNorm` (Ba et al. 2016; torch.nn.LayerNorm over the last dimension) that can be trained.
//!
//! candle_nn's LayerNorm runs a fused kernel with no backward pass whenever its input is
//! contiguous: while training, its weight and bias never receive a gradient and nothing flows
//! back through it to earlier layers. Here inference keeps that fused kernel and training builds
//! the normalisation from differentiable ops, with the affine part on
//! [`super::scale_channels`] / [`super::add_channel_bias`].

use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::channel::{add_channel_bias, scale_channels};

#[derive(Clone, Debug)]
pub struct LayerNorm {
    inner: candle_nn::LayerNorm,
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

/// Same weights (`weight`, `bias` [size]), names and initialisation as `candle_nn::layer_norm`.
pub fn layer_norm(size: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    let weight = vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.))?;
    let bias = vb.get_with_hints(size, "bias", candle_nn::Init::Const(0.))?;
    Ok(LayerNorm {
        inner: candle_nn::LayerNorm::new(weight.clone(), bias.clone(), eps),
        weight,
        bias,
        eps,
    })
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !(x.track_op() || self.weight.track_op() || self.bias.track_op()) {
            return self.inner.forward(x);
        }
        let last = x.rank() - 1;
        let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let variance = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(variance + self.eps)?.sqrt()?)?;
        add_channel_bias(
            &scale_channels(&normed, &self.weight, last)?,
            &self.bias,
            last,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// The training path equals the fused kernel's values and passes gradients to x, weight
    /// and bias (the fused kernel passes none).
    #[test]
    fn training_path_matches_inference_and_has_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &dev);
        let norm = layer_norm(8, 1e-5, vb)?;
        let x = Tensor::randn(0f32, 1., (3, 5, 8), &dev)?;
        let fused = norm.inner.forward(&x)?;
        let x = candle_core::Var::from_tensor(&x)?;
        let trained = norm.forward(&x)?;
        let diff = (&trained - &fused)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(
            diff < 1e-5,
            "training path differs from the fused kernel by {diff}"
        );
        let probe = Tensor::randn(0f32, 1., (3, 5, 8), &dev)?;
        let grads = (trained * probe)?.sum_all()?.backward()?;
        for var in vars.all_vars() {
            assert!(
                grads.get(var.as_tensor()).is_some(),
                "a parameter got no gradient"
            );
        }
        assert!(
            grads.get(x.as_tensor()).is_some(),
            "no gradient reached the input"
        );
        Ok(())
    }
}
