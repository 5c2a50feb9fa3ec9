//! `GroupNorm` (Wu & He 2018; torch.nn.GroupNorm), optionally fused with the SiLU that follows
//! it in every ResnetBlock2D and before every conv_out: one pass for the statistics and one for
//! normalise-scale-shift-activate on CPU f32, where candle_nn's GroupNorm makes ~8 passes
//! through separate tensor ops. Same weights (`weight`, `bias` [channels]) and init hints as
//! `candle_nn::group_norm`; other devices, dtypes and gradient-tracking graphs use candle's ops.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Shape, Tensor};
use candle_nn::VarBuilder;

use super::channel::{add_channel_bias, scale_channels};
use super::fast_exp::affine_silu;
use crate::error::{Error, Result};

static FAST_GROUP_NORM: AtomicBool = AtomicBool::new(true);

/// Turns the CPU f32 fast path on or off for the whole process (on by default), like
/// [`super::set_fast_conv`]: for before/after timings.
pub fn set_fast_group_norm(enabled: bool) {
    FAST_GROUP_NORM.store(enabled, Ordering::Relaxed);
}

#[derive(Clone, Debug)]
pub struct GroupNorm {
    reference: candle_nn::GroupNorm,
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
    /// The CPU f32 kernel's copy of the affine parameters; None when they are not CPU f32 or
    /// are variables.
    fast: Option<FastGroupNorm>,
}

#[derive(Clone, Debug)]
struct FastGroupNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    groups: usize,
    eps: f64,
    silu: bool,
}

impl GroupNorm {
    /// `weight`, `bias` [channels]; `channels` must be a multiple of `groups`.
    pub fn new(weight: Tensor, bias: Tensor, groups: usize, eps: f64) -> Result<Self> {
        let channels = weight.dims1()?;
        if groups == 0 || channels % groups != 0 || bias.dims() != [channels] {
            return Err(Error::InvalidArgument(format!(
                "GroupNorm: {channels} channels (bias {:?}) cannot be split into {groups} groups",
                bias.dims()
            )));
        }
        let cpu_f32 = |t: &Tensor| matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32;
        let fast = if cpu_f32(&weight) && cpu_f32(&bias) && !weight.track_op() && !bias.track_op() {
            Some(FastGroupNorm {
                weight: weight.to_vec1()?,
                bias: bias.to_vec1()?,
                groups,
                eps,
                silu: false,
            })
        } else {
            None
        };
        Ok(Self {
            reference: candle_nn::GroupNorm::new(
                weight.clone(),
                bias.clone(),
                channels,
                groups,
                eps,
            )?,
            weight,
            bias,
            groups,
            eps,
            fast,
        })
    }

    /// SiLU(GroupNorm(x)), in one pass over the output on the fast path.
    pub fn forward_silu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.run(x, true)
    }

    fn run(&self, x: &Tensor, silu: bool) -> candle_core::Result<Tensor> {
        match &self.fast {
            Some(fast)
                if matches!(x.device(), Device::Cpu)
                    && x.dtype() == DType::F32
                    && !x.track_op()
                    && x.rank() >= 3
                    && FAST_GROUP_NORM.load(Ordering::Relaxed) =>
            {
                let op = FastGroupNorm {
                    silu,
                    ..fast.clone()
                };
                x.contiguous()?.apply_op1_no_bwd(&op)
            }
            _ => {
                let y = if x.track_op() || self.weight.track_op() {
                    self.forward_train(x)?
                } else {
                    self.reference.forward(x)?
                };
                if silu {
                    y.silu()
                } else {
                    Ok(y)
                }
            }
        }
    }

    /// Differentiable GroupNorm for training: the statistics over trailing dimensions (candle's
    /// fast reductions) and the affine part on the per-channel ops, whose gradients avoid
    /// candle's slow sum over dimensions (0, 2, 3) (see ops/channel.rs).
    fn forward_train(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let (batch, channels) = (dims[0], dims[1]);
        let grouped = x.reshape((batch, self.groups, ()))?;
        let centred = grouped.broadcast_sub(&grouped.mean_keepdim(2)?)?;
        let variance = centred.sqr()?.mean_keepdim(2)?;
        let normed = centred
            .broadcast_div(&(variance + self.eps)?.sqrt()?)?
            .reshape(dims)?;
        debug_assert_eq!(self.weight.elem_count(), channels);
        add_channel_bias(&scale_channels(&normed, &self.weight, 1)?, &self.bias, 1)
    }

    /// candle_nn's GroupNorm (then SiLU when `silu`): the reference the fast path must match.
    pub fn forward_reference(&self, x: &Tensor, silu: bool) -> candle_core::Result<Tensor> {
        let y = self.reference.forward(x)?;
        if silu {
            y.silu()
        } else {
            Ok(y)
        }
    }
}

impl Module for GroupNorm {
    /// `x` [B, C, ...] -> same shape.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.run(x, false)
    }
}

impl CustomOp1 for FastGroupNorm {
    fn name(&self) -> &'static str {
        "pigment-group-norm"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims();
        let (batch, channels) = (dims[0], dims[1]);
        if channels != self.weight.len() {
            return Err(candle_core::Error::Msg(format!(
                "GroupNorm: input has {channels} channels, the weights {}",
                self.weight.len()
            )));
        }
        let x = match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(data), Some((start, end))) => &data[start..end],
            _ => {
                return Err(candle_core::Error::Msg(
                    "GroupNorm: the fast path needs a contiguous f32 input".into(),
                ))
            }
        };
        let spatial: usize = dims[2..].iter().product();
        let per_group = channels / self.groups;
        let group_len = per_group * spatial;
        let mut y = super::buffers::zeros(x.len());
        let work = |(g_index, (src, dst)): (usize, (&[f32], &mut [f32]))| {
            let g = g_index % self.groups;
            // Two passes like torch's and candle's: mean, then the mean of squared deviations
            // (biased variance), accumulated in f64.
            let mean = lane_sum(src, |v| v) / group_len as f64;
            let var = lane_sum(src, |v| (v - mean) * (v - mean)) / group_len as f64;
            let inv_std = 1.0 / (var + self.eps).sqrt();
            for c in 0..per_group {
                let ch = g * per_group + c;
                // (x - mean) * scale + bias, not x * scale + shift: folding the mean into the
                // shift cancels catastrophically when the deviation is small against the mean.
                let (mean, scale, shift) = (
                    mean as f32,
                    (inv_std * self.weight[ch] as f64) as f32,
                    self.bias[ch],
                );
                let s = &src[c * spatial..][..spatial];
                let d = &mut dst[c * spatial..][..spatial];
                if self.silu {
                    affine_silu(s, d, mean, scale, shift);
                } else {
                    for (o, &v) in d.iter_mut().zip(s) {
                        *o = (v - mean) * scale + shift;
                    }
                }
            }
        };
        let jobs = x.chunks(group_len).zip(y.chunks_mut(group_len)).enumerate();
        let threads = candle_core::utils::get_num_threads().clamp(1, batch * self.groups);
        if threads == 1 {
            jobs.for_each(work);
        } else {
            // Groups are independent: deal them round-robin to the threads.
            let mut lanes: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
            for (i, job) in jobs.enumerate() {
                lanes[i % threads].push(job);
            }
            std::thread::scope(|scope| {
                for lane in lanes {
                    scope.spawn(|| lane.into_iter().for_each(work));
                }
            });
        }
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }
}

/// The f64 sum of `f(x)` over `xs` in 8 independent lanes, so that LLVM vectorises it (one
/// accumulator must add in order, which kept the statistics pass scalar).
#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let mut chunks = xs.chunks_exact(8);
    for chunk in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += f(v as f64);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v as f64)).sum();
    acc.iter().sum::<f64>() + tail
}

/// Loads `weight` and `bias` under `vb` like `candle_nn::group_norm` (same init hints).
pub fn group_norm(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<GroupNorm> {
    let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.))?;
    let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.))?;
    GroupNorm::new(weight, bias, groups, eps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_abs(t: Tensor) -> f32 {
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// While training (variables), values and gradients equal candle_nn's GroupNorm.
    #[test]
    fn training_path_matches_candle_values_and_gradients() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let weight = candle_core::Var::from_tensor(&Tensor::randn(1f32, 0.3, 8, &dev)?)?;
        let bias = candle_core::Var::from_tensor(&Tensor::randn(0f32, 0.3, 8, &dev)?)?;
        let x = candle_core::Var::from_tensor(&Tensor::randn(0f32, 2., (3, 8, 5, 4), &dev)?)?;
        let ours = GroupNorm::new(
            weight.as_tensor().clone(),
            bias.as_tensor().clone(),
            4,
            1e-5,
        )
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let theirs = candle_nn::GroupNorm::new(
            weight.as_tensor().clone(),
            bias.as_tensor().clone(),
            8,
            4,
            1e-5,
        )?;
        let probe = Tensor::randn(0f32, 1., (3, 8, 5, 4), &dev)?;
        let a = ours.forward_silu(&x)?;
        let b = theirs.forward(&x)?.silu()?;
        assert!(max_abs((&a - &b)?) < 1e-5);
        let ga = (a * &probe)?.sum_all()?.backward()?;
        let gb = (b * &probe)?.sum_all()?.backward()?;
        for var in [&x, &weight, &bias] {
            let diff = max_abs((ga.get(var).expect("grad") - gb.get(var).expect("grad"))?);
            assert!(diff < 1e-4, "gradients differ by {diff}");
        }
        Ok(())
    }

    #[test]
    fn matches_candle_group_norm_and_silu() {
        let dev = Device::Cpu;
        for (b, c, g, h, w) in [
            (2, 64, 32, 9, 7),
            (1, 6, 3, 5, 5),
            (3, 8, 8, 1, 1),
            (2, 4, 1, 3, 4),
        ] {
            // An offset mean exercises the two-pass variance.
            let x = (Tensor::randn(0f32, 2.0, (b, c, h, w), &dev).unwrap() + 3.0).unwrap();
            let weight = Tensor::randn(0f32, 1.0, c, &dev).unwrap();
            let bias = Tensor::randn(0f32, 1.0, c, &dev).unwrap();
            let norm = GroupNorm::new(weight, bias, g, 1e-5).unwrap();
            assert!(norm.fast.is_some());
            for silu in [false, true] {
                let fast = norm.run(&x, silu).unwrap();
                let reference = norm.forward_reference(&x, silu).unwrap();
                assert_eq!(fast.dims(), reference.dims());
                let err = max_abs((fast - &reference).unwrap());
                assert!(
                    err <= 1e-5 * max_abs(reference),
                    "b{b} c{c} g{g} {h}x{w} silu {silu}: {err}"
                );
            }
        }
    }

    #[test]
    fn rank3_input_and_bad_groups() {
        let dev = Device::Cpu;
        let norm = GroupNorm::new(
            Tensor::ones(4, DType::F32, &dev).unwrap(),
            Tensor::zeros(4, DType::F32, &dev).unwrap(),
            2,
            1e-6,
        )
        .unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 4, 10), &dev).unwrap();
        let err = max_abs(
            (norm.forward(&x).unwrap() - norm.forward_reference(&x, false).unwrap()).unwrap(),
        );
        assert!(err < 1e-5);
        assert!(norm
            .forward(&Tensor::zeros((1, 3, 2, 2), DType::F32, &dev).unwrap())
            .is_err());
        assert!(GroupNorm::new(
            Tensor::ones(6, DType::F32, &dev).unwrap(),
            Tensor::zeros(6, DType::F32, &dev).unwrap(),
            4,
            1e-6
        )
        .is_err());
    }
}
