//! Separable Gaussian blur of an 8-bit plane in f32, shaped like OpenCV's
//! `GaussianBlur(src, dst, (0, 0), sigma)` for 8-bit images: kernel size
//! `round(sigma * 6 + 1) | 1` (modules/imgproc/src/smooth.dispatch.cpp, `createGaussianKernels`)
//! and BORDER_REFLECT_101. This is the exact Gaussian (OpenCV's float path); OpenCV's 8-bit path
//! blurs in fixed point (or through IPP) and lands up to ~2 levels away, which moves a few
//! pixels across a threshold (see tests/canny.rs for the measured agreement).

/// Normalised 1-D Gaussian taps for `sigma`, centred.
fn kernel(sigma: f32) -> Vec<f32> {
    let size = ((sigma * 6.0 + 1.0).round() as usize) | 1;
    let half = (size / 2) as f32;
    let taps: Vec<f32> = (0..size)
        .map(|i| {
            let d = i as f32 - half;
            (-(d * d) / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let sum: f32 = taps.iter().sum();
    taps.into_iter().map(|t| t / sum).collect()
}

/// Index `i` mirrored into `0..n` without repeating the edge (BORDER_REFLECT_101: gfedcb|abcdefgh|gfedcba).
fn reflect_101(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let mut j = i.rem_euclid(period);
    if j >= n as isize {
        j = period - j;
    }
    j as usize
}

/// Blurs a `width x height` plane (`sigma > 0`), returning f32 values in 0..=255.
pub(crate) fn gaussian_blur(plane: &[u8], width: usize, height: usize, sigma: f32) -> Vec<f32> {
    let taps = kernel(sigma);
    let half = (taps.len() / 2) as isize;
    let mut rows = vec![0f32; width * height];
    for y in 0..height {
        for x in 0..width {
            rows[y * width + x] = taps
                .iter()
                .enumerate()
                .map(|(k, t)| {
                    let sx = reflect_101(x as isize + k as isize - half, width);
                    t * f32::from(plane[y * width + sx])
                })
                .sum();
        }
    }
    let mut out = vec![0f32; width * height];
    for y in 0..height {
        for x in 0..width {
            out[y * width + x] = taps
                .iter()
                .enumerate()
                .map(|(k, t)| {
                    let sy = reflect_101(y as isize + k as isize - half, height);
                    t * rows[sy * width + x]
                })
                .sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_size_and_reflection_match_opencv_conventions() {
        assert_eq!(kernel(3.0).len(), 19);
        assert!((kernel(3.0).iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(reflect_101(-1, 5), 1);
        assert_eq!(reflect_101(5, 5), 3);
        assert_eq!(reflect_101(-12, 5), 4);
    }

    #[test]
    fn blur_keeps_a_flat_plane_flat() {
        let out = gaussian_blur(&[80u8; 12], 4, 3, 3.0);
        assert!(out.iter().all(|v| (v - 80.0).abs() < 1e-3));
    }
}
