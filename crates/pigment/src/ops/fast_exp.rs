//! exp over f32 slices, vectorised: the softmax of fused attention evaluates one exponential per
//! score (268 M for one SD1.5 self-attention at 64x64 latents, batch 2), which libm's scalar
//! `expf` makes the bottleneck.
//!
//! Cephes' `expf` scheme: x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two constants so the
//! reduction is exact), exp(r) by a degree-6 polynomial, 2^n put into the exponent bits.
//! Relative error below 3e-7 for x <= 79 (softmax only takes x <= 0); inputs below -87.3 give
//! 0, as softmax wants.
//! Written without branches so LLVM vectorises it; an AVX-512 copy (16 lanes) or an AVX2+FMA
//! copy (8 lanes) is selected at run time.

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

/// a * b + c, fused (one rounding, one instruction) in the copies compiled with FMA; plain in
/// the generic one, where `mul_add` would be a slow library call on CPUs without FMA.
#[inline(always)]
fn mul_add<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[inline(always)]
fn exp_one<const FMA: bool>(x: f32) -> f32 {
    let underflow = x < MIN_INPUT;
    let x = x.clamp(MIN_INPUT, MAX_INPUT);
    // Round x / ln2 to the nearest integer n by adding 1.5 * 2^23: n then sits in the low
    // mantissa bits, read back with a bit cast (a float-to-int cast would not vectorise).
    let t = mul_add::<FMA>(x, LOG2E, ROUNDING);
    let n = t - ROUNDING;
    let n_int = (t.to_bits() as i32).wrapping_sub(ROUNDING.to_bits() as i32);
    let r = mul_add::<FMA>(-n, LN2_LO, mul_add::<FMA>(-n, LN2_HI, x));
    let mut y = P[0];
    for c in &P[1..] {
        y = mul_add::<FMA>(y, r, *c);
    }
    let y = mul_add::<FMA>(y, r * r, r) + 1.0;
    let scaled = y * f32::from_bits(((n_int + 127) as u32) << 23);
    if underflow {
        0.0
    } else {
        scaled
    }
}

/// Lanes of the independent accumulators: with them LLVM vectorises the reductions (a single
/// float accumulator must be summed in order). One AVX2 register; AVX-512 copies use 16.
const LANES: usize = 8;

#[inline(always)]
fn exp_scaled_sum_generic<const LANES: usize, const FMA: bool>(
    xs: &mut [f32],
    scale: f32,
    shift: f32,
) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = xs.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (x, a) in chunk.iter_mut().zip(acc.iter_mut()) {
            let y = exp_one::<FMA>(mul_add::<FMA>(*x, scale, -shift));
            *x = y;
            *a += y;
        }
    }
    let mut tail = 0f32;
    for x in chunks.into_remainder() {
        *x = exp_one::<FMA>(mul_add::<FMA>(*x, scale, -shift));
        tail += *x;
    }
    acc.iter().sum::<f32>() + tail
}

/// [`exp_scaled_sum_generic`] that also returns the largest input (before scale and shift).
#[inline(always)]
fn exp_scaled_sum_max_generic<const LANES: usize, const FMA: bool>(
    xs: &mut [f32],
    scale: f32,
    shift: f32,
) -> (f32, f32) {
    let mut acc = [0f32; LANES];
    let mut top = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for ((x, a), m) in chunk.iter_mut().zip(acc.iter_mut()).zip(top.iter_mut()) {
            *m = if *x > *m { *x } else { *m };
            let y = exp_one::<FMA>(mul_add::<FMA>(*x, scale, -shift));
            *x = y;
            *a += y;
        }
    }
    let (mut tail, mut tail_top) = (0f32, f32::NEG_INFINITY);
    for x in chunks.into_remainder() {
        tail_top = tail_top.max(*x);
        *x = exp_one::<FMA>(mul_add::<FMA>(*x, scale, -shift));
        tail += *x;
    }
    (
        acc.iter().sum::<f32>() + tail,
        top.iter().fold(tail_top, |m, &x| m.max(x)),
    )
}

/// One online-softmax step over a tile of scores stored column-per-query: `panel` [rows][W],
/// column c one query's scores against the tile's keys. Per column: the running maximum
/// `max[c]` becomes m' = max(max[c], column max), `correction[c]` = exp(max[c] - m') (what the
/// earlier partial output must be multiplied by; 0 on the first tile), the scores become
/// exp(s - m') in place and `sum[c]` = sum[c] * correction[c] + their sum (FlashAttention,
/// Dao et al. 2022, Algorithm 1, lines 10-12). Every operation runs across the W columns, so it
/// vectorises without any horizontal reduction.
#[inline(always)]
fn softmax_columns_generic<const W: usize, const FMA: bool>(
    panel: &mut [f32],
    max: &mut [f32; W],
    sum: &mut [f32; W],
    correction: &mut [f32; W],
) {
    let mut top = *max;
    for row in panel.chunks_exact(W) {
        for (m, &x) in top.iter_mut().zip(row) {
            *m = if x > *m { x } else { *m };
        }
    }
    for c in 0..W {
        // Equal maxima (also both -inf, a column with no finite score yet) need no rescale.
        correction[c] = if top[c] == max[c] {
            1.0
        } else {
            exp_one::<FMA>(max[c] - top[c])
        };
    }
    let mut acc = [0f32; W];
    for row in panel.chunks_exact_mut(W) {
        for ((x, a), &m) in row.iter_mut().zip(acc.iter_mut()).zip(&top) {
            let y = exp_one::<FMA>(*x - m);
            *x = y;
            *a += y;
        }
    }
    for c in 0..W {
        sum[c] = sum[c] * correction[c] + acc[c];
        max[c] = top[c];
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn softmax_columns_avx512<const W: usize>(
    panel: &mut [f32],
    max: &mut [f32; W],
    sum: &mut [f32; W],
    correction: &mut [f32; W],
) {
    softmax_columns_generic::<W, true>(panel, max, sum, correction)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_columns_avx2<const W: usize>(
    panel: &mut [f32],
    max: &mut [f32; W],
    sum: &mut [f32; W],
    correction: &mut [f32; W],
) {
    softmax_columns_generic::<W, true>(panel, max, sum, correction)
}

/// The online-softmax step of [`softmax_columns_generic`] on the fastest copy this CPU runs.
/// Rows past the last whole row of `panel` are ignored.
pub fn softmax_columns<const W: usize>(
    panel: &mut [f32],
    max: &mut [f32; W],
    sum: &mut [f32; W],
    correction: &mut [f32; W],
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has the features the function was compiled for.
        return unsafe { softmax_columns_avx512(panel, max, sum, correction) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has the features the function was compiled for.
        return unsafe { softmax_columns_avx2(panel, max, sum, correction) };
    }
    softmax_columns_generic::<W, false>(panel, max, sum, correction)
}

#[inline(always)]
fn max_generic<const LANES: usize>(xs: &[f32]) -> f32 {
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
    exp_scaled_sum_generic::<LANES, true>(xs, scale, shift)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn exp_scaled_sum_avx512(xs: &mut [f32], scale: f32, shift: f32) -> f32 {
    exp_scaled_sum_generic::<16, true>(xs, scale, shift)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_scaled_sum_max_avx2(xs: &mut [f32], scale: f32, shift: f32) -> (f32, f32) {
    exp_scaled_sum_max_generic::<LANES, true>(xs, scale, shift)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn exp_scaled_sum_max_avx512(xs: &mut [f32], scale: f32, shift: f32) -> (f32, f32) {
    exp_scaled_sum_max_generic::<16, true>(xs, scale, shift)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn max_avx512(xs: &[f32]) -> f32 {
    max_generic::<16>(xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn max_avx2(xs: &[f32]) -> f32 {
    max_generic::<LANES>(xs)
}

#[inline(always)]
fn affine_silu_generic<const FMA: bool>(
    src: &[f32],
    dst: &mut [f32],
    mean: f32,
    scale: f32,
    shift: f32,
) {
    for (o, &v) in dst.iter_mut().zip(src) {
        let n = mul_add::<FMA>(v - mean, scale, shift);
        *o = n / (1.0 + exp_one::<FMA>(-n));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn affine_silu_avx2(src: &[f32], dst: &mut [f32], mean: f32, scale: f32, shift: f32) {
    affine_silu_generic::<true>(src, dst, mean, scale, shift)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn affine_silu_avx512(src: &[f32], dst: &mut [f32], mean: f32, scale: f32, shift: f32) {
    affine_silu_generic::<true>(src, dst, mean, scale, shift)
}

/// erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7): the formula PyTorch's
/// vectorised CPU erf uses (aten/src/ATen/cpu/vec/vec512/vec512_float.h), built on `exp_one`.
#[inline(always)]
fn erf_one<const FMA: bool>(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        1.061_405_4,
        -1.453_152_1,
        1.421_413_8,
        -0.284_496_74,
        0.254_829_6,
    ];
    let ax = x.abs();
    let t = 1.0 / mul_add::<FMA>(P, ax, 1.0);
    let mut poly = A[0];
    for c in &A[1..] {
        poly = mul_add::<FMA>(poly, t, *c);
    }
    let y = 1.0 - poly * t * exp_one::<FMA>(-ax * ax);
    y.copysign(x)
}

/// dst[i] = h[i] * GELU(gate[i]), GELU(x) = x / 2 * (1 + erf(x / sqrt 2)) (the exact form).
#[inline(always)]
fn gelu_gate_generic<const FMA: bool>(h: &[f32], gate: &[f32], dst: &mut [f32]) {
    for ((o, &a), &x) in dst.iter_mut().zip(h).zip(gate) {
        let gelu = 0.5 * x * (1.0 + erf_one::<FMA>(x * std::f32::consts::FRAC_1_SQRT_2));
        *o = a * gelu;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_gate_avx2(h: &[f32], gate: &[f32], dst: &mut [f32]) {
    gelu_gate_generic::<true>(h, gate, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn gelu_gate_avx512(h: &[f32], gate: &[f32], dst: &mut [f32]) {
    gelu_gate_generic::<true>(h, gate, dst)
}

/// dst[i] = h[i] * GELU_erf(gate[i]): the GEGLU of diffusers' feed-forward (models/activations.py
/// `GEGLU`) in one vectorised pass.
pub fn gelu_gate(h: &[f32], gate: &[f32], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has the features the function was compiled for.
        return unsafe { gelu_gate_avx512(h, gate, dst) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has the features the function was compiled for.
        return unsafe { gelu_gate_avx2(h, gate, dst) };
    }
    gelu_gate_generic::<false>(h, gate, dst)
}

/// AVX-512F, checked once per process (the feature test is cheap, but these run per row).
fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| std::is_x86_feature_detected!("avx512f") && has_avx2_fma())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// AVX2 and FMA (also what `packed_gemm`'s AVX2 kernel needs).
pub(crate) fn has_avx2_fma() -> bool {
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
    if has_avx512() {
        // SAFETY: the CPU has the features the function was compiled for.
        return unsafe { exp_scaled_sum_avx512(xs, scale, shift) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has the features the function was compiled for.
        return unsafe { exp_scaled_sum_avx2(xs, scale, shift) };
    }
    exp_scaled_sum_generic::<LANES, false>(xs, scale, shift)
}

/// [`exp_scaled_sum`] that also returns the largest input (before scale and shift), for an
/// online softmax that checks its running maximum in the same pass instead of a pass of its own.
pub fn exp_scaled_sum_max(xs: &mut [f32], scale: f32, shift: f32) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has the features the function was compiled for.
        return unsafe { exp_scaled_sum_max_avx512(xs, scale, shift) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has the features the function was compiled for.
        return unsafe { exp_scaled_sum_max_avx2(xs, scale, shift) };
    }
    exp_scaled_sum_max_generic::<LANES, false>(xs, scale, shift)
}

/// dst[i] = SiLU((src[i] - mean) * scale + shift) = n / (1 + exp(-n)): the normalise, affine
/// and activation of a fused GroupNorm + SiLU in one vectorised pass (libm's scalar `expf` made
/// it 4x slower than the normalisation itself). Large |n| behave: exp(-n) saturates at
/// exp(88) for n -> -inf (result ~0) and goes to 0 for n -> +inf (result n).
pub fn affine_silu(src: &[f32], dst: &mut [f32], mean: f32, scale: f32, shift: f32) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has the features the function was compiled for.
        return unsafe { affine_silu_avx512(src, dst, mean, scale, shift) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has the features the function was compiled for.
        return unsafe { affine_silu_avx2(src, dst, mean, scale, shift) };
    }
    affine_silu_generic::<false>(src, dst, mean, scale, shift)
}

/// The largest element (-inf for an empty slice; NaNs are skipped).
pub fn max(xs: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: as above.
        return unsafe { max_avx512(xs) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: as above.
        return unsafe { max_avx2(xs) };
    }
    max_generic::<LANES>(xs)
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

    /// Every compiled variant this CPU can run gives the generic one's numbers (the same
    /// formula; only the lane count of the sum's accumulators differs).
    #[test]
    fn simd_variants_match_the_generic_code() {
        let xs: Vec<f32> = (0..1037).map(|i| (i as f32 * 0.731).sin() * 30.0).collect();
        let mut want = xs.clone();
        let want_sum = exp_scaled_sum_generic::<LANES, false>(&mut want, 0.7, 3.0);
        let want_max = max_generic::<LANES>(&xs);
        #[allow(clippy::type_complexity)]
        let mut variants: Vec<(
            &str,
            unsafe fn(&mut [f32], f32, f32) -> f32,
            unsafe fn(&[f32]) -> f32,
        )> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx2_fma() {
                variants.push(("avx2", exp_scaled_sum_avx2, max_avx2));
            }
            if has_avx512() {
                variants.push(("avx512", exp_scaled_sum_avx512, max_avx512));
            }
        }
        for (name, exp_sum, max_of) in variants {
            let mut got = xs.clone();
            // SAFETY: only variants whose features the CPU has were pushed.
            let sum = unsafe { exp_sum(&mut got, 0.7, 3.0) };
            for ((g, w), x) in got.iter().zip(&want).zip(&xs) {
                // FMA rounds the argument x * 0.7 - 3 once instead of twice: up to one ulp of
                // the argument apart, which moves exp by that much relative to itself.
                let arg_ulp = (x * 0.7 - 3.0).abs() * f32::EPSILON;
                let tolerance = (1e-6 + 2.0 * arg_ulp) * w.abs();
                assert!((g - w).abs() <= tolerance, "{name}: {g} vs {w}");
            }
            assert!((sum - want_sum).abs() <= 1e-5 * want_sum, "{name}: sum");
            assert_eq!(unsafe { max_of(&xs) }, want_max, "{name}: max");
        }
    }

    #[test]
    fn exp_sum_with_max_matches_the_two_passes() {
        let xs: Vec<f32> = (0..517).map(|i| (i as f32 * 1.37).cos() * 9.0).collect();
        let mut two = xs.clone();
        let want_sum = exp_scaled_sum(&mut two, 0.5, 1.0);
        let mut one = xs.clone();
        let (sum, top) = exp_scaled_sum_max(&mut one, 0.5, 1.0);
        assert_eq!(one, two);
        assert!((sum - want_sum).abs() <= 1e-6 * want_sum);
        assert_eq!(top, max(&xs));
        assert_eq!(
            exp_scaled_sum_max(&mut [], 1.0, 0.0),
            (0.0, f32::NEG_INFINITY)
        );
    }

    /// Two tiles through the column-wise online softmax give each column's exact softmax sum
    /// (f64 reference), a correction of exactly exp(old max - new max), and 0 on the first tile.
    #[test]
    fn softmax_columns_matches_two_tiles_in_f64() {
        const W: usize = 4;
        let value = |r: usize, c: usize, tile: usize| {
            ((r * 7 + c * 3 + tile * 11) as f32 * 0.71).sin() * (4.0 + 6.0 * tile as f32)
        };
        let (mut max, mut sum, mut corr) = ([f32::NEG_INFINITY; W], [0f32; W], [7f32; W]);
        let mut first: Vec<f32> = (0..5 * W).map(|i| value(i / W, i % W, 0)).collect();
        softmax_columns(&mut first, &mut max, &mut sum, &mut corr);
        assert_eq!(corr, [0.0; W]);
        let first_max = max;
        let mut second: Vec<f32> = (0..3 * W).map(|i| value(i / W, i % W, 1)).collect();
        softmax_columns(&mut second, &mut max, &mut sum, &mut corr);
        for c in 0..W {
            let all: Vec<f64> = (0..5)
                .map(|r| value(r, c, 0) as f64)
                .chain((0..3).map(|r| value(r, c, 1) as f64))
                .collect();
            let m = all.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let want: f64 = all.iter().map(|x| (x - m).exp()).sum();
            assert_eq!(max[c] as f64, m);
            assert!(
                (sum[c] as f64 - want).abs() < 1e-5 * want,
                "column {c}: {} vs {want}",
                sum[c]
            );
            let want_corr = ((first_max[c] - max[c]) as f64).exp();
            assert!((corr[c] as f64 - want_corr).abs() < 1e-6, "column {c}");
            for r in 0..3 {
                let want = ((value(r, c, 1) as f64) - m).exp();
                assert!((second[r * W + c] as f64 - want).abs() < 1e-6);
            }
        }
    }

    /// Against candle's f64 GELU (erf form): the error stays within 1e-6 (|x| + 1), as
    /// erf's 1.5e-7 bound gives.
    #[test]
    fn gelu_gate_matches_the_exact_gelu() {
        let gate: Vec<f32> = (-3000..=3000).map(|i| i as f32 * 4e-3).collect();
        let h: Vec<f32> = gate.iter().map(|x| 1.5 - x * 0.1).collect();
        let mut dst = vec![0f32; gate.len()];
        gelu_gate(&h, &gate, &mut dst);
        let mut generic = vec![0f32; gate.len()];
        gelu_gate_generic::<false>(&h, &gate, &mut generic);
        let exact = candle_core::Tensor::new(gate.as_slice(), &candle_core::Device::Cpu)
            .and_then(|t| {
                t.to_dtype(candle_core::DType::F64)?
                    .gelu_erf()?
                    .to_vec1::<f64>()
            })
            .unwrap();
        for i in 0..gate.len() {
            let x = gate[i] as f64;
            let want = h[i] as f64 * exact[i];
            let err = (dst[i] as f64 - want).abs();
            assert!(err <= 1e-6 * (x.abs() + 1.0), "x {x}: {} vs {want}", dst[i]);
            assert!((dst[i] - generic[i]).abs() <= 1e-6 * (x.abs() as f32 + 1.0));
        }
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
