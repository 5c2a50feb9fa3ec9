//! Weights held smaller than the compute dtype and widened inside each forward: f16 storage
//! (2 bytes a weight) and per-output-channel symmetric int8 (1 byte a weight plus one f32 scale
//! a row), for the linear and convolution weights of the UNet and the text encoder.
//!
//! int8 is the "absmax" weight quantisation of LLM.int8() (Dettmers et al. 2022, eq. 1) taken
//! per output channel (one scale per row of the [out, in * k * k] matrix, as the per-channel
//! weight observers of PyTorch's quantization): `s = max|W_row| / 127`, `q = round(W / s)` in
//! [-127, 127], `W ~ q * s`. The error of each weight is at most `s / 2`. Compute stays in the
//! model's dtype: the weight is dequantised into a temporary tensor when the layer runs, so only
//! one layer's full-precision weight exists at a time.
//!
//! Which layers pack their weights is chosen while a model is built, with [`WeightFormatScope`]
//! (see `StableDiffusion::load_with_weights`): `ops::linear` and `ops::conv2d` read the format in
//! force on their thread. Trainable weights (variables) are never packed.

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};

use crate::error::{Error, Result};

/// How the linear and convolution weights of a model are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// In the compute dtype, as loaded (f32 unless `--dtype` says otherwise).
    #[default]
    Full,
    /// f16, widened to the compute dtype in each forward (half of f32's memory).
    F16,
    /// Per-output-channel symmetric int8 with an f32 scale per row (about a quarter of f32's).
    Q8,
}

impl FromStr for WeightFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "full" => Ok(Self::Full),
            "f16" => Ok(Self::F16),
            "q8" | "int8" => Ok(Self::Q8),
            other => Err(Error::invalid(format!(
                "--weights {other}: unknown weight format; use f32 (weights in the compute \
                 dtype, the default), f16 (half the memory) or q8 (8-bit, about a quarter)"
            ))),
        }
    }
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "f32",
            Self::F16 => "f16",
            Self::Q8 => "q8",
        })
    }
}

thread_local! {
    static CURRENT: Cell<WeightFormat> = const { Cell::new(WeightFormat::Full) };
}

/// Sets the weight format for layers built on this thread until it is dropped (then the
/// previous format is back).
pub struct WeightFormatScope {
    previous: WeightFormat,
}

impl WeightFormatScope {
    pub fn enter(format: WeightFormat) -> Self {
        Self {
            previous: CURRENT.with(|c| c.replace(format)),
        }
    }
}

impl Drop for WeightFormatScope {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

/// The format layers built now on this thread use.
pub fn current_weight_format() -> WeightFormat {
    CURRENT.with(|c| c.get())
}

/// Per-row symmetric int8 of a row-major [rows, cols] matrix: the codes and one scale per row.
pub fn quantize_rows_q8(values: &[f32], cols: usize) -> (Vec<i8>, Vec<f32>) {
    let cols = cols.max(1);
    quantize_channels_q8(values, values.len().div_ceil(cols), cols)
}

/// The inverse of [`quantize_rows_q8`]: `q * scale` per row.
pub fn dequantize_rows_q8(codes: &[i8], scales: &[f32], cols: usize) -> Vec<f32> {
    dequantize_channels_q8(codes, scales, cols)
}

/// Per-output-channel int8 of values laid out [groups, out, in_len] (groups = the k * k taps of
/// a tap-major convolution weight, 1 for a linear one): one scale per output channel, shared by
/// its rows in every group.
fn quantize_channels_q8(values: &[f32], out: usize, in_len: usize) -> (Vec<i8>, Vec<f32>) {
    let (out, in_len) = (out.max(1), in_len.max(1));
    let mut absmax = vec![0f32; out];
    for (r, row) in values.chunks(in_len).enumerate() {
        let m = &mut absmax[r % out];
        *m = row.iter().fold(*m, |m, v| m.max(v.abs()));
    }
    let scales: Vec<f32> = absmax
        .iter()
        .map(|&m| {
            if m > 0.0 && m.is_finite() {
                m / 127.0
            } else {
                0.0
            }
        })
        .collect();
    let mut codes = Vec::with_capacity(values.len());
    for (r, row) in values.chunks(in_len).enumerate() {
        let scale = scales[r % out];
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        codes.extend(
            row.iter()
                .map(|v| (v * inv).round().clamp(-127.0, 127.0) as i8),
        );
    }
    (codes, scales)
}

/// The inverse of [`quantize_channels_q8`], split over the machine's threads in whole rows (it
/// runs in every forward of every packed layer).
fn dequantize_channels_q8(codes: &[i8], scales: &[f32], in_len: usize) -> Vec<f32> {
    let (out, in_len) = (scales.len().max(1), in_len.max(1));
    let mut values = vec![0f32; codes.len()];
    let rows = codes.len() / in_len;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(rows.div_ceil(64).max(1));
    let rows_per_thread = rows.div_ceil(threads.max(1)).max(1);
    let fill = |first_row: usize, dst: &mut [f32]| {
        let src = &codes[first_row * in_len..first_row * in_len + dst.len()];
        for (k, (d, s)) in dst.chunks_mut(in_len).zip(src.chunks(in_len)).enumerate() {
            let scale = scales[(first_row + k) % out];
            for (d, &q) in d.iter_mut().zip(s) {
                *d = q as f32 * scale;
            }
        }
    };
    if threads <= 1 {
        fill(0, &mut values);
    } else {
        std::thread::scope(|scope| {
            for (t, dst) in values.chunks_mut(rows_per_thread * in_len).enumerate() {
                let fill = &fill;
                scope.spawn(move || fill(t * rows_per_thread, dst));
            }
        });
    }
    values
}

/// A weight held in a smaller format; [`PackedWeight::unpack`] gives it back in the compute
/// dtype, in its own shape.
#[derive(Debug, Clone)]
pub struct PackedWeight {
    storage: Storage,
    /// The weight's own shape ([out, in] or [out, in, k, k]).
    shape: Shape,
    /// Convolution weights are stored tap-major, [k, k, out, in], the layout `ops::Conv2d`'s
    /// kernel reads, so that unpacking one is a single pass (its permuted view back to
    /// [out, in, k, k] is what `unpack` returns, and `Conv2d::new` finds it already laid out).
    tap_major: bool,
    compute: DType,
    device: Device,
}

#[derive(Debug, Clone)]
enum Storage {
    Half(Tensor),
    Q8 {
        codes: Arc<[i8]>,
        scales: Arc<[f32]>,
    },
}

impl PackedWeight {
    /// Packs `weight` (dim 0 = output channels) in the format in force on this thread; `None`
    /// when that is [`WeightFormat::Full`], when packing would not save memory (the compute
    /// dtype is already as small) or when the weight is a trainable variable.
    pub fn pack_current(weight: &Tensor) -> Result<Option<Self>> {
        Self::pack(weight, current_weight_format())
    }

    pub fn pack(weight: &Tensor, format: WeightFormat) -> Result<Option<Self>> {
        let compute = weight.dtype();
        if weight.track_op() || weight.rank() == 0 {
            return Ok(None);
        }
        let tap_major = weight.rank() == 4;
        let laid_out = if tap_major {
            weight.permute((2, 3, 0, 1))?.contiguous()?
        } else {
            weight.clone()
        };
        let storage = match format {
            WeightFormat::Full => return Ok(None),
            WeightFormat::F16 if compute.size_in_bytes() <= 2 => return Ok(None),
            WeightFormat::F16 => Storage::Half(laid_out.to_dtype(DType::F16)?),
            WeightFormat::Q8 => {
                let values = laid_out
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let (codes, scales) = quantize_channels_q8(
                    &values,
                    weight.dim(0)?,
                    laid_out.dims()[laid_out.rank() - 1],
                );
                Storage::Q8 {
                    codes: codes.into(),
                    scales: scales.into(),
                }
            }
        };
        Ok(Some(Self {
            storage,
            shape: weight.shape().clone(),
            tap_major,
            compute,
            device: weight.device().clone(),
        }))
    }

    /// The weight in the compute dtype (a fresh tensor, freed when the caller drops it).
    pub fn unpack(&self) -> candle_core::Result<Tensor> {
        let laid_out = match &self.storage {
            Storage::Half(t) => t.to_dtype(self.compute)?,
            Storage::Q8 { codes, scales } => {
                let dims = self.shape.dims();
                // Rows are [in] (tap-major conv) or everything after the output channel.
                let in_len = if self.tap_major {
                    dims[1]
                } else {
                    dims[1..].iter().product()
                };
                let values = dequantize_channels_q8(codes, scales, in_len);
                let shape = if self.tap_major {
                    Shape::from((dims[2], dims[3], dims[0], dims[1]))
                } else {
                    self.shape.clone()
                };
                Tensor::from_vec(values, shape, &self.device)?.to_dtype(self.compute)?
            }
        };
        if self.tap_major {
            laid_out.permute((2, 3, 0, 1))
        } else {
            Ok(laid_out)
        }
    }

    /// Bytes the packed weight holds (codes and scales, or the f16 copy).
    pub fn bytes(&self) -> usize {
        match &self.storage {
            Storage::Half(t) => t.elem_count() * 2,
            Storage::Q8 { codes, scales } => codes.len() + 4 * scales.len(),
        }
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_error_is_at_most_half_a_step_per_row() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (16, 3, 3, 3), &dev).unwrap();
        // One row with a much larger range: its step is coarser, the others' are not affected.
        let w = w
            .broadcast_mul(
                &Tensor::from_vec(
                    (0..16).map(|i| if i == 5 { 40f32 } else { 1.0 }).collect(),
                    (16, 1, 1, 1),
                    &dev,
                )
                .unwrap(),
            )
            .unwrap();
        let packed = PackedWeight::pack(&w, WeightFormat::Q8).unwrap().unwrap();
        assert_eq!(packed.bytes(), 16 * 27 + 16 * 4);
        let back = packed.unpack().unwrap();
        assert_eq!(back.dims(), w.dims());
        let rows_w: Vec<Vec<f32>> = w.flatten_from(1).unwrap().to_vec2().unwrap();
        let rows_b: Vec<Vec<f32>> = back.flatten_from(1).unwrap().to_vec2().unwrap();
        for (a, b) in rows_w.iter().zip(&rows_b) {
            let absmax = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            let step = absmax / 127.0;
            let worst = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            // Bound: half a quantisation step (plus f32 rounding).
            assert!(worst <= 0.5 * step * (1.0 + 1e-5), "{worst} > {step}/2");
            // The largest magnitude is exact (it is code +-127).
            let i = a.iter().position(|v| v.abs() == absmax).unwrap();
            assert!((a[i] - b[i]).abs() <= 1e-6 * absmax);
        }
    }

    #[test]
    fn threaded_dequantisation_matches_row_by_row() {
        let (rows, cols) = (1000, 7);
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 9.0)
            .collect();
        let (codes, scales) = quantize_rows_q8(&values, cols);
        let back = dequantize_rows_q8(&codes, &scales, cols);
        for (i, (&q, &v)) in codes.iter().zip(&back).enumerate() {
            assert_eq!(v, q as f32 * scales[i / cols], "element {i}");
        }
    }

    #[test]
    fn zero_rows_and_f16_storage() {
        let (codes, scales) = quantize_rows_q8(&[0.0, 0.0, 1.0, -0.5], 2);
        assert_eq!(codes, vec![0, 0, 127, -64]);
        assert_eq!(scales[0], 0.0);
        assert_eq!(
            dequantize_rows_q8(&codes, &scales, 2),
            vec![0.0, 0.0, 1.0, -64.0 / 127.0]
        );
        let w = Tensor::new(&[[1.0f32, 1.0 / 3.0]], &Device::Cpu).unwrap();
        let half = PackedWeight::pack(&w, WeightFormat::F16).unwrap().unwrap();
        assert_eq!(half.bytes(), 4);
        let back: Vec<Vec<f32>> = half.unpack().unwrap().to_vec2().unwrap();
        assert_eq!(back[0][0], 1.0);
        assert!((back[0][1] - 1.0 / 3.0).abs() < 1e-3);
        assert!(PackedWeight::pack(&w, WeightFormat::Full)
            .unwrap()
            .is_none());
        let w16 = w.to_dtype(DType::F16).unwrap();
        assert!(PackedWeight::pack(&w16, WeightFormat::F16)
            .unwrap()
            .is_none());
    }

    #[test]
    fn scope_sets_and_restores_the_format_and_names_parse() {
        assert_eq!(current_weight_format(), WeightFormat::Full);
        {
            let _q8 = WeightFormatScope::enter(WeightFormat::Q8);
            assert_eq!(current_weight_format(), WeightFormat::Q8);
        }
        assert_eq!(current_weight_format(), WeightFormat::Full);
        assert_eq!("q8".parse::<WeightFormat>().unwrap(), WeightFormat::Q8);
        assert_eq!("F16".parse::<WeightFormat>().unwrap(), WeightFormat::F16);
        assert_eq!("f32".parse::<WeightFormat>().unwrap(), WeightFormat::Full);
        let err = "q4".parse::<WeightFormat>().unwrap_err().to_string();
        assert!(err.contains("--weights q4") && err.contains("q8"), "{err}");
    }
}
