//! A1111's "Original" emphasis (`modules/sd_emphasis.py::EmphasisOriginal`) and the joining of
//! a long prompt's chunks (`sd_hijack_clip.py::forward`, `sd_samplers_cfg_denoiser.py::pad_cond`).
//!
//! Each chunk's hidden states are scaled token by token by their multipliers, then rescaled so
//! that the mean over the whole chunk is what it was before ("restoring original mean is likely
//! not correct, but it seems to work well to prevent artifacts", A1111):
//! `z' = z * m[:, None] * (mean(z) / mean(z * m[:, None]))`.

use candle_core::{DType, Tensor};

use super::chunks::PromptChunk;
use crate::error::{Error, Result};

/// Applies the multipliers of one chunk to its encoder output `z` (`[1, tokens, hidden]`, one
/// multiplier per token). Computed in f32 (A1111's multipliers are an f32 tensor, which promotes
/// an f16 `z`) and returned in `z`'s dtype.
pub fn apply_emphasis(z: &Tensor, multipliers: &[f32]) -> Result<Tensor> {
    let (batch, tokens, _hidden) = z.dims3()?;
    if batch != 1 || tokens != multipliers.len() {
        return Err(Error::invalid(format!(
            "emphasis needs encoder output [1, {}, hidden] for {} multipliers, got {:?}; encode \
             one chunk at a time",
            multipliers.len(),
            multipliers.len(),
            z.dims()
        )));
    }
    let dtype = z.dtype();
    let z = z.to_dtype(DType::F32)?;
    let original_mean = z.mean_all()?.to_scalar::<f32>()?;
    let m = Tensor::from_slice(multipliers, (1, tokens, 1), z.device())?;
    let weighted = z.broadcast_mul(&m)?;
    let new_mean = weighted.mean_all()?.to_scalar::<f32>()?;
    let rescaled = (weighted * f64::from(original_mean / new_mean))?;
    Ok(rescaled.to_dtype(dtype)?)
}

/// One row of a batch for [`apply_emphasis_batch`]: encoder output `[1, tokens, hidden]`, its
/// multipliers, and how many times the row stands in the batch.
pub struct EmphasisRow<'a> {
    pub z: &'a Tensor,
    pub multipliers: &'a [f32],
    pub count: usize,
}

/// [`apply_emphasis`] over a batch, as A1111's `process_tokens` runs it: the means are taken over
/// the whole batch (every prompt of a prompt-editing schedule is encoded in one batch), so a row
/// repeated `count` times counts `count` times. Rows whose prompts repeat are encoded once and
/// passed with their count instead. When every multiplier is 1 the rows come back unchanged
/// (A1111's `z * 1 * (m / m)` is `z` exactly).
pub fn apply_emphasis_batch(rows: &[EmphasisRow]) -> Result<Vec<Tensor>> {
    if rows.iter().all(|r| r.multipliers.iter().all(|&m| m == 1.0)) {
        return Ok(rows.iter().map(|r| r.z.clone()).collect());
    }
    let mut weighted = Vec::with_capacity(rows.len());
    let (mut original_sum, mut new_sum, mut elements) = (0f64, 0f64, 0f64);
    for row in rows {
        let (batch, tokens, hidden) = row.z.dims3()?;
        if batch != 1 || tokens != row.multipliers.len() {
            return Err(Error::invalid(format!(
                "emphasis needs encoder output [1, {}, hidden] per row, got {:?}",
                row.multipliers.len(),
                row.z.dims()
            )));
        }
        let z = row.z.to_dtype(DType::F32)?;
        let m = Tensor::from_slice(row.multipliers, (1, tokens, 1), z.device())?;
        let scaled = z.broadcast_mul(&m)?;
        let count = row.count as f64;
        // Sums in f64: the means may be near zero (SD2), where f32 rounding of long sums shows
        // in their ratio; torch's pairwise f32 sum is close to the exact value.
        original_sum += count * z.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        new_sum += count * scaled.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        elements += count * (tokens * hidden) as f64;
        weighted.push(scaled);
    }
    let original_mean = (original_sum / elements) as f32;
    let new_mean = (new_sum / elements) as f32;
    let factor = f64::from(original_mean / new_mean);
    rows.iter()
        .zip(weighted)
        .map(|(row, w)| Ok((w * factor)?.to_dtype(row.z.dtype())?))
        .collect()
}

/// Encodes every chunk with `encode` (ids -> `[1, 77, hidden]`), applies its emphasis and joins
/// the results along the token axis: `[1, 77 * chunks, hidden]`. The UNet's cross-attention
/// accepts any context length.
pub fn encode_weighted(
    chunks: &[PromptChunk],
    mut encode: impl FnMut(&[u32]) -> Result<Tensor>,
) -> Result<Tensor> {
    if chunks.is_empty() {
        return Err(Error::invalid(
            "no prompt chunks to encode; tokenize_weighted always returns at least one",
        ));
    }
    let encoded = chunks
        .iter()
        .map(|chunk| apply_emphasis(&encode(&chunk.ids)?, &chunk.multipliers))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&encoded, 1)?)
}

/// A1111's "pad prompt/negative prompt to be same length" (`CFGDenoiser.pad_cond_uncond`): the
/// shorter of `cond` and `uncond` (`[batch, tokens, hidden]`) gets the encoded empty prompt
/// `empty` (`[1, 77, hidden]`) appended as many times as whole chunks are missing. Without it
/// A1111 runs the two through the UNet separately.
pub fn pad_cond_uncond(cond: &Tensor, uncond: &Tensor, empty: &Tensor) -> Result<(Tensor, Tensor)> {
    let (cond_len, uncond_len, empty_len) = (cond.dim(1)?, uncond.dim(1)?, empty.dim(1)?);
    if empty_len == 0 {
        return Err(Error::invalid(
            "the empty-prompt encoding has no tokens; encode \"\" first",
        ));
    }
    let repeats = (cond_len as i64 - uncond_len as i64).div_euclid(empty_len as i64);
    let pad = |t: &Tensor, n: usize| -> Result<Tensor> {
        let batch = t.dim(0)?;
        let filler = empty.repeat((batch, n, 1))?;
        Ok(Tensor::cat(&[t, &filler], 1)?)
    };
    match repeats {
        r if r < 0 => Ok((pad(cond, (-r) as usize)?, uncond.clone())),
        r if r > 0 => Ok((cond.clone(), pad(uncond, r as usize)?)),
        _ => Ok((cond.clone(), uncond.clone())),
    }
}
