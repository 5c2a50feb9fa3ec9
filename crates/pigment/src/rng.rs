//! Seeded noise that matches PyTorch's CPU generator (placeholder: being implemented).

use crate::error::Result;
use candle_core::{Device, Tensor};

/// A random generator that reproduces `torch.Generator("cpu").manual_seed(seed)`.
pub struct TorchGenerator {
    _seed: u64,
}

impl TorchGenerator {
    pub fn new(seed: u64) -> Self {
        Self { _seed: seed }
    }

    /// Same values as `torch.randn(shape, generator=g, dtype=torch.float32)`.
    pub fn randn(&mut self, _shape: &[usize]) -> Vec<f32> {
        todo!("torch-compatible randn")
    }

    /// `randn` as an f32 tensor on `device`.
    pub fn randn_tensor(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        let values = self.randn(shape);
        Ok(Tensor::from_vec(values, shape, device)?)
    }
}
