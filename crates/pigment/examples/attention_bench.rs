//! Time multi-head attention as SD1.5's 64x64-latent self-attention runs it (batch 2 for
//! guidance, 4096 tokens, 8 heads of 40) with the fused CPU kernel and with candle's unfused
//! ops, and report GFLOP/s (4 B H Lq Lk D flops: two matmuls).
//! `cargo run --release --example attention_bench -- [tokens] [heads] [head_dim] [batch] [fused]`
//! (a fifth argument `fused` skips the unfused run, for profiling).

use std::time::Instant;

use candle_core::{Device, Tensor};
use pigment::ops::set_fast_attention;
use pigment::unet::multi_head_attention;

/// The probabilities hook `multi_head_attention` takes (none here: the fused path).
type ProbsHook = fn(&Tensor) -> pigment::Result<Option<Tensor>>;

fn main() -> pigment::Result<()> {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let (tokens, heads, head_dim, batch) = (arg(1, 4096), arg(2, 8), arg(3, 40), arg(4, 2));
    let dev = Device::Cpu;
    let width = heads * head_dim;
    let q = Tensor::randn(0f32, 1., (batch, tokens, width), &dev)?;
    let k = Tensor::randn(0f32, 1., (batch, tokens, width), &dev)?;
    let v = Tensor::randn(0f32, 1., (batch, tokens, width), &dev)?;
    let flops = 4.0 * (batch * heads * tokens * tokens * head_dim) as f64;
    let no_hook: Option<ProbsHook> = None;
    let only_fused = std::env::args().nth(5).is_some_and(|a| a == "fused");
    for fused in [true, false] {
        if only_fused && !fused {
            continue;
        }
        set_fast_attention(fused);
        let mut times = Vec::new();
        for _ in 0..3 {
            let start = Instant::now();
            multi_head_attention(&q, &k, &v, heads, false, no_hook)?;
            times.push(start.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[1];
        println!(
            "{}: {:.3} s, {:.1} GFLOP/s",
            if fused { "fused  " } else { "unfused" },
            median,
            flops / median / 1e9
        );
    }
    Ok(())
}
