//! The CPU kernels' buffers: a custom op's input as an f32 slice, and output buffers zeroed
//! by the thread pool. A kernel's `vec![0f32; n]` ran
//! on the calling thread while the pool's threads waited: glibc's calloc clears a recycled heap
//! block (below 32 MiB, the UNet's activations) with one serial memset. Here the pool clears
//! those in parallel; larger buffers come from fresh mappings, already zero, and stay calloc's.

use candle_core::{CpuStorage, Layout};
use rayon::prelude::*;

/// The f32 elements of a contiguous CPU tensor given to a custom op; `op` names the op in the
/// error for any other input.
pub(crate) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&data[start..end]),
        _ => candle_core::bail!("{op}: needs contiguous f32 tensors on the CPU"),
    }
}

/// Elements each task clears (256 KB).
const CHUNK: usize = 1 << 16;

/// From this size on (glibc's largest mmap threshold, 32 MiB on 64-bit) calloc always maps
/// fresh pages, which are zero without a pass over them: clearing them here would add one.
const FRESH_MAPPING_BYTES: usize = 32 << 20;

/// `n` zeros, cleared in parallel when large but below [`FRESH_MAPPING_BYTES`].
pub(crate) fn zeros(n: usize) -> Vec<f32> {
    if n < 4 * CHUNK || n * 4 >= FRESH_MAPPING_BYTES {
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
