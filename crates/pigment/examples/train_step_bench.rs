//! Time one UNet training step of the built-in recipe, split into forward and backward, to see
//! where training time goes, and one inference forward at batch 2 (a guided sampling step).
//! `cargo run --release --example train_step_bench -- [batch] [config overrides as JSON]`
//! (with `CANDLE_NUM_THREADS=1` for the two-halves row, as `pigment train` sets it),
//! e.g. `-- 32 '{"block_out_channels":[32,64,64]}'` to try a variant of the recipe's config.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use pigment::builtin::recipe::{unet_config, vae_config};
use pigment::train::seeded_var_builder;
use pigment::unet::{UNet2DConditionConfig, UNet2DConditionModel, UNetExtras};
use pigment::vae::AutoencoderKL;

fn config_with_overrides(overrides: Option<String>) -> pigment::Result<UNet2DConditionConfig> {
    let mut config = serde_json::to_value(unet_config()).expect("config serialises");
    if let Some(text) = overrides {
        let patch: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| pigment::Error::invalid(format!("overrides are not JSON: {e}")))?;
        if let (Some(base), Some(patch)) = (config.as_object_mut(), patch.as_object()) {
            for (key, value) in patch {
                base.insert(key.clone(), value.clone());
            }
        }
    }
    serde_json::from_value(config).map_err(|e| pigment::Error::invalid(format!("config: {e}")))
}

fn main() -> pigment::Result<()> {
    pigment::device::pin_cpu_thread_count();
    let mut args = std::env::args().skip(1);
    let batch: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(32);
    let dev = Device::Cpu;
    let cfg = config_with_overrides(args.next())?;
    let vars = VarMap::new();
    let unet = UNet2DConditionModel::new(seeded_var_builder(&vars, 0, DType::F32, &dev), &cfg)?;
    let params: usize = vars.all_vars().iter().map(|v| v.elem_count()).sum();
    println!("parameters: {:.2} M", params as f64 / 1e6);
    let s = cfg.sample_size;
    let x = Tensor::randn(0f32, 1., (batch, cfg.in_channels, s, s), &dev)?;
    let ctx = Tensor::randn(0f32, 1., (batch, 77, 64), &dev)?;
    let t: Vec<f64> = (0..batch).map(|i| (i * 31 % 1000) as f64).collect();
    for _ in 0..2 {
        let start = Instant::now();
        let y = unet.forward_timesteps(&x, &t, &ctx, &UNetExtras::default())?;
        let loss = y.sqr()?.mean_all()?;
        let fwd = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let _grads = loss.backward()?;
        let bwd = start.elapsed().as_secs_f64();
        println!("batch {batch}: forward {fwd:.3} s, backward {bwd:.3} s");
    }
    // Data parallel: the batch in two halves, each forward + backward on its own thread.
    if batch >= 2 {
        let half = batch / 2;
        let step = |lo: usize, n: usize| -> pigment::Result<()> {
            let y = unet.forward_timesteps(
                &x.narrow(0, lo, n)?,
                &t[lo..lo + n],
                &ctx.narrow(0, lo, n)?,
                &UNetExtras::default(),
            )?;
            let _grads = y.sqr()?.mean_all()?.backward()?;
            Ok(())
        };
        for _ in 0..3 {
            let start = Instant::now();
            let (a, b) = rayon::join(|| step(0, half), || step(half, batch - half));
            a?;
            b?;
            println!(
                "batch {batch} as two halves in parallel: forward + backward {:.3} s",
                start.elapsed().as_secs_f64()
            );
        }
    }
    // The data side of a step: encoding the batch's 64x64 images with the recipe's VAE (no
    // gradient), which `pigment train unet` does for every batch.
    let vae_vars = VarMap::new();
    let vae_cfg = vae_config();
    let vae = AutoencoderKL::new(seeded_var_builder(&vae_vars, 0, DType::F32, &dev), &vae_cfg)?;
    let side = vae_cfg.sample_size;
    let images = Tensor::randn(0f32, 1., (batch, 3, side, side), &dev)?;
    for _ in 0..2 {
        let start = Instant::now();
        vae.encode(&images)?;
        println!(
            "VAE encode of the batch: {:.3} s",
            start.elapsed().as_secs_f64()
        );
    }
    let x2 = x.narrow(0, 0, 2.min(batch))?;
    let c2 = ctx.narrow(0, 0, 2.min(batch))?;
    let start = Instant::now();
    for _ in 0..20 {
        unet.forward_timesteps(&x2, &[500.0, 500.0], &c2, &UNetExtras::default())?;
    }
    println!(
        "inference, batch 2: {:.1} ms per step",
        start.elapsed().as_secs_f64() * 50.0
    );
    Ok(())
}
