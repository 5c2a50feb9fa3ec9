//! A tensor as a file stores it: dtype, shape and where its bytes are. Nothing is read until a
//! tensor is asked for; then only its own bytes are read (from a memory map), so opening a 4 GB
//! checkpoint costs its header and loading it costs about one copy of the weights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

/// Stored tensors of one file (or several shards), by the name the file gives them.
pub(crate) type StoredTable = BTreeMap<String, StoredTensor>;

/// A whole file mapped into memory. Tensors keep an `Arc` to it, so the map lives as long as
/// any `VarBuilder` made from it.
pub(crate) struct MappedFile {
    pub path: PathBuf,
    pub map: memmap2::Mmap,
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MappedFile({}, {} bytes)",
            self.path.display(),
            self.map.len()
        )
    }
}

impl MappedFile {
    /// Maps `path` read-only.
    ///
    /// Safety of the map: like every mmap-based loader (safetensors, candle), this assumes the
    /// file is not modified while Pigment runs; all reads are bounds-checked against the length
    /// seen at open time.
    pub fn open(path: &Path) -> Result<Arc<Self>, std::io::Error> {
        let file = std::fs::File::open(path)?;
        // SAFETY: read-only private map; see the doc comment for the concurrent-modification caveat.
        let map = unsafe { memmap2::MmapOptions::new().map(&file)? };
        Ok(Arc::new(Self {
            path: path.to_path_buf(),
            map,
        }))
    }

    /// Drops the mapped pages of bytes `start..start + len` from this process's resident set
    /// once a tensor has been copied out of them. Without this, every page read while loading
    /// stays counted in the process's RSS next to the converted copy, doubling the apparent peak
    /// memory of a load; the kernel keeps the file in its page cache either way, and a later read
    /// simply faults the page back in. Only whole pages inside the range are released.
    pub fn release(&self, start: usize, len: usize) {
        const PAGE: usize = 4096;
        let first = start.div_ceil(PAGE) * PAGE;
        let end = (start + len) / PAGE * PAGE;
        if end > first {
            // SAFETY: the map is a read-only file mapping; MADV_DONTNEED on it only discards
            // this process's page-table entries, and the bytes stay valid (re-read on access).
            // Failure (e.g. a larger page size) just leaves the pages resident.
            #[cfg(unix)]
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    first,
                    end - first,
                )
            };
        }
    }
}

/// Where the bytes of a stored tensor are.
#[derive(Debug, Clone)]
pub(crate) enum Location {
    /// A byte range of the mapped file (safetensors, stored zip entries, legacy torch files).
    Range { start: usize, len: usize },
    /// A byte range inside a compressed zip entry (rare: re-zipped .ckpt files).
    ZipEntry {
        entry: String,
        start: usize,
        len: usize,
    },
}

/// Element order of the stored bytes. PyTorch may save a transposed tensor as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    RowMajor,
    ColumnMajor,
}

/// The stored element type: one candle reads, or the name of one it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoredDType {
    Known(DType),
    Unsupported(String),
}

#[derive(Debug, Clone)]
pub(crate) struct StoredTensor {
    pub dtype: StoredDType,
    pub shape: Vec<usize>,
    pub order: Order,
    pub file: Arc<MappedFile>,
    pub location: Location,
}

impl StoredTensor {
    pub fn elem_count(&self) -> usize {
        numel(&self.shape)
    }

    /// The stored dtype, or an error naming it when candle cannot read it.
    pub fn dtype(&self) -> Result<DType, String> {
        match &self.dtype {
            StoredDType::Known(d) => Ok(*d),
            StoredDType::Unsupported(name) => Err(format!(
                "dtype {name} cannot be read; convert the checkpoint to f16, bf16 or f32"
            )),
        }
    }

    /// Reads `len` bytes at `offset` of this tensor's data, then builds a tensor of `shape`.
    pub fn load_bytes(
        &self,
        offset: usize,
        len: usize,
        shape: &[usize],
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let dtype = self.dtype().map_err(candle_core::Error::msg)?;
        self.check_len(dtype, len, shape)?;
        self.with_bytes(offset, len, |bytes| {
            Tensor::from_raw_buffer(bytes, dtype, shape, device)
        })
    }

    /// Like [`StoredTensor::load_bytes`] for f16/bf16 data wanted as f32 on the CPU: converts
    /// straight from the mapped bytes (half's vectorised slice conversion), with no f16 copy
    /// in between. Loading an SD1.5 checkpoint in f32 is several times faster so.
    pub fn load_half_as_f32(
        &self,
        offset: usize,
        len: usize,
        shape: &[usize],
    ) -> candle_core::Result<Tensor> {
        let dtype = self.dtype().map_err(candle_core::Error::msg)?;
        self.check_len(dtype, len, shape)?;
        let data = self.with_bytes(offset, len, |bytes| half_to_f32(bytes, dtype))?;
        Tensor::from_vec(data, shape, &Device::Cpu)
    }

    fn check_len(&self, dtype: DType, len: usize, shape: &[usize]) -> candle_core::Result<()> {
        let want = shape
            .iter()
            .try_fold(dtype.size_in_bytes(), |acc, &d| acc.checked_mul(d));
        if want != Some(len) {
            candle_core::bail!(
                "internal: {len} bytes do not hold a {dtype:?} tensor of shape {shape:?}"
            );
        }
        Ok(())
    }

    /// Runs `f` on `len` bytes at `offset` of this tensor's data.
    fn with_bytes<R>(
        &self,
        offset: usize,
        len: usize,
        f: impl FnOnce(&[u8]) -> candle_core::Result<R>,
    ) -> candle_core::Result<R> {
        match &self.location {
            Location::Range { start, len: total } => {
                let bytes = slice(&self.file.map, *start, *total, offset, len)
                    .ok_or_else(|| out_of_file(&self.file.path))?;
                let result = f(bytes);
                self.file.release(start + offset, len);
                result
            }
            Location::ZipEntry {
                entry,
                start,
                len: total,
            } => {
                let data = read_zip_entry(&self.file, entry, *start, *total)?;
                let bytes = slice(&data, 0, data.len(), offset, len)
                    .ok_or_else(|| out_of_file(&self.file.path))?;
                f(bytes)
            }
        }
    }
}

/// f16 or bf16 little-endian bytes -> f32 values.
fn half_to_f32(bytes: &[u8], dtype: DType) -> candle_core::Result<Vec<f32>> {
    use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
    use half::{bf16, f16};
    let mut out = vec![0f32; bytes.len() / 2];
    // SAFETY: every bit pattern is a valid u16; align_to only splits off unaligned ends.
    let (head, bits, tail) = unsafe { bytes.align_to::<u16>() };
    match (dtype, head.is_empty() && tail.is_empty()) {
        (DType::F16, true) => bits
            .reinterpret_cast::<f16>()
            .convert_to_f32_slice(&mut out),
        (DType::BF16, true) => bits
            .reinterpret_cast::<bf16>()
            .convert_to_f32_slice(&mut out),
        (DType::F16 | DType::BF16, false) => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                let b = u16::from_le_bytes([c[0], c[1]]);
                *o = if dtype == DType::F16 {
                    f16::from_bits(b).to_f32()
                } else {
                    bf16::from_bits(b).to_f32()
                };
            }
        }
        _ => candle_core::bail!("internal: {dtype:?} is not a half type"),
    }
    Ok(out)
}

fn slice(data: &[u8], start: usize, total: usize, offset: usize, len: usize) -> Option<&[u8]> {
    if offset.checked_add(len)? > total {
        return None;
    }
    let begin = start.checked_add(offset)?;
    data.get(begin..begin.checked_add(len)?)
}

fn out_of_file(path: &Path) -> candle_core::Error {
    candle_core::Error::msg(format!(
        "{}: tensor data lies beyond the end of the file; the file is truncated or damaged, download it again",
        path.display()
    ))
}

/// Decompresses `len` bytes at `start` of a compressed zip entry.
fn read_zip_entry(
    file: &MappedFile,
    entry: &str,
    start: usize,
    len: usize,
) -> candle_core::Result<Vec<u8>> {
    use std::io::Read;
    let fail = |e: &dyn std::fmt::Display| {
        candle_core::Error::msg(format!("{}: zip entry {entry}: {e}", file.path.display()))
    };
    let mut zip =
        zip::ZipArchive::new(std::io::Cursor::new(&file.map[..])).map_err(|e| fail(&e))?;
    let mut reader = zip.by_name(entry).map_err(|e| fail(&e))?;
    std::io::copy(&mut (&mut reader).take(start as u64), &mut std::io::sink())
        .map_err(|e| fail(&e))?;
    let mut out = Vec::new();
    (&mut reader)
        .take(len as u64)
        .read_to_end(&mut out)
        .map_err(|e| fail(&e))?;
    if out.len() != len {
        return Err(fail(
            &"entry is shorter than its tensors: the file is truncated",
        ));
    }
    Ok(out)
}

/// Element count of a shape; saturates instead of overflowing on absurd (damaged) shapes,
/// which then fail the size checks.
pub(crate) fn numel(shape: &[usize]) -> usize {
    shape.iter().fold(1usize, |a, &d| a.saturating_mul(d))
}

/// candle's dtype for a safetensors dtype; `BOOL` is one byte per element, read as u8.
pub(crate) fn from_safetensors_dtype(dtype: safetensors::Dtype) -> StoredDType {
    use safetensors::Dtype as S;
    let known = match dtype {
        S::BOOL | S::U8 => DType::U8,
        S::U32 => DType::U32,
        S::I16 => DType::I16,
        S::I32 => DType::I32,
        S::I64 => DType::I64,
        S::BF16 => DType::BF16,
        S::F16 => DType::F16,
        S::F32 => DType::F32,
        S::F64 => DType::F64,
        other => return StoredDType::Unsupported(format!("{other:?}")),
    };
    StoredDType::Known(known)
}
