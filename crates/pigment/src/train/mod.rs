//! Training: the optimiser, schedules, clipping, EMA, checkpoints and logs of a generic loop
//! ([`Trainer`]), and the objectives of the models Pigment trains: the DDPM noise-prediction
//! loss of the UNet ([`diffusion`]), the VAE's reconstruction + KL loss ([`vae`]) and CLIP's
//! contrastive loss ([`clip`]).
//!
//! Models train from a `candle_nn::VarMap`: build them with [`seeded_var_builder`] (or
//! `VarBuilder::from_varmap`), give the trainable variables ([`named_vars`]) to a [`Trainer`],
//! and compute the loss in the closure it runs. Everything that decides the next step (weights,
//! EMA, AdamW moments, step, data position, random state) is in a checkpoint, so a resumed run
//! continues bit for bit.

pub mod checkpoint;
pub mod clip;
mod clip_grad;
mod data_order;
pub mod diffusion;
mod ema;
mod init;
pub mod log;
mod lr_schedule;
mod optimizer;
mod params;
mod prng;
mod step_profile;
mod trainer;
pub mod vae;

pub use checkpoint::{
    latest_checkpoint, read_checkpoint, write_checkpoint, Checkpoint, TrainerState, EMA_FILE,
    MODEL_FILE, OPTIMIZER_FILE, STATE_FILE,
};
pub use clip_grad::{clip_grad_norm, global_grad_norm};
pub use data_order::{DataOrder, DataPosition};
pub use ema::Ema;
pub use init::{
    grow_vars_from_file, init_vars_from_file, initial_values, seeded_var_builder, GrowReport,
};
pub use log::{read_log, LossLog, ProgressFn, StepRecord};
pub use lr_schedule::LrSchedule;
pub use optimizer::{AdamW, AdamWConfig};
pub use params::{accumulate, count, gradients, named_vars, named_vars_where, Grads, Params};
pub use prng::TrainRng;
pub use step_profile::{StepPhase, StepProfile};
pub use trainer::{StepContext, Trainer, TrainerConfig};
