//! `pigment bench`: time the text encoder, one guided UNet forward (batch 2) per size, the VAE
//! decoder per size and a whole generation, on a full-size architecture with random weights
//! made in memory (`--arch sd15|sd21`, no download) or on a real checkpoint (`--model`).
//! Prints a table, or the JSON that tools/bench/side_by_side.py reads (`--json`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use pigment::bench::{run_bench, Arch, BenchComponent, BenchOptions, BenchReport};
use pigment::pipelines::{LoadOptions, StableDiffusion};

#[derive(Args)]
pub struct BenchArgs {
    /// Architecture built with random weights: sd15, sd21, or tiny (for tests).
    #[arg(long, default_value = "sd15", conflicts_with = "model")]
    pub arch: String,
    /// Benchmark a real checkpoint (diffusers folder, .safetensors or .ckpt) instead.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Image sides in pixels, comma-separated; UNet and VAE decode run at each.
    #[arg(long, value_delimiter = ',', default_value = "512,256")]
    pub sizes: Vec<usize>,
    /// Steps of the whole generation (Euler, guidance 7.5, first size).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Leave out the whole generation.
    #[arg(long)]
    pub skip_full: bool,
    /// Runs of each component; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Runs of the whole generation.
    #[arg(long, default_value_t = 1)]
    pub full_repeats: usize,
    /// Compute (and random-weight) dtype: f32 or f16 (bf16 on CUDA, which also runs f16).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// cpu, cuda[:N] or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Low-memory mode: the model loads (or builds) its text encoder and UNet only when a row
    /// needs them and frees them after; the whole generation runs once with txt2img_low_memory,
    /// holding one component at a time.
    #[arg(long)]
    pub low_memory: bool,
    /// VAE tiling for the decode rows and the generation: off (default, as diffusers), on, or
    /// auto (from 1024x1024 pixels).
    #[arg(long, value_name = "off|on|auto", default_value = "off")]
    pub vae_tiling: String,
    /// Untimed runs of each component before the timed ones (default 1: a first run loads GPU
    /// kernels and grows the heap, which a sampling loop does not see after its first step).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Components to time, comma-separated: text_encoder, unet, vae_decode (default: all).
    /// The whole generation is controlled by --skip-full.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "text_encoder,unet,vae_decode"
    )]
    pub components: Vec<String>,
    #[command(flatten)]
    pub weights: crate::weights_args::WeightsArgs,
    /// CUDA, f32: let matrix products use TF32 (off by default, as PyTorch's matmul default).
    #[arg(long)]
    pub tf32: bool,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the report as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let device = pigment::device::parse_device(&args.device)?;
    let tiling: pigment::vae::VaeTiling = args.vae_tiling.parse()?;
    let dtype = pigment::device::parse_dtype(&args.dtype)?;
    if args.repeats == 0 || args.full_repeats == 0 {
        anyhow::bail!("--repeats and --full-repeats must be at least 1");
    }
    if args.tf32 && !device.is_cuda() {
        anyhow::bail!("--tf32 applies to CUDA devices only: drop it, or add --device cuda");
    }
    let components = args
        .components
        .iter()
        .map(|name| name.parse::<BenchComponent>())
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let weights = args.weights.format()?;
    let mut model = match &args.model {
        Some(path) => {
            let options = LoadOptions {
                device,
                dtype,
                ..LoadOptions::default()
            };
            let loaded = if args.low_memory {
                StableDiffusion::load_deferred(path, &options, weights)
            } else {
                StableDiffusion::load_with_weights(path, &options, weights)
            };
            loaded.with_context(|| format!("loading {}", path.display()))?
        }
        None => {
            let arch: Arch = args.arch.parse()?;
            eprintln!(
                "building {} with random weights ({})",
                arch.name(),
                args.dtype
            );
            if args.low_memory {
                arch.build_random_deferred(dtype, &device, args.seed, weights)?
            } else {
                arch.build_random(dtype, &device, args.seed, weights)?
            }
        }
    };
    model.vae.set_tiling(tiling);
    let options = BenchOptions {
        sizes: args.sizes.clone(),
        steps: args.steps,
        skip_full: args.skip_full,
        repeats: args.repeats,
        full_repeats: args.full_repeats,
        low_memory: args.low_memory,
        warmup: args.warmup,
        components,
        tf32: args.tf32,
    };
    let mut report = run_bench(&mut model, &options, &mut |what| {
        eprintln!("measuring {what}")
    })?;
    if weights != pigment::ops::WeightFormat::Full {
        report.weights = Some(weights.to_string());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn gib(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| {
        format!("{:.2}", b as f64 / (1u64 << 30) as f64)
    })
}

/// The table's device-memory column and header line: only where the report has readings (CUDA).
fn device_memory_line(report: &BenchReport) -> Option<String> {
    let total = report.device_total_bytes?;
    Some(format!(
        "device memory: {} GiB total, {} GiB in use after load (CUDA context included){}",
        gib(Some(total)),
        gib(report.loaded_device_bytes),
        match report.tf32 {
            Some(true) => "; f32 matmuls in TF32",
            Some(false) => "; f32 matmuls in full f32 (no TF32)",
            None => "",
        }
    ))
}

fn print_table(report: &BenchReport) {
    println!(
        "pigment bench · {} · {}{} · VAE tiling {} · {} · {} threads · median of {} · load {:.2} s · RSS after load {} GiB",
        report.model,
        report.dtype,
        report
            .weights
            .as_ref()
            .map_or(String::new(), |w| format!(" compute, {w} weights")),
        report.vae_tiling,
        report.device,
        report.threads,
        report.repeats,
        report.load_s,
        gib(report.loaded_rss_bytes)
    );
    let device_line = device_memory_line(report);
    if let Some(line) = &device_line {
        println!("{line}; warm-up runs per component: {}", report.warmup);
    }
    print!(
        "{:<22} {:>6} {:>5} {:>10} {:>10} {:>9} {:>13}",
        "component", "size", "batch", "median s", "GFLOP", "GFLOP/s", "peak RSS GiB"
    );
    if device_line.is_some() {
        print!(" {:>13}", "peak GPU GiB");
    }
    println!();
    for r in &report.rows {
        let size = if r.size == 0 {
            "-".into()
        } else {
            r.size.to_string()
        };
        print!(
            "{:<22} {:>6} {:>5} {:>10.3} {:>10.2} {:>9.1} {:>13}",
            r.component,
            size,
            r.batch,
            r.median_s,
            r.flops / 1e9,
            r.gflops_per_s,
            gib(r.peak_rss_bytes)
        );
        if device_line.is_some() {
            print!(" {:>13}", gib(r.peak_device_bytes));
        }
        println!();
    }
}
