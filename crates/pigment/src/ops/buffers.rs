//! Output buffers of the CPU kernels, zeroed by the thread pool. A kernel's `vec![0f32; n]` ran
//! on the calling thread while the pool's threads waited: glibc's calloc clears a recycled heap
//! block with one memset, a fresh mapping by page faults, both serial. Here the pool clears
//! (and first touches) the buffer in parallel before the kernel fills it.

use rayon::prelude::*;

/// Elements each task clears (256 KB).
const CHUNK: usize = 1 << 16;

/// `n` zeros, cleared in parallel when large.
pub(crate) fn zeros(n: usize) -> Vec<f32> {
    if n < 4 * CHUNK {
        return vec![0f32; n];
    }
    let mut buf: Vec<f32> = Vec::with_capacity(n);
    buf.spare_capacity_mut()
        .par_chunks_mut(CHUNK)
        .for_each(|chunk| {
            for x in chunk {
                x.write(0.0);
            }
        });
    // SAFETY: the loop above wrote all n elements of the spare capacity (capacity >= n).
    unsafe { buf.set_len(n) };
    buf
}

#[cfg(test)]
mod tests {
    #[test]
    fn small_and_large_buffers_are_all_zero() {
        for n in [
            0,
            7,
            4 * super::CHUNK - 1,
            4 * super::CHUNK,
            9 * super::CHUNK + 13,
        ] {
            let buf = super::zeros(n);
            assert_eq!(buf.len(), n);
            assert!(buf.iter().all(|&x| x == 0.0));
        }
    }
}
