//! Times one SD1.5-size UNet forward (batch 2 = classifier-free guidance, 64x64 latents, 77
//! tokens of 768) on the CPU in f32, with zero weights built in memory (the time does not depend
//! on the values), with pigment's fast ops and, with `--before`, with candle's conv2d and
//! GroupNorm (`--before-conv`: candle's conv2d only).
//! `--vae` also times a 512x512 VAE decode.
//!
//! cargo run -p pigment --example unet_bench [--before] [--before-conv] [--vae]

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use pigment::ops::{set_fast_conv, set_fast_group_norm};
use pigment::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use pigment::vae::{AutoencoderKL, AutoencoderKLConfig};

/// This process's CPU time (user + system) in seconds, from /proc/self/stat on Linux (NaN
/// elsewhere): steadier than wall time when other processes share the cores.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

/// Wall-clock time, with the CPU time of all threads alongside.
struct Timing(f64, f64);

impl std::fmt::Display for Timing {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{:.2} s wall, {:.2} s CPU", self.0, self.1)
    }
}

fn seconds(f: impl FnOnce() -> pigment::Result<Tensor>) -> anyhow::Result<Timing> {
    let (t, cpu) = (Instant::now(), cpu_seconds());
    f()?;
    Ok(Timing(t.elapsed().as_secs_f64(), cpu_seconds() - cpu))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let before = args.iter().any(|a| a == "--before");
    let before_conv = args.iter().any(|a| a == "--before-conv");
    let vae = args.iter().any(|a| a == "--vae");
    let dev = Device::Cpu;
    println!("threads {}", candle_core::utils::get_num_threads());

    let vb = VarBuilder::zeros(DType::F32, &dev);
    let unet = UNet2DConditionModel::new(vb.clone(), &UNet2DConditionConfig::sd1())?;
    let sample = Tensor::randn(0f32, 1.0, (2, 4, 64, 64), &dev)?;
    let context = Tensor::randn(0f32, 1.0, (2, 77, 768), &dev)?;
    let forward = || unet.forward(&sample, 500.0, &context);
    let first = seconds(forward)?;
    let second = seconds(forward)?;
    println!("unet forward (b2, 64x64), fast ops: {first}; again {second}");
    if before_conv {
        set_fast_conv(false);
        println!("unet forward, candle conv2d: {}", seconds(forward)?);
        set_fast_conv(true);
    }
    if before {
        set_fast_conv(false);
        set_fast_group_norm(false);
        println!(
            "unet forward, candle conv2d + GroupNorm: {}",
            seconds(forward)?
        );
        set_fast_conv(true);
        set_fast_group_norm(true);
    }

    if vae {
        let model = AutoencoderKL::new(vb, &AutoencoderKLConfig::sd())?;
        let latents = Tensor::randn(0f32, 1.0, (1, 4, 64, 64), &dev)?;
        let decode = || model.decode(&latents);
        println!("vae decode 512x512, fast ops: {}", seconds(decode)?);
        if before {
            set_fast_conv(false);
            set_fast_group_norm(false);
            println!("vae decode 512x512, candle ops: {}", seconds(decode)?);
            set_fast_conv(true);
            set_fast_group_norm(true);
        }
    }
    Ok(())
}
