//! Per-channel bias and scale (`x + b[c]`, `x * w[c]`, the channel along any one dimension) with
//! a backward pass that sums the gradient per channel in one sweep.
//!
//! candle differentiates `broadcast_add` / `broadcast_mul` by summing the gradient over the
//! broadcast dimensions; when those are not the trailing ones (a conv bias over [B, C, H, W], a
//! linear bias over [B, T, C]) its reduction costs two integer divisions per element, which made
//! these sums ~18% of a UNet training step (examples/train_step_bench.rs under perf). Outside
//! training (nothing tracked) or off the CPU the ops are the plain broadcasts.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Result, Shape, Tensor};

/// `x + bias` with `bias` [C] laid along dimension `dim` of `x`.
pub fn add_channel_bias(x: &Tensor, bias: &Tensor, dim: usize) -> Result<Tensor> {
    if fast_path(x, bias) {
        x.contiguous()?.apply_op2(
            &bias.contiguous()?,
            ChannelOp {
                dim,
                kind: Kind::Add,
            },
        )
    } else {
        x.broadcast_add(&along(bias, x.rank(), dim)?)
    }
}

/// `x * weight` with `weight` [C] laid along dimension `dim` of `x`.
pub fn scale_channels(x: &Tensor, weight: &Tensor, dim: usize) -> Result<Tensor> {
    if fast_path(x, weight) {
        x.contiguous()?.apply_op2(
            &weight.contiguous()?,
            ChannelOp {
                dim,
                kind: Kind::Scale,
            },
        )
    } else {
        x.broadcast_mul(&along(weight, x.rank(), dim)?)
    }
}

fn fast_path(x: &Tensor, per_channel: &Tensor) -> bool {
    (x.track_op() || per_channel.track_op())
        && matches!(x.device(), Device::Cpu)
        && x.dtype() == DType::F32
        && per_channel.dtype() == DType::F32
        && per_channel.rank() == 1
}

/// `[C]` reshaped to broadcast along `dim` of a rank-`rank` tensor.
fn along(per_channel: &Tensor, rank: usize, dim: usize) -> Result<Tensor> {
    let mut shape = vec![1; rank];
    shape[dim] = per_channel.elem_count();
    per_channel.reshape(shape)
}

/// (outer, channels, inner) of a shape split around `dim`.
fn split(shape: &Shape, dim: usize) -> Result<(usize, usize, usize)> {
    let dims = shape.dims();
    if dim >= dims.len() {
        candle_core::bail!("channel dimension {dim} is out of range for shape {shape:?}");
    }
    Ok((
        dims[..dim].iter().product(),
        dims[dim],
        dims[dim + 1..].iter().product(),
    ))
}

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    super::buffers::contiguous_f32(storage, layout, "per-channel op")
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Add,
    Scale,
}

#[derive(Debug, Clone, Copy)]
struct ChannelOp {
    dim: usize,
    kind: Kind,
}

impl CustomOp2 for ChannelOp {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Add => "pigment-channel-bias",
            Kind::Scale => "pigment-channel-scale",
        }
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (outer, channels, inner) = split(xl.shape(), self.dim)?;
        let per_channel = f32_slice(ps, pl)?;
        if per_channel.len() != channels {
            candle_core::bail!(
                "per-channel op: {} values for {channels} channels of {:?}",
                per_channel.len(),
                xl.shape()
            );
        }
        let x = f32_slice(xs, xl)?;
        let mut y = Vec::with_capacity(x.len());
        for o in 0..outer {
            for (c, &p) in per_channel.iter().enumerate() {
                let start = (o * channels + c) * inner;
                let row = &x[start..start + inner];
                match self.kind {
                    Kind::Add => y.extend(row.iter().map(|v| v + p)),
                    Kind::Scale => y.extend(row.iter().map(|v| v * p)),
                }
            }
        }
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        per_channel: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let sum = ChannelSum { dim: self.dim };
        match self.kind {
            Kind::Add => Ok((
                Some(grad.clone()),
                Some(grad.contiguous()?.apply_op1_no_bwd(&sum)?),
            )),
            Kind::Scale => {
                let grad_x = grad.broadcast_mul(&along(per_channel, x.rank(), self.dim)?)?;
                let grad_p = (grad * x)?.contiguous()?.apply_op1_no_bwd(&sum)?;
                Ok((Some(grad_x), Some(grad_p)))
            }
        }
    }
}

/// Sum over every dimension but `dim`: [.., C, ..] -> [C].
#[derive(Debug, Clone, Copy)]
struct ChannelSum {
    dim: usize,
}

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "pigment-channel-sum"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (outer, channels, inner) = split(layout.shape(), self.dim)?;
        let x = f32_slice(storage, layout)?;
        let mut sums = vec![0f64; channels];
        for o in 0..outer {
            for (c, sum) in sums.iter_mut().enumerate() {
                let start = (o * channels + c) * inner;
                *sum += x[start..start + inner].iter().sum::<f32>() as f64;
            }
        }
        let sums = sums.into_iter().map(|s| s as f32).collect();
        Ok((CpuStorage::F32(sums), Shape::from(channels)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// Values and gradients equal candle's broadcast ops, for the channel in every position.
    #[test]
    fn matches_broadcast_ops_and_their_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 3, 4, 5), &dev)?)?;
        for dim in 0..4 {
            let c = x.dim(dim)?;
            let p = Var::from_tensor(&Tensor::randn(0f32, 1., c, &dev)?)?;
            let probe = Tensor::randn(0f32, 1., (2, 3, 4, 5), &dev)?;
            for scale in [false, true] {
                let ours = if scale {
                    scale_channels(&x, &p, dim)?
                } else {
                    add_channel_bias(&x, &p, dim)?
                };
                let view = along(&p, 4, dim)?;
                let theirs = if scale {
                    x.broadcast_mul(&view)?
                } else {
                    x.broadcast_add(&view)?
                };
                let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(
                    diff < 1e-6,
                    "dim {dim} scale {scale}: values differ by {diff}"
                );
                let g1 = (&ours * &probe)?.sum_all()?.backward()?;
                let g2 = (&theirs * &probe)?.sum_all()?.backward()?;
                for var in [x.as_tensor(), p.as_tensor()] {
                    let a = g1.get(var).expect("gradient");
                    let b = g2.get(var).expect("gradient");
                    let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
                    assert!(
                        diff < 1e-5,
                        "dim {dim} scale {scale}: gradients differ by {diff}"
                    );
                }
            }
        }
        Ok(())
    }
}
