//! Writing output files so that a crash never leaves a half-written file and nothing existing is
//! overwritten unless asked: the bytes go to a temporary file in the same folder, which is then
//! renamed over the target (a rename within one file system is atomic).

use crate::error::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `path` through `write`, atomically. With `overwrite` false an existing `path` is an
/// error (checked before writing, and again without a race when the file is put in place).
/// On any failure the temporary file is removed and `path` is untouched.
pub fn write_atomically(
    path: &Path,
    overwrite: bool,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let folder = check_folder(path)?;
    if let Ok(meta) = fs::symlink_metadata(path) {
        if meta.is_dir() {
            return Err(Error::invalid(format!(
                "cannot write {}: it is a folder; give a file name",
                path.display()
            )));
        }
        if !overwrite {
            return Err(already_exists(path));
        }
    }

    let (file, temp) = create_temp(&folder, path)?;
    let guard = RemoveOnDrop(temp.clone());
    let mut writer = BufWriter::new(file);
    write(&mut writer)?;
    let file = writer
        .into_inner()
        .map_err(|e| cannot_write(path, e.into_error()))?;
    file.sync_all().map_err(|e| cannot_write(path, e))?;
    drop(file);

    if overwrite {
        fs::rename(&temp, path).map_err(|e| cannot_write(path, e))?;
    } else {
        // A hard link fails if the target exists, so no file that appeared since the check
        // above is replaced. Where links are not supported, fall back to check-then-rename.
        match fs::hard_link(&temp, path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(already_exists(path)),
            Err(_) if path.exists() => return Err(already_exists(path)),
            Err(_) => fs::rename(&temp, path).map_err(|e| cannot_write(path, e))?,
        }
    }
    drop(guard); // removes the temporary name left after a hard link
    sync_folder(&folder);
    Ok(())
}

/// The folder `path` goes into, which must exist and be a folder.
fn check_folder(path: &Path) -> Result<PathBuf> {
    if path.file_name().is_none() {
        return Err(Error::invalid(format!(
            "cannot write {}: the path does not end in a file name",
            path.display()
        )));
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match fs::metadata(&folder) {
        Ok(meta) if meta.is_dir() => Ok(folder),
        Ok(_) => Err(Error::invalid(format!(
            "cannot write {}: {} is a file, not a folder",
            path.display(),
            folder.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::invalid(format!(
            "cannot write {}: the folder {} does not exist; create it or choose another path",
            path.display(),
            folder.display()
        ))),
        Err(e) => Err(Error::invalid(format!(
            "cannot write {}: the folder {} is not usable: {e}",
            path.display(),
            folder.display()
        ))),
    }
}

/// A new, uniquely named hidden file next to `path`.
fn create_temp(folder: &Path, path: &Path) -> Result<(File, PathBuf)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = folder.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => return Ok((file, temp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(Error::invalid(format!(
                    "cannot write {}: cannot create a file in the folder {}: {e}",
                    path.display(),
                    folder.display()
                )))
            }
        }
    }
}

/// Makes the rename durable; best effort (not every platform can open a folder).
fn sync_folder(folder: &Path) {
    if let Ok(dir) = File::open(folder) {
        let _ = dir.sync_all();
    }
}

fn already_exists(path: &Path) -> Error {
    Error::invalid(format!(
        "{} already exists; pass --force to overwrite it, or choose another name",
        path.display()
    ))
}

fn cannot_write(path: &Path, e: io::Error) -> Error {
    Error::invalid(format!("cannot write {}: {e}", path.display()))
}

/// Deletes the temporary file when the write is abandoned (or after a hard link).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}
