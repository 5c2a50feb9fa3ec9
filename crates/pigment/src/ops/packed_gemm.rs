//! An AVX-512 f32 GEMM over operands the caller packs, for where the `gemm` crate was
//! measured as the bottleneck: the stride-2 down-sampling convolutions
//! (`winograd::stride2`), whose GEMMs reduce over the input channels only, and the fused
//! attention's two products (`attention_packed`). On a 2-core AMD
//! EPYC (Zen 4) whose FMA peak is 228 GFLOP/s (`examples/peak_flops`) this kernel runs a
//! [322 x 320] x [320 x 512] GEMM at 219-228 (operands in cache) and [322 x 2880] x [2880 x
//! 1024] at 201-204, where `gemm` runs the latter at 185. Callers build the packed operands
//! in the transforms they run anyway, so nothing is packed twice.
//!
//! The scheme is GotoBLAS / BLIS's (Goto & van de Geijn 2008, "Anatomy of high-performance
//! matrix multiplication", fig. 4): the depth is cut into chunks of [`DEPTH_CHUNK`]; per chunk
//! the left operand is packed as panels of [`MR`] rows ([kk][MR], contiguous) and the right as
//! panels of [`NR`] columns ([kk][NR]); the micro-kernel keeps an MR x NR tile of C in 28 of
//! the 32 zmm registers and, per depth step, loads two vectors of the right panel and
//! broadcasts MR values of the left.
//!
//! Only for x86-64 CPUs with AVX-512F ([`available`]), plus a 6x16 AVX2 + FMA twin
//! ([`multiply_chunk_avx2`], 12 accumulators in the 16 ymm registers) that the attention uses
//! on CPUs without AVX-512; callers keep their `gemm` crate path for every other CPU.

/// Rows of C per micro-tile (28 accumulators + 2 right-operand vectors + 1 broadcast fit the
/// 32 zmm registers; 14 measured 2% faster than 12).
pub(crate) const MR: usize = 14;
/// Columns of C per micro-tile: two 16-float vectors.
pub(crate) const NR: usize = 32;
/// Depth per packed chunk: a right panel (512 x 32 floats, 64 KB) stays in L1/L2 while all the
/// left panels stream past it (256: 197 GFLOP/s, 384-720: 201-204 on the EPYC above).
pub(crate) const DEPTH_CHUNK: usize = 512;

/// Whether this CPU runs the kernel (checked once; std caches the CPUID answer).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// c [padded_rows, ldc] (+)= left chunk x right chunk for one depth chunk of length `kc`:
/// `left` holds padded_rows / MR panels [kc][MR], `right` `panels` panels [kc][NR]; C's columns
/// j*NR..(j+1)*NR belong to right panel j. `accumulate` false overwrites C (the first chunk).
/// Panics (never reads or writes out of bounds) if a slice is too short for the shape.
pub(crate) fn multiply_chunk(
    c: &mut [f32],
    ldc: usize,
    left: &[f32],
    right: &[f32],
    kc: usize,
    accumulate: bool,
) {
    assert!(available(), "packed_gemm needs AVX-512F");
    #[cfg(target_arch = "x86_64")]
    multiply_tiles::<MR, NR>(c, ldc, (left, right), kc, accumulate, micro_kernel);
}

/// Rows of C per AVX2 micro-tile: 12 ymm accumulators + 2 right-operand vectors + 1
/// broadcast fill the 16 registers.
pub(crate) const MR_AVX2: usize = 6;
/// Columns of C per AVX2 micro-tile: two 8-float vectors.
pub(crate) const NR_AVX2: usize = 16;

/// Whether this CPU runs the AVX2 + FMA kernel ([`multiply_chunk_avx2`]): the check the
/// vectorised exp already makes.
pub(crate) use super::fast_exp::has_avx2_fma as available_avx2;

/// [`multiply_chunk`] for AVX2 + FMA CPUs (most desktop CPUs without AVX-512): panels of
/// [`MR_AVX2`] rows and [`NR_AVX2`] columns instead.
pub(crate) fn multiply_chunk_avx2(
    c: &mut [f32],
    ldc: usize,
    left: &[f32],
    right: &[f32],
    kc: usize,
    accumulate: bool,
) {
    assert!(
        available_avx2(),
        "the AVX2 packed kernel needs AVX2 and FMA"
    );
    #[cfg(target_arch = "x86_64")]
    multiply_tiles::<MR_AVX2, NR_AVX2>(c, ldc, (left, right), kc, accumulate, micro_kernel_avx2);
}

/// One micro-tile: (kc, a, b, c, ldc, accumulate), as [`micro_kernel`].
#[cfg(target_arch = "x86_64")]
type Tile = unsafe fn(usize, *const f32, *const f32, *mut f32, usize, bool);

/// Every (row panel, column panel) tile of one depth chunk with the `M` x `N` kernel `tile`,
/// whose instruction set the caller has checked.
#[cfg(target_arch = "x86_64")]
fn multiply_tiles<const M: usize, const N: usize>(
    c: &mut [f32],
    ldc: usize,
    (left, right): (&[f32], &[f32]),
    kc: usize,
    accumulate: bool,
    tile: Tile,
) {
    let (row_panels, col_panels) = (left.len() / (kc * M), right.len() / (kc * N));
    assert!(kc > 0 && left.len().is_multiple_of(kc * M) && right.len().is_multiple_of(kc * N));
    assert!(ldc >= col_panels * N && c.len() >= (row_panels * M - 1) * ldc + col_panels * N);
    for j in 0..col_panels {
        let b = &right[j * kc * N..][..kc * N];
        for p in 0..row_panels {
            let a = &left[p * kc * M..][..kc * M];
            let c_at = p * M * ldc + j * N;
            // SAFETY: the callers checked the kernel's instruction set; a holds kc*M floats and
            // b kc*N; the tile reads and writes c[c_at + r*ldc .. + N] for r < M, which the
            // assert above keeps inside c (the last row panel's last row ends at
            // (row_panels*M - 1)*ldc + col_panels*N).
            unsafe {
                tile(
                    kc,
                    a.as_ptr(),
                    b.as_ptr(),
                    c.as_mut_ptr().add(c_at),
                    ldc,
                    accumulate,
                )
            };
        }
    }
}

/// Defines a micro-kernel: one `$mr` x (2 vectors of `$lanes`) tile, c (row stride ldc) (+)=
/// sum over kk < kc of a[kk][r] * b[kk][..]; the AVX-512 and AVX2 kernels differ only in their
/// vector type and intrinsics.
macro_rules! micro_kernel {
    ($(#[$doc:meta])* $name:ident, $features:literal, $mr:expr, $lanes:literal,
     $zero:ident, $load:ident, $store:ident, $splat:ident, $fma:ident) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(
            kc: usize,
            a: *const f32,
            b: *const f32,
            c: *mut f32,
            ldc: usize,
            accumulate: bool,
        ) {
            use std::arch::x86_64::*;
            let mut acc = [$zero(); 2 * $mr];
            if accumulate {
                for r in 0..$mr {
                    acc[2 * r] = $load(c.add(r * ldc));
                    acc[2 * r + 1] = $load(c.add(r * ldc + $lanes));
                }
            }
            let (mut a, mut b) = (a, b);
            for _ in 0..kc {
                let b0 = $load(b);
                let b1 = $load(b.add($lanes));
                for r in 0..$mr {
                    let ar = $splat(*a.add(r));
                    acc[2 * r] = $fma(ar, b0, acc[2 * r]);
                    acc[2 * r + 1] = $fma(ar, b1, acc[2 * r + 1]);
                }
                a = a.add($mr);
                b = b.add(2 * $lanes);
            }
            for r in 0..$mr {
                $store(c.add(r * ldc), acc[2 * r]);
                $store(c.add(r * ldc + $lanes), acc[2 * r + 1]);
            }
        }
    };
}

micro_kernel!(
    /// One MR x NR tile (AVX-512: 28 zmm accumulators).
    micro_kernel, "avx512f", MR, 16,
    _mm512_setzero_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps, _mm512_fmadd_ps
);

micro_kernel!(
    /// One MR_AVX2 x NR_AVX2 tile (AVX2 + FMA: 12 ymm accumulators).
    micro_kernel_avx2, "avx2,fma", MR_AVX2, 8,
    _mm256_setzero_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps, _mm256_fmadd_ps
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_values;

    fn depth_chunks(depth: usize) -> impl Iterator<Item = (usize, usize)> {
        (0..depth)
            .step_by(DEPTH_CHUNK)
            .map(move |k0| (k0, DEPTH_CHUNK.min(depth - k0)))
    }

    /// Packs `a` [rows, depth] the way callers do: per chunk (k0, kc) at k0 * padded_rows,
    /// panels [kc][mr], zero rows past `rows`.
    fn pack_left(a: &[f32], rows: usize, depth: usize, mr: usize) -> Vec<f32> {
        let padded = rows.next_multiple_of(mr);
        let mut packed = vec![0f32; padded * depth];
        for (k0, kc) in depth_chunks(depth) {
            for r in 0..rows {
                for kk in 0..kc {
                    packed[k0 * padded + (r / mr) * kc * mr + kk * mr + r % mr] =
                        a[r * depth + k0 + kk];
                }
            }
        }
        packed
    }

    /// Packs `b` [depth, cols] for one chunk the way callers do: panels [kc][nr], zero-padded.
    fn pack_right(b: &[f32], cols: usize, (k0, kc): (usize, usize), nr: usize) -> Vec<f32> {
        let panels = cols.div_ceil(nr);
        let mut packed = vec![0f32; panels * kc * nr];
        for kk in 0..kc {
            for col in 0..cols {
                packed[(col / nr) * kc * nr + kk * nr + col % nr] = b[(k0 + kk) * cols + col];
            }
        }
        packed
    }

    /// The kernels this CPU runs: (name, MR, NR, multiply).
    type Multiply = fn(&mut [f32], usize, &[f32], &[f32], usize, bool);
    fn kernels() -> Vec<(&'static str, usize, usize, Multiply)> {
        let mut kernels: Vec<(&'static str, usize, usize, Multiply)> = Vec::new();
        if available() {
            kernels.push(("avx512", MR, NR, multiply_chunk));
        }
        if available_avx2() {
            kernels.push(("avx2", MR_AVX2, NR_AVX2, multiply_chunk_avx2));
        }
        kernels
    }

    #[test]
    fn matches_a_plain_product_on_ragged_shapes() {
        // Rows, columns and depth that are not multiples of MR, NR or the depth chunk.
        for (name, mr, nr, multiply) in kernels() {
            for &(rows, cols, depth) in &[(1, 1, 1), (15, 33, 7), (29, 70, 1100), (14, 32, 512)] {
                let a = test_values(rows * depth, 1);
                let b = test_values(depth * cols, 2);
                let padded_rows = rows.next_multiple_of(mr);
                let ldc = cols.next_multiple_of(nr);
                let left = pack_left(&a, rows, depth, mr);
                let mut c = vec![f32::NAN; padded_rows * ldc];
                for (i, chunk) in depth_chunks(depth).enumerate() {
                    let right = pack_right(&b, cols, chunk, nr);
                    let left_chunk = &left[chunk.0 * padded_rows..][..padded_rows * chunk.1];
                    multiply(&mut c, ldc, left_chunk, &right, chunk.1, i > 0);
                }
                for i in 0..rows {
                    for j in 0..cols {
                        let want: f64 = (0..depth)
                            .map(|k| a[i * depth + k] as f64 * b[k * cols + j] as f64)
                            .sum();
                        let got = c[i * ldc + j] as f64;
                        assert!(
                            (got - want).abs() < 1e-4 * (1.0 + depth as f64).sqrt(),
                            "{name} {rows}x{cols}x{depth} at ({i}, {j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn short_operands_are_refused_before_any_access() {
        for (name, mr, nr, multiply) in kernels() {
            let left = vec![0f32; 2 * mr];
            let right = vec![0f32; 2 * nr];
            let mut c = vec![0f32; mr * nr - 1];
            let r = std::panic::catch_unwind(move || multiply(&mut c, nr, &left, &right, 2, false));
            assert!(r.is_err(), "{name}");
        }
    }
}
