//! The fused attention's query block on `packed_gemm`'s kernels (AVX-512, or AVX2 + FMA),
//! computed transposed:
//! per key tile, S^T = K Q^T [keys, queries] and then O^T += V^T P^T [head_dim, queries].
//! Below, MR and NR are the kernel's tile (14 x 32 on AVX-512, 6 x 16 on AVX2).
//!
//! Why transposed: in S^T each query is a column, so the online softmax (running maximum, sum,
//! rescale) runs across 32 queries at once in vector lanes with no horizontal reduction
//! (`fast_exp::softmax_columns`), and the probabilities it leaves in place, [keys][NR queries]
//! per query panel, are exactly the packed right operand ([kc][NR] panels) of the P V product,
//! so nothing is packed between the two GEMMs. The operands that are packed are small: Q^T once
//! per query block and head (with the softmax scale folded in), and each key tile's K and V^T
//! once per tile, reused by every query panel of the block. (The same kernel in the usual
//! orientation, S = Q K^T with K packed per tile and P handed to the `gemm` crate, ran slower
//! than `gemm` alone: 95-101 against 119-126 GFLOP/s.)
//!
//! `PIGMENT_ATTENTION_KERNEL=avx512|avx2|gemm` picks the kernel for before/after timings (read
//! once; a kernel the CPU lacks falls back to the next one down).
//!
//! Padding: keys are padded to whole MR-row panels of S^T and head dimensions to whole
//! MR-row panels of O^T with zeros; padded key rows of S^T are computed but never read (the
//! softmax and the P V product take only the tile's real keys), padded query columns hold
//! scores of a zero query and are never written out.

use super::attention::Geometry;
use super::fast_exp::softmax_columns;
use super::packed_gemm::{
    available, available_avx2, multiply_chunk, multiply_chunk_avx2, MR, MR_AVX2, NR, NR_AVX2,
};

/// The packed kernels a block can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PackedKernel {
    Avx512,
    Avx2,
}

impl PackedKernel {
    /// The fastest kernel this CPU runs, or None (the `gemm` crate path), as
    /// `PIGMENT_ATTENTION_KERNEL` may cap it (checked once per process).
    pub(super) fn best() -> Option<Self> {
        static BEST: std::sync::OnceLock<Option<PackedKernel>> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            let cap = std::env::var("PIGMENT_ATTENTION_KERNEL").unwrap_or_default();
            let allow_512 = !matches!(cap.as_str(), "avx2" | "gemm");
            let allow_avx2 = cap != "gemm";
            if allow_512 && available() {
                Some(Self::Avx512)
            } else if allow_avx2 && available_avx2() {
                Some(Self::Avx2)
            } else {
                None
            }
        })
    }

    /// Every packed kernel this CPU runs (for tests).
    #[cfg(test)]
    pub(super) fn all_available() -> Vec<Self> {
        let mut kernels = Vec::new();
        if available() {
            kernels.push(Self::Avx512);
        }
        if available_avx2() {
            kernels.push(Self::Avx2);
        }
        kernels
    }
}

/// One depth chunk of a packed product (`packed_gemm::multiply_chunk` or its AVX2 twin).
type Multiply = fn(&mut [f32], usize, &[f32], &[f32], usize, bool);

/// Keys per tile: the depth of the P V product, one packed chunk.
pub(super) const TILE_KEYS: usize = 512;

/// Per-task buffers, reused across the task's heads and key tiles.
#[derive(Default)]
pub(super) struct Scratch {
    /// Q^T * scale, panels [head_dim][NR] per query panel.
    q_t: Vec<f32>,
    /// The key tile's K, panels [head_dim][MR] per MR keys.
    k_panels: Vec<f32>,
    /// The key tile's V^T, panels [keys][MR] per MR head dimensions.
    v_panels: Vec<f32>,
    /// S^T (then P^T) of one query panel: [padded keys][NR].
    scores: Vec<f32>,
    /// O^T per query panel: [padded head_dim][NR].
    out_t: Vec<f32>,
    /// Running maximum and sum per query.
    max: Vec<f32>,
    sum: Vec<f32>,
}

/// softmax(q k^T * scale) v for head `h` of query block `qb` of batch item `b`, written into
/// `rows` (the block's rows of the [.., width] output, this head's columns only), on `kernel`.
/// Panics if the CPU lacks the kernel's instruction set.
pub(super) fn attend_head(
    kernel: PackedKernel,
    qkv: (&[f32], &[f32], &[f32]),
    g: &Geometry,
    at: (usize, usize, usize),
    rows: &mut [f32],
    s: &mut Scratch,
) {
    match kernel {
        PackedKernel::Avx512 => {
            assert!(available(), "the packed attention needs AVX-512F");
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512F was checked above.
            unsafe {
                attend_head_avx512(qkv, g, at, rows, s)
            }
        }
        PackedKernel::Avx2 => {
            assert!(
                available_avx2(),
                "the AVX2 packed attention needs AVX2 and FMA"
            );
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 and FMA were checked above.
            unsafe {
                attend_head_avx2(qkv, g, at, rows, s)
            }
        }
    }
}

/// [`attend_head`] compiled for AVX-512, so that the packing, rescaling and copying around the
/// kernel are vectorised too (as plain x86-64 code they took a fifth of the time).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn attend_head_avx512(
    qkv: (&[f32], &[f32], &[f32]),
    g: &Geometry,
    at: (usize, usize, usize),
    rows: &mut [f32],
    s: &mut Scratch,
) {
    attend_head_with::<MR, NR>(qkv, g, at, rows, s, multiply_chunk)
}

/// [`attend_head`] on the AVX2 kernel, compiled for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_head_avx2(
    qkv: (&[f32], &[f32], &[f32]),
    g: &Geometry,
    at: (usize, usize, usize),
    rows: &mut [f32],
    s: &mut Scratch,
) {
    attend_head_with::<MR_AVX2, NR_AVX2>(qkv, g, at, rows, s, multiply_chunk_avx2)
}

/// The block on an `M` x `N` kernel; inlined into its callers so it takes their instruction set.
#[inline(always)]
fn attend_head_with<const M: usize, const N: usize>(
    (q, k, v): (&[f32], &[f32], &[f32]),
    g: &Geometry,
    (b, h, qb): (usize, usize, usize),
    rows: &mut [f32],
    s: &mut Scratch,
    multiply: Multiply,
) {
    let d = g.head_dim;
    let q0 = qb * g.block_q;
    let queries = g.block_q.min(g.lq - q0);
    let panels = queries.div_ceil(N);
    let d_padded = d.next_multiple_of(M);
    let q_at = (b * g.lq + q0) * g.width + h * d;
    let kv_base = b * g.lk * g.width + h * d;

    // Q^T * scale, one [d][N] panel per N queries, zero columns past the last query.
    s.q_t.clear();
    s.q_t.resize(panels * d * N, 0.0);
    for qi in 0..queries {
        let row = &q[q_at + qi * g.width..][..d];
        let panel = &mut s.q_t[(qi / N) * d * N..][..d * N];
        for (i, &x) in row.iter().enumerate() {
            panel[i * N + qi % N] = x * g.scale;
        }
    }
    s.out_t.clear();
    s.out_t.resize(panels * d_padded * N, 0.0);
    s.max.clear();
    s.max.resize(panels * N, f32::NEG_INFINITY);
    s.sum.clear();
    s.sum.resize(panels * N, 0.0);
    let mut correction = [0f32; N];

    for k0 in (0..g.lk).step_by(TILE_KEYS) {
        let keys = TILE_KEYS.min(g.lk - k0);
        let keys_padded = keys.next_multiple_of(M);
        let kv_at = kv_base + k0 * g.width;
        pack_keys::<M>(&mut s.k_panels, &k[kv_at..], g.width, keys, d);
        pack_values_t::<M>(&mut s.v_panels, &v[kv_at..], g.width, keys, d);
        s.scores.resize(keys_padded * N, 0.0);
        for p in 0..panels {
            // S^T [keys_padded][N] = K [keys_padded, d] x (Q^T * scale) [d, N].
            let q_panel = &s.q_t[p * d * N..][..d * N];
            multiply(&mut s.scores, N, &s.k_panels, q_panel, d, false);
            let probs = &mut s.scores[..keys * N];
            let max = <&mut [f32; N]>::try_from(&mut s.max[p * N..][..N]).expect("N floats");
            let sum = <&mut [f32; N]>::try_from(&mut s.sum[p * N..][..N]).expect("N floats");
            softmax_columns(probs, max, sum, &mut correction);
            // O^T = O^T * correction + V^T [d_padded, keys] x P^T [keys, N].
            let out = &mut s.out_t[p * d_padded * N..][..d_padded * N];
            if correction != [1.0; N] {
                for row in out.chunks_exact_mut(N) {
                    for (o, c) in row.iter_mut().zip(&correction) {
                        *o *= c;
                    }
                }
            }
            multiply(out, N, &s.v_panels, probs, keys, true);
        }
    }

    for qi in 0..queries {
        let (p, lane) = (qi / N, qi % N);
        let inv = 1.0 / s.sum[p * N + lane];
        let out = &s.out_t[p * d_padded * N..];
        let dst = &mut rows[qi * g.width + h * d..][..d];
        for (i, o) in dst.iter_mut().enumerate() {
            *o = out[i * N + lane] * inv;
        }
    }
}

/// K rows `keys` x `d` (row stride `stride`) as panels [d][M] of M keys, zero keys past the
/// last: the left operand of S^T = K Q^T.
#[inline(always)]
fn pack_keys<const M: usize>(dst: &mut Vec<f32>, k: &[f32], stride: usize, keys: usize, d: usize) {
    let padded = keys.next_multiple_of(M);
    dst.clear();
    dst.resize(padded * d, 0.0);
    // Panel by panel, writing each panel in order (scattering row by row into stride-M
    // slots cost a fifth of the attention's time).
    for (p, panel) in dst.chunks_exact_mut(d * M).enumerate() {
        let first = p * M;
        let count = M.min(keys - first);
        for (i, slot) in panel.chunks_exact_mut(M).enumerate() {
            for (r, x) in slot[..count].iter_mut().enumerate() {
                *x = k[(first + r) * stride + i];
            }
        }
    }
}

/// V rows `keys` x `d` (row stride `stride`) as V^T panels [keys][M] of M head dimensions,
/// zero dimensions past `d`: the left operand of O^T += V^T P^T.
#[inline(always)]
fn pack_values_t<const M: usize>(
    dst: &mut Vec<f32>,
    v: &[f32],
    stride: usize,
    keys: usize,
    d: usize,
) {
    let dims = d.div_ceil(M);
    dst.clear();
    dst.resize(dims * keys * M, 0.0);
    for key in 0..keys {
        let row = &v[key * stride..][..d];
        for (p, chunk) in row.chunks(M).enumerate() {
            // An element loop, not copy_from_slice: a memcpy call per 14 floats cost 8%.
            for (x, &y) in dst[p * keys * M + key * M..][..chunk.len()]
                .iter_mut()
                .zip(chunk)
            {
                *x = y;
            }
        }
    }
}
