//! exp over f32 slices, vectorised: the softmax of fused attention evaluates one exponential per
//! score (268 M for one SD1.5 self-attention at 64x64 latents, batch 2), which libm's scalar
//! `expf` makes the bottleneck.
//!
//! Cephes' `expf` scheme: x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two constants so the
//! reduction is exact), exp(r) by a degree-6 polynomial, 2^n put into the exponent bits.
//! Relative error below 3e-7 for x <= 79 (softmax only takes x <= 0); inputs below -87.3 give
//! 0, as softmax wants.
//! Written without branches so LLVM vectorises it; an AVX2+FMA copy is selected at run time.

const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const LOG2E: f32 = std::f32::consts::LOG2_E;
const ROUNDING: f32 = 12_582_912.0;
/// Below this, exp underflows f32's normal range: the result is flushed to 0.
const MIN_INPUT: f32 = -87.336_55;
const MAX_INPUT: f32 = 88.0;
const P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

#[inline(always)]
fn exp_one(x: f32) -> f32 {
    let underflow = x < MIN_INPUT;
    let x = x.clamp(MIN_INPUT, MAX_INPUT);
    // Round x / ln2 to the nearest integer n by adding 1.5 * 2^23: n then sits in the low
    // mantissa bits, read back with a bit cast (a float-to-int cast would not vectorise).
    let t = x * LOG2E + ROUNDING;
    let n = t - ROUNDING;
    let n_int = (t.to_bits() as i32).wrapping_sub(ROUNDING.to_bits() as i32);
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut y = P[0];
    for c in &P[1..] {
        y = y * r + c;
    }
    let y = y * r * r + r + 1.0;
    let scaled = y * f32::from_bits(((n_int + 127) as u32) << 23);
    if underflow {
        0.0
    } else {
        scaled
    }
}

/// Lanes of the independent accumulators: with them LLVM vectorises the reductions (a single
/// float accumulator must be summed in order).
const LANES: usize = 8;

#[inline(always)]
fn exp_scaled_sum_generic(xs: &mut [f32], scale: f32, shift: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = xs.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (x, a) in chunk.iter_mut().zip(acc.iter_mut()) {
            let y = exp_one(*x * scale - shift);
            *x = y;
            *a += y;
        }
    }
    let mut tail = 0f32;
    for x in chunks.into_remainder() {
        *x = exp_one(*x * scale - shift);
        tail += *x;
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn max_generic(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (x, a) in chunk.iter().zip(acc.iter_mut()) {
            *a = if *x > *a { *x } else { *a };
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    acc.iter().fold(tail, |m, &x| m.max(x))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_scaled_sum_avx2(xs: &mut [f32], scale: f32, shift: f32) -> f32 {
    exp_scaled_sum_generic(xs, scale, shift)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn max_avx2(xs: &[f32]) -> f32 {
    max_generic(xs)
}

#[inline(always)]
fn affine_silu_generic(src: &[f32], dst: &mut [f32], mean: f32, scale: f32, shift: f32) {
    for (o, &v) in dst.iter_mut().zip(src) {
        let n = (v - mean) * scale + shift;
        *o = n / (1.0 + exp_one(-n));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn affine_silu_avx2(src: &[f32], dst: &mut [f32], mean: f32, scale: f32, shift: f32) {
    affine_silu_generic(src, dst, mean, scale, shift)
}

fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// xs[i] = exp(xs[i] * scale - shift) for every element; returns their sum. The softmax step
/// of attention in one pass: scale 1/sqrt(d), shift the running row maximum.
pub fn exp_scaled_sum(xs: &mut [f32], scale: f32, shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has the features the function was compiled for.
        return unsafe { exp_scaled_sum_avx2(xs, scale, shift) };
    }
    exp_scaled_sum_generic(xs, scale, shift)
}

/// dst[i] = SiLU((src[i] - mean) * scale + shift) = n / (1 + exp(-n)): the normalise, affine
/// and activation of a fused GroupNorm + SiLU in one vectorised pass (libm's scalar `expf` made
/// it 4x slower than the normalisation itself). Large |n| behave: exp(-n) saturates at
/// exp(88) for n -> -inf (result ~0) and goes to 0 for n -> +inf (result n).
pub fn affine_silu(src: &[f32], dst: &mut [f32], mean: f32, scale: f32, shift: f32) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has the features the function was compiled for.
        return unsafe { affine_silu_avx2(src, dst, mean, scale, shift) };
    }
    affine_silu_generic(src, dst, mean, scale, shift)
}

/// The largest element (-inf for an empty slice; NaNs are skipped).
pub fn max(xs: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: as above.
        return unsafe { max_avx2(xs) };
    }
    max_generic(xs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_libm_to_two_ulp_scale() {
        let inputs: Vec<f32> = (-100_000..=88_000).map(|i| i as f32 * 9e-4).collect();
        let mut ours = inputs.clone();
        exp_scaled_sum(&mut ours, 1.0, 0.0);
        let mut worst = 0f64;
        for (&x, &y) in inputs.iter().zip(&ours) {
            let exact = (x as f64).exp();
            if x < MIN_INPUT {
                assert_eq!(y, 0.0, "exp({x}) should flush to 0");
                continue;
            }
            let rel = ((y as f64 - exact) / exact).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        let mut edge = [0.0f32, -0.0, 1.0, -200.0, f32::NEG_INFINITY];
        exp_scaled_sum(&mut edge, 1.0, 0.0);
        assert_eq!(edge[0], 1.0);
        assert_eq!(edge[1], 1.0);
        assert!((edge[2] - std::f32::consts::E).abs() < 1e-6);
        assert_eq!(edge[3], 0.0);
        assert_eq!(edge[4], 0.0);
    }

    #[test]
    fn affine_silu_matches_the_formula() {
        let src: Vec<f32> = (0..203).map(|i| (i as f32 - 100.0) * 0.37).collect();
        let mut dst = vec![0f32; src.len()];
        affine_silu(&src, &mut dst, 0.5, 2.0, -0.25);
        for (&x, &y) in src.iter().zip(&dst) {
            let n = (x - 0.5) * 2.0 - 0.25;
            let want = n / (1.0 + (-n).exp());
            assert!(
                (y - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{x}: {y} vs {want}"
            );
        }
    }

    #[test]
    fn scaled_sum_and_max() {
        let xs: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
        let top = max(&xs);
        assert_eq!(top, xs.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)));
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        let mut ys = xs.clone();
        let sum = exp_scaled_sum(&mut ys, 0.5, top * 0.5);
        let mut expected_sum = 0f64;
        for (x, y) in xs.iter().zip(&ys) {
            let e = ((*x as f64) * 0.5 - top as f64 * 0.5).exp();
            expected_sum += e;
            assert!((*y as f64 - e).abs() < 1e-6 * e.max(1e-30) + 1e-12);
        }
        assert!((sum as f64 - expected_sum).abs() < 1e-5 * expected_sum);
    }
}
