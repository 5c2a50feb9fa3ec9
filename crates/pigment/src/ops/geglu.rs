//! GEGLU (Shazeer 2020, "GLU Variants Improve Transformer"): h * GELU(gate) with [h, gate] the
//! two halves of the last axis, as diffusers' `GEGLU` (models/activations.py) computes after
//! the feed-forward's first projection. With candle's ops that is a strided GELU over one half,
//! a product and two 4 * dim-wide temporaries per token; here one vectorised pass per row
//! (CPU f32 inference), with the erf of PyTorch's vectorised CPU GELU (see
//! [`super::fast_exp::gelu_gate`]).

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use super::fast_exp::gelu_gate;
use crate::error::Result;

/// h * GELU_erf(gate) for `hg` = [..., 2 * n] = [h, gate] on the last axis -> [..., n].
pub fn geglu(hg: &Tensor) -> Result<Tensor> {
    let fused = matches!(hg.device(), Device::Cpu) && hg.dtype() == DType::F32 && !hg.track_op();
    if fused {
        return Ok(hg.contiguous()?.apply_op1_no_bwd(&Geglu)?);
    }
    let halves = hg.chunk(2, D::Minus1)?;
    Ok((&halves[0] * halves[1].gelu_erf()?)?)
}

struct Geglu;

impl CustomOp1 for Geglu {
    fn name(&self) -> &'static str {
        "pigment-geglu"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims();
        let width = dims.last().copied().unwrap_or(0);
        let x = super::buffers::contiguous_f32(storage, layout, "geglu")?;
        if width == 0 || width % 2 != 0 {
            candle_core::bail!("geglu: the last axis ({width}) must split in two halves");
        }
        let half = width / 2;
        let mut out = super::buffers::zeros(x.len() / 2);
        out.par_chunks_mut(half)
            .zip(x.par_chunks(width))
            .with_min_len(16)
            .for_each(|(dst, row)| {
                let (h, gate) = row.split_at(half);
                gelu_gate(h, gate, dst);
            });
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = half;
        }
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused pass against candle's chunk + gelu_erf + mul on fixed values in [-5, 5]: per
    /// element within 3e-7 |h x| / 2 (erf's 1.5e-7 formula bound plus its f32 rounding near
    /// +-1, a few ulps of 1), plus f32 rounding of the result (1e-6 relative); shapes with a
    /// leading batch.
    #[test]
    fn matches_candles_ops() {
        let dev = Device::Cpu;
        let values: Vec<f32> = (0..2 * 37 * 48)
            .map(|i| (i as f32 * 0.618).sin() * 5.0)
            .collect();
        let hg = Tensor::from_vec(values, (2, 37, 48), &dev).unwrap();
        let fused = geglu(&hg).unwrap();
        assert_eq!(fused.dims(), &[2, 37, 24]);
        let halves = hg.chunk(2, D::Minus1).unwrap();
        let want = (&halves[0] * halves[1].gelu_erf().unwrap()).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (got, want) = (flat(&fused), flat(&want));
        let (h, x) = (flat(&halves[0]), flat(&halves[1]));
        for i in 0..got.len() {
            let tolerance = 3e-7 * (h[i] * x[i]).abs() / 2.0 + 1e-6 * want[i].abs() + 1e-7;
            assert!(
                (got[i] - want[i]).abs() <= tolerance,
                "element {i}: {} vs {}",
                got[i],
                want[i]
            );
        }
    }

    #[test]
    fn odd_width_is_an_error() {
        let hg = Tensor::zeros((3, 5), DType::F32, &Device::Cpu).unwrap();
        assert!(geglu(&hg).is_err());
    }
}
