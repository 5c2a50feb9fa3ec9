//! Where generated images go: one path per image, all checked before any work starts so that a
//! long run never ends in a refused write.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// `out.png` for one image; `out-1.png`, `out-2.png`, ... for a batch.
pub fn output_paths(out: &Path, count: usize) -> Vec<PathBuf> {
    if count == 1 {
        return vec![out.to_path_buf()];
    }
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "png".into());
    (1..=count)
        .map(|i| out.with_file_name(format!("{stem}-{i}.{ext}")))
        .collect()
}

/// Refuse before generating: an existing file (unless `force`), a missing folder, a non-PNG name.
pub fn check_writable(paths: &[PathBuf], force: bool) -> Result<()> {
    for path in paths {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        if ext.as_deref() != Some("png") {
            bail!(
                "{}: Pigment writes PNG files (they carry the generation parameters); use a name ending in .png",
                path.display()
            );
        }
        if path.exists() && !force {
            bail!(
                "{} already exists; pass --force to overwrite it or choose another --out",
                path.display()
            );
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            bail!(
                "cannot write {}: the folder {} does not exist (create it first)",
                path.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_paths_are_numbered() {
        let p = output_paths(Path::new("dir/cat.png"), 2);
        assert_eq!(
            p,
            vec![
                PathBuf::from("dir/cat-1.png"),
                PathBuf::from("dir/cat-2.png")
            ]
        );
        assert_eq!(
            output_paths(Path::new("a.png"), 1),
            vec![PathBuf::from("a.png")]
        );
    }

    #[test]
    fn refuses_existing_and_missing_folder() {
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().join("x.png");
        std::fs::write(&existing, b"x").unwrap();
        let err = check_writable(std::slice::from_ref(&existing), false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        check_writable(std::slice::from_ref(&existing), true).unwrap();
        let missing = dir.path().join("nope").join("y.png");
        let err = check_writable(&[missing], false).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        let err = check_writable(&[dir.path().join("z.jpg")], false).unwrap_err();
        assert!(err.to_string().contains(".png"), "{err}");
    }
}
