//! The training loop: each step asks a closure for a loss on the step's batch, back-propagates,
//! clips, updates with AdamW at the scheduled learning rate, updates the EMA, reports, and
//! checkpoints now and then. The closure holds everything model-specific, so one loop trains
//! the UNet, the VAE, CLIP, LoRA weights or a DreamBooth fine-tune.
//!
//! ```no_run
//! # fn demo(varmap: candle_nn::VarMap) -> pigment::Result<()> {
//! use pigment::train::{named_vars, Trainer, TrainerConfig};
//! let mut trainer = Trainer::new(named_vars(&varmap)?, TrainerConfig::new(1000, 8, 5000))?;
//! trainer.resume_latest()?; // continue a run that was stopped, if any
//! trainer.run(u64::MAX, |ctx| {
//!     // ctx.indices: this step's dataset items; ctx.rng: the run's random stream
//!     # let loss: candle_core::Tensor = unimplemented!();
//!     Ok(loss)
//! })?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::checkpoint::{
    latest_checkpoint, prune_checkpoints, read_checkpoint, write_checkpoint, Checkpoint,
    TrainerState,
};
use super::clip_grad::{clip_grad_norm, global_grad_norm};
use super::data_order::DataOrder;
use super::ema::Ema;
use super::log::{LossLog, ProgressFn, StepRecord};
use super::lr_schedule::LrSchedule;
use super::optimizer::{AdamW, AdamWConfig};
use super::params::{accumulate, gradients, Grads, Params};
use super::prng::TrainRng;
use super::step_profile::{StepPhase, StepProfile};
use crate::error::{Error, Result};

/// Everything about a run that is not the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerConfig {
    /// Optimiser steps of the whole run.
    pub total_steps: u64,
    /// Items per micro-batch.
    pub batch_size: usize,
    /// Micro-batches whose gradients are summed into one optimiser step (1: none).
    pub grad_accumulation: usize,
    /// Items in the dataset; the loop draws indices below it.
    pub dataset_len: usize,
    /// Seeds the data order and the run's random stream.
    pub seed: u64,
    pub optimizer: AdamWConfig,
    pub schedule: LrSchedule,
    /// Clip the global gradient norm to this (None: no clipping, the norm is still logged).
    pub max_grad_norm: Option<f64>,
    /// Keep an EMA of the weights with this decay.
    pub ema_decay: Option<f64>,
    /// Where checkpoints go; None: no checkpoints.
    pub checkpoint_dir: Option<PathBuf>,
    /// Checkpoint every this many steps (0: only at the end of the run).
    pub checkpoint_every: u64,
    /// Keep only the newest this many checkpoints (0: keep all).
    pub keep_checkpoints: usize,
    /// JSONL loss log; None: no log file. A fresh run starts it empty (the caller decides
    /// whether an existing log may be replaced); a resumed run keeps its records up to the
    /// checkpoint.
    pub log_path: Option<PathBuf>,
}

impl TrainerConfig {
    /// A run of `total_steps` over a dataset of `dataset_len` items in batches of
    /// `batch_size`, with AdamW defaults at a constant rate of 1e-4, gradients clipped to 1.0,
    /// no EMA, no checkpoints and no log.
    pub fn new(total_steps: u64, batch_size: usize, dataset_len: usize) -> Self {
        Self {
            total_steps,
            batch_size,
            grad_accumulation: 1,
            dataset_len,
            seed: 0,
            optimizer: AdamWConfig {
                lr: 1e-4,
                ..Default::default()
            },
            schedule: LrSchedule::constant(1e-4),
            max_grad_norm: Some(1.0),
            ema_decay: None,
            checkpoint_dir: None,
            checkpoint_every: 0,
            keep_checkpoints: 0,
            log_path: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.total_steps == 0 || self.batch_size == 0 || self.grad_accumulation == 0 {
            return Err(Error::invalid(format!(
                "training needs at least one step, a batch size of at least 1 and a gradient \
                 accumulation of at least 1 (got {} steps, batch {}, accumulation {})",
                self.total_steps, self.batch_size, self.grad_accumulation
            )));
        }
        self.optimizer.validate()?;
        self.schedule.validate()?;
        if let Some(m) = self.max_grad_norm {
            if !(m.is_finite() && m > 0.0) {
                return Err(Error::invalid(format!(
                    "max grad norm {m} must be a finite number > 0 (or no clipping)"
                )));
            }
        }
        Ok(())
    }
}

/// What the loss closure gets for one micro-batch.
pub struct StepContext<'a> {
    /// The optimiser step being computed (0-based).
    pub step: u64,
    /// Which micro-batch of the step (0-based; always 0 without accumulation).
    pub micro_step: usize,
    /// Dataset indices of this micro-batch.
    pub indices: Vec<usize>,
    /// The run's random stream (noise, timesteps, dropout); saved in checkpoints.
    pub rng: &'a mut TrainRng,
}

pub struct Trainer {
    config: TrainerConfig,
    optimizer: AdamW,
    ema: Option<Ema>,
    data: DataOrder,
    rng: TrainRng,
    step: u64,
    elapsed_secs: f64,
    /// (parameter index, min, max) applied after every update.
    clamps: Vec<(usize, f64, f64)>,
    log: Option<LossLog>,
    /// Step a resume started from: the log keeps its records up to it.
    resumed_from: Option<u64>,
    progress: Option<ProgressFn>,
    metadata: serde_json::Value,
    profile: Option<StepProfile>,
}

impl Trainer {
    /// A run training `params` (see [`super::named_vars`]) from step 0.
    pub fn new(params: Params, config: TrainerConfig) -> Result<Self> {
        config.validate()?;
        if params.is_empty() {
            return Err(Error::invalid(
                "nothing to train: the list of trainable parameters is empty",
            ));
        }
        let ema = match config.ema_decay {
            Some(d) => Some(Ema::new(&params, d)?),
            None => None,
        };
        let optimizer = AdamW::new(params, config.optimizer.clone())?;
        Ok(Self {
            data: DataOrder::new(config.seed, config.dataset_len)?,
            rng: TrainRng::for_name(config.seed, "trainer"),
            optimizer,
            ema,
            step: 0,
            elapsed_secs: 0.0,
            clamps: Vec::new(),
            log: None,
            resumed_from: None,
            progress: None,
            metadata: serde_json::Value::Null,
            profile: None,
            config,
        })
    }

    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    /// Optimiser steps completed.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    pub fn is_done(&self) -> bool {
        self.step >= self.config.total_steps
    }

    pub fn params(&self) -> &Params {
        self.optimizer.params()
    }

    pub fn optimizer(&self) -> &AdamW {
        &self.optimizer
    }

    pub fn ema(&self) -> Option<&Ema> {
        self.ema.as_ref()
    }

    /// Called after every step (e.g. to move a progress bar).
    pub fn set_progress(&mut self, progress: ProgressFn) {
        self.progress = Some(progress);
    }

    /// Times every following step's phases ([`StepProfile`]), waiting for the parameters'
    /// device at the end of each phase.
    pub fn enable_step_profile(&mut self) {
        let device = self.optimizer.params()[0].1.device().clone();
        self.profile = Some(StepProfile::new(device));
    }

    /// The phases' times since [`Self::enable_step_profile`].
    pub fn step_profile(&self) -> Option<&StepProfile> {
        self.profile.as_ref()
    }

    /// Ends `phase` of the step when profiling.
    fn end_phase(&mut self, phase: StepPhase) -> Result<()> {
        match &mut self.profile {
            Some(profile) => profile.end(phase),
            None => Ok(()),
        }
    }

    /// Caller metadata saved in every checkpoint's `trainer_state.json` (model configs...).
    pub fn set_metadata(&mut self, metadata: serde_json::Value) {
        self.metadata = metadata;
    }

    /// Keeps parameter `name` within [min, max] after every update (CLIP's logit scale is
    /// clamped to ln 100 this way, as OpenCLIP does after each optimiser step).
    pub fn clamp_param(&mut self, name: &str, min: f64, max: f64) -> Result<()> {
        let index = self
            .params()
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "cannot clamp {name}: it is not a trained parameter"
                ))
            })?;
        self.clamps.push((index, min, max));
        Ok(())
    }

    /// Runs up to `steps` more steps (stopping at `total_steps`), checkpointing as configured.
    /// Returns the records of the steps run.
    pub fn run<F>(&mut self, steps: u64, mut loss_fn: F) -> Result<Vec<StepRecord>>
    where
        F: FnMut(&mut StepContext<'_>) -> Result<Tensor>,
    {
        self.run_steps(steps, |trainer| trainer.train_step(&mut loss_fn))
    }

    /// As [`Trainer::run`], with each micro-batch's work in two parts so that the micro-batches
    /// of a step (`grad_accumulation` of them) run in parallel, one per rayon thread:
    /// `prepare` runs first for every micro-batch, in order, on this thread (it may draw from
    /// `ctx.rng`: typically it renders or loads the batch), then `loss` computes each
    /// micro-batch's loss from what `prepare` returned, concurrently, and the backward passes
    /// run concurrently too. Each micro-batch's `loss` draws from its own random stream, seeded
    /// in order from the run's, and the gradients are summed in micro-batch order, so the
    /// result does not depend on the number of threads. With one micro-batch, `loss` draws
    /// from the run's stream itself: the run is exactly what [`Trainer::run`] gives with the
    /// two parts called one after the other.
    ///
    /// On the CPU, candle's element-wise ops share one thread pool behind a lock; concurrent
    /// micro-batches contend for it unless `CANDLE_NUM_THREADS=1` is set before the first op
    /// (`pigment train` does so), which makes each micro-batch run its element-wise ops on its
    /// own thread.
    pub fn run_split<P, B, L>(
        &mut self,
        steps: u64,
        mut prepare: P,
        loss: L,
    ) -> Result<Vec<StepRecord>>
    where
        P: FnMut(&mut StepContext<'_>) -> Result<B>,
        B: Send,
        L: Fn(B, &mut TrainRng) -> Result<Tensor> + Sync,
    {
        self.run_steps(steps, |trainer| {
            trainer.train_step_split(&mut prepare, &loss)
        })
    }

    fn run_steps(
        &mut self,
        steps: u64,
        mut step: impl FnMut(&mut Self) -> Result<StepRecord>,
    ) -> Result<Vec<StepRecord>> {
        let mut records = Vec::new();
        let mut left = steps;
        while left > 0 && !self.is_done() {
            records.push(step(self)?);
            left -= 1;
            if self.checkpoint_due() {
                self.save_checkpoint()?;
            }
        }
        Ok(records)
    }

    fn checkpoint_due(&self) -> bool {
        let every = self.config.checkpoint_every;
        self.config.checkpoint_dir.is_some()
            && ((every > 0 && self.step.is_multiple_of(every)) || self.is_done())
    }

    /// One optimiser step (without checkpointing).
    pub fn train_step<F>(&mut self, loss_fn: &mut F) -> Result<StepRecord>
    where
        F: FnMut(&mut StepContext<'_>) -> Result<Tensor>,
    {
        let (started, lr) = self.begin_step()?;
        let mut grads: Grads = Vec::new();
        let mut loss_sum = 0.0;
        for micro_step in 0..self.config.grad_accumulation {
            let mut ctx = self.micro_batch(micro_step);
            let loss = loss_fn(&mut ctx)?;
            loss_sum += self.finite(scalar(&loss)?, lr)?;
            self.end_phase(StepPhase::Forward)?;
            accumulate(&mut grads, self.micro_gradients(&loss)?)?;
            self.end_phase(StepPhase::Backward)?;
        }
        self.finish_step(grads, loss_sum, lr, started)
    }

    /// One optimiser step of [`Trainer::run_split`] (without checkpointing).
    pub fn train_step_split<P, B, L>(&mut self, prepare: &mut P, loss_fn: &L) -> Result<StepRecord>
    where
        P: FnMut(&mut StepContext<'_>) -> Result<B>,
        B: Send,
        L: Fn(B, &mut TrainRng) -> Result<Tensor> + Sync,
    {
        let (started, lr) = self.begin_step()?;
        let accumulation = self.config.grad_accumulation;
        let mut jobs = Vec::with_capacity(accumulation);
        for micro_step in 0..accumulation {
            let mut ctx = self.micro_batch(micro_step);
            jobs.push(prepare(&mut ctx)?);
        }
        self.end_phase(StepPhase::Prepare)?;
        let mut grads: Grads = Vec::new();
        let mut loss_sum = 0.0;
        if accumulation == 1 {
            let job = jobs.pop().expect("one micro-batch was prepared");
            let loss = loss_fn(job, &mut self.rng)?;
            loss_sum = self.finite(scalar(&loss)?, lr)?;
            self.end_phase(StepPhase::Forward)?;
            grads = self.micro_gradients(&loss)?;
            self.end_phase(StepPhase::Backward)?;
        } else {
            use rayon::prelude::*;
            let streams: Vec<TrainRng> = (0..accumulation)
                .map(|_| TrainRng::new(self.rng.next_u64()))
                .collect();
            let params = self.optimizer.params();
            let results: Vec<Result<(f64, Grads)>> = jobs
                .into_par_iter()
                .zip(streams)
                .map(|(job, mut rng)| {
                    // Forward and backward of one micro-batch, on one thread.
                    let loss = loss_fn(job, &mut rng)?;
                    let value = scalar(&loss)?;
                    Ok((value, scaled_gradients(params, &loss, accumulation)?))
                })
                .collect();
            // Summed in micro-batch order: the same numbers whatever the thread count.
            for result in results {
                let (value, micro_grads) = result?;
                loss_sum += self.finite(value, lr)?;
                accumulate(&mut grads, micro_grads)?;
            }
            self.end_phase(StepPhase::ForwardBackward)?;
        }
        self.finish_step(grads, loss_sum, lr, started)
    }

    /// Refuses a finished run; opens the log; sets and returns the step's learning rate.
    fn begin_step(&mut self) -> Result<(Instant, f64)> {
        if self.is_done() {
            return Err(Error::invalid(format!(
                "the run is complete ({} of {} steps); raise total_steps to train further",
                self.step, self.config.total_steps
            )));
        }
        self.open_log()?;
        if let Some(profile) = &mut self.profile {
            profile.start_step();
        }
        let started = Instant::now();
        let lr = self.config.schedule.lr_at(self.step);
        self.optimizer.set_lr(lr);
        Ok((started, lr))
    }

    /// The next micro-batch's indices, with the run's random stream.
    fn micro_batch(&mut self, micro_step: usize) -> StepContext<'_> {
        StepContext {
            step: self.step,
            micro_step,
            indices: self.data.next_batch(self.config.batch_size),
            rng: &mut self.rng,
        }
    }

    /// A micro-batch's loss value; an error when it is not a finite number.
    fn finite(&self, value: f64, lr: f64) -> Result<f64> {
        if !value.is_finite() {
            return Err(self.diverged("loss", value, lr));
        }
        Ok(value)
    }

    fn micro_gradients(&self, loss: &Tensor) -> Result<Grads> {
        scaled_gradients(self.optimizer.params(), loss, self.config.grad_accumulation)
    }

    /// Clips, updates the weights, the clamps and the EMA; logs and reports the step.
    fn finish_step(
        &mut self,
        mut grads: Grads,
        loss_sum: f64,
        lr: f64,
        started: Instant,
    ) -> Result<StepRecord> {
        let accumulation = self.config.grad_accumulation;
        if grads.iter().all(Option::is_none) {
            return Err(Error::invalid(
                "the loss does not depend on any trained parameter: is the model built from the \
                 VarMap whose variables were given to the trainer, and is no output detached?",
            ));
        }

        let grad_norm = match self.config.max_grad_norm {
            Some(max) => clip_grad_norm(&mut grads, max)?,
            None => global_grad_norm(&grads)?,
        };
        if !grad_norm.is_finite() {
            return Err(self.diverged("gradient norm", grad_norm, lr));
        }
        self.end_phase(StepPhase::Clip)?;
        self.optimizer.step(&grads)?;
        for &(i, min, max) in &self.clamps {
            let var = &self.optimizer.params()[i].1;
            var.set(&var.as_tensor().clamp(min, max)?.detach())?;
        }
        self.end_phase(StepPhase::Optimizer)?;
        if let Some(ema) = &mut self.ema {
            ema.update(self.optimizer.params())?;
            self.end_phase(StepPhase::Ema)?;
        }
        self.step += 1;

        let seconds = started.elapsed().as_secs_f64();
        self.elapsed_secs += seconds;
        let samples = (self.config.batch_size * accumulation) as f64;
        let record = StepRecord {
            step: self.step,
            loss: loss_sum / accumulation as f64,
            lr,
            grad_norm,
            samples_per_sec: samples / seconds.max(1e-9),
            elapsed_secs: self.elapsed_secs,
        };
        if let Some(log) = &mut self.log {
            log.append(&record)?;
        }
        if let Some(progress) = &mut self.progress {
            progress(&record);
        }
        self.end_phase(StepPhase::Log)?;
        if let Some(profile) = &mut self.profile {
            profile.end_step();
        }
        Ok(record)
    }

    fn diverged(&self, what: &str, value: f64, lr: f64) -> Error {
        Error::invalid(format!(
            "training diverged: the {what} is {value} at step {}; lower the learning rate (it \
             is {lr:e}), clip gradients (max grad norm), or resume from an earlier checkpoint",
            self.step + 1
        ))
    }

    fn open_log(&mut self) -> Result<()> {
        if self.log.is_none() {
            if let Some(path) = &self.config.log_path {
                self.log = Some(LossLog::open(path, self.resumed_from)?);
            }
        }
        Ok(())
    }

    /// The whole state of the run, in memory (a copy: later steps do not change it).
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        self.snapshot(true)
    }

    /// `copy_weights` false shares the weights' storage, which the next step overwrites in
    /// place: only for writing out at once. (Moments and EMA are replaced, never mutated.)
    fn snapshot(&self, copy_weights: bool) -> Result<Checkpoint> {
        let params = self.optimizer.params();
        let model = params
            .iter()
            .map(|(n, v)| {
                let t = v.as_tensor();
                Ok((n.clone(), if copy_weights { t.copy()? } else { t.clone() }))
            })
            .collect::<Result<_>>()?;
        let mut state = TrainerState::new(self.step);
        state.elapsed_secs = self.elapsed_secs;
        state.rng_state = self.rng.state();
        state.data_seed = self.data.seed();
        state.dataset_len = self.data.len();
        state.batch_size = self.config.batch_size;
        state.data_position = self.data.position().clone();
        state.optimizer = self.optimizer.config().clone();
        state.schedule = self.config.schedule.clone();
        state.ema_decay = self.ema.as_ref().map(Ema::decay);
        state.ema_updates = self.ema.as_ref().map_or(0, Ema::updates);
        state.params = params.iter().map(|(n, _)| n.clone()).collect();
        state.metadata = self.metadata.clone();
        Ok(Checkpoint {
            state,
            model,
            ema: self.ema.as_ref().map(Ema::tensors),
            optimizer: self.optimizer.state_tensors()?,
        })
    }

    /// Writes a checkpoint of the current step into `checkpoint_dir` and prunes old ones.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let dir = self.config.checkpoint_dir.as_ref().ok_or_else(|| {
            Error::invalid("no checkpoint folder configured (TrainerConfig::checkpoint_dir)")
        })?;
        let path = write_checkpoint(dir, &self.snapshot(false)?)?;
        prune_checkpoints(dir, self.config.keep_checkpoints)?;
        Ok(path)
    }

    /// Resumes from the newest checkpoint in `checkpoint_dir`; returns its step, or None when
    /// there is none (the run starts from step 0).
    pub fn resume_latest(&mut self) -> Result<Option<u64>> {
        let Some(dir) = self.config.checkpoint_dir.clone() else {
            return Ok(None);
        };
        match latest_checkpoint(&dir)? {
            Some(path) => {
                self.resume(&path)?;
                Ok(Some(self.step))
            }
            None => Ok(None),
        }
    }

    /// Continues from the checkpoint folder `path`: weights, EMA, optimizer state, step, data
    /// position (and data seed) and random state come from it; hyper-parameters come from this
    /// trainer's config, so a resumed run may change them (with the same config, the run
    /// continues bit for bit as if it had not stopped).
    pub fn resume(&mut self, path: &Path) -> Result<()> {
        let device = match self.params().first() {
            Some((_, v)) => v.device().clone(),
            None => candle_core::Device::Cpu,
        };
        let ckpt = read_checkpoint(path, &device)?;
        let st = &ckpt.state;
        let names: Vec<&str> = self.params().iter().map(|(n, _)| n.as_str()).collect();
        if st
            .params
            .iter()
            .map(String::as_str)
            .ne(names.iter().copied())
        {
            let missing = names.iter().find(|n| !st.params.iter().any(|p| p == *n));
            let extra = st.params.iter().find(|p| !names.contains(&p.as_str()));
            return Err(Error::checkpoint(
                path,
                format!(
                    "it trains other parameters than this run ({} saved, {} here; first \
                     missing from it: {missing:?}, first not trained here: {extra:?})",
                    st.params.len(),
                    names.len()
                ),
            ));
        }
        if st.dataset_len != self.config.dataset_len {
            return Err(Error::checkpoint(
                path,
                format!(
                    "it was made with a dataset of {} items but this run has {}: resume with \
                     the same dataset",
                    st.dataset_len, self.config.dataset_len
                ),
            ));
        }
        if st.ema_decay.is_some() != self.ema.is_some() {
            return Err(Error::checkpoint(
                path,
                "it was made with EMA on and this run has it off, or the reverse: use the same \
                 ema_decay setting",
            ));
        }
        for (name, var) in self.optimizer.params() {
            let t = ckpt.model.get(name).ok_or_else(|| {
                Error::checkpoint(path, format!("{} has no tensor {name}", super::MODEL_FILE))
            })?;
            if t.dims() != var.dims() {
                return Err(Error::checkpoint(
                    path,
                    format!(
                        "weight {name} has shape {:?} but the model has {:?}: is the model \
                         config the same?",
                        t.dims(),
                        var.dims()
                    ),
                ));
            }
            var.set(&t.to_dtype(var.dtype())?)?;
        }
        self.optimizer.load_state_tensors(&ckpt.optimizer)?;
        if let (Some(ema), Some(tensors)) = (&mut self.ema, &ckpt.ema) {
            ema.load(tensors, st.ema_updates)?;
        }
        let mut data = DataOrder::new(st.data_seed, st.dataset_len)?;
        data.seek(st.data_position.clone())?;
        self.data = data;
        self.rng = TrainRng::from_state(st.rng_state);
        self.step = st.step;
        self.elapsed_secs = st.elapsed_secs;
        self.resumed_from = Some(st.step);
        self.log = None; // reopened at the next step, keeping the records up to here
        if self.metadata.is_null() {
            self.metadata = st.metadata.clone();
        }
        Ok(())
    }
}

/// The gradients of `loss / accumulation` for `params` (the mean over micro-batches).
fn scaled_gradients(params: &Params, loss: &Tensor, accumulation: usize) -> Result<Grads> {
    let loss = if accumulation > 1 {
        loss.affine(1.0 / accumulation as f64, 0.0)?
    } else {
        loss.clone()
    };
    Ok(gradients(params, &loss.backward()?))
}

/// The value of a one-element loss tensor.
fn scalar(loss: &Tensor) -> Result<f64> {
    if loss.elem_count() != 1 {
        return Err(Error::invalid(format!(
            "the loss closure must return a single number, got a tensor of shape {:?}: \
             reduce it (e.g. .mean_all())",
            loss.dims()
        )));
    }
    Ok(loss.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?[0])
}
