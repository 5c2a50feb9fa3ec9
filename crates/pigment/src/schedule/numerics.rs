//! The few numeric primitives whose exact rounding decides whether Pigment's schedules equal
//! diffusers' bit for bit: diffusers builds its schedules with `torch.linspace` (float32),
//! `torch.cumprod`, and numpy's `linspace`, `arange`, `round`, `interp` and float32 `log`.
//! Each function here reproduces one of them, including the rounding of every operation.

/// `torch.linspace(start, end, n, dtype=torch.float32)` on the CPU.
///
/// torch (aten/src/ATen/native/cpu/RangeFactoriesKernel.cpp) converts both ends to float32,
/// takes `step = (end - start) / (n - 1)` in float32, and fills the first half forward from
/// `start` and the second half backward from `end`; the compiler fuses each multiply-add into
/// one FMA (checked against torch 2.x on x86-64: all 1000 values of SD's beta schedules equal).
pub fn torch_linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if n == 0 {
        return Vec::new();
    }
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let halfway = n / 2;
    (0..n)
        .map(|i| {
            if i < halfway {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// `torch.cumprod(x, dim=0)` of a float32 tensor on the CPU: torch accumulates in double
/// (`at::acc_type<float, false>`) and rounds each partial product to float32.
pub fn torch_cumprod_f32(values: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    values
        .iter()
        .map(|&v| {
            acc *= v as f64;
            acc as f32
        })
        .collect()
}

/// `numpy.linspace(start, stop, num, endpoint)` in float64: `i * step + start`, the last value
/// replaced by `stop` when `endpoint` (numpy/_core/function_base.py).
pub fn numpy_linspace(start: f64, stop: f64, num: usize, endpoint: bool) -> Vec<f64> {
    let div = if endpoint { num.saturating_sub(1) } else { num };
    let delta = stop - start;
    let mut values: Vec<f64> = if div > 0 {
        let step = delta / div as f64;
        if step == 0.0 {
            (0..num)
                .map(|i| i as f64 / div as f64 * delta + start)
                .collect()
        } else {
            (0..num).map(|i| i as f64 * step + start).collect()
        }
    } else {
        (0..num).map(|i| i as f64 * delta + start).collect()
    };
    if endpoint && num > 1 {
        values[num - 1] = stop;
    }
    values
}

/// `numpy.arange(start, stop, step)` with a float step: numpy takes
/// `len = ceil((stop - start) / step)`, then fills `start + i * delta` with
/// `delta = (start + step) - start` (numpy's `DOUBLE_fill`).
pub fn numpy_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 || len.is_infinite() {
        return Vec::new();
    }
    let len = len as usize;
    let delta = (start + step) - start;
    (0..len)
        .map(|i| {
            if i == 0 {
                start
            } else {
                start + i as f64 * delta
            }
        })
        .collect()
}

/// `numpy.interp(x, arange(len(fp)), fp)` (numpy/_core/src/multiarray/compiled_base.c):
/// `slope * (x - xp[j]) + fp[j]` with `slope = (fp[j+1] - fp[j]) / 1`, exact at the nodes,
/// clamped to the end values outside.
pub fn numpy_interp_unit_grid(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x.is_nan() {
        return x;
    }
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= last as f64 {
        return fp[last] as f64;
    }
    let j = x.floor() as usize;
    if j as f64 == x {
        return fp[j] as f64;
    }
    let slope = (fp[j + 1] as f64 - fp[j] as f64) / 1.0;
    slope * (x - j as f64) + fp[j] as f64
}

/// `numpy.log` of a float32 array on x86-64 builds with AVX2/AVX512 (numpy's
/// `simd_log_FLOAT`, loops_exponent_log.dispatch.c.src): a 5/5 rational approximation of
/// `log(1 + y)` with FMAs, accurate to 3.8 ulp but not correctly rounded, so it is reproduced
/// operation by operation (checked against numpy 2.4: all 1000 log-sigmas of SD equal).
/// Only finite positive inputs occur in schedules; others follow IEEE `ln`.
pub fn numpy_log_f32(x: f32) -> f32 {
    if x.is_nan() || x < f32::MIN_POSITIVE || x.is_infinite() {
        return x.ln();
    }
    // NPY_COEFF_{P,Q}{0..5}_LOGf of numpy's npy_simd_data.h, as float32 bit patterns.
    const P: [u32; 6] = [
        0x0,
        0x3f80_0000,
        0x4007_361c,
        0x3fbd_70a9,
        0x3ec3_0333,
        0x3cd4_2bcd,
    ];
    const Q: [u32; 6] = [
        0x3f80_0000,
        0x4027_361c,
        0x401c_fe0d,
        0x3f7c_8ae4,
        0x3e1e_5bf3,
        0x3bc0_83df,
    ];
    let p = P.map(f32::from_bits);
    let q = Q.map(f32::from_bits);
    let bits = x.to_bits();
    let mut exponent = ((bits >> 23) as i32 - 126) as f32;
    let mut mantissa = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
    if mantissa <= std::f32::consts::FRAC_1_SQRT_2 {
        mantissa += mantissa;
        exponent -= 1.0;
    }
    let y = mantissa - 1.0;
    let horner = |c: &[f32; 6]| (0..5).rev().fold(c[5], |acc, k| acc.mul_add(y, c[k]));
    let (num, den) = (horner(&p), horner(&q));
    exponent.mul_add(std::f32::consts::LN_2, num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_ends_and_midpoint() {
        let v = torch_linspace_f32(0.0, 1.0, 5);
        assert_eq!(v, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(torch_linspace_f32(3.0, 7.0, 1), vec![3.0]);
    }

    #[test]
    fn numpy_linspace_matches_numpy() {
        assert_eq!(
            numpy_linspace(0.0, 999.0, 4, true),
            vec![0.0, 333.0, 666.0, 999.0]
        );
        assert_eq!(
            numpy_linspace(0.0, 50.0, 4, false),
            vec![0.0, 12.5, 25.0, 37.5]
        );
        assert_eq!(numpy_linspace(0.0, 1.0, 1, true), vec![0.0]);
    }

    #[test]
    fn arange_counts_like_numpy() {
        // numpy.arange(1000, 0, -1000/3) == [1000, 666.67, 333.33]
        assert_eq!(numpy_arange(1000.0, 0.0, -1000.0 / 3.0).len(), 3);
        // numpy.arange(1000, 0, -1000/61) has 62 entries (the float step falls short).
        assert_eq!(numpy_arange(1000.0, 0.0, -1000.0 / 61.0).len(), 62);
    }

    #[test]
    fn interp_is_exact_at_nodes_and_linear_between() {
        let fp = [1.0f32, 3.0, 7.0];
        assert_eq!(numpy_interp_unit_grid(1.0, &fp), 3.0);
        assert_eq!(numpy_interp_unit_grid(1.5, &fp), 5.0);
        assert_eq!(numpy_interp_unit_grid(-1.0, &fp), 1.0);
        assert_eq!(numpy_interp_unit_grid(9.0, &fp), 7.0);
    }

    #[test]
    fn numpy_log_is_close_to_ln() {
        for &x in &[0.029_167_158f32, 1.0, 2.0, 14.614_643, 0.5, 1e-3, 1234.5] {
            let (a, b) = (numpy_log_f32(x), x.ln());
            assert!(
                (a - b).abs() <= 4.0 * f32::EPSILON * b.abs().max(1.0),
                "{x}: {a} vs {b}"
            );
        }
        assert_eq!(numpy_log_f32(1.0), 0.0);
    }
}
