//! 3x3 Sobel derivatives of one 8-bit plane, in integers, as OpenCV's
//! `Sobel(src, dst, CV_16S, dx, dy, 3, 1, 0, BORDER_REPLICATE)` computes them for Canny
//! (modules/imgproc/src/canny.cpp). Integer arithmetic makes the result exact.

/// Horizontal and vertical derivatives of a `width x height` plane whose pixel `(x, y)` sits at
/// `data[(y * width + x) * stride + offset]` (so one channel of an interleaved image can be read
/// in place). Border pixels repeat the edge (BORDER_REPLICATE).
///
/// dx kernel: [-1 0 1] across, [1 2 1] down; dy is its transpose. Values fit in i16
/// (|d| <= 4 * 255), kept as i32 for the sums that follow.
pub(crate) fn sobel_3x3(
    data: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    offset: usize,
) -> (Vec<i32>, Vec<i32>) {
    let at = |x: usize, y: usize| i32::from(data[(y * width + x) * stride + offset]);
    let mut dx = vec![0i32; width * height];
    let mut dy = vec![0i32; width * height];
    for y in 0..height {
        let up = y.saturating_sub(1);
        let down = (y + 1).min(height - 1);
        for x in 0..width {
            let left = x.saturating_sub(1);
            let right = (x + 1).min(width - 1);
            let gx = |row: usize| at(right, row) - at(left, row);
            let gy = |col: usize| at(col, down) - at(col, up);
            dx[y * width + x] = gx(up) + 2 * gx(y) + gx(down);
            dy[y * width + x] = gy(left) + 2 * gy(x) + gy(right);
        }
    }
    (dx, dy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vertical_step_has_horizontal_derivative_only() {
        // 4x3 plane: columns 0,1 dark, 2,3 bright.
        let row = [0u8, 0, 100, 100];
        let data: Vec<u8> = row.iter().cycle().take(12).copied().collect();
        let (dx, dy) = sobel_3x3(&data, 4, 3, 1, 0);
        // At x = 1 and x = 2 the step is inside the kernel: 4 * 100 (weights 1 + 2 + 1).
        assert_eq!(dx[4 + 1], 400);
        assert_eq!(dx[4 + 2], 400);
        // At the replicated borders the kernel sees no step.
        assert_eq!(dx[4], 0);
        assert_eq!(dx[4 + 3], 0);
        assert!(dy.iter().all(|&d| d == 0));
    }
}
