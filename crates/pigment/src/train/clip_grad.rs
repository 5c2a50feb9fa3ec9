//! Gradient clipping by global norm, as torch.nn.utils.clip_grad_norm_ (torch/nn/utils/
//! clip_grad.py; Pascanu et al. 2013): the L2 norm of all gradients taken together, and, when it
//! exceeds `max_norm`, every gradient scaled by `max_norm / (norm + 1e-6)`.

use candle_core::{DType, Tensor};

use super::params::Grads;
use crate::error::{Error, Result};

/// The global L2 norm of `grads`, computed as torch does: the norm of the per-tensor norms, in
/// f32, on the gradients' device, read back once (one wait for the device per step, not one
/// per tensor).
pub fn global_grad_norm(grads: &Grads) -> Result<f64> {
    let norms = grads
        .iter()
        .flatten()
        .map(|g| Ok(g.to_dtype(DType::F32)?.sqr()?.sum_all()?.sqrt()?))
        .collect::<Result<Vec<Tensor>>>()?;
    if norms.is_empty() {
        return Ok(0.0);
    }
    let total = Tensor::stack(&norms, 0)?
        .sqr()?
        .sum_all()?
        .sqrt()?
        .to_scalar::<f32>()?;
    Ok(total as f64)
}

/// Scales `grads` in place so that their global norm is at most `max_norm`; returns the norm
/// BEFORE clipping (what torch returns and what is worth logging).
pub fn clip_grad_norm(grads: &mut Grads, max_norm: f64) -> Result<f64> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(Error::invalid(format!(
            "gradient clipping max norm {max_norm} must be a finite number > 0"
        )));
    }
    let total = global_grad_norm(grads)?;
    let coef = (max_norm as f32) / (total as f32 + 1e-6);
    if coef < 1.0 {
        // `affine` multiplies by the f32 (or the gradient's dtype) value of `coef` on the
        // device: the same products as torch's `g.mul_(clip_coef)`, with no upload per tensor.
        for g in grads.iter_mut().flatten() {
            *g = g.affine(coef as f64, 0.0)?;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn norm_spans_all_tensors_and_clipping_rescales_to_max() {
        let dev = Device::Cpu;
        let mut grads: Grads = vec![
            Some(Tensor::new(&[3.0f32, 0.0], &dev).unwrap()),
            None,
            Some(Tensor::new(&[[4.0f32]], &dev).unwrap()),
        ];
        assert!((global_grad_norm(&grads).unwrap() - 5.0).abs() < 1e-6);
        let before = clip_grad_norm(&mut grads, 1.0).unwrap();
        assert!((before - 5.0).abs() < 1e-6);
        assert!((global_grad_norm(&grads).unwrap() - 1.0).abs() < 1e-5);
        // Below the limit nothing changes.
        let unchanged = grads.clone();
        clip_grad_norm(&mut grads, 10.0).unwrap();
        let flat = |g: &Grads| -> Vec<f32> {
            g.iter()
                .flatten()
                .flat_map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                .collect()
        };
        assert_eq!(flat(&grads), flat(&unchanged));
        assert!(clip_grad_norm(&mut grads, 0.0).is_err());
    }
}
