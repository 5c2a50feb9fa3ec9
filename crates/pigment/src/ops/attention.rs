//! Fused multi-head attention for CPU f32 inference, flash-attention style (Dao et al. 2022,
//! "FlashAttention", Algorithm 1): queries in blocks, keys and values streamed in blocks, the
//! softmax computed online (running row maximum and sum, earlier partial outputs rescaled by
//! exp(m_old - m_new)), so the [Lq, Lk] score matrix is never materialised: memory per task is
//! one [block_q, block_k] tile. Heads are read in place from the [B, L, H*D] projections (no
//! split-heads copies) and tasks (batch item, query block), each over every head, run on candle's
//! thread pool.
//!
//! Same result as softmax(q k^T / sqrt(d)) v up to f32 rounding of a differently ordered sum.
//!
//! Two block kernels: on x86-64 CPUs with AVX-512 or AVX2 + FMA, attention_packed.rs
//! (S^T = K Q^T and O^T += V^T P^T on `packed_gemm`'s kernels, the softmax across queries in
//! vector lanes; on SD's 4096-token layer, batch 2, 2-core EPYC: 160-169 GFLOP/s with the
//! AVX-512 kernel, 157-163 with the AVX2 one); elsewhere [`attend_block`] here on the `gemm`
//! crate (133-149 GFLOP/s on the same layer and machine).

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::attention_packed::{attend_head, PackedKernel, Scratch};
use super::fast_exp::{exp_scaled_sum, exp_scaled_sum_max, max};
use super::gemm::{gemm_f32_serial, Operand};

static FAST_ATTENTION: AtomicBool = AtomicBool::new(true);

/// Turns the fused CPU attention on or off for the whole process (on by default): for
/// before/after timings and for checking it against the unfused reference.
pub fn set_fast_attention(enabled: bool) {
    FAST_ATTENTION.store(enabled, Ordering::Relaxed);
}

/// softmax(q k^T * scale) v over `heads` heads with the fused kernel, when it applies: CPU,
/// nothing tracked for gradients, fast attention on. f16/bf16 inputs run in f32 (as torch's
/// fused CPU attention accumulates) and come back in their dtype. None: use the unfused path.
pub fn fused_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f64,
) -> Result<Option<Tensor>> {
    let applies = FAST_ATTENTION.load(Ordering::Relaxed)
        && matches!(q.device(), Device::Cpu)
        && !(q.track_op() || k.track_op() || v.track_op())
        && matches!(q.dtype(), DType::F32 | DType::F16 | DType::BF16);
    if !applies {
        return Ok(None);
    }
    let dtype = q.dtype();
    let f32_contiguous = |t: &Tensor| t.to_dtype(DType::F32)?.contiguous();
    let out = f32_contiguous(q)?.apply_op3_no_bwd(
        &f32_contiguous(k)?,
        &f32_contiguous(v)?,
        &FusedAttention {
            heads,
            scale: scale as f32,
        },
    )?;
    Ok(Some(out.to_dtype(dtype)?))
}

/// Queries per task at most (the `gemm` crate path).
const BLOCK_Q: usize = 256;
/// Queries per task at most on the packed kernel (attention_packed.rs).
const PACKED_BLOCK_Q: usize = 2048;
/// Keys per streamed tile.
const BLOCK_K: usize = 512;
/// How far (in scaled logits) a tile's scores may rise above the running maximum and still be
/// exponentiated against it: exp(60) = 1.1e26, so the exponentials, their sums over any key
/// count below 1e12 and their products with values stay finite in f32 (max 3.4e38).
const EXP_HEADROOM: f32 = 60.0;

/// softmax(q k^T * scale) v per head; q [B, Lq, H*D], k and v [B, Lk, H*D] (contiguous f32).
#[derive(Debug, Clone, Copy)]
pub struct FusedAttention {
    pub heads: usize,
    pub scale: f32,
}

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    super::buffers::contiguous_f32(storage, layout, "fused attention")
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "pigment-fused-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, lq, width) = ql.shape().dims3()?;
        let (kb, lk, kw) = kl.shape().dims3()?;
        if vl.shape() != kl.shape() || kb != batch || kw != width || width % self.heads != 0 {
            candle_core::bail!(
                "fused attention: q {:?}, k {:?}, v {:?} do not fit {} heads",
                ql.shape(),
                kl.shape(),
                vl.shape(),
                self.heads
            );
        }
        let (q, k, v) = (f32_slice(qs, ql)?, f32_slice(ks, kl)?, f32_slice(vs, vl)?);
        let shape = (batch, lq, lk, width);
        let out = self.attend((q, k, v), shape, PackedKernel::best())?;
        Ok((CpuStorage::F32(out), ql.shape().clone()))
    }
}

impl FusedAttention {
    /// The [batch, lq, width] output for q [batch, lq, width] and k, v [batch, lk, width], on
    /// one of `packed_gemm`'s kernels (attention_packed.rs) or, with None, on the `gemm` crate.
    fn attend(
        &self,
        (q, k, v): (&[f32], &[f32], &[f32]),
        (batch, lq, lk, width): (usize, usize, usize, usize),
        packed: Option<PackedKernel>,
    ) -> Result<Vec<f32>> {
        let head_dim = width / self.heads;
        // Smaller query blocks where a few large ones would leave threads idle (a task does
        // every head of its block): at least two tasks per thread where the queries allow.
        let threads = rayon::current_num_threads().max(1);
        // The packed kernel packs each key tile once per query block, so it wants the largest
        // blocks that still give every thread two tasks (SD's 4096-token layer at batch 2 on
        // 2 threads: 256 / 512 / 1024 / 2048 queries, 144 / 156 / 165 / 169 GFLOP/s).
        let largest = if packed.is_some() {
            PACKED_BLOCK_Q
        } else {
            BLOCK_Q
        };
        let block_q = largest
            .min(lq.div_ceil((2 * threads).div_ceil(batch.max(1))))
            .max(1);
        let geometry = Geometry {
            lq,
            lk,
            width,
            head_dim,
            scale: self.scale,
            block_q,
        };
        // Tasks (batch item, query block), all heads each: a task owns its block's rows of the
        // output and writes each head's result straight into them (tasks per head collected
        // their blocks first: a second output's worth of memory, 10.5 MB for SD's 64x64 layer).
        let mut out = super::buffers::zeros(batch * lq * width);
        let tasks: Vec<(usize, usize, &mut [f32])> = out
            .chunks_mut(lq * width)
            .enumerate()
            .flat_map(|(b, item)| {
                item.chunks_mut(block_q * width)
                    .enumerate()
                    .map(move |(qb, rows)| (b, qb, rows))
            })
            .collect();
        let heads = self.heads;
        if let Some(kernel) = packed {
            tasks.into_par_iter().for_each(|(b, qb, rows)| {
                let mut scratch = Scratch::default();
                for h in 0..heads {
                    attend_head(kernel, (q, k, v), &geometry, (b, h, qb), rows, &mut scratch);
                }
            });
            return Ok(out);
        }
        tasks.into_par_iter().try_for_each(|(b, qb, rows)| {
            for h in 0..heads {
                let block = attend_block(q, k, v, &geometry, b, h, qb)?;
                for (dst, src) in rows
                    .chunks_exact_mut(width)
                    .zip(block.chunks_exact(head_dim))
                {
                    dst[h * head_dim..][..head_dim].copy_from_slice(src);
                }
            }
            Ok::<(), candle_core::Error>(())
        })?;
        Ok(out)
    }
}

pub(super) struct Geometry {
    pub(super) lq: usize,
    pub(super) lk: usize,
    pub(super) width: usize,
    pub(super) head_dim: usize,
    pub(super) scale: f32,
    /// Queries per task.
    pub(super) block_q: usize,
}

/// The output rows [rows, head_dim] of query block `qb` of head `h` in batch item `b`.
fn attend_block(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: &Geometry,
    b: usize,
    h: usize,
    qb: usize,
) -> Result<Vec<f32>> {
    let d = g.head_dim;
    let q0 = qb * g.block_q;
    let rows = g.block_q.min(g.lq - q0);
    let mut out = vec![0f32; rows * d];
    let mut row_max = vec![f32::NEG_INFINITY; rows];
    let mut row_sum = vec![0f32; rows];
    let mut scores = vec![0f32; rows * BLOCK_K.min(g.lk)];
    let q_at = (b * g.lq + q0) * g.width + h * d;
    let kv_base = b * g.lk * g.width + h * d;
    for k0 in (0..g.lk).step_by(BLOCK_K) {
        let cols = BLOCK_K.min(g.lk - k0);
        let kv_at = kv_base + k0 * g.width;
        // S = Q K^T for this tile: Q rows [rows, d] (row stride = width), K^T [d, cols].
        gemm_f32_serial(
            &mut scores,
            cols,
            Operand {
                data: q,
                offset: q_at,
                row_stride: g.width,
                col_stride: 1,
            },
            Operand {
                data: k,
                offset: kv_at,
                row_stride: 1,
                col_stride: g.width,
            },
            (rows, cols, d),
            false,
        )?;
        for (r, s) in scores.chunks_exact_mut(cols).take(rows).enumerate() {
            if row_max[r] != f32::NEG_INFINITY {
                // Later tiles: exponentiate against the running maximum and check it in the
                // same pass. Softmax does not depend on the shift, so it only has to keep the
                // exponentials finite: a tile whose scores rise at most EXP_HEADROOM above it
                // is added as it is; a higher one is recomputed and rescaled below.
                let (tile_sum, tile_max) = exp_scaled_sum_max(s, g.scale, row_max[r]);
                if tile_max * g.scale - row_max[r] <= EXP_HEADROOM {
                    row_sum[r] += tile_sum;
                    continue;
                }
                let q_row = &q[q_at + r * g.width..][..d];
                for (j, sj) in s.iter_mut().enumerate() {
                    let k_row = &k[kv_at + j * g.width..][..d];
                    *sj = q_row.iter().zip(k_row).map(|(a, b)| a * b).sum();
                }
            }
            let new_max = row_max[r].max(max(s) * g.scale);
            // p = exp(scale * s - m): the scale folded in, the running maximum subtracted.
            let tile_sum = exp_scaled_sum(s, g.scale, new_max);
            let correction = if row_max[r] == f32::NEG_INFINITY {
                0.0
            } else {
                (row_max[r] - new_max).exp()
            };
            row_sum[r] = row_sum[r] * correction + tile_sum;
            row_max[r] = new_max;
            if correction != 1.0 {
                for o in &mut out[r * d..(r + 1) * d] {
                    *o *= correction;
                }
            }
        }
        // O += P V for this tile: P [rows, cols], V rows [cols, d].
        gemm_f32_serial(
            &mut out,
            d,
            Operand {
                data: &scores,
                offset: 0,
                row_stride: cols,
                col_stride: 1,
            },
            Operand {
                data: v,
                offset: kv_at,
                row_stride: g.width,
                col_stride: 1,
            },
            (rows, d, cols),
            true,
        )?;
    }
    for (r, row) in out.chunks_exact_mut(d).enumerate() {
        let inv = 1.0 / row_sum[r];
        for o in row {
            *o *= inv;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// softmax(q k^T * scale) v with candle's ops, heads split explicitly.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f64) -> Tensor {
        let split = |t: &Tensor| {
            let (b, l, c) = t.dims3().unwrap();
            t.reshape((b, l, heads, c / heads))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (b, lq, c) = q.dims3().unwrap();
        let scores = (split(q) * scale)
            .unwrap()
            .matmul(&split(k).t().unwrap())
            .unwrap();
        let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        probs
            .matmul(&split(v))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, lq, c))
            .unwrap()
    }

    /// Query and key counts that are and are not multiples of the blocks (self-attention at
    /// several sizes, cross-attention to 77 tokens), one and several heads, large logits.
    #[test]
    fn matches_unfused_attention() -> Result<()> {
        let dev = Device::Cpu;
        for &(b, lq, lk, heads, d, spread) in &[
            (2, 64, 64, 1, 8, 1.0),
            (1, 100, 77, 4, 16, 1.0),
            (2, 1030, 1030, 2, 40, 1.0),
            (1, 70, 1200, 3, 8, 8.0),
            (1, 5, 3, 1, 4, 30.0),
        ] {
            let q = Tensor::randn(0f32, spread, (b, lq, heads * d), &dev)?;
            let k = Tensor::randn(0f32, 1.0, (b, lk, heads * d), &dev)?;
            let v = Tensor::randn(0f32, 1.0, (b, lk, heads * d), &dev)?;
            let scale = 1.0 / (d as f64).sqrt();
            let fused = fused_attention(&q, &k, &v, heads, scale)?.expect("applies on CPU f32");
            let expected = reference(&q, &k, &v, heads, scale);
            let diff = (fused - expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(
                diff < 2e-5,
                "b {b} lq {lq} lk {lk} heads {heads} d {d}: differs by {diff}"
            );
        }
        Ok(())
    }

    /// The packed kernel and the `gemm` crate path against each other and the reference on
    /// ragged shapes (an AVX-512 machine runs the packed one through `fused_attention`, so the
    /// other is checked here directly; elsewhere only the `gemm` path exists).
    #[test]
    fn both_kernels_match_the_reference() -> Result<()> {
        let dev = Device::Cpu;
        for &(b, lq, lk, heads, d) in &[(2, 97, 77, 3, 20), (1, 1100, 530, 2, 40), (1, 3, 1, 1, 72)]
        {
            let q = Tensor::randn(0f32, 2.0, (b, lq, heads * d), &dev)?;
            let k = Tensor::randn(0f32, 1.0, (b, lk, heads * d), &dev)?;
            let v = Tensor::randn(0f32, 1.0, (b, lk, heads * d), &dev)?;
            let scale = 1.0 / (d as f64).sqrt();
            let expected = reference(&q, &k, &v, heads, scale)
                .flatten_all()?
                .to_vec1::<f32>()?;
            let op = FusedAttention {
                heads,
                scale: scale as f32,
            };
            let (qv, kv, vv) = (
                q.flatten_all()?.to_vec1::<f32>()?,
                k.flatten_all()?.to_vec1::<f32>()?,
                v.flatten_all()?.to_vec1::<f32>()?,
            );
            let kernels: Vec<Option<PackedKernel>> = std::iter::once(None)
                .chain(PackedKernel::all_available().into_iter().map(Some))
                .collect();
            for &packed in &kernels {
                let got = op.attend((&qv, &kv, &vv), (b, lq, lk, heads * d), packed)?;
                let diff = got
                    .iter()
                    .zip(&expected)
                    .map(|(a, e)| (a - e).abs())
                    .fold(0f32, f32::max);
                assert!(
                    diff < 2e-5,
                    "kernel {packed:?}, b {b} lq {lq} lk {lk} d {d}: differs by {diff}"
                );
            }
        }
        Ok(())
    }

    /// A key in a later tile whose logit rises far above the first tile's maximum (more than
    /// EXP_HEADROOM) takes the recompute-and-rescale path; the result is still the softmax.
    #[test]
    fn a_late_huge_logit_is_rescaled() -> Result<()> {
        let dev = Device::Cpu;
        let (lq, lk, d) = (3, BLOCK_K * 2 + 76, 8);
        // Query 0 is all ones (|q|^2 = d), so its logit against the planted key is fixed.
        let mut q_rows = Tensor::randn(0f32, 1.0, (1, lq, d), &dev)?.to_vec3::<f32>()?;
        q_rows[0][0] = vec![1.0; d];
        let q = Tensor::new(q_rows.clone(), &dev)?;
        let mut keys = Tensor::randn(0f32, 1.0, (1, lk, d), &dev)?.to_vec3::<f32>()?;
        let late = BLOCK_K + 300;
        keys[0][late] = q_rows[0][0].iter().map(|x| x * 60.0).collect();
        let k = Tensor::new(keys, &dev)?;
        let v = Tensor::randn(0f32, 1.0, (1, lk, d), &dev)?;
        let scale = 1.0 / (d as f64).sqrt();
        let logit = q_rows[0][0].iter().map(|x| x * x * 60.0).sum::<f32>() * scale as f32;
        assert!(
            logit > 2.0 * EXP_HEADROOM,
            "the case must exceed the headroom: {logit}"
        );
        let fused = fused_attention(&q, &k, &v, 1, scale)?.expect("applies on CPU f32");
        let expected = reference(&q, &k, &v, 1, scale);
        let diff = (fused - expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 2e-5, "differs by {diff}");
        Ok(())
    }

    /// Gradient-tracked inputs and a mismatched shape are not for the fused kernel.
    #[test]
    fn training_inputs_and_bad_shapes() -> Result<()> {
        let dev = Device::Cpu;
        let q = candle_core::Var::from_tensor(&Tensor::zeros((1, 4, 8), DType::F32, &dev)?)?;
        assert!(fused_attention(&q, &q, &q, 2, 1.0)?.is_none());
        let q = Tensor::zeros((1, 4, 8), DType::F32, &dev)?;
        let k = Tensor::zeros((1, 4, 6), DType::F32, &dev)?;
        assert!(fused_attention(&q, &k, &k, 2, 1.0).is_err());
        Ok(())
    }
}
