//! The fused attention's query block on `packed_gemm`'s AVX-512 kernel, computed transposed:
//! per key tile, S^T = K Q^T [keys, queries] and then O^T += V^T P^T [head_dim, queries].
//!
//! Why transposed: in S^T each query is a column, so the online softmax (running maximum, sum,
//! rescale) runs across 32 queries at once in vector lanes with no horizontal reduction
//! (`fast_exp::softmax_columns`), and the probabilities it leaves in place, [keys][32 queries]
//! per query panel, are exactly the packed right operand ([kc][NR] panels) of the P V product,
//! so nothing is packed between the two GEMMs. The operands that are packed are small: Q^T once
//! per query block and head (with the softmax scale folded in), and each key tile's K and V^T
//! once per tile, reused by every query panel of the block. (The same kernel in the usual
//! orientation, S = Q K^T with K packed per tile and P handed to the `gemm` crate, ran slower
//! than `gemm` alone: 95-101 against 119-126 GFLOP/s.)
//!
//! Padding: keys are padded to whole MR-row panels of S^T and head dimensions to whole
//! MR-row panels of O^T with zeros; padded key rows of S^T are computed but never read (the
//! softmax and the P V product take only the tile's real keys), padded query columns hold
//! scores of a zero query and are never written out.

use super::attention::Geometry;
use super::fast_exp::softmax_columns;
use super::packed_gemm::{available, multiply_chunk, MR, NR};

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
    max: Vec<[f32; NR]>,
    sum: Vec<[f32; NR]>,
}

/// softmax(q k^T * scale) v for head `h` of query block `qb` of batch item `b`, written into
/// `rows` (the block's rows of the [.., width] output, this head's columns only). Only for CPUs
/// where `packed_gemm::available()`; panics on others.
pub(super) fn attend_head(
    qkv: (&[f32], &[f32], &[f32]),
    g: &Geometry,
    at: (usize, usize, usize),
    rows: &mut [f32],
    s: &mut Scratch,
) {
    assert!(available(), "the packed attention needs AVX-512F");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F was checked above.
    unsafe {
        attend_head_avx512(qkv, g, at, rows, s)
    }
}

/// [`attend_head`] compiled for AVX-512, so that the packing, rescaling and copying around the
/// kernel are vectorised too (as plain x86-64 code they took a fifth of the time).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn attend_head_avx512(
    (q, k, v): (&[f32], &[f32], &[f32]),
    g: &Geometry,
    (b, h, qb): (usize, usize, usize),
    rows: &mut [f32],
    s: &mut Scratch,
) {
    let d = g.head_dim;
    let q0 = qb * g.block_q;
    let queries = g.block_q.min(g.lq - q0);
    let panels = queries.div_ceil(NR);
    let d_padded = d.next_multiple_of(MR);
    let q_at = (b * g.lq + q0) * g.width + h * d;
    let kv_base = b * g.lk * g.width + h * d;

    // Q^T * scale, one [d][NR] panel per NR queries, zero columns past the last query.
    s.q_t.clear();
    s.q_t.resize(panels * d * NR, 0.0);
    for qi in 0..queries {
        let row = &q[q_at + qi * g.width..][..d];
        let panel = &mut s.q_t[(qi / NR) * d * NR..][..d * NR];
        for (i, &x) in row.iter().enumerate() {
            panel[i * NR + qi % NR] = x * g.scale;
        }
    }
    s.out_t.clear();
    s.out_t.resize(panels * d_padded * NR, 0.0);
    s.max.clear();
    s.max.resize(panels, [f32::NEG_INFINITY; NR]);
    s.sum.clear();
    s.sum.resize(panels, [0.0; NR]);
    let mut correction = [0f32; NR];

    for k0 in (0..g.lk).step_by(TILE_KEYS) {
        let keys = TILE_KEYS.min(g.lk - k0);
        let keys_padded = keys.next_multiple_of(MR);
        let kv_at = kv_base + k0 * g.width;
        pack_keys(&mut s.k_panels, &k[kv_at..], g.width, keys, d);
        pack_values_t(&mut s.v_panels, &v[kv_at..], g.width, keys, d);
        s.scores.resize(keys_padded * NR, 0.0);
        for p in 0..panels {
            // S^T [keys_padded][NR] = K [keys_padded, d] x (Q^T * scale) [d, NR].
            let q_panel = &s.q_t[p * d * NR..][..d * NR];
            multiply_chunk(&mut s.scores, NR, &s.k_panels, q_panel, d, false);
            let probs = &mut s.scores[..keys * NR];
            softmax_columns(probs, &mut s.max[p], &mut s.sum[p], &mut correction);
            // O^T = O^T * correction + V^T [d_padded, keys] x P^T [keys, NR].
            let out = &mut s.out_t[p * d_padded * NR..][..d_padded * NR];
            if correction != [1.0; NR] {
                for row in out.chunks_exact_mut(NR) {
                    for (o, c) in row.iter_mut().zip(&correction) {
                        *o *= c;
                    }
                }
            }
            multiply_chunk(out, NR, &s.v_panels, probs, keys, true);
        }
    }

    for qi in 0..queries {
        let (p, lane) = (qi / NR, qi % NR);
        let inv = 1.0 / s.sum[p][lane];
        let out = &s.out_t[p * d_padded * NR..];
        let dst = &mut rows[qi * g.width + h * d..][..d];
        for (i, o) in dst.iter_mut().enumerate() {
            *o = out[i * NR + lane] * inv;
        }
    }
}

/// K rows `keys` x `d` (row stride `stride`) as panels [d][MR] of MR keys, zero keys past the
/// last: the left operand of S^T = K Q^T.
fn pack_keys(dst: &mut Vec<f32>, k: &[f32], stride: usize, keys: usize, d: usize) {
    let padded = keys.next_multiple_of(MR);
    dst.clear();
    dst.resize(padded * d, 0.0);
    // Panel by panel, writing each panel in order (scattering row by row into stride-MR
    // slots cost a fifth of the attention's time).
    for (p, panel) in dst.chunks_exact_mut(d * MR).enumerate() {
        let first = p * MR;
        let count = MR.min(keys - first);
        for (i, slot) in panel.chunks_exact_mut(MR).enumerate() {
            for (r, x) in slot[..count].iter_mut().enumerate() {
                *x = k[(first + r) * stride + i];
            }
        }
    }
}

/// V rows `keys` x `d` (row stride `stride`) as V^T panels [keys][MR] of MR head dimensions,
/// zero dimensions past `d`: the left operand of O^T += V^T P^T.
fn pack_values_t(dst: &mut Vec<f32>, v: &[f32], stride: usize, keys: usize, d: usize) {
    let dims = d.div_ceil(MR);
    dst.clear();
    dst.resize(dims * keys * MR, 0.0);
    for key in 0..keys {
        let row = &v[key * stride..][..d];
        for (p, chunk) in row.chunks(MR).enumerate() {
            // An element loop, not copy_from_slice: a memcpy call per 14 floats cost 8%.
            for (x, &y) in dst[p * keys * MR + key * MR..][..chunk.len()]
                .iter_mut()
                .zip(chunk)
            {
                *x = y;
            }
        }
    }
}
