//! A bounds-checked, safe front for the `gemm` crate's f32 kernel (the one candle's CPU matmul
//! calls), for strided operands with offsets (which candle's `matmul` cannot express) and a
//! row-major destination with unit column stride.

use candle_core::{Error, Result};
use gemm::Parallelism;

/// One operand: element (row, col) is `data[offset + row * row_stride + col * col_stride]`.
pub(crate) struct Operand<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

/// dst[i, j] (row stride `dst_row_stride`) = (accumulate ? dst[i, j] : 0) + sum_k lhs[i, k] * rhs[k, j]
/// for i < m, j < n, k < depth. Every index the kernel may touch is checked first, so a wrong
/// shape is an error, never an out-of-bounds access.
pub(crate) fn gemm_f32(
    dst: &mut [f32],
    dst_row_stride: usize,
    lhs: Operand,
    rhs: Operand,
    shape: (usize, usize, usize),
    accumulate: bool,
) -> Result<()> {
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    gemm_f32_with(
        dst,
        dst_row_stride,
        lhs,
        rhs,
        shape,
        accumulate,
        parallelism,
    )
}

/// [`gemm_f32`] on the calling thread only: for callers that already run one task per thread.
pub(crate) fn gemm_f32_serial(
    dst: &mut [f32],
    dst_row_stride: usize,
    lhs: Operand,
    rhs: Operand,
    shape: (usize, usize, usize),
    accumulate: bool,
) -> Result<()> {
    gemm_f32_with(
        dst,
        dst_row_stride,
        lhs,
        rhs,
        shape,
        accumulate,
        Parallelism::None,
    )
}

fn gemm_f32_with(
    dst: &mut [f32],
    dst_row_stride: usize,
    lhs: Operand,
    rhs: Operand,
    (m, n, depth): (usize, usize, usize),
    accumulate: bool,
    parallelism: Parallelism,
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    // The last element an operand of [rows, cols] reaches must be within `len`. dst rows must
    // not overlap either: the kernel writes them from several threads.
    let fits = |len: usize, offset: usize, rows: usize, cols: usize, rs: usize, cs: usize| {
        offset + (rows - 1) * rs + (cols - 1) * cs < len
    };
    let ok = dst_row_stride >= n
        && fits(dst.len(), 0, m, n, dst_row_stride, 1)
        && (depth == 0
            || (fits(
                lhs.data.len(),
                lhs.offset,
                m,
                depth,
                lhs.row_stride,
                lhs.col_stride,
            ) && fits(
                rhs.data.len(),
                rhs.offset,
                depth,
                n,
                rhs.row_stride,
                rhs.col_stride,
            )));
    if !ok {
        return Err(Error::Msg(format!(
            "gemm_f32: operands too small for m={m} n={n} k={depth} \
             (dst {} stride {dst_row_stride}, lhs {}+{} stride {}, rhs {}+{} stride {})",
            dst.len(),
            lhs.data.len(),
            lhs.offset,
            lhs.row_stride,
            rhs.data.len(),
            rhs.offset,
            rhs.row_stride
        )));
    }
    if depth == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_row_stride).take(m) {
                row[..n].fill(0.0);
            }
        }
        return Ok(());
    }
    // SAFETY: every index the kernel reads or writes (row < m or depth, col < n or depth, at the
    // given offsets and strides; unit column stride in dst) was checked to lie inside its slice
    // above; dst is a unique borrow, so it cannot alias lhs or rhs.
    unsafe {
        gemm::gemm(
            m,
            n,
            depth,
            dst.as_mut_ptr(),
            1,
            dst_row_stride as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}
