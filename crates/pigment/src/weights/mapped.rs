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

    /// Loads the internal tensor in the stored dtype.
    pub fn load(&self, device: &Device) -> candle_core::Result<Tensor> {
        let shape = self.shape().map_err(candle_core::Error::msg)?;
        let elem = self
            .stored
            .dtype()
            .map_err(|e| candle_core::Error::msg(format!("{}: {e}", self.stored_name)))?
            .size_in_bytes();
        let full_len = self.stored.elem_count().saturating_mul(elem);
        match self.stored.order {
            Order::RowMajor => {
                let (offset, len) = match self.transform {
                    Transform::Rows { start, count } => {
                        let row = numel(&self.stored.shape[1..]).saturating_mul(elem);
                        (start.saturating_mul(row), count.saturating_mul(row))
                    }
                    _ => (0, full_len),
                };
                self.stored.load_bytes(offset, len, &shape, device)
            }
            Order::ColumnMajor => {
                // Read as the reversed shape (row-major of the transpose), then permute back.
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
        let tensor = t.load(device).map_err(|e| {
            candle_core::Error::msg(format!(
                "checkpoint {}: reading {} tensor `{name}` (stored as `{}`): {e}",
                self.path.display(),
                self.component,
                t.stored_name
            ))
        })?;
        tensor.to_dtype(dtype)
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
