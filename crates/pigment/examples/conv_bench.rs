//! Times candle's CPU f32 conv2d against pigment's `ops::Conv2d` on Stable Diffusion 1.5's
//! convolution shapes (UNet at batch 2 on 64x64 latents, VAE decoder at batch 1 on 512x512),
//! in GFLOP/s = 2 * B * out * H' * W' * in * k * k / time. tools/bench/conv_bench.py times torch
//! on the same shapes.
//!
//! The pigment column is what `Conv2d` dispatches to (Winograd F(4x4, 3x3) or F(2x2, 3x3) for
//! 3x3 stride-1 shapes, see ops/winograd/; im2col blocks for stride 2, ops/conv_strided.rs;
//! one GEMM per item for 1x1); the direct column is the same with Winograd off (the
//! implicit-GEMM kernel for 3x3 stride 1, the same kernel as the pigment column otherwise).
//! The VAE encoder's down-samplers are timed on the already padded (H+1)x(W+1) input.
//!
//! cargo run --release -p pigment --example conv_bench [--fast-only] [--only LABEL-PART] [--reps N]
//! [--json] (--json: one JSON object per conv shape, {"label", "gflop", "pigment_ms",
//! "direct_ms"}, no candle column and no GroupNorm rows, for tools/bench/kernels_side_by_side.py)

use std::time::Instant;

use candle_core::{Device, Module, Tensor};
use pigment::ops::{set_winograd_conv, Conv2d, GroupNorm};

/// (label, batch, in, out, height, width, kernel, stride, padding)
type Case = (
    &'static str,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

const SHAPES: &[Case] = &[
    ("unet 320@64 3x3", 2, 320, 320, 64, 64, 3, 1, 1),
    ("unet 640@32 3x3", 2, 640, 640, 32, 32, 3, 1, 1),
    ("unet 1280@16 3x3", 2, 1280, 1280, 16, 16, 3, 1, 1),
    ("unet 1280@8 3x3", 2, 1280, 1280, 8, 8, 3, 1, 1),
    // Batch 1 (no classifier-free guidance): where Winograd's tile count gets thin.
    ("unet 1280@16 3x3 b1", 1, 1280, 1280, 16, 16, 3, 1, 1),
    ("unet 320@64 down s2", 2, 320, 320, 64, 64, 3, 2, 1),
    ("unet 640@32 down s2", 2, 640, 640, 32, 32, 3, 2, 1),
    ("unet 1280@16 down s2", 2, 1280, 1280, 16, 16, 3, 2, 1),
    ("unet 640->320@64 1x1", 2, 640, 320, 64, 64, 1, 1, 0),
    ("vae 512@64 3x3", 1, 512, 512, 64, 64, 3, 1, 1),
    ("vae 512@128 3x3", 1, 512, 512, 128, 128, 3, 1, 1),
    ("vae 256@256 3x3", 1, 256, 256, 256, 256, 3, 1, 1),
    ("vae 128@512 3x3", 1, 128, 128, 512, 512, 3, 1, 1),
    // The VAE encoder's Downsample2D: padding 0 after an explicit (0, 1, 0, 1) pad, so the
    // conv sees a (H+1)x(W+1) input.
    ("vae enc 128@512 down s2", 1, 128, 128, 513, 513, 3, 2, 0),
    ("vae enc 256@256 down s2", 1, 256, 256, 257, 257, 3, 2, 0),
    ("vae enc 512@128 down s2", 1, 512, 512, 129, 129, 3, 2, 0),
];

/// Best of `reps` runs after one warm-up, in seconds.
fn best_time(
    reps: usize,
    mut f: impl FnMut() -> candle_core::Result<Tensor>,
) -> anyhow::Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let json = args.iter().any(|a| a == "--json");
    let fast_only = json || args.iter().any(|a| a == "--fast-only");
    // --only PART: just the shapes whose label contains PART (for profiling one shape).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    // --reps N: best of N timed runs (3 by default; more on a shared machine).
    let reps: usize = args
        .iter()
        .position(|a| a == "--reps")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dev = Device::Cpu;
    if !json {
        println!(
            "threads {}; GFLOP/s, best of {reps} (candle: best of 1)",
            candle_core::utils::get_num_threads()
        );
        println!(
            "{:24} {:>10} {:>8} {:>10} {:>8} {:>10} {:>8}",
            "shape", "candle ms", "GFLOP/s", "pigment ms", "GFLOP/s", "direct ms", "GFLOP/s"
        );
        // The machine's matmul speed right now (other processes share the cores): the ceiling.
        let a = Tensor::randn(0f32, 1.0, (320, 2880), &dev)?;
        let m = Tensor::randn(0f32, 1.0, (2880, 4096), &dev)?;
        let t = best_time(3, || a.matmul(&m))?;
        println!(
            "candle matmul 320x2880x4096: {:.1} GFLOP/s",
            2.0 * 320.0 * 2880.0 * 4096.0 / 1e9 / t
        );
    }
    for &(label, b, cin, cout, h, w, k, s, p) in SHAPES {
        if only
            .as_ref()
            .is_some_and(|part| !label.contains(part.as_str()))
        {
            continue;
        }
        let x = Tensor::randn(0f32, 1.0, (b, cin, h, w), &dev)?;
        let weight = (Tensor::randn(0f32, 1.0, (cout, cin, k, k), &dev)? * 0.02)?;
        let bias = Tensor::randn(0f32, 1.0, cout, &dev)?;
        let conv = Conv2d::new(weight, Some(bias), s, p)?;
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let gflop = 2.0 * (b * cout * oh * ow * cin * k * k) as f64 / 1e9;
        let fast = best_time(reps, || conv.forward(&x))?;
        set_winograd_conv(false);
        let direct = best_time(reps, || conv.forward(&x));
        set_winograd_conv(true);
        let direct = direct?;
        if json {
            println!(
                "{{\"label\": \"{label}\", \"gflop\": {gflop:.4}, \"pigment_ms\": {:.3}, \"direct_ms\": {:.3}}}",
                fast * 1e3,
                direct * 1e3
            );
            continue;
        }
        let candle = if fast_only {
            f64::NAN
        } else {
            best_time(1, || conv.forward_reference(&x))?
        };
        println!(
            "{label:24} {:10.1} {:8.1} {:10.1} {:8.1} {:10.1} {:8.1}",
            candle * 1e3,
            gflop / candle,
            fast * 1e3,
            gflop / fast,
            direct * 1e3,
            gflop / direct
        );
    }
    if json {
        return Ok(());
    }
    // GroupNorm(32) + SiLU, as in every resnet: (label, batch, channels, height, width).
    for (label, b, c, h, w) in [
        ("unet gn+silu 320@64", 2, 320, 64, 64),
        ("vae gn+silu 128@512", 1, 128, 512, 512),
    ] {
        let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev)?;
        let weight = Tensor::randn(0f32, 1.0, c, &dev)?;
        let bias = Tensor::randn(0f32, 1.0, c, &dev)?;
        let norm = GroupNorm::new(weight, bias, 32, 1e-6)?;
        let fast = best_time(3, || norm.forward_silu(&x))?;
        let candle = if fast_only {
            f64::NAN
        } else {
            best_time(1, || norm.forward_reference(&x, true))?
        };
        println!(
            "{label:24} {:10.1} {:>8} {:10.1}",
            candle * 1e3,
            "",
            fast * 1e3
        );
    }
    Ok(())
}
