//! Hysteresis of Canny: weak maxima become edges when 8-connected, through other weak maxima,
//! to a strong one (OpenCV's `finalPass` stack walk in modules/imgproc/src/canny.cpp).

use super::nms::{STRONG, WEAK};

/// Promotes every [`WEAK`] pixel 8-connected to a [`STRONG`] one, in place. The result does
/// not depend on visiting order: it is the union of the connected components that hold a
/// strong pixel.
pub(crate) fn hysteresis(map: &mut [u8], width: usize, height: usize) {
    let mut stack: Vec<usize> = (0..map.len()).filter(|&i| map[i] == STRONG).collect();
    while let Some(i) = stack.pop() {
        let (x, y) = ((i % width) as isize, (i / width) as isize);
        for ny in y - 1..=y + 1 {
            for nx in x - 1..=x + 1 {
                if nx < 0 || ny < 0 || nx >= width as isize || ny >= height as isize {
                    continue;
                }
                let j = ny as usize * width + nx as usize;
                if map[j] == WEAK {
                    map[j] = STRONG;
                    stack.push(j);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::nms::NOT_EDGE;
    use super::*;

    #[test]
    fn weak_chain_joins_strong_diagonally_but_isolated_weak_does_not() {
        // 4x3: strong at (0,0), weak diagonal chain (1,1), (2,2); isolated weak at (3,0).
        let n = NOT_EDGE;
        let mut map = vec![STRONG, n, n, WEAK, n, WEAK, n, n, n, n, WEAK, n];
        hysteresis(&mut map, 4, 3);
        assert_eq!(
            map,
            vec![STRONG, n, n, WEAK, n, STRONG, n, n, n, n, STRONG, n]
        );
    }
}
