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
    /// Device to train on: `cpu`, or `cuda` / `cuda:N` (needs a build with `--features cuda`;
    /// f32 matrix products then use TF32).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Start the stage from these weights (.safetensors of the same model config, any float
    /// dtype: e.g. models/builtin/unet/diffusion_pytorch_model.safetensors) instead of a random
    /// init, to fine-tune; ignored once the stage has a checkpoint to resume.
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
    /// With `--init`: the recipe's model may have weights the file lacks (it grew, e.g. a
    /// cross-attention added at another resolution). They start from the seeded init, and
    /// each new attention block's output projection at zero, so training starts from exactly
    /// the old model's outputs; every weight in the file must still fit the model.
    #[arg(long, requires = "init")]
    pub grow: bool,
    /// UNet stage: min-SNR-gamma loss weighting (Hang et al. 2023, e.g. 5); 0, the recipe's
    /// default, is the plain MSE of the v target (every timestep weighted 1): on the recipe's
    /// zero-terminal-SNR schedule min-SNR would weight the noisiest steps near 0.
    #[arg(long, default_value_t = recipe::DEFAULT_SNR_GAMMA)]
    pub snr_gamma: f64,
    /// Split each step's batch into this many equal micro-batches that run in parallel, one
    /// per thread, their gradients averaged (the result depends on this number, not on the
    /// thread count). Default: 2 on the CPU for the VAE and UNet stages (twice the samples/s
    /// of one batch on 2 cores), 1 on CUDA and for CLIP, whose contrastive loss needs the whole
    /// batch.
    #[arg(long, value_name = "N")]
    pub micro_batches: Option<usize>,
    /// Time each step's phases (rendering the batch, forward, backward, clipping, optimiser,
    /// EMA), waiting for the device after each, and print the mean per step at the end (also
    /// written to WORK/STAGE/step_profile.txt). Slows a GPU run a little: the waits stop one
    /// phase's kernels from overlapping the next phase's launches.
    #[arg(long)]
    pub profile_steps: bool,
    /// CLIP stage: the share of each batch made of hard-negative pairs, an item and the same
    /// scene with one fact changed (a shape, a size, the relation mirrored, one object fewer),
    /// so that the text tower must encode more than colour; 0 draws every item independently.
    #[arg(long, value_name = "SHARE", default_value_t = recipe::DEFAULT_HARD_NEGATIVES)]
    pub hard_negatives: f64,
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
    let device = pigment::device::parse_device(&args.device)?;
    let micro_batches = args.micro_batches.unwrap_or(
        if device.is_cpu() && name != "clip" && args.batch.is_multiple_of(2) {
            2
        } else {
            1
        },
    );
    if micro_batches > 1 && std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Each micro-batch runs candle's element-wise ops on its own thread; candle's shared
        // pool for them (sized by this variable, read at its first use) would otherwise
        // serialise the micro-batches behind its lock (Trainer::run_split).
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let opts = StageOptions {
        work_dir: args.work.clone(),
        steps: args.steps,
        batch_size: args.batch,
        peak_lr: args.lr,
        seed: args.seed,
        checkpoint_every: args.checkpoint_every,
        device,
        init_weights: args.init.clone(),
        grow: args.grow,
        snr_gamma: (args.snr_gamma != 0.0).then_some(args.snr_gamma),
        micro_batches,
        profile_steps: args.profile_steps,
        hard_negatives: args.hard_negatives,
    };
    let bar = ProgressBar::new(args.steps);
    bar.set_style(
        ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} {msg} eta {eta}")
            .expect("static progress template"),
    );
    bar.set_prefix(name);
    let progress_bar = bar.clone();
    let mut throughput = Throughput::new(args.batch);
    let dir = recipe::train_stage(
        name,
        &opts,
        Box::new(move |record| {
            progress_bar.set_position(record.step);
            progress_bar.set_message(format!(
                "loss {:.4} lr {:.2e} {:.1} img/s",
                record.loss, record.lr, record.samples_per_sec
            ));
            if let Some(line) = throughput.report(record) {
                progress_bar.suspend(|| eprintln!("{name} {line}"));
            }
        }),
    )?;
    bar.finish();
    eprintln!(
        "{name}: {} steps done; loss log {}",
        args.steps,
        dir.join("loss.jsonl").display()
    );
    if args.profile_steps {
        let path = dir.join(recipe::STEP_PROFILE_FILE);
        let report = std::fs::read_to_string(&path).map_err(|e| pigment::Error::io(&path, e))?;
        eprint!("{name} step profile: {report}");
    }
    println!("{}", dir.display());
    Ok(())
}

/// A throughput line every [`Throughput::EVERY_SECS`] seconds of wall clock (and at the first
/// step), printed whether or not the progress bar shows (it hides when stderr is not a
/// terminal, e.g. under `tee`): samples/s averaged over the steps since the last line.
struct Throughput {
    batch: usize,
    last: std::time::Instant,
    last_step: Option<u64>,
}

impl Throughput {
    const EVERY_SECS: f64 = 10.0;

    fn new(batch: usize) -> Self {
        Self {
            batch,
            last: std::time::Instant::now(),
            last_step: None,
        }
    }

    fn report(&mut self, record: &pigment::train::StepRecord) -> Option<String> {
        let secs = self.last.elapsed().as_secs_f64();
        let since = match self.last_step {
            None => 0,
            Some(_) if secs < Self::EVERY_SECS => return None,
            Some(step) => record.step.saturating_sub(step),
        };
        let rate = if since == 0 {
            record.samples_per_sec
        } else {
            (since as usize * self.batch) as f64 / secs.max(1e-9)
        };
        self.last = std::time::Instant::now();
        self.last_step = Some(record.step);
        Some(format!(
            "step {} loss {:.4} lr {:.2e} grad_norm {:.3} {:.1} samples/s ({:.1} ms/step)",
            record.step,
            record.loss,
            record.lr,
            record.grad_norm,
            rate,
            1000.0 * self.batch as f64 / rate.max(1e-9)
        ))
    }
}
