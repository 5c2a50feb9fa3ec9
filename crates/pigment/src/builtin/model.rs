//! Where the built-in model is: the diffusers folder `models/builtin` of the source tree when
//! the binary runs from a checkout, otherwise the copy compiled into the library, unpacked once
//! into the user's cache folder (so one binary carries its own model and needs no download).

#[cfg(feature = "embedded-model")]
use std::collections::hash_map::DefaultHasher;
#[cfg(feature = "embedded-model")]
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The built-in model's folder, relative to the repository root.
pub const BUILTIN_MODEL_DIR: &str = "models/builtin";

/// The name the built-in model is known by (PNG metadata, `info`).
pub const BUILTIN_MODEL_NAME: &str = "pigment-builtin";

/// Calls `$then!` with every file of the built-in model, relative to its folder: the one list
/// both the embedded copy and the on-disk check use.
macro_rules! with_builtin_files {
    ($then:ident) => {
        $then!(
            "model_index.json",
            "scheduler/scheduler_config.json",
            "text_encoder/config.json",
            "text_encoder/model.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "clip/config.json",
            "clip/model.safetensors",
        )
    };
}

#[cfg(not(feature = "embedded-model"))]
macro_rules! names {
    ($($path:literal),* $(,)?) => {
        &[$($path),*]
    };
}

/// Every file of the built-in model, relative to its folder.
#[cfg(not(feature = "embedded-model"))]
const FILE_NAMES: &[&str] = with_builtin_files!(names);

#[cfg(feature = "embedded-model")]
macro_rules! embed {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!("../../../../models/builtin/", $path)) as &[u8])),*]
    };
}

/// Every file of the built-in model, compiled in.
#[cfg(feature = "embedded-model")]
const FILES: &[(&str, &[u8])] = with_builtin_files!(embed);

/// The built-in model as a diffusers folder the ordinary loader opens.
#[cfg(feature = "embedded-model")]
pub fn builtin_model_dir() -> Result<PathBuf> {
    let source_tree = source_tree_dir();
    if is_complete(&source_tree) {
        return Ok(source_tree);
    }
    unpack(&cache_root()?)
}

/// The built-in model as a diffusers folder the ordinary loader opens. This build was made
/// without the `embedded-model` feature (to keep the binary small, e.g. for carrying it to a GPU
/// machine), so the model must be on disk: the source tree the binary was built from, or
/// `models/builtin` under the current folder (running from a checkout).
#[cfg(not(feature = "embedded-model"))]
pub fn builtin_model_dir() -> Result<PathBuf> {
    let has_all = |dir: &Path| FILE_NAMES.iter().all(|name| dir.join(name).is_file());
    let source_tree = source_tree_dir();
    if has_all(&source_tree) {
        return Ok(source_tree);
    }
    let here = Path::new(BUILTIN_MODEL_DIR);
    if has_all(here) {
        return Ok(here.to_path_buf());
    }
    Err(Error::invalid(format!(
        "this pigment was built without the built-in model (cargo feature `embedded-model` off) \
         and no {BUILTIN_MODEL_DIR} folder was found: pass --model {BUILTIN_MODEL_DIR} (or the \
         path to that folder), or run from the repository root"
    )))
}

/// `models/builtin` of the source tree this library was compiled from.
fn source_tree_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(BUILTIN_MODEL_DIR)
}

/// True when every built-in file is present in `dir` with its compiled-in size.
#[cfg(feature = "embedded-model")]
fn is_complete(dir: &Path) -> bool {
    FILES.iter().all(|(name, bytes)| {
        std::fs::metadata(dir.join(name)).is_ok_and(|m| m.len() == bytes.len() as u64)
    })
}

/// `$XDG_CACHE_HOME/pigment`, `~/.cache/pigment`, or the temporary folder's `pigment-cache`.
#[cfg(feature = "embedded-model")]
fn cache_root() -> Result<PathBuf> {
    let from_env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    Ok(match (from_env("XDG_CACHE_HOME"), from_env("HOME")) {
        (Some(cache), _) => PathBuf::from(cache).join("pigment"),
        (None, Some(home)) => PathBuf::from(home).join(".cache/pigment"),
        (None, None) => std::env::temp_dir().join("pigment-cache"),
    })
}

/// Write the compiled-in files to `root/builtin-<content hash>` (once: a complete folder is
/// reused) through a temporary folder renamed into place, so a crash never leaves half a model.
#[cfg(feature = "embedded-model")]
fn unpack(root: &Path) -> Result<PathBuf> {
    let mut hasher = DefaultHasher::new();
    for (name, bytes) in FILES {
        name.hash(&mut hasher);
        bytes.hash(&mut hasher);
    }
    let dir = root.join(format!("builtin-{:016x}", hasher.finish()));
    if is_complete(&dir) {
        return Ok(dir);
    }
    let staging = root.join(format!("builtin-partial-{}", std::process::id()));
    let write_all = || -> std::io::Result<()> {
        for (name, bytes) in FILES {
            let path = staging.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, bytes)?;
        }
        Ok(())
    };
    let cannot = |e: std::io::Error| {
        Error::invalid(format!(
            "cannot unpack the built-in model into {} ({e}): set XDG_CACHE_HOME to a writable \
             folder, or pass --model",
            root.display()
        ))
    };
    write_all().map_err(cannot)?;
    match std::fs::rename(&staging, &dir) {
        Ok(()) => Ok(dir),
        // Another process unpacked the same model first: use theirs.
        Err(_) if is_complete(&dir) => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(dir)
        }
        Err(e) => Err(cannot(e)),
    }
}

#[cfg(all(test, feature = "embedded-model"))]
mod tests {
    use super::*;

    /// Unpacking writes a complete folder once and reuses it after.
    #[test]
    fn unpacks_once_into_a_complete_folder() -> Result<()> {
        let root = std::env::temp_dir().join(format!("pigment-unpack-{}", std::process::id()));
        let dir = unpack(&root)?;
        assert!(is_complete(&dir));
        let again = unpack(&root)?;
        assert_eq!(dir, again);
        std::fs::remove_dir_all(&root).ok();
        Ok(())
    }
}
