//! Reading PyTorch checkpoints (`.ckpt`, `.pt`, `.bin`) without running code.
//!
//! Two container formats (torch/serialization.py):
//! - zip (torch >= 1.6): `<name>/data.pkl` is the pickled object, each storage is an entry
//!   `<name>/data/<key>`, stored uncompressed; tensors are read straight from the mapped file.
//! - legacy: pickles back to back (magic number, protocol version, system info, the object, the
//!   list of storage keys), then each storage as an 8-byte element count and its raw bytes.
//!
//! The object is usually `{"state_dict": {...}, "global_step": N, ...}` (Lightning) or the state
//! dict itself; as diffusers' load_single_file_checkpoint does, nested `state_dict` keys are
//! followed down.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use candle_core::DType;

use super::pickle::{self, Value};
use super::stored::{Location, MappedFile, Order, StoredDType, StoredTable, StoredTensor};
use crate::error::{Error, Result};

pub(crate) struct TorchFile {
    pub tensors: StoredTable,
    /// `global_step` next to the state dict, when the checkpoint records it.
    pub global_step: Option<i64>,
    /// The root dict's string-keyed entries that are plain values (numbers, strings, booleans,
    /// None and lists of them), e.g. an AUTOMATIC1111 hypernetwork's `layer_structure`.
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// The zip local-file-header signature: a zip archive starts with it.
pub(crate) const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

pub(crate) fn read(path: &Path) -> Result<TorchFile> {
    let file = MappedFile::open(path).map_err(|e| Error::io(path, e))?;
    let fail = |what: String| Error::checkpoint(path, what);
    if file.map.starts_with(ZIP_MAGIC) {
        read_zip(&file).map_err(|e| {
            fail(format!(
                "cannot read this PyTorch zip checkpoint: {e}; if it was cut short, download it again"
            ))
        })
    } else if file.map.first() == Some(&0x80) {
        read_legacy(&file).map_err(|e| {
            fail(format!(
                "cannot read this legacy PyTorch checkpoint: {e}; if it was cut short, download it again"
            ))
        })
    } else {
        Err(fail(
            "not a PyTorch checkpoint (neither a zip archive nor a pickle); Pigment reads \
             .safetensors, .ckpt/.pt/.bin (PyTorch) files and diffusers folders"
                .into(),
        ))
    }
}

/// A tensor record of the pickle: `_rebuild_tensor_v2(storage, offset, size, stride, ...)`.
struct TensorRecord {
    storage_key: String,
    dtype: StoredDType,
    elem_size: usize,
    /// Elements in the whole storage, as the pickle states it.
    storage_len: usize,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

fn read_zip(file: &Arc<MappedFile>) -> Result<TorchFile, String> {
    use std::io::Read;
    let mut zip =
        zip::ZipArchive::new(std::io::Cursor::new(&file.map[..])).map_err(|e| e.to_string())?;
    let names: Vec<String> = zip.file_names().map(str::to_string).collect();
    let pkl = names
        .iter()
        .filter(|n| n.ends_with("data.pkl"))
        .min_by_key(|n| n.len())
        .ok_or("no data.pkl inside the zip archive")?
        .clone();
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    if let Ok(mut order) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut s = String::new();
        let _ = order.read_to_string(&mut s);
        if s.trim() == "big" {
            return Err(
                "the checkpoint was saved on a big-endian machine, which Pigment does not read"
                    .into(),
            );
        }
    }
    let mut data = Vec::new();
    zip.by_name(&pkl)
        .map_err(|e| e.to_string())?
        .read_to_end(&mut data)
        .map_err(|e| format!("{pkl}: {e}"))?;
    let (root, _) = pickle::parse(&data)?;
    let (records, global_step) = records_of(&root)?;
    let metadata = metadata_of(&root);

    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut tensors = StoredTable::new();
    for (name, rec) in records {
        let entry = format!("{prefix}data/{}", rec.storage_key);
        let i = *index
            .get(entry.as_str())
            .ok_or_else(|| format!("tensor {name}: storage {entry} is missing from the archive"))?;
        let zf = zip.by_index_raw(i).map_err(|e| format!("{entry}: {e}"))?;
        let entry_len = usize::try_from(zf.size()).map_err(|_| "entry too large")?;
        let (start, len) =
            byte_range(&rec, entry_len).map_err(|e| format!("tensor {name}: {e}"))?;
        let location = if zf.compression() == zip::CompressionMethod::Stored {
            let data_start =
                usize::try_from(zf.data_start()).map_err(|_| "entry offset too large")?;
            let end = data_start.checked_add(entry_len);
            if end.is_none_or(|e| e > file.map.len()) {
                return Err(format!("storage {entry} runs past the end of the file"));
            }
            Location::Range {
                start: data_start + start,
                len,
            }
        } else {
            Location::ZipEntry {
                entry: entry.clone(),
                start,
                len,
            }
        };
        tensors.insert(name, stored(file, &rec, location)?);
    }
    Ok(TorchFile {
        tensors,
        global_step,
        metadata,
    })
}

fn read_legacy(file: &Arc<MappedFile>) -> Result<TorchFile, String> {
    let bytes = &file.map[..];
    let mut pos = 0;
    let mut next = |what: &str| -> Result<Rc<Value>, String> {
        let rest = bytes.get(pos..).ok_or("file ends early")?;
        let (v, used) = pickle::parse(rest).map_err(|e| format!("{what}: {e}"))?;
        pos += used;
        Ok(v)
    };
    let magic = next("magic number")?;
    // torch/serialization.py MAGIC_NUMBER = 0x1950a86a20f9469cfc6c, pickled as LONG1 (10 bytes LE).
    let expected: Vec<u8> = 0x1950a86a20f9469cfc6cu128.to_le_bytes()[..10].to_vec();
    if *magic != Value::BigInt(expected) {
        return Err("the magic number of a legacy PyTorch file is missing".into());
    }
    let _protocol = next("protocol version")?;
    let _sys_info = next("system info")?;
    let root = next("checkpoint object")?;
    let keys = next("storage keys")?;
    let (records, global_step) = records_of(&root)?;
    let metadata = metadata_of(&root);

    // Each storage: i64 element count, then its bytes, in the order of `keys`.
    let mut elem_size: HashMap<&str, usize> = HashMap::new();
    for rec in records.values() {
        elem_size.insert(&rec.storage_key, rec.elem_size);
    }
    let mut storages: HashMap<String, (usize, usize)> = HashMap::new();
    for key in keys.as_tuple().ok_or("storage keys are not a list")? {
        let key = key.as_str().ok_or("a storage key is not a string")?;
        let size = *elem_size
            .get(key)
            .ok_or_else(|| format!("storage {key} is not used by any tensor; cannot skip it"))?;
        let count = bytes
            .get(pos..pos + 8)
            .ok_or("file ends inside the storage table")?;
        let count = i64::from_le_bytes(count.try_into().map_err(|_| "count")?);
        let count = usize::try_from(count).map_err(|_| "negative storage size")?;
        let len = count.checked_mul(size).ok_or("storage size overflows")?;
        let start = pos + 8;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| format!("storage {key} runs past the end of the file"))?;
        storages.insert(key.to_string(), (start, len));
        pos = end;
    }
    let mut tensors = StoredTable::new();
    for (name, rec) in records {
        let &(storage_start, storage_len) = storages
            .get(&rec.storage_key)
            .ok_or_else(|| format!("tensor {name}: storage {} has no data", rec.storage_key))?;
        let (start, len) =
            byte_range(&rec, storage_len).map_err(|e| format!("tensor {name}: {e}"))?;
        let location = Location::Range {
            start: storage_start + start,
            len,
        };
        tensors.insert(name, stored(file, &rec, location)?);
    }
    Ok(TorchFile {
        tensors,
        global_step,
        metadata,
    })
}

fn stored(
    file: &Arc<MappedFile>,
    rec: &TensorRecord,
    location: Location,
) -> Result<StoredTensor, String> {
    let order = if is_contiguous(&rec.shape, &rec.stride, false) {
        Order::RowMajor
    } else if is_contiguous(&rec.shape, &rec.stride, true) {
        Order::ColumnMajor
    } else {
        return Err(format!(
            "a tensor of shape {:?} is stored with strides {:?} (a strided view), which Pigment \
             cannot read; re-save the checkpoint with contiguous tensors or as safetensors",
            rec.shape, rec.stride
        ));
    };
    Ok(StoredTensor {
        dtype: rec.dtype.clone(),
        shape: rec.shape.clone(),
        order,
        file: file.clone(),
        location,
    })
}

/// Byte offset and length of a tensor inside its storage of `storage_bytes` bytes.
fn byte_range(rec: &TensorRecord, storage_bytes: usize) -> Result<(usize, usize), String> {
    let count = rec
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("shape overflows")?;
    let len = count.checked_mul(rec.elem_size).ok_or("size overflows")?;
    let start = rec
        .offset
        .checked_mul(rec.elem_size)
        .ok_or("offset overflows")?;
    let end = start.checked_add(len).ok_or("offset overflows")?;
    let declared = rec
        .storage_len
        .checked_mul(rec.elem_size)
        .ok_or("storage overflows")?;
    if end > storage_bytes || end > declared {
        return Err(format!(
            "its data (bytes {start}..{end}) lies outside its storage ({storage_bytes} bytes)"
        ));
    }
    Ok((start, len))
}

/// Row-major (or, with `reversed`, column-major) contiguity; size-1 dims have any stride.
fn is_contiguous(shape: &[usize], stride: &[usize], reversed: bool) -> bool {
    if shape.len() != stride.len() {
        return false;
    }
    let mut expected = 1usize;
    let dims: Vec<usize> = if reversed {
        (0..shape.len()).collect()
    } else {
        (0..shape.len()).rev().collect()
    };
    for i in dims {
        if shape[i] != 1 && stride[i] != expected {
            return false;
        }
        expected = expected.saturating_mul(shape[i]);
    }
    true
}

/// Finds the state dict (following `state_dict` keys down) and its tensor records.
fn records_of(root: &Value) -> Result<(BTreeMap<String, TensorRecord>, Option<i64>), String> {
    let mut dict = root;
    let mut global_step = root.get("global_step").and_then(|v| v.as_int());
    while let Some(inner) = dict.get("state_dict") {
        dict = inner;
        global_step = global_step.or_else(|| dict.get("global_step").and_then(|v| v.as_int()));
    }
    // An AUTOMATIC1111 textual-inversion embedding: its vectors are in `string_to_param`, a
    // dict or a pickled `torch.nn.ParameterDict` whose state holds `_parameters`.
    if let Some(params) = dict.get("string_to_param") {
        dict = match &**params {
            Value::Build { state, .. } => state.get("_parameters").unwrap_or(params),
            _ => params,
        };
    }
    let items = dict
        .as_dict()
        .ok_or("the checkpoint holds no dict of tensors (state dict)")?;
    let mut records = BTreeMap::new();
    for (key, value) in items {
        match &**key {
            Value::Str(name) => {
                if let Some(rec) = tensor_record(value, 0)? {
                    records.insert(name.to_string(), rec);
                }
            }
            // An AUTOMATIC1111 hypernetwork (modules/hypernetworks/hypernetwork.py, `save`):
            // `{context width: (state dict of the key MLP, state dict of the value MLP)}`; its
            // tensors are named `<width>.<0 or 1>.<state dict key>`.
            Value::Int(width) => {
                for (i, part) in value.as_tuple().unwrap_or(&[]).iter().enumerate() {
                    for (k, v) in part.as_dict().unwrap_or(&[]) {
                        if let (Some(k), Some(rec)) = (k.as_str(), tensor_record(v, 0)?) {
                            records.insert(format!("{width}.{i}.{k}"), rec);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok((records, global_step))
}

/// The root dict's plain string-keyed values (see [`TorchFile::metadata`]).
fn metadata_of(root: &Value) -> BTreeMap<String, serde_json::Value> {
    let items = root.as_dict().unwrap_or(&[]);
    items
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), plain_value(v, 0)?)))
        .collect()
}

fn plain_value(v: &Value, depth: usize) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    Some(match v {
        Value::None => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(f) => J::Number(serde_json::Number::from_f64(*f)?),
        Value::Str(s) => J::String(s.clone()),
        Value::Tuple(items) | Value::List(items) if depth < 4 => J::Array(
            items
                .iter()
                .map(|x| plain_value(x, depth + 1))
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    })
}

/// The tensor a pickled value rebuilds, if it is one (`Ok(None)` for other values).
fn tensor_record(v: &Value, depth: usize) -> Result<Option<TensorRecord>, String> {
    let Value::Call { callable, args } = v else {
        return Ok(None);
    };
    let args = args.as_tuple().unwrap_or(&[]);
    if depth > 4 {
        return Ok(None);
    }
    if callable.is_global("torch._utils", "_rebuild_tensor_v2")
        || callable.is_global("torch._utils", "_rebuild_tensor")
    {
        return rebuild_args(args).map(Some);
    }
    if callable.is_global("torch._utils", "_rebuild_parameter")
        || callable.is_global("torch._utils", "_rebuild_parameter_with_state")
    {
        return match args.first() {
            Some(inner) => tensor_record(inner, depth + 1),
            None => Ok(None),
        };
    }
    if callable.is_global("torch._tensor", "_rebuild_from_type_v2") {
        // (func, type, args, state): the tensor is func(*args).
        if let (Some(func), Some(inner_args)) = (args.first(), args.get(2)) {
            let call = Value::Call {
                callable: func.clone(),
                args: inner_args.clone(),
            };
            return tensor_record(&call, depth + 1);
        }
    }
    Ok(None)
}

fn rebuild_args(args: &[Rc<Value>]) -> Result<TensorRecord, String> {
    let bad = || "a tensor record of the pickle is malformed".to_string();
    let Some(Value::PersistentId(pid)) = args.first().map(|a| &**a) else {
        return Err(bad());
    };
    // ('storage', torch.<Type>Storage, key, location, numel[, view_metadata])
    let pid = pid.as_tuple().ok_or_else(bad)?;
    if pid.first().and_then(|v| v.as_str()) != Some("storage") {
        return Err(bad());
    }
    let storage_type = match pid.get(1).map(|v| &**v) {
        Some(Value::Global { name, .. }) => name.clone(),
        _ => return Err(bad()),
    };
    let storage_key = match pid.get(2).map(|v| &**v) {
        Some(Value::Str(s)) => s.clone(),
        Some(Value::Int(i)) => i.to_string(),
        _ => return Err(bad()),
    };
    let storage_len = pid.get(4).and_then(|v| uint(v)).ok_or_else(bad)?;
    let offset = args.get(1).and_then(|v| uint(v)).ok_or_else(bad)?;
    let shape = uints(args.get(2)).ok_or_else(bad)?;
    let stride = uints(args.get(3)).ok_or_else(bad)?;
    let (dtype, elem_size) = storage_dtype(&storage_type)
        .ok_or_else(|| format!("unknown torch storage type {storage_type}"))?;
    Ok(TensorRecord {
        storage_key,
        dtype,
        elem_size,
        storage_len,
        offset,
        shape,
        stride,
    })
}

fn uint(v: &Value) -> Option<usize> {
    v.as_int().and_then(|i| usize::try_from(i).ok())
}

fn uints(v: Option<&Rc<Value>>) -> Option<Vec<usize>> {
    v?.as_tuple()?.iter().map(|x| uint(x)).collect()
}

/// torch storage class -> dtype and element size.
fn storage_dtype(name: &str) -> Option<(StoredDType, usize)> {
    let known = |d: DType| (StoredDType::Known(d), d.size_in_bytes());
    Some(match name {
        "HalfStorage" => known(DType::F16),
        "BFloat16Storage" => known(DType::BF16),
        "FloatStorage" => known(DType::F32),
        "DoubleStorage" => known(DType::F64),
        "LongStorage" => known(DType::I64),
        "IntStorage" => known(DType::I32),
        "ShortStorage" => known(DType::I16),
        "ByteStorage" | "BoolStorage" => known(DType::U8),
        "CharStorage" => (StoredDType::Unsupported("int8".into()), 1),
        "ComplexFloatStorage" => (StoredDType::Unsupported("complex64".into()), 8),
        "ComplexDoubleStorage" => (StoredDType::Unsupported("complex128".into()), 16),
        _ => return None,
    })
}

/// Every tensor of a small PyTorch file (an embedding), read whole into f32 CPU tensors.
pub(crate) fn load_all(path: &Path) -> Result<Vec<(String, candle_core::Tensor)>> {
    Ok(load_all_with_metadata(path)?.0)
}

/// [`load_all`] and the file's [`TorchFile::metadata`] (a hypernetwork's settings).
#[allow(clippy::type_complexity)]
pub(crate) fn load_all_with_metadata(
    path: &Path,
) -> Result<(
    Vec<(String, candle_core::Tensor)>,
    BTreeMap<String, serde_json::Value>,
)> {
    let file = read(path)?;
    let mut out = Vec::with_capacity(file.tensors.len());
    for (name, stored) in file.tensors {
        if stored.order != Order::RowMajor && stored.shape.iter().filter(|&&d| d > 1).count() > 1 {
            return Err(Error::checkpoint(
                path,
                format!("tensor {name} is stored column-major; re-save it with contiguous tensors"),
            ));
        }
        let dtype = stored
            .dtype()
            .map_err(|e| Error::checkpoint(path, format!("tensor {name}: {e}")))?;
        let len = stored.elem_count() * dtype.size_in_bytes();
        let tensor = stored
            .load_bytes(0, len, &stored.shape, &candle_core::Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| Error::checkpoint(path, format!("tensor {name}: {e}")))?;
        out.push((name, tensor));
    }
    Ok((out, file.metadata))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::mapped::{MappedTensor, Transform};
    use candle_core::Device;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/single_file")
            .join(name)
    }

    /// legacy-small.pt (torch's pre-1.6 format, one tensor a view at an offset into a shared
    /// storage) holds the same values as legacy-small.safetensors.
    #[test]
    fn legacy_format_reads_like_safetensors() {
        let legacy = read(&fixture("legacy-small.pt")).unwrap();
        let st =
            crate::weights::safetensors_file::read(&fixture("legacy-small.safetensors")).unwrap();
        assert_eq!(legacy.global_step, Some(875_000));
        assert_eq!(
            legacy.tensors.keys().collect::<Vec<_>>(),
            st.tensors.keys().collect::<Vec<_>>()
        );
        for (name, t) in &legacy.tensors {
            let load = |t: &StoredTensor| {
                MappedTensor::new(name, t, Transform::None)
                    .load(&Device::Cpu)
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
            };
            assert_eq!(t.shape, st.tensors[name].shape, "{name}");
            assert_eq!(t.dtype, st.tensors[name].dtype, "{name}");
            assert_eq!(load(t), load(&st.tensors[name]), "{name}");
        }
    }

    #[test]
    fn contiguity() {
        assert!(is_contiguous(&[2, 3], &[3, 1], false));
        assert!(is_contiguous(&[2, 3], &[1, 2], true));
        assert!(!is_contiguous(&[2, 3], &[1, 2], false));
        assert!(is_contiguous(&[1, 77], &[77, 1], false));
        assert!(is_contiguous(&[4, 1, 1, 1], &[1, 1, 1, 1], false));
        assert!(!is_contiguous(&[2, 3], &[6, 1], false));
    }
}
