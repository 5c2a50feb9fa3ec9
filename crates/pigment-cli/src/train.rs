//! `pigment train clip|vae|unet|export`: the built-in model's training stages (the recipe in
//! pigment::builtin::recipe), resumable, with a progress bar and a JSONL loss log.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use pigment::builtin::recipe::{self, StageOptions};

#[derive(Clone, Copy, ValueEnum)]
pub enum Stage {
    /// Contrastive CLIP (text + vision towers).
    Clip,
    /// The autoencoder.
    Vae,
    /// The denoiser, conditioned on the frozen CLIP text tower.
    Unet,
    /// Assemble the trained stages into a diffusers folder (f16 weights).
    Export,
}

#[derive(Args)]
pub struct TrainArgs {
    pub stage: Stage,
    /// Work folder holding every stage's checkpoints, logs and weights.
    #[arg(long, default_value = "train-work")]
    pub work: PathBuf,
    /// Optimiser steps of the stage (a resumed stage continues to this count).
    #[arg(long, default_value_t = 2000)]
    pub steps: u64,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Peak learning rate (linear warm-up over 5% of the steps, then cosine decay).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Seed of the weight initialisation and the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write a checkpoint every this many steps (the newest two are kept).
    #[arg(long, default_value_t = 200)]
    pub checkpoint_every: u64,
    /// With `export`: the folder to write the model to.
    #[arg(long, default_value = "models/builtin")]
    pub out: PathBuf,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let name = match args.stage {
        Stage::Clip => "clip",
        Stage::Vae => "vae",
        Stage::Unet => "unet",
        Stage::Export => {
            recipe::export(&args.work, &args.out)?;
            println!("{}", args.out.display());
            return Ok(());
        }
    };
    let opts = StageOptions {
        work_dir: args.work.clone(),
        steps: args.steps,
        batch_size: args.batch,
        peak_lr: args.lr,
        seed: args.seed,
        checkpoint_every: args.checkpoint_every,
    };
    let bar = ProgressBar::new(args.steps);
    bar.set_style(
        ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} {msg} eta {eta}")
            .expect("static progress template"),
    );
    bar.set_prefix(name);
    let progress_bar = bar.clone();
    let dir = recipe::train_stage(
        name,
        &opts,
        Box::new(move |record| {
            progress_bar.set_position(record.step);
            progress_bar.set_message(format!(
                "loss {:.4} lr {:.2e} {:.1} img/s",
                record.loss, record.lr, record.samples_per_sec
            ));
        }),
    )?;
    bar.finish();
    eprintln!(
        "{name}: {} steps done; loss log {}",
        args.steps,
        dir.join("loss.jsonl").display()
    );
    println!("{}", dir.display());
    Ok(())
}
