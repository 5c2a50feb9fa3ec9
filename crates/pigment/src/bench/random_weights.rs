//! Random weights made on request, for benchmarking full-size architectures without a download.
//!
//! A candle `SimpleBackend` that answers every `vb.get(shape, name)` with a fresh tensor: a
//! seeded splitmix64 stream (seeded by the weight's name, so a weight's values do not depend on
//! the order in which layers ask for them) mapped to uniform values in ±1/sqrt(fan_in), about
//! PyTorch's default `kaiming_uniform_(a=sqrt(5))` range, so activations stay finite in f16.
//! Normalisation weights are ones and biases zeros. A normal RNG (Box-Muller) would cost several
//! times more per value; this fill makes SD1.5's
//! 1.07 G parameters in a few seconds, in parallel blocks.

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

/// The backend; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct RandomWeights {
    seed: u64,
}

impl RandomWeights {
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    /// A `VarBuilder` whose every weight is made by this backend, in `dtype` on `device`.
    pub fn var_builder(seed: u64, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(Self::new(seed)), dtype, device.clone())
    }
}

/// splitmix64 (Steele, Lea & Flood 2014): one add and three xor-shift-multiplies per value.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a of the weight's name: the per-tensor stream's seed.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Values per independently seeded block of the fill (blocks are filled in parallel).
const BLOCK: usize = 1 << 16;

/// `n` values uniform in [-amplitude, amplitude), two per splitmix64 draw; block `b` of
/// [`BLOCK`] values has its own stream seeded from (`seed`, `b`), so the result does not depend
/// on the thread count.
pub(crate) fn uniform_fill(seed: u64, n: usize, amplitude: f32) -> Vec<f32> {
    use rayon::prelude::*;
    let scale = amplitude / (1u32 << 31) as f32;
    let mut out = vec![0f32; n];
    out.par_chunks_mut(BLOCK)
        .enumerate()
        .for_each(|(b, block)| {
            let mut state = seed ^ (b as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
            for pair in block.chunks_mut(2) {
                let r = splitmix64(&mut state);
                pair[0] = (r as u32 as i32) as f32 * scale;
                if let Some(second) = pair.get_mut(1) {
                    *second = ((r >> 32) as u32 as i32) as f32 * scale;
                }
            }
        });
    out
}

impl SimpleBackend for RandomWeights {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _hints: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let dims = shape.dims();
        let rank1 = dims.len() == 1;
        if rank1 && name.ends_with("bias") {
            return Tensor::zeros(shape, dtype, device);
        }
        if rank1 && name.ends_with("weight") {
            // GroupNorm / LayerNorm scales.
            return Tensor::ones(shape, dtype, device);
        }
        let fan_in: usize = dims.iter().skip(1).product::<usize>().max(1);
        let amplitude = 1.0 / (fan_in as f32).sqrt();
        let values = uniform_fill(self.seed ^ name_hash(name), shape.elem_count(), amplitude);
        Tensor::from_vec(values, shape, device)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights need a shape: `{name}` was asked for without one")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_seeded_bounded_and_centred() {
        let a = uniform_fill(7, 100_001, 0.5);
        assert_eq!(a, uniform_fill(7, 100_001, 0.5));
        assert_ne!(a, uniform_fill(8, 100_001, 0.5));
        assert!(a.iter().all(|v| (-0.5..0.5).contains(v)));
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        // Uniform on [-a, a): variance a^2 / 3.
        assert!((var - 0.25 / 3.0).abs() < 0.002, "variance {var}");
    }

    #[test]
    fn weights_depend_on_name_not_order() -> candle_core::Result<()> {
        let vb = RandomWeights::var_builder(1, DType::F32, &Device::Cpu);
        let a = vb.get((4, 3), "x.weight")?;
        let _ = vb.get((4, 3), "y.weight")?;
        let b = vb.get((4, 3), "x.weight")?;
        let diff = (a - b)?.abs()?.sum_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        let norm = vb.get(8, "norm.weight")?.sum_all()?.to_scalar::<f32>()?;
        assert_eq!(norm, 8.0);
        Ok(())
    }
}
