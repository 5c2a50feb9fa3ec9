//! Reading a `.safetensors` file: map it, parse and validate the JSON header, record where each
//! tensor's bytes are. Format: 8-byte little-endian header length N, N bytes of JSON
//! (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`), then the
//! data; offsets are relative to the end of the header.

use std::collections::HashMap;
use std::path::Path;

use super::stored::{
    from_safetensors_dtype, Location, MappedFile, Order, StoredTable, StoredTensor,
};
use crate::error::{Error, Result};

pub(crate) struct SafetensorsFile {
    pub tensors: StoredTable,
    /// The header's `__metadata__` (e.g. `modelspec.prediction_type`).
    pub metadata: HashMap<String, String>,
}

/// Reads the header of `path` (no tensor data is read).
pub(crate) fn read(path: &Path) -> Result<SafetensorsFile> {
    let file = MappedFile::open(path).map_err(|e| Error::io(path, e))?;
    let bytes = &file.map[..];
    let damaged = |what: String| {
        Error::checkpoint(
            path,
            format!("{what}; the file is truncated or is not a safetensors file, download or convert it again"),
        )
    };
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(damaged(format!(
            "only {} bytes long, too short for a safetensors header",
            bytes.len()
        )));
    };
    let mut n = [0u8; 8];
    n.copy_from_slice(len_bytes);
    let header_len = u64::from_le_bytes(n);
    let available = (bytes.len() - 8) as u64;
    if header_len > available {
        return Err(damaged(format!(
            "the header claims {header_len} bytes but only {available} bytes follow the length field"
        )));
    }
    let (header_len, meta) = match safetensors::SafeTensors::read_metadata(bytes) {
        Ok(v) => v,
        Err(e) => return Err(damaged(describe(e, bytes.len()))),
    };
    let data_start = 8 + header_len;
    let mut tensors = StoredTable::new();
    for (name, info) in meta.tensors() {
        let (begin, end) = info.data_offsets;
        tensors.insert(
            name,
            StoredTensor {
                dtype: from_safetensors_dtype(info.dtype),
                shape: info.shape.clone(),
                order: Order::RowMajor,
                file: file.clone(),
                // read_metadata checked that the offsets are contiguous and end at the file's end.
                location: Location::Range {
                    start: data_start + begin,
                    len: end - begin,
                },
            },
        );
    }
    Ok(SafetensorsFile {
        tensors,
        metadata: meta.metadata().clone().unwrap_or_default(),
    })
}

fn describe(e: safetensors::SafeTensorError, file_len: usize) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::MetadataIncompleteBuffer => format!(
            "the header's tensor offsets do not end at the end of the file ({file_len} bytes)"
        ),
        E::InvalidOffset(name) => format!("tensor {name} has invalid data offsets"),
        E::InvalidHeaderDeserialization(e) => format!("the JSON header is invalid ({e})"),
        E::InvalidHeader(_) => "the header is not UTF-8 text".to_string(),
        E::HeaderTooLarge => "the header length is too large".to_string(),
        E::HeaderTooSmall | E::InvalidHeaderLength => "the header length is invalid".to_string(),
        other => format!("invalid safetensors header ({other})"),
    }
}
