//! Time one UNet training step of the built-in recipe, split into forward and backward, to see
//! where training time goes. `cargo run --release --example train_step_bench -- [batch]`.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use pigment::builtin::recipe::unet_config;
use pigment::train::seeded_var_builder;
use pigment::unet::{UNet2DConditionModel, UNetExtras};

fn main() -> pigment::Result<()> {
    let batch: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let dev = Device::Cpu;
    let cfg = unet_config();
    let vars = VarMap::new();
    let unet = UNet2DConditionModel::new(seeded_var_builder(&vars, 0, DType::F32, &dev), &cfg)?;
    let s = cfg.sample_size;
    let x = Tensor::randn(0f32, 1., (batch, 4, s, s), &dev)?;
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
    Ok(())
}
