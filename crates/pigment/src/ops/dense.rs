//! Inference `Linear` on CPU f32: y = x W^T + b as one GEMM over the flattened rows into an
//! output that starts as the bias rows. candle_nn's forward runs a batched matmul into a
//! zero-filled output and then a broadcast add of the bias: two extra passes over the output,
//! which for the UNet's feed-forward projection (SD1.5, 512x512, batch 2: 84 MB) cost about
//! what the GEMM's own writes do.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};

use super::gemm::{gemm_f32, Operand};

/// x [..., in] times `weight` [out, in] transposed, plus `bias` [out], plus `residual` (the
/// output's shape: a residual connection added in the same pass); None when the fused path
/// does not apply (not CPU f32, gradients tracked): use candle's.
pub(crate) fn dense_forward(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    let tracked = |t: Option<&Tensor>| t.is_some_and(|t| t.track_op());
    let applies = matches!(x.device(), Device::Cpu)
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && x.rank() >= 2
        && !(x.track_op() || weight.track_op() || tracked(residual))
        && residual.is_none_or(|r| r.dtype() == DType::F32);
    if !applies {
        return Ok(None);
    }
    let bias = match bias {
        Some(b) => Some(b.to_dtype(DType::F32)?.to_vec1::<f32>()?),
        None => None,
    };
    let (out_dim, in_dim) = weight.dims2()?;
    let rows = x.elem_count() / in_dim.max(1);
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = out_dim;
    }
    let flat = x.contiguous()?.reshape((rows, in_dim))?;
    let weight = weight.contiguous()?;
    let y = match residual {
        Some(r) => {
            if r.dims() != dims.as_slice() {
                candle_core::bail!(
                    "dense: residual {:?} is not the output's shape {dims:?}",
                    r.dims()
                );
            }
            let r = r.contiguous()?.reshape((rows, out_dim))?;
            flat.apply_op3_no_bwd(&weight, &r, &Dense { bias })?
        }
        None => flat.apply_op2_no_bwd(&weight, &Dense { bias })?,
    };
    Ok(Some(y.reshape(dims)?))
}

struct Dense {
    bias: Option<Vec<f32>>,
}

impl Dense {
    /// y = x W^T + `initial` (+ bias): `initial` the residual rows or None for zeros.
    fn run(
        &self,
        x: &[f32],
        w: &[f32],
        initial: Option<&[f32]>,
        (rows, in_dim, out_dim): (usize, usize, usize),
    ) -> Result<Vec<f32>> {
        let mut y = match (initial, &self.bias) {
            (Some(r), Some(b)) => {
                let mut y = r.to_vec();
                for row in y.chunks_exact_mut(out_dim) {
                    for (v, c) in row.iter_mut().zip(b) {
                        *v += c;
                    }
                }
                y
            }
            (Some(r), None) => r.to_vec(),
            (None, Some(b)) => b.repeat(rows),
            (None, None) => super::buffers::zeros(rows * out_dim),
        };
        gemm_f32(
            &mut y,
            out_dim,
            Operand {
                data: x,
                offset: 0,
                row_stride: in_dim,
                col_stride: 1,
            },
            // W^T [in, out]: element (k, o) = w[o * in + k].
            Operand {
                data: w,
                offset: 0,
                row_stride: 1,
                col_stride: in_dim,
            },
            (rows, out_dim, in_dim),
            initial.is_some() || self.bias.is_some(),
        )?;
        Ok(y)
    }

    fn check(&self, xl: &Layout, wl: &Layout) -> Result<(usize, usize, usize)> {
        let (rows, in_dim) = xl.shape().dims2()?;
        let (out_dim, w_in) = wl.shape().dims2()?;
        if w_in != in_dim || self.bias.as_ref().is_some_and(|b| b.len() != out_dim) {
            candle_core::bail!(
                "dense: input [{rows}, {in_dim}], weight [{out_dim}, {w_in}], bias {:?} do not fit",
                self.bias.as_ref().map(|b| b.len())
            );
        }
        Ok((rows, in_dim, out_dim))
    }
}

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    super::buffers::contiguous_f32(storage, layout, "dense")
}

impl CustomOp2 for Dense {
    fn name(&self) -> &'static str {
        "pigment-dense"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = self.check(xl, wl)?;
        let y = self.run(f32_slice(xs, xl)?, f32_slice(ws, wl)?, None, dims)?;
        Ok((CpuStorage::F32(y), Shape::from((dims.0, dims.2))))
    }
}

impl CustomOp3 for Dense {
    fn name(&self) -> &'static str {
        "pigment-dense-residual"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = self.check(xl, wl)?;
        if rl.shape().dims() != [dims.0, dims.2] {
            candle_core::bail!("dense: residual {:?} does not fit", rl.shape());
        }
        let residual = f32_slice(rs, rl)?;
        let y = self.run(f32_slice(xs, xl)?, f32_slice(ws, wl)?, Some(residual), dims)?;
        Ok((CpuStorage::F32(y), Shape::from((dims.0, dims.2))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::max_abs_diff;
    use candle_core::Module;

    /// Against candle_nn's Linear (batched matmul + broadcast bias) on 2-D, 3-D and 4-D inputs,
    /// with and without bias: within 1e-5 (a GEMM over 96 products per output, other blocking).
    #[test]
    fn matches_candle_nn_linear() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.3, (24, 96), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 24, &dev).unwrap();
        for dims in [vec![7, 96], vec![2, 33, 96], vec![2, 3, 5, 96]] {
            let x = Tensor::randn(0f32, 1.0, dims.as_slice(), &dev).unwrap();
            for bias in [Some(&b), None] {
                let want = candle_nn::Linear::new(w.clone(), bias.cloned())
                    .forward(&x)
                    .unwrap();
                let got = dense_forward(&x, &w, bias, None).unwrap().expect("CPU f32");
                assert_eq!(got.dims(), want.dims());
                let diff = max_abs_diff(&got, &want);
                assert!(diff <= 1e-5, "{dims:?} bias {}: {diff}", bias.is_some());
                let residual = Tensor::randn(0f32, 1.0, want.dims(), &dev).unwrap();
                let got = dense_forward(&x, &w, bias, Some(&residual))
                    .unwrap()
                    .expect("CPU f32");
                let diff = max_abs_diff(&got, &(&want + &residual).unwrap());
                assert!(diff <= 1e-5, "{dims:?} with residual: {diff}");
            }
        }
        let var = candle_core::Var::from_tensor(&w).unwrap();
        let x = Tensor::zeros((3, 96), DType::F32, &dev).unwrap();
        assert!(dense_forward(&x, var.as_tensor(), None, None)
            .unwrap()
            .is_none());
        let wrong = Tensor::zeros((3, 5), DType::F32, &dev).unwrap();
        assert!(dense_forward(&x, &w, None, Some(&wrong)).is_err());
    }
}
