//! One call: blocks of tile rows, input transforms in parallel, then per chunk of output
//! channels the weight transform, the GEMMs and the output transform.

use std::ops::Range;
use std::sync::Mutex;

use candle_core::{Error, Result};
use rayon::prelude::*;

use super::rows::{input_row, output_row, weights, InputScratch, Plan};
use super::tiles::Kind;
use crate::ops::conv_kernel::ConvGeometry;
use crate::ops::gemm::{gemm_f32_serial, Operand};

/// How one call splits its work.
#[derive(Debug, Clone, Copy)]
pub(super) struct Blocking {
    /// Bytes the transformed input V of one block of tile rows may take.
    pub(super) block_bytes: usize,
    /// Bytes one task's transformed weights U, and its GEMM results M, may each take (sets the
    /// output channels per task, and with `block_bytes` the tile rows per block).
    pub(super) task_bytes: usize,
}

impl Blocking {
    /// 32 MB blocks and 6 MB task buffers: at most 32 MB + 2 * 6 MB per thread of temporaries.
    /// Every block transforms the weights again, so the block holds all of SD1.5's UNet convs
    /// at 512x512 (V of 320@64 at batch 2: 24 MB) in one, where 10 MB blocks transformed the
    /// 320- and 640-channel weights 3 and 2 times (`PIGMENT_WINOGRAD_BYTES` / `PIGMENT_WINOGRAD_TASK_BYTES` override them, for tuning).
    /// Read once per process: every convolution call asks.
    pub(super) fn from_env() -> Self {
        static BLOCKING: std::sync::OnceLock<Blocking> = std::sync::OnceLock::new();
        *BLOCKING.get_or_init(|| {
            let var = |name: &str, default: usize| {
                std::env::var(name)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(default)
                    .max(1)
            };
            Blocking {
                block_bytes: var("PIGMENT_WINOGRAD_BYTES", 32 << 20),
                task_bytes: var("PIGMENT_WINOGRAD_TASK_BYTES", 6 << 20),
            }
        })
    }
}

/// Splits `buf`, seen as blocks of `stride` elements, into one list per range: the range's
/// part of every block (ranges sorted and disjoint, within 0..stride).
pub(super) fn split_strided<'a>(
    buf: &'a mut [f32],
    stride: usize,
    ranges: &[Range<usize>],
) -> Vec<Vec<&'a mut [f32]>> {
    let mut groups: Vec<Vec<&'a mut [f32]>> = ranges.iter().map(|_| Vec::new()).collect();
    for block in buf.chunks_exact_mut(stride) {
        let mut rest = block;
        let mut pos = 0;
        for (group, r) in groups.iter_mut().zip(ranges) {
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(r.start - pos);
            let (mine, tail) = tail.split_at_mut(r.len());
            group.push(mine);
            rest = tail;
            pos = r.end;
        }
    }
    groups
}

/// `count` items in `parts` near-equal contiguous ranges (empty ones dropped).
pub(super) fn even_ranges(count: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, count.max(1));
    (0..parts)
        .map(|i| (i * count / parts)..((i + 1) * count / parts))
        .filter(|r| !r.is_empty())
        .collect()
}

/// What [`checked_output`] hands back.
pub(super) enum Prepared {
    /// Zeros of the output's size, for the caller to fill.
    Zeros(Vec<f32>),
    /// The whole answer already: nothing to multiply (no output pixels or no input channels),
    /// so the output is the bias alone.
    Done(Vec<f32>),
}

/// Checks the operand sizes of a 3x3 convolution call (`weight_len` = 9 * out * in values) and
/// makes its [batch, out, oh, ow] output; `what` names the kernel in the error.
pub(super) fn checked_output(
    x: &[f32],
    weight_len: usize,
    bias: Option<&[f32]>,
    g: &ConvGeometry,
    what: &str,
) -> Result<Prepared> {
    let (oh, ow) = g.output_size()?;
    let (cin, cout) = (g.in_channels, g.out_channels);
    let item_in = cin * g.height * g.width;
    if x.len() != g.batch * item_in
        || weight_len != 9 * cout * cin
        || bias.is_some_and(|b| b.len() != cout)
    {
        return Err(Error::Msg(format!(
            "{what}: input has {} values, the weight {weight_len} and the bias {:?}, expected {}, {} and {cout}",
            x.len(),
            bias.map(|b| b.len()),
            g.batch * item_in,
            9 * cout * cin
        )));
    }
    let mut out = crate::ops::buffers::zeros(g.batch * cout * oh * ow);
    if out.is_empty() || cin == 0 {
        if let Some(bias) = bias {
            for (plane, &b) in out.chunks_exact_mut(oh * ow).zip(bias.iter().cycle()) {
                plane.fill(b);
            }
        }
        return Ok(Prepared::Done(out));
    }
    Ok(Prepared::Zeros(out))
}

/// Scratch of one GEMM task.
#[derive(Default)]
pub(super) struct TaskScratch {
    /// Transformed weights [chunk out][n*n][in].
    pub(super) u: Vec<f32>,
    /// Weights transformed down the columns, [6][3][in].
    pub(super) t: Vec<f32>,
    /// GEMM results M [n*n][chunk out][tiles].
    pub(super) mm: Vec<f32>,
    /// Output transform rows.
    pub(super) s: Vec<f32>,
    pub(super) stage: Vec<f32>,
}

pub(super) fn run<K: Kind>(
    x: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
    blocking: Blocking,
) -> Result<Vec<f32>> {
    let (oh, ow) = g.output_size()?;
    let (cin, cout) = (g.in_channels, g.out_channels);
    if g.kernel != 3 || g.stride != 1 {
        return Err(Error::Msg(format!(
            "winograd conv2d: only 3x3 stride 1, got kernel {} stride {}",
            g.kernel, g.stride
        )));
    }
    let mut out = match checked_output(x, taps.len(), bias, g, "winograd conv2d")? {
        Prepared::Done(out) => return Ok(out),
        Prepared::Zeros(out) => out,
    };
    let (tiles_x, tiles_y) = (ow.div_ceil(K::M), oh.div_ceil(K::M));
    let p = Plan {
        height: g.height,
        width: g.width,
        padding: g.padding,
        cin,
        cout,
        oh,
        ow,
        tiles_x,
        band: (tiles_x + 1) * K::M,
    };
    let nn = K::N * K::N;
    let threads = candle_core::utils::get_num_threads().max(1);
    // Output-channel chunks whose U fits the task budget, a multiple of 16 (the GEMM kernel's
    // row block) where possible, sized so that the threads finish together: the size with the
    // fewest rows on the busiest thread, the largest of equals.
    let co_max = (blocking.task_bytes / (nn * cin * 4)).max(1);
    let per_chunk = if co_max < 16 || cout < 16 {
        co_max.min(cout)
    } else {
        (1..=co_max.min(cout.next_multiple_of(16)) / 16)
            .map(|k| 16 * k)
            .min_by_key(|&per| (cout.div_ceil(per).div_ceil(threads) * per, usize::MAX - per))
            .unwrap_or(16)
    };
    let chunks: Vec<Range<usize>> = (0..cout)
        .step_by(per_chunk)
        .map(|c| c..(c + per_chunk).min(cout))
        .collect();
    // Blocks of whole tile rows (over the batch) whose V (all input channels) fits the block
    // budget and whose M (one chunk's GEMM results) the task budget.
    let rows_total = g.batch * tiles_y;
    let rows_max = (blocking.block_bytes / (nn * cin * tiles_x * 4))
        .min(blocking.task_bytes / (nn * per_chunk * tiles_x * 4))
        .max(1);
    let row_blocks = even_ranges(rows_total, rows_total.div_ceil(rows_max));
    let in_groups = even_ranges(cin, threads * 4);
    // V for the largest block, allocated once (every element is written before it is read).
    let max_rows = row_blocks.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut v_buf = crate::ops::buffers::zeros(nn * cin * max_rows * tiles_x);
    // One scratch per pool thread, reused by every task and block of this call.
    let scratches: Vec<Mutex<TaskScratch>> = (0..rayon::current_num_threads().max(1))
        .map(|_| Mutex::default())
        .collect();
    for rows in row_blocks {
        let tiles = rows.len() * tiles_x;
        let v = &mut v_buf[..nn * cin * tiles];
        // 1. Input transform, parallel over channel groups.
        let parts: Vec<Range<usize>> = in_groups
            .iter()
            .map(|r| r.start * tiles..r.end * tiles)
            .collect();
        split_strided(v, cin * tiles, &parts)
            .into_par_iter()
            .zip(in_groups.par_iter())
            .for_each_init(
                || InputScratch::new(&p),
                |scratch, (mut v_group, channels)| {
                    for (cl, c) in channels.clone().enumerate() {
                        for (ri, row) in rows.clone().enumerate() {
                            let (b, ty) = (row / tiles_y, row % tiles_y);
                            let plane =
                                &x[(b * cin + c) * g.height * g.width..][..g.height * g.width];
                            let col0 = cl * tiles + ri * tiles_x;
                            input_row::<K>(&p, plane, ty, &mut v_group, col0, scratch);
                        }
                    }
                },
            );
        // 2. Per output-channel chunk: weight transform, n*n GEMMs, output transform.
        let planes: Vec<Range<usize>> = chunks
            .iter()
            .map(|r| r.start * oh * ow..r.end * oh * ow)
            .collect();
        let v = &*v;
        split_strided(&mut out, cout * oh * ow, &planes)
            .into_par_iter()
            .zip(chunks.par_iter())
            .try_for_each(|(mut out_items, co)| {
                let slot = rayon::current_thread_index().unwrap_or(0) % scratches.len();
                let mut scratch = scratches[slot].lock().unwrap_or_else(|e| e.into_inner());
                let TaskScratch { u, t, mm, s, stage } = &mut *scratch;
                let per_e = co.len() * tiles;
                u.resize(co.len() * nn * cin, 0.0);
                t.resize(18 * cin, 0.0);
                mm.resize(nn * per_e, 0.0);
                s.resize(6 * 4 * tiles_x, 0.0);
                stage.resize(4 * ow, 0.0);
                weights::<K>(&p, taps, co, u, t);
                for (e, dst) in mm.chunks_exact_mut(per_e).enumerate() {
                    gemm_f32_serial(
                        dst,
                        tiles,
                        Operand {
                            data: u,
                            offset: e * cin,
                            row_stride: nn * cin,
                            col_stride: 1,
                        },
                        Operand {
                            data: v,
                            offset: e * cin * tiles,
                            row_stride: tiles,
                            col_stride: 1,
                        },
                        (co.len(), tiles, cin),
                        false,
                    )?;
                }
                for (ol, o) in co.clone().enumerate() {
                    let bias_o = bias.map_or(0.0, |b| b[o]);
                    for (ri, row) in rows.clone().enumerate() {
                        let (b, ty) = (row / tiles_y, row % tiles_y);
                        let plane = &mut out_items[b][ol * oh * ow..][..oh * ow];
                        let base = ol * tiles + ri * tiles_x;
                        let m_rows: [&[f32]; 36] = std::array::from_fn(|e| {
                            if e < nn {
                                &mm[e * per_e + base..][..tiles_x]
                            } else {
                                &mm[..0]
                            }
                        });
                        output_row::<K>(&p, &m_rows, bias_o, ty, plane, s, stage);
                    }
                }
                Ok::<(), Error>(())
            })?;
    }
    Ok(out)
}
