//! What a training run reports: one [`StepRecord`] per optimiser step, handed to a progress
//! callback (the CLI drives a progress bar with it) and appended as one JSON object per line to
//! a loss log (`jq`, pandas and plotting scripts read JSONL directly).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One optimiser step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Steps completed, this one included (1 after the first step).
    pub step: u64,
    /// The step's loss (the mean over its micro-batches).
    pub loss: f64,
    /// The learning rate the step used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Training samples per second over this step.
    pub samples_per_sec: f64,
    /// Seconds of training so far, over every run that led here.
    pub elapsed_secs: f64,
}

/// Called after every step with its record.
pub type ProgressFn = Box<dyn FnMut(&StepRecord) + Send>;

/// An append-only JSONL file of [`StepRecord`]s.
pub struct LossLog {
    path: PathBuf,
    file: File,
}

impl LossLog {
    /// Opens `path` for a run. `keep_up_to`: None starts the log empty (a fresh run);
    /// `Some(step)` keeps the records up to `step` and drops later ones, which a run that
    /// crashed after its last checkpoint wrote and the resumed run will write again.
    pub fn open(path: &Path, keep_up_to: Option<u64>) -> Result<Self> {
        let kept: Vec<StepRecord> = match keep_up_to {
            Some(step) if path.exists() => read_log(path)?
                .into_iter()
                .filter(|r| r.step <= step)
                .collect(),
            _ => Vec::new(),
        };
        crate::image::write_atomically(path, true, |w| {
            for r in &kept {
                writeln!(w, "{}", encode(r)?).map_err(|e| Error::io(path, e))?;
            }
            Ok(())
        })?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and flushes it, so the log is current if the run is killed.
    pub fn append(&mut self, record: &StepRecord) -> Result<()> {
        let line = encode(record)?;
        writeln!(self.file, "{line}").map_err(|e| Error::io(&self.path, e))?;
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }
}

fn encode(record: &StepRecord) -> Result<String> {
    serde_json::to_string(record)
        .map_err(|e| Error::invalid(format!("cannot encode a loss-log record: {e}")))
}

/// Every record of a loss log. A last line cut short by a crash is ignored.
pub fn read_log(path: &Path) -> Result<Vec<StepRecord>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(path, e))?;
    let last = lines.len().saturating_sub(1);
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(r) => out.push(r),
            Err(_) if i == last => {}
            Err(e) => {
                return Err(Error::invalid(format!(
                    "{} line {}: not a loss-log record ({e})",
                    path.display(),
                    i + 1
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(step: u64) -> StepRecord {
        StepRecord {
            step,
            loss: 1.0 / step as f64,
            lr: 1e-3,
            grad_norm: 0.5,
            samples_per_sec: 100.0,
            elapsed_secs: step as f64,
        }
    }

    #[test]
    fn resume_drops_records_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.jsonl");
        let mut log = LossLog::open(&path, None).unwrap();
        for s in 1..=5 {
            log.append(&record(s)).unwrap();
        }
        drop(log);
        // A torn last line (killed mid-write) is ignored.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"step\": 6, \"lo")
            .unwrap();
        assert_eq!(read_log(&path).unwrap().len(), 5);
        let mut log = LossLog::open(&path, Some(3)).unwrap();
        log.append(&record(4)).unwrap();
        let steps: Vec<u64> = read_log(&path).unwrap().iter().map(|r| r.step).collect();
        assert_eq!(steps, vec![1, 2, 3, 4]);
        LossLog::open(&path, None).unwrap();
        assert!(read_log(&path).unwrap().is_empty());
    }
}
