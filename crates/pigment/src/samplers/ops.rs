//! Elementwise float32 arithmetic with a scalar, rounded exactly as torch rounds
//! `tensor * scalar_tensor` and `tensor / scalar_tensor` (one IEEE operation per element), so
//! that the samplers reproduce diffusers' latents to the last bit where the formulas allow.

use candle_core::{DType, Tensor};

use crate::error::Result;

/// `x * s` (candle's affine with add 0 is one rounded multiply per element).
pub(crate) fn mul(x: &Tensor, s: f32) -> Result<Tensor> {
    Ok(x.affine(s as f64, 0.0)?)
}

/// `x / s` as a true division (candle's `x / f64` multiplies by the reciprocal instead).
pub(crate) fn div(x: &Tensor, s: f32) -> Result<Tensor> {
    let s = Tensor::new(s, x.device())?.to_dtype(x.dtype())?;
    Ok(x.broadcast_div(&s)?)
}

/// `a * x + b * y`.
pub(crate) fn lin2(a: f32, x: &Tensor, b: f32, y: &Tensor) -> Result<Tensor> {
    Ok((mul(x, a)? + mul(y, b)?)?)
}

/// The tensor in float32, where the sampler arithmetic happens.
pub(crate) fn as_f32(x: &Tensor) -> Result<Tensor> {
    Ok(x.to_dtype(DType::F32)?)
}
