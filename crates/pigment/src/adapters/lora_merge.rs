//! Merging LoRA updates into weights as they are loaded:
//! `W' = W + scale * (alpha / rank) * up @ down` (Hu et al. 2021, eq. 3, with the alpha / rank
//! scaling of the reference implementation, loralib/layers.py). For a conv, `down` is a
//! `[rank, in, kh, kw]` conv and `up` a `[out, rank, 1, 1]` one; their composition is the conv
//! whose weight is `(up[out, rank] @ down[rank, in*kh*kw])` reshaped to `[out, in, kh, kw]`, as
//! kohya's networks/lora.py and diffusers' `_fuse_lora` compute it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::error::{Error, Result};

/// One LoRA's update of one weight: `factor * up @ down`, factors kept in f32 on the CPU.
#[derive(Debug, Clone)]
pub(crate) struct LoraDelta {
    /// `[out, rank]`.
    pub up: Tensor,
    /// `[rank, in * kh * kw]`.
    pub down: Tensor,
    /// `scale * alpha / rank`.
    pub factor: f64,
    /// LoHa's second pair `(up [out, rank2], down [rank2, in * kh * kw])`: the update is then
    /// `factor * (up @ down) * (up2 @ down2)` element by element (A1111's network_hada.py).
    pub hadamard: Option<(Tensor, Tensor)>,
}

impl LoraDelta {
    /// Checks the factors fit a weight of `shape` (the model's, named by `target`) and flattens
    /// them. A missing alpha means alpha = rank (no scaling), as kohya and PEFT do.
    pub fn new(
        path: &Path,
        down: (&str, &Tensor),
        up: (&str, &Tensor),
        alpha: Option<(&str, &Tensor)>,
        scale: f64,
        shape: &[usize],
        target: &str,
    ) -> Result<Self> {
        let misfit = |why: &str| {
            Error::invalid(format!(
                "LoRA {}: `{}` has shape {:?} and `{}` shape {:?}, which do not fit {target} of \
                 shape {shape:?} ({why}); the LoRA was made for a different model (e.g. SD2 vs \
                 SD1): use one made for this model's family",
                path.display(),
                down.0,
                down.1.dims(),
                up.0,
                up.1.dims(),
            ))
        };
        let (down_dims, up_dims) = (down.1.dims(), up.1.dims());
        let (Some(&rank), Some(&out)) = (down_dims.first(), up_dims.first()) else {
            return Err(misfit("a factor is a scalar"));
        };
        let down_cols = down.1.elem_count() / rank.max(1);
        let up_cols = up.1.elem_count() / out.max(1);
        let weight_cols: usize = shape.iter().skip(1).product();
        if rank == 0 || up_cols != rank {
            return Err(misfit(
                "the up factor's rank differs from the down factor's",
            ));
        }
        if shape.first() != Some(&out) || down_cols != weight_cols {
            return Err(misfit("output or input size differs"));
        }
        let alpha = match alpha {
            None => rank as f64,
            Some((key, t)) => read_scalar(t).map_err(|e| {
                Error::invalid(format!(
                    "LoRA {}: `{key}` is not a scalar alpha: {e}",
                    path.display()
                ))
            })?,
        };
        let to_f32 = |t: &Tensor, rows: usize, cols: usize| -> Result<Tensor> {
            Ok(t.to_dtype(DType::F32)?.reshape((rows, cols))?)
        };
        Ok(Self {
            up: to_f32(up.1, out, rank)?,
            down: to_f32(down.1, rank, down_cols)?,
            factor: scale * alpha / rank as f64,
            hadamard: None,
        })
    }

    /// Makes this a LoHa update with second pair `down2` (`hada_w2_b`) and `up2` (`hada_w2_a`),
    /// which must give a matrix of the first pair's shape.
    pub fn with_hadamard(
        mut self,
        path: &Path,
        down2: (&str, &Tensor),
        up2: (&str, &Tensor),
        target: &str,
    ) -> Result<Self> {
        let (out, cols) = (self.up.dim(0)?, self.down.dim(1)?);
        let rank2 = down2.1.dims().first().copied().unwrap_or(0);
        let fits =
            rank2 > 0 && down2.1.elem_count() == rank2 * cols && up2.1.elem_count() == out * rank2;
        if !fits {
            return Err(Error::invalid(format!(
                "LoRA {}: LoHa factors `{}` {:?} and `{}` {:?} do not fit {target} ({out} x \
                 {cols}); the file was made for a different model",
                path.display(),
                down2.0,
                down2.1.dims(),
                up2.0,
                up2.1.dims()
            )));
        }
        let f32 = |t: &Tensor, shape: (usize, usize)| -> Result<Tensor> {
            Ok(t.to_dtype(DType::F32)?.reshape(shape)?)
        };
        self.hadamard = Some((f32(up2.1, (out, rank2))?, f32(down2.1, (rank2, cols))?));
        Ok(self)
    }

    /// The whole update `[out, in * kh * kw]` (factor applied), in f32.
    pub fn dense(&self) -> candle_core::Result<Tensor> {
        let mut delta = self.up.matmul(&self.down)?;
        if let Some((up2, down2)) = &self.hadamard {
            delta = (delta * up2.matmul(down2)?)?;
        }
        delta * self.factor
    }
}

fn read_scalar(t: &Tensor) -> candle_core::Result<f64> {
    let v = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    match v.as_slice() {
        [a] => Ok(*a),
        _ => candle_core::bail!("it has {} elements", v.len()),
    }
}

/// `weight + sum of the deltas`, computed in f32 and returned in `dtype` on `weight`'s device.
fn merge(weight: &Tensor, deltas: &[LoraDelta], dtype: DType) -> candle_core::Result<Tensor> {
    let mut merged = weight.to_dtype(DType::F32)?;
    for d in deltas {
        let delta = d
            .dense()?
            .reshape(weight.shape())?
            .to_device(weight.device())?;
        merged = (merged + delta)?;
    }
    merged.to_dtype(dtype)
}

/// A VarBuilder backend that asks the checkpoint's own VarBuilder for a weight and adds the
/// LoRA updates of that weight, if any, before the model sees it.
pub(crate) struct LoraBackend {
    pub inner: VarBuilder<'static>,
    pub deltas: Arc<HashMap<String, Vec<LoraDelta>>>,
}

impl candle_nn::var_builder::SimpleBackend for LoraBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        _device: &Device,
    ) -> candle_core::Result<Tensor> {
        let weight = self.inner.get_with_hints_dtype(shape, name, init, dtype)?;
        match self.deltas.get(name) {
            Some(deltas) => merge(&weight, deltas, dtype),
            None => Ok(weight),
        }
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        _device: &Device,
    ) -> candle_core::Result<Tensor> {
        let weight = self.inner.get_unchecked_dtype(name, dtype)?;
        match self.deltas.get(name) {
            Some(deltas) => merge(&weight, deltas, dtype),
            None => Ok(weight),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}
