//! Scalar ports of the float `log` and `sincos` PyTorch uses in its AVX2/AVX512 `randn` kernel.
//!
//! Source: aten/src/ATen/native/cpu/avx_mathfun.h (`log256_ps`, `sincos256_ps`: Julien
//! Pommier's sse_mathfun, itself the Cephes `logf`/`sinf`/`cosf` polynomials). These are not
//! correctly rounded, so reproducing torch bit for bit needs the same operations in the same
//! order: every line below is one vector instruction of the original, done on one lane in f32.
//!
//! One catch: torch's x86 wheels are built with GCC, whose `_mm256_mul_ps`/`_mm256_add_ps` are
//! plain vector arithmetic, and the AVX2 kernels are compiled with `-mfma` under GCC's default
//! `-ffp-contract=fast`: a multiply whose only use is an add or subtract is fused into one FMA
//! (one rounding instead of two). The fused spots are marked `mul_add` below; Rust itself never
//! fuses, so the unmarked operations round twice, as in the binary.

// The literals are copied digit for digit from the C source, so that a reader can compare them.
#![allow(clippy::excessive_precision)]

/// The C source writes these constants as double literals that the compiler rounds to float;
/// `as f32` does the same rounding (a decimal literal parsed straight to f32 could differ).
/// Cephes' SQRTHF, 0.707106781186547524: sqrt(1/2).
const SQRTHF: f32 = std::f64::consts::FRAC_1_SQRT_2 as f32;
const LOG_P: [f32; 9] = [
    7.037_683_629_2e-2_f64 as f32,
    -1.151_461_031_0e-1_f64 as f32,
    1.167_699_874_0e-1_f64 as f32,
    -1.242_014_084_6e-1_f64 as f32,
    1.424_932_278_7e-1_f64 as f32,
    -1.666_805_766_5e-1_f64 as f32,
    2.000_071_476_5e-1_f64 as f32,
    -2.499_999_399_3e-1_f64 as f32,
    3.333_333_117_4e-1_f64 as f32,
];
const LOG_Q1: f32 = -2.121_944_40e-4_f64 as f32;
const LOG_Q2: f32 = 0.693_359_375_f64 as f32;

const MINUS_DP1: f32 = -0.785_156_25_f64 as f32;
const MINUS_DP2: f32 = -2.418_756_484_985_351_562_5e-4_f64 as f32;
const MINUS_DP3: f32 = -3.774_894_977_445_941_08e-8_f64 as f32;
const SINCOF: [f32; 3] = [
    -1.951_529_589_1e-4_f64 as f32,
    8.332_160_873_6e-3_f64 as f32,
    -1.666_665_461_1e-1_f64 as f32,
];
const COSCOF: [f32; 3] = [
    2.443_315_711_809_948e-5_f64 as f32,
    -1.388_731_625_493_765e-3_f64 as f32,
    4.166_664_568_298_827e-2_f64 as f32,
];
/// 4 / pi.
const FOPI: f32 = 1.273_239_544_735_16_f64 as f32;

/// `and_ps(value, mask)` for a comparison mask: the value, or +0.0 where the mask is clear.
fn select(mask: bool, value: f32) -> f32 {
    if mask {
        value
    } else {
        0.0
    }
}

/// `log256_ps` on one lane: natural log, NaN for x <= 0.
pub(crate) fn log(x: f32) -> f32 {
    let invalid = x <= 0.0;
    // _mm256_max_ps(x, min_norm_pos): cut off denormals.
    let x = if x > f32::MIN_POSITIVE {
        x
    } else {
        f32::MIN_POSITIVE
    };
    let bits = x.to_bits();
    let exponent = ((bits >> 23) as i32).wrapping_sub(0x7f);
    // Keep sign and mantissa, set the exponent of 0.5: x in [0.5, 1).
    let mut x = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    let mut e = exponent as f32 + 1.0;

    let mask = x < SQRTHF;
    let tmp = select(mask, x);
    x -= 1.0;
    e -= select(mask, 1.0);
    x += tmp;

    let z = x * x;
    let mut y = LOG_P[0];
    for &p in &LOG_P[1..] {
        y = y.mul_add(x, p);
    }
    y *= x;
    // `y = y * z; y = y + e * q1`: the first multiply (y * z) is the one fused.
    y = y.mul_add(z, e * LOG_Q1);
    // z * 0.5 is exact, so fused or not it rounds once.
    y -= z * 0.5;
    x += y;
    x = e.mul_add(LOG_Q2, x);
    if invalid {
        f32::NAN
    } else {
        x
    }
}

/// `sincos256_ps` on one lane: (sin x, cos x).
pub(crate) fn sincos(x: f32) -> (f32, f32) {
    let mut sign_sin = x.to_bits() & 0x8000_0000;
    let mut x = x.abs();

    // j = (int)(x * 4/pi); j = (j + 1) & ~1 (the Cephes octant).
    let mut j = (x * FOPI) as i32;
    j = j.wrapping_add(1) & !1;
    let y = j as f32;
    let swap_sign_sin = ((j & 4) as u32) << 29;
    let poly_mask = (j & 2) == 0;

    // Extended precision modular arithmetic: x = ((x - y*DP1) - y*DP2) - y*DP3.
    x = y.mul_add(MINUS_DP1, x);
    x = y.mul_add(MINUS_DP2, x);
    x = y.mul_add(MINUS_DP3, x);

    let sign_cos = ((!j.wrapping_sub(2) & 4) as u32) << 29;
    sign_sin ^= swap_sign_sin;

    // Cosine polynomial, for 0 <= x <= pi/4.
    let z = x * x;
    let mut yc = COSCOF[0];
    yc = yc.mul_add(z, COSCOF[1]);
    yc = yc.mul_add(z, COSCOF[2]);
    yc *= z;
    // `y = y * z; y = y - z * 0.5`: y * z is fused (z * 0.5 is exact).
    yc = yc.mul_add(z, -(z * 0.5));
    yc += 1.0;

    // Sine polynomial.
    let mut ys = SINCOF[0];
    ys = ys.mul_add(z, SINCOF[1]);
    ys = ys.mul_add(z, SINCOF[2]);
    ys *= z;
    ys = ys.mul_add(x, x);

    // Select each result from the two polynomials the way the original does (and/andnot, then
    // subtract and add), so that even the sign of a zero comes out the same.
    let ysin2 = select(poly_mask, ys);
    let ysin1 = select(!poly_mask, yc);
    let ys = ys - ysin2;
    let yc = yc - ysin1;
    let sin = ysin1 + ysin2;
    let cos = yc + ys;
    (
        f32::from_bits(sin.to_bits() ^ sign_sin),
        f32::from_bits(cos.to_bits() ^ sign_cos),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_is_close_to_the_true_log() {
        for i in 1..=1000 {
            let x = i as f32 / 1000.0;
            let err = (log(x) as f64 - (x as f64).ln()).abs();
            assert!(err < 1e-6, "log({x}) off by {err}");
        }
        assert!(log(0.0).is_nan());
        assert!(log(-1.0).is_nan());
    }

    #[test]
    fn sincos_is_close_to_the_true_sin_and_cos() {
        for i in 0..=1000 {
            let x = i as f32 / 1000.0 * std::f32::consts::TAU;
            let (s, c) = sincos(x);
            assert!((s as f64 - (x as f64).sin()).abs() < 1e-6, "sin({x})");
            assert!((c as f64 - (x as f64).cos()).abs() < 1e-6, "cos({x})");
        }
    }
}
