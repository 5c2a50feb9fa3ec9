//! Seeded noise that reproduces PyTorch's CPU generator bit for bit.
//!
//! diffusers draws its initial latents and the per-step noise of ancestral samplers with
//! `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))`. Matching those
//! draws exactly makes a seed give the same image in Pigment as in diffusers (and in A1111,
//! whose CPU-noise mode uses the same generator).
//!
//! What torch does (2.x; aten/src/ATen/native/cpu/DistributionTemplates.h, core/
//! DistributionsHelper.h, core/TransformationHelper.h, CPUGeneratorImpl.cpp):
//! - the engine is MT19937 seeded with the low 32 bits of the seed ([`mt19937`]); `random64`
//!   is two draws, the first one the high word;
//! - a float uniform is `(u32 & (2^24 - 1)) * 2^-24`, a double uniform
//!   `(u64 & (2^53 - 1)) * 2^-53`;
//! - `normal_` on a contiguous tensor of at least 16 elements (`normal_fill`) first draws one
//!   uniform per element, then applies Box-Muller to each block of 16, pairing element i with
//!   i + 8; if the length is not a multiple of 16 it draws 16 fresh uniforms and recomputes the
//!   LAST 16 elements with them (overwriting part of the previous block);
//! - a smaller tensor is filled element by element by `normal_distribution<double>`: two
//!   53-bit uniforms u1, u2 give `r = sqrt(-2 log1p(-u2))`, `theta = 2 pi u1`; it returns
//!   `r cos(theta)` and caches `r sin(theta)` in the generator for the next small draw (the
//!   cache survives large draws in between, which neither use nor clear it).
//!
//! The float `normal_fill` has two builds: the AVX2/AVX512 kernels (what torch uses on any
//! x86-64 CPU with AVX2) compute log and sincos with avx_mathfun's Cephes polynomials
//! ([`avx_mathfun`]); the DEFAULT kernel (no AVX2, e.g. ARM) calls the C library. They differ in
//! the last bit for about a third of the values; [`NormalKernel`] picks one.

mod avx_mathfun;
mod mt19937;

use crate::error::Result;
use candle_core::{Device, Tensor};
use mt19937::Mt19937;

/// Which of torch's float32 `normal_fill` kernels to reproduce (they differ in the last bit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NormalKernel {
    /// torch's AVX2 and AVX512 CPU kernels: x86-64 machines with AVX2 (torch's usual case).
    #[default]
    Avx,
    /// torch's DEFAULT CPU kernel (`ATEN_CPU_CAPABILITY=default`, CPUs without AVX2): the C
    /// library's `logf`/`cosf`/`sinf`, as in glibc.
    Scalar,
}

/// A random generator that reproduces `torch.Generator("cpu").manual_seed(seed)`.
///
/// Cloning copies the whole state: the clone continues with the same numbers.
#[derive(Clone, Debug)]
pub struct TorchGenerator {
    seed: u64,
    engine: Mt19937,
    /// `CPUGeneratorImpl::next_double_normal_sample_`: the second Box-Muller normal of the
    /// last element-by-element draw, used by the next one.
    next_double_normal: Option<f64>,
    kernel: NormalKernel,
}

/// Tensors with at least this many elements take torch's block Box-Muller path.
const NORMAL_FILL_MIN_LEN: usize = 16;

impl TorchGenerator {
    /// Same state as `torch.Generator("cpu").manual_seed(seed)`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            engine: Mt19937::new(seed),
            next_double_normal: None,
            kernel: NormalKernel::default(),
        }
    }

    /// Reproduce another of torch's float32 normal kernels (see [`NormalKernel`]).
    pub fn with_normal_kernel(mut self, kernel: NormalKernel) -> Self {
        self.kernel = kernel;
        self
    }

    /// The seed this generator was made with (`torch.Generator.initial_seed()`).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// One raw 32-bit draw (`CPUGeneratorImpl::random`).
    pub fn next_u32(&mut self) -> u32 {
        self.engine.next_u32()
    }

    /// One raw 64-bit draw (`CPUGeneratorImpl::random64`): two 32-bit draws, first one high.
    pub fn next_u64(&mut self) -> u64 {
        let hi = self.engine.next_u32() as u64;
        let lo = self.engine.next_u32() as u64;
        (hi << 32) | lo
    }

    /// `uniform_real_distribution<float>(0, 1)`: 24 random bits scaled into [0, 1).
    fn uniform_f32(&mut self) -> f32 {
        (self.next_u32() & ((1 << 24) - 1)) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// `uniform_real_distribution<double>(0, 1)`: 53 random bits scaled into [0, 1).
    fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() & ((1 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `at::normal_distribution<double>(0, 1)`, with the generator's cached second sample.
    fn normal_f64(&mut self) -> f64 {
        if let Some(cached) = self.next_double_normal.take() {
            return cached;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_double_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// Same values as `torch.randn(shape, generator=g, dtype=torch.float32)`.
    pub fn randn(&mut self, shape: &[usize]) -> Vec<f32> {
        let len = shape.iter().product();
        if len < NORMAL_FILL_MIN_LEN {
            return (0..len).map(|_| self.normal_f64() as f32).collect();
        }
        let mut data: Vec<f32> = (0..len).map(|_| self.uniform_f32()).collect();
        let kernel = self.kernel;
        let transform = |block: &mut [f32]| match kernel {
            NormalKernel::Avx => box_muller_16_avx(block),
            NormalKernel::Scalar => box_muller_16_scalar(block),
        };
        normal_fill(&mut data, || self.uniform_f32(), transform);
        data
    }

    /// Same values as `torch.randn(shape, generator=g, dtype=torch.float64)`.
    pub fn randn_f64(&mut self, shape: &[usize]) -> Vec<f64> {
        let len = shape.iter().product();
        if len < NORMAL_FILL_MIN_LEN {
            return (0..len).map(|_| self.normal_f64()).collect();
        }
        let mut data: Vec<f64> = (0..len).map(|_| self.uniform_f64()).collect();
        normal_fill(&mut data, || self.uniform_f64(), box_muller_16_f64);
        data
    }

    /// Same values as `torch.rand(shape, generator=g, dtype=torch.float32)`: uniform in [0, 1).
    pub fn rand(&mut self, shape: &[usize]) -> Vec<f32> {
        let len = shape.iter().product();
        (0..len).map(|_| self.uniform_f32()).collect()
    }

    /// Same values as `torch.rand(shape, generator=g, dtype=torch.float64)`.
    pub fn rand_f64(&mut self, shape: &[usize]) -> Vec<f64> {
        let len = shape.iter().product();
        (0..len).map(|_| self.uniform_f64()).collect()
    }

    /// `randn` as an f32 tensor on `device`.
    pub fn randn_tensor(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        let values = self.randn(shape);
        Ok(Tensor::from_vec(values, shape, device)?)
    }

    /// `rand` as an f32 tensor on `device`.
    pub fn rand_tensor(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        let values = self.rand(shape);
        Ok(Tensor::from_vec(values, shape, device)?)
    }
}

/// torch's `normal_fill` once `data` holds one uniform per element (len >= 16): Box-Muller on
/// each whole block of 16, then, if a tail is left, 16 fresh uniforms for the last 16 slots.
fn normal_fill<T: Copy>(
    data: &mut [T],
    mut uniform: impl FnMut() -> T,
    transform: impl Fn(&mut [T]),
) {
    let len = data.len();
    debug_assert!(len >= NORMAL_FILL_MIN_LEN);
    for block in data.chunks_exact_mut(16) {
        transform(block);
    }
    if !len.is_multiple_of(16) {
        let last = &mut data[len - 16..];
        for slot in last.iter_mut() {
            *slot = uniform();
        }
        transform(last);
    }
}

/// `NormalFill16<float>` of the AVX2 build: u1 = 1 - data[j] (so log never sees 0),
/// radius = sqrt(-2 log u1), theta = 2 pi u2, outputs radius*cos and radius*sin.
fn box_muller_16_avx(block: &mut [f32]) {
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    for j in 0..8 {
        let u1 = 1.0 - block[j];
        let u2 = block[j + 8];
        let radius = (-2.0 * avx_mathfun::log(u1)).sqrt();
        let (sin, cos) = avx_mathfun::sincos(two_pi * u2);
        // `fmadd(n, std, mean)` with std 1 and mean 0 is `n + 0.0`.
        block[j] = radius * cos + 0.0;
        block[j + 8] = radius * sin + 0.0;
    }
}

/// The generic `NormalFill16<float>`: theta is computed in double (`2.0f * pi<double> * u2`)
/// and rounded to float; log, cos and sin are the C library's float functions.
fn box_muller_16_scalar(block: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0 - block[j];
        let u2 = block[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        let theta = (2.0 * std::f64::consts::PI * u2 as f64) as f32;
        block[j] = radius * theta.cos() + 0.0;
        block[j + 8] = radius * theta.sin() + 0.0;
    }
}

/// `NormalFill16<double>`: the same formulas in double precision.
fn box_muller_16_f64(block: &mut [f64]) {
    for j in 0..8 {
        let u1 = 1.0 - block[j];
        let u2 = block[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        block[j] = radius * theta.cos() + 0.0;
        block[j + 8] = radius * theta.sin() + 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_continues_with_the_same_numbers() {
        let mut a = TorchGenerator::new(7);
        a.randn(&[3]); // leaves a cached normal behind
        let mut b = a.clone();
        assert_eq!(a.randn(&[1]), b.randn(&[1]));
        assert_eq!(a.randn(&[40]), b.randn(&[40]));
    }

    #[test]
    fn lengths_follow_the_shape() {
        let mut g = TorchGenerator::new(0);
        assert_eq!(g.randn(&[]).len(), 1);
        assert_eq!(g.randn(&[0, 4]).len(), 0);
        assert_eq!(g.randn(&[2, 3, 5]).len(), 30);
        assert_eq!(g.rand(&[7]).len(), 7);
    }

    #[test]
    fn uniforms_lie_in_the_unit_interval() {
        let mut g = TorchGenerator::new(3);
        assert!(g.rand(&[10_000]).iter().all(|&u| (0.0..1.0).contains(&u)));
        assert!(g
            .rand_f64(&[10_000])
            .iter()
            .all(|&u| (0.0..1.0).contains(&u)));
    }

    #[test]
    fn normals_have_unit_variance() {
        let mut g = TorchGenerator::new(11);
        let v = g.randn(&[100_000]);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
    }
}
