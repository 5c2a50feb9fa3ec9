//! A component's tensors under their internal (diffusers / transformers) names, each pointing at
//! a stored tensor plus the small transform that turns it into the internal one. Key maps only
//! build this table; bytes are read when a tensor is asked for, and a transform never copies more
//! than the tensor it yields (a q/k/v row slice reads only its own rows of the fused weight).

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

use super::stored::{numel, Order, StoredTensor};
use super::Component;

/// How a stored tensor becomes the internal one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transform {
    None,
    /// `[C, C, 1, 1]` (or `[C, C, 1]`) conv weight -> `[C, C]` linear weight: same bytes.
    ConvToLinear,
    /// Rows `start..start + count` of dim 0 (one of q/k/v of a fused in_proj weight or bias).
    Rows {
        start: usize,
        count: usize,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct MappedTensor {
    pub stored_name: String,
    pub stored: StoredTensor,
    pub transform: Transform,
}

impl MappedTensor {
    pub fn new(stored_name: &str, stored: &StoredTensor, transform: Transform) -> Self {
        Self {
            stored_name: stored_name.to_string(),
            stored: stored.clone(),
            transform,
        }
    }

    /// The internal shape, or why the transform does not fit the stored shape.
    pub fn shape(&self) -> Result<Vec<usize>, String> {
        let s = &self.stored.shape;
        match self.transform {
            Transform::None => Ok(s.clone()),
            Transform::ConvToLinear => match s.as_slice() {
                [o, i] | [o, i, 1] | [o, i, 1, 1] => Ok(vec![*o, *i]),
                _ => Err(format!(
                    "{} has shape {s:?}, expected a linear [out, in] or 1x1 conv [out, in, 1, 1] weight",
                    self.stored_name
                )),
            },
            Transform::Rows { start, count } => match s.split_first() {
                Some((&rows, rest)) if start + count <= rows => {
                    let mut out = vec![count];
                    out.extend_from_slice(rest);
                    Ok(out)
                }
                _ => Err(format!(
                    "{} has shape {s:?}, too small for rows {start}..{}",
                    self.stored_name,
                    start + count
                )),
            },
        }
    }

    /// Byte offset and length of the internal tensor inside the stored one (row-major data).
    fn byte_range(&self, elem: usize) -> (usize, usize) {
        match self.transform {
            Transform::Rows { start, count } => {
                let row = numel(&self.stored.shape[1..]).saturating_mul(elem);
                (start.saturating_mul(row), count.saturating_mul(row))
            }
            _ => (0, self.stored.elem_count().saturating_mul(elem)),
        }
    }

    /// Loads the internal tensor in the stored dtype.
    pub fn load(&self, device: &Device) -> candle_core::Result<Tensor> {
        let shape = self.shape().map_err(candle_core::Error::msg)?;
        let elem = self.stored_dtype()?.size_in_bytes();
        match self.stored.order {
            Order::RowMajor => {
                let (offset, len) = self.byte_range(elem);
                self.stored.load_bytes(offset, len, &shape, device)
            }
            Order::ColumnMajor => {
                // Read as the reversed shape (row-major of the transpose), then permute back.
                let full_len = self.stored.elem_count().saturating_mul(elem);
                let reversed: Vec<usize> = self.stored.shape.iter().rev().copied().collect();
                let t = self.stored.load_bytes(0, full_len, &reversed, device)?;
                let dims: Vec<usize> = (0..reversed.len()).rev().collect();
                let t = t.permute(dims)?;
                let t = match self.transform {
                    Transform::Rows { start, count } => t.narrow(0, start, count)?,
                    _ => t,
                };
                t.contiguous()?.reshape(shape)
            }
        }
    }

    /// Loads the internal tensor converted to `dtype`.
    pub fn load_as(&self, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let stored = self.stored_dtype()?;
        let half = matches!(stored, DType::F16 | DType::BF16);
        if half && dtype == DType::F32 && device.is_cpu() && self.stored.order == Order::RowMajor {
            let shape = self.shape().map_err(candle_core::Error::msg)?;
            let (offset, len) = self.byte_range(stored.size_in_bytes());
            return self.stored.load_half_as_f32(offset, len, &shape);
        }
        self.load(device)?.to_dtype(dtype)
    }

    fn stored_dtype(&self) -> candle_core::Result<DType> {
        self.stored
            .dtype()
            .map_err(|e| candle_core::Error::msg(format!("{}: {e}", self.stored_name)))
    }
}

/// One component's tensors by internal name.
#[derive(Debug, Clone)]
pub(crate) struct ComponentMap {
    pub component: Component,
    /// The checkpoint path, for messages.
    pub path: PathBuf,
    pub tensors: BTreeMap<String, MappedTensor>,
}

impl ComponentMap {
    pub fn new(component: Component, path: PathBuf) -> Self {
        Self {
            component,
            path,
            tensors: BTreeMap::new(),
        }
    }

    /// Internal name -> internal shape, for config derivation and validation.
    pub fn shapes(&self) -> Result<BTreeMap<String, Vec<usize>>, String> {
        self.tensors
            .iter()
            .map(|(k, t)| Ok((k.clone(), t.shape()?)))
            .collect()
    }

    /// Loads `name`, converted to `dtype`, on `device`.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let t = self.tensors.get(name).ok_or_else(|| {
            candle_core::Error::msg(format!(
                "checkpoint {}: the {} has no tensor `{name}`; the weights do not fit the model config",
                self.path.display(),
                self.component
            ))
        })?;
        t.load_as(dtype, device).map_err(|e| {
            candle_core::Error::msg(format!(
                "checkpoint {}: reading {} tensor `{name}` (stored as `{}`): {e}",
                self.path.display(),
                self.component,
                t.stored_name
            ))
        })
    }

    pub fn parameter_count(&self) -> usize {
        self.tensors
            .values()
            .map(|t| t.shape().map(|s| numel(&s)).unwrap_or(0))
            .fold(0usize, usize::saturating_add)
    }
}

/// What a key map makes of one stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyFate {
    /// It becomes these internal tensors (one, or q/k/v of a fused weight).
    Use(Vec<(String, Transform)>),
    /// It is known and deliberately unused (buffers, the layer SD2 drops); the note says why.
    Ignore(&'static str),
    /// The map does not know it.
    Unknown,
}

impl KeyFate {
    pub fn one(name: String) -> Self {
        KeyFate::Use(vec![(name, Transform::None)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::stored::{Location, MappedFile, StoredDType};
    use half::{bf16, f16};

    /// A one-tensor "file": `pad` junk bytes, then the values' bytes.
    fn stored(
        bytes: Vec<u8>,
        pad: usize,
        dtype: DType,
        shape: Vec<usize>,
    ) -> (tempfile::TempDir, StoredTensor) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.bin");
        let mut data = vec![0xAB; pad];
        let len = bytes.len();
        data.extend(bytes);
        std::fs::write(&path, data).unwrap();
        let t = StoredTensor {
            dtype: StoredDType::Known(dtype),
            shape,
            order: Order::RowMajor,
            file: MappedFile::open(&path).unwrap(),
            location: Location::Range { start: pad, len },
        };
        (dir, t)
    }

    #[test]
    fn half_to_f32_fast_path_equals_candle_conversion_aligned_or_not() {
        let values = [1.5f32, -2.0, 65504.0, 6.1e-5, 0.1, -0.0, 3.0, 1e-7];
        let f16_bytes: Vec<u8> = values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect();
        let bf16_bytes: Vec<u8> = values
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect();
        for (bytes, dtype) in [(f16_bytes, DType::F16), (bf16_bytes, DType::BF16)] {
            for pad in [0, 1] {
                let (_dir, t) = stored(bytes.clone(), pad, dtype, vec![2, 4]);
                for transform in [Transform::None, Transform::Rows { start: 1, count: 1 }] {
                    let m = MappedTensor::new("t", &t, transform);
                    let fast = m.load_as(DType::F32, &Device::Cpu).unwrap();
                    let slow = m.load(&Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
                    assert_eq!(fast.dims(), slow.dims());
                    let (fast, slow) = (fast.flatten_all().unwrap(), slow.flatten_all().unwrap());
                    let (fast, slow) = (
                        fast.to_vec1::<f32>().unwrap(),
                        slow.to_vec1::<f32>().unwrap(),
                    );
                    assert_eq!(
                        fast.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        slow.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{dtype:?} pad {pad}"
                    );
                }
            }
        }
    }

    #[test]
    fn conv_to_linear_and_row_slices_reshape_without_copying_more() {
        let values: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let (_dir, t) = stored(bytes, 0, DType::F32, vec![6, 2, 1, 1]);
        let conv = MappedTensor::new("w", &t, Transform::ConvToLinear);
        assert_eq!(conv.shape().unwrap(), vec![6, 2]);
        let rows = MappedTensor::new("w", &t, Transform::Rows { start: 2, count: 2 });
        let r = rows.load(&Device::Cpu).unwrap();
        assert_eq!(r.dims(), &[2, 2, 1, 1]);
        assert_eq!(
            r.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![4.0, 5.0, 6.0, 7.0]
        );
        let too_far = MappedTensor::new("w", &t, Transform::Rows { start: 5, count: 2 });
        assert!(too_far.shape().is_err() && too_far.load(&Device::Cpu).is_err());
    }
}
