//! `pigment`: text-to-image from the command line.

mod adapter_args;
mod bench;
mod control_args;
mod edit;
mod eval;
mod generate;
mod info;
mod malloc_tuning;
mod memory_args;
mod outpaint_args;
mod output;
mod prompt_args;
mod train;
mod weights_args;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pigment",
    version,
    about = "Text-to-image diffusion (Stable Diffusion 1.x / 2.x) in one native binary",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate images from a text prompt.
    Generate(Box<generate::GenerateArgs>),
    /// Edit an image by a written instruction (InstructPix2Pix models).
    Edit(Box<edit::EditArgs>),
    /// Score a model on the built-in world's captions, per category, seen vs held-out pairs.
    Eval(Box<eval::EvalArgs>),
    /// Train the built-in model's stages: clip, vae, unet, then export.
    Train(train::TrainArgs),
    /// Time text encoder, UNet, VAE decode and a whole generation: FLOPs, GFLOP/s, peak RSS.
    Bench(Box<bench::BenchArgs>),
    /// Describe a checkpoint: family, prediction type, dtype, parameter counts, unknown keys.
    Info(info::InfoArgs),
}

fn main() {
    malloc_tuning::keep_freed_memory();
    pigment::device::pin_cpu_thread_count();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PIGMENT_LOG")
                // The library's info lines are the few a user wants to see (a training stage
                // resumed from a checkpoint, or grown from a smaller model's weights).
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,pigment=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate::run(*args),
        Command::Edit(args) => edit::run(*args),
        Command::Eval(args) => eval::run(*args),
        Command::Info(args) => info::run(args),
        Command::Bench(args) => bench::run(*args),
        Command::Train(args) => train::run(args),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
