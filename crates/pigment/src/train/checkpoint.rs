//! Training checkpoints: everything a run needs to continue exactly where it stopped.
//!
//! A checkpoint is a folder `checkpoint-<step, 8 digits>/` holding
//! - `model.safetensors`: the trained weights under their model names (loadable for inference);
//! - `ema.safetensors`: their exponential moving average, when the run keeps one;
//! - `optimizer.safetensors`: AdamW's moments and step counts (see [`super::AdamW`]);
//! - `trainer_state.json`: step, data-order position, random state, hyper-parameters, and any
//!   metadata of the caller (model configs, dataset description).
//!
//! The folder is written under a hidden temporary name and renamed into place, so a crash never
//! leaves a half-written checkpoint that a resume would pick up.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::data_order::DataPosition;
use super::lr_schedule::LrSchedule;
use super::optimizer::AdamWConfig;
use crate::error::{Error, Result};

pub const MODEL_FILE: &str = "model.safetensors";
pub const EMA_FILE: &str = "ema.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";
const FORMAT: &str = "pigment-train-checkpoint";
const VERSION: u32 = 1;
const PREFIX: &str = "checkpoint-";

/// The JSON part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub format: String,
    pub version: u32,
    /// Optimiser steps completed.
    pub step: u64,
    /// Seconds spent training up to this step, over every run that led here.
    pub elapsed_secs: f64,
    /// [`super::TrainRng`] state.
    pub rng_state: u64,
    pub data_seed: u64,
    pub dataset_len: usize,
    pub batch_size: usize,
    pub data_position: DataPosition,
    pub optimizer: AdamWConfig,
    pub schedule: LrSchedule,
    pub ema_decay: Option<f64>,
    pub ema_updates: u64,
    /// Names of the trained parameters, sorted.
    pub params: Vec<String>,
    /// Free-form metadata of the caller (e.g. model configs), kept as given.
    #[serde(default)]
    pub metadata: serde_json::Value,
}

impl TrainerState {
    pub fn new(step: u64) -> Self {
        Self {
            format: FORMAT.into(),
            version: VERSION,
            step,
            elapsed_secs: 0.0,
            rng_state: 0,
            data_seed: 0,
            dataset_len: 0,
            batch_size: 0,
            data_position: DataPosition { epoch: 0, index: 0 },
            optimizer: AdamWConfig::default(),
            schedule: LrSchedule::constant(0.0),
            ema_decay: None,
            ema_updates: 0,
            params: Vec::new(),
            metadata: serde_json::Value::Null,
        }
    }
}

/// A checkpoint in memory.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub state: TrainerState,
    pub model: HashMap<String, Tensor>,
    pub ema: Option<HashMap<String, Tensor>>,
    pub optimizer: HashMap<String, Tensor>,
}

/// The folder name of the checkpoint after `step` steps.
pub fn checkpoint_name(step: u64) -> String {
    format!("{PREFIX}{step:08}")
}

/// Writes `checkpoint` to `dir/checkpoint-<step>/` atomically (an existing checkpoint of the
/// same step is replaced) and returns its path. `dir` is created if missing.
pub fn write_checkpoint(dir: &Path, checkpoint: &Checkpoint) -> Result<PathBuf> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = checkpoint_name(checkpoint.state.step);
    let target = dir.join(&name);
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    if temp.exists() {
        fs::remove_dir_all(&temp).map_err(|e| Error::io(&temp, e))?;
    }
    fs::create_dir(&temp).map_err(|e| Error::io(&temp, e))?;
    let written = write_files(&temp, checkpoint).and_then(|()| put_in_place(&temp, &target));
    if written.is_err() {
        let _ = fs::remove_dir_all(&temp);
    }
    written?;
    Ok(target)
}

fn write_files(folder: &Path, c: &Checkpoint) -> Result<()> {
    save_tensors(&folder.join(MODEL_FILE), &c.model)?;
    if let Some(ema) = &c.ema {
        save_tensors(&folder.join(EMA_FILE), ema)?;
    }
    save_tensors(&folder.join(OPTIMIZER_FILE), &c.optimizer)?;
    let json = serde_json::to_string_pretty(&c.state)
        .map_err(|e| Error::invalid(format!("cannot encode the trainer state: {e}")))?;
    let path = folder.join(STATE_FILE);
    fs::write(&path, json).map_err(|e| Error::io(&path, e))?;
    for file in [MODEL_FILE, EMA_FILE, OPTIMIZER_FILE, STATE_FILE] {
        let p = folder.join(file);
        if let Ok(f) = fs::File::open(&p) {
            f.sync_all().map_err(|e| Error::io(&p, e))?;
        }
    }
    Ok(())
}

/// Renames `temp` to `target`; an existing `target` is moved aside first and removed after.
fn put_in_place(temp: &Path, target: &Path) -> Result<()> {
    let old = target.with_extension(format!("old-{}", std::process::id()));
    let had_old = target.exists();
    if had_old {
        fs::rename(target, &old).map_err(|e| Error::io(target, e))?;
    }
    fs::rename(temp, target).map_err(|e| Error::io(target, e))?;
    if had_old {
        fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    if let Some(parent) = target.parent() {
        if let Ok(d) = fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

fn save_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    // On the CPU and contiguous: candle's safetensors writer cannot report a failure to copy.
    let cpu = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<HashMap<_, _>>>()?;
    candle_core::safetensors::save(&cpu, path)
        .map_err(|e| Error::checkpoint(path, format!("cannot write: {e}")))
}

fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, device).map_err(|e| {
        Error::checkpoint(
            path,
            format!("cannot read: {e}; the checkpoint is damaged, resume from an earlier one"),
        )
    })
}

/// Reads a checkpoint folder, placing its tensors on `device`.
pub fn read_checkpoint(folder: &Path, device: &Device) -> Result<Checkpoint> {
    let state_path = folder.join(STATE_FILE);
    let text = fs::read_to_string(&state_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::checkpoint(
                folder,
                format!("no {STATE_FILE}: this is not a Pigment training checkpoint folder"),
            )
        } else {
            Error::io(&state_path, e)
        }
    })?;
    let state: TrainerState = serde_json::from_str(&text)
        .map_err(|e| Error::checkpoint(&state_path, format!("invalid trainer state: {e}")))?;
    if state.format != FORMAT || state.version != VERSION {
        return Err(Error::checkpoint(
            &state_path,
            format!(
                "format {:?} version {} is not {FORMAT:?} version {VERSION}",
                state.format, state.version
            ),
        ));
    }
    let ema_path = folder.join(EMA_FILE);
    Ok(Checkpoint {
        model: load_tensors(&folder.join(MODEL_FILE), device)?,
        ema: if state.ema_decay.is_some() {
            Some(load_tensors(&ema_path, device)?)
        } else {
            None
        },
        optimizer: load_tensors(&folder.join(OPTIMIZER_FILE), device)?,
        state,
    })
}

/// The complete checkpoints in `dir` as (step, path), oldest first. A missing `dir` has none.
pub fn list_checkpoints(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(step) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let path = entry.path();
        if path.join(STATE_FILE).is_file() {
            found.push((step, path));
        }
    }
    found.sort();
    Ok(found)
}

/// The newest complete checkpoint in `dir`, if any.
pub fn latest_checkpoint(dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list_checkpoints(dir)?.pop().map(|(_, p)| p))
}

/// Deletes all but the newest `keep` checkpoints in `dir` (`keep` 0 keeps all).
pub fn prune_checkpoints(dir: &Path, keep: usize) -> Result<()> {
    if keep == 0 {
        return Ok(());
    }
    let all = list_checkpoints(dir)?;
    let excess = all.len().saturating_sub(keep);
    for (_, path) in &all[..excess] {
        fs::remove_dir_all(path).map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(step: u64) -> Checkpoint {
        let t = Tensor::new(&[1.5f32, -2.0], &Device::Cpu).unwrap();
        let mut state = TrainerState::new(step);
        state.rng_state = 99;
        state.metadata = serde_json::json!({"model": "tiny"});
        Checkpoint {
            state,
            model: HashMap::from([("w".to_string(), t.clone())]),
            ema: None,
            optimizer: HashMap::from([("exp_avg.w".to_string(), t)]),
        }
    }

    #[test]
    fn write_read_list_prune() {
        let dir = tempfile::tempdir().unwrap();
        for step in [5, 10, 15] {
            write_checkpoint(dir.path(), &sample(step)).unwrap();
        }
        // Rewriting a step replaces it.
        let path = write_checkpoint(dir.path(), &sample(10)).unwrap();
        let back = read_checkpoint(&path, &Device::Cpu).unwrap();
        assert_eq!(back.state, sample(10).state);
        assert_eq!(
            back.model["w"].to_vec1::<f32>().unwrap(),
            vec![1.5f32, -2.0]
        );
        // A temporary or foreign folder is not a checkpoint.
        fs::create_dir(dir.path().join(".checkpoint-00000020.tmp-1")).unwrap();
        fs::create_dir(dir.path().join("checkpoint-00000030")).unwrap();
        let steps: Vec<u64> = list_checkpoints(dir.path())
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(steps, vec![5, 10, 15]);
        prune_checkpoints(dir.path(), 2).unwrap();
        assert_eq!(
            latest_checkpoint(dir.path()).unwrap().unwrap(),
            dir.path().join("checkpoint-00000015")
        );
        assert_eq!(list_checkpoints(dir.path()).unwrap().len(), 2);
        let err = read_checkpoint(dir.path(), &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains(STATE_FILE), "{err}");
    }
}
