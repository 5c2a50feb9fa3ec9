//! Textual inversion (Gal et al. 2022, "An Image is Worth One Word"): learned token vectors that a
//! prompt calls up by a trigger word. The vectors enter the text encoder as extra rows of its
//! token-embedding table (see `ClipTextModel::append_token_embeddings`).
//!
//! File layouts understood (never by running pickle code: `.pt`/`.bin` go through the project's
//! own pickle reader):
//! - AUTOMATIC1111 `.pt`/`.bin`: `{"string_to_param": {"*": [n, width]}, ...}` and `.safetensors`
//!   `{"emb_params": [n, width]}`; the trigger word is the file stem, as A1111's
//!   `EmbeddingDatabase.load_from_file` names it.
//! - diffusers `learned_embeds.safetensors` / `.bin`: `{token: [width] or [n, width]}`; the
//!   trigger word is the token (`load_textual_inversion`).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// The most vectors one embedding may have: one 77-token chunk minus BOS and EOS.
pub const MAX_VECTORS: usize = 75;

/// One textual-inversion embedding: its trigger word and its vectors.
#[derive(Debug, Clone)]
pub struct TextualInversion {
    /// The word that calls it up in a prompt.
    pub name: String,
    /// `[vectors, width]`, f32 on the CPU.
    pub vectors: Tensor,
    /// The file it came from.
    pub path: PathBuf,
}

impl TextualInversion {
    pub fn vector_count(&self) -> usize {
        self.vectors.dims().first().copied().unwrap_or(0)
    }

    pub fn width(&self) -> usize {
        self.vectors.dims().get(1).copied().unwrap_or(0)
    }
}

/// The embeddings of one file (one for A1111 files; one per token for diffusers files).
pub fn load_textual_inversion(path: &Path) -> Result<Vec<TextualInversion>> {
    if !path.is_file() {
        return Err(Error::invalid(format!(
            "embedding {}: no such file; pass a textual-inversion .pt, .bin or .safetensors file",
            path.display()
        )));
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let is_safetensors = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let tensors: Vec<(String, Tensor)> = if is_safetensors {
        let mut loaded: Vec<(String, Tensor)> = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| {
                Error::checkpoint(
                    path,
                    format!("cannot read this embedding as safetensors: {e}"),
                )
            })?
            .into_iter()
            .collect();
        loaded.sort_by(|a, b| a.0.cmp(&b.0));
        loaded
    } else {
        crate::weights::load_torch_tensors(path)?
    };
    if tensors.is_empty() {
        return Err(Error::checkpoint(
            path,
            "holds no tensors; a textual-inversion embedding has `string_to_param` (A1111 .pt), \
             `emb_params` (A1111 .safetensors) or one tensor per token (diffusers)",
        ));
    }
    if tensors.iter().any(|(k, _)| k == "clip_l" || k == "clip_g") {
        return Err(Error::checkpoint(
            path,
            "is an SDXL embedding (clip_l / clip_g); Pigment's models are SD 1.x / 2.x",
        ));
    }
    tensors
        .into_iter()
        .map(|(key, tensor)| {
            // A1111's layouts name the vectors `*` / `emb_params`: the file stem is the word.
            let name = if key == "*" || key == "emb_params" {
                stem.clone()
            } else {
                key
            };
            let vectors = match tensor.rank() {
                1 => tensor.unsqueeze(0)?,
                2 => tensor,
                _ => {
                    return Err(Error::checkpoint(
                        path,
                        format!(
                            "tensor `{name}` has shape {:?}; embedding vectors are [width] or \
                             [vectors, width]",
                            tensor.dims()
                        ),
                    ))
                }
            }
            .to_dtype(DType::F32)?;
            let count = vectors.dim(0)?;
            if count == 0 || count > MAX_VECTORS {
                return Err(Error::checkpoint(
                    path,
                    format!(
                        "embedding `{name}` has {count} vectors; between 1 and {MAX_VECTORS} fit \
                         in a prompt"
                    ),
                ));
            }
            if name.trim().is_empty() {
                return Err(Error::checkpoint(
                    path,
                    "the embedding has no usable trigger word; rename the file",
                ));
            }
            Ok(TextualInversion {
                name,
                vectors,
                path: path.to_path_buf(),
            })
        })
        .collect()
}

/// Every embedding file (`.pt`, `.bin`, `.safetensors`) directly inside `dir`, in file-name
/// order (A1111's embeddings folder; each named by its stem or token).
pub fn load_textual_inversion_dir(dir: &Path) -> Result<Vec<TextualInversion>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|e| {
                    let e = e.to_string_lossy().to_ascii_lowercase();
                    e == "pt" || e == "bin" || e == "safetensors"
                })
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        out.extend(load_textual_inversion(&file)?);
    }
    Ok(out)
}
