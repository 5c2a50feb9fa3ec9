//! Time multi-head attention as SD1.5's 64x64-latent self-attention runs it (batch 2 for
//! guidance, 4096 tokens, 8 heads of 40) with the fused CPU kernel and with candle's unfused
//! ops, and report GFLOP/s (4 B H Lq Lk D flops: two matmuls), medians of 3 runs. Also the
//! fused kernel's memory beyond its inputs and output: the process's peak RSS during one call
//! (VmHWM, reset first) minus the RSS before it and the output's bytes.
//! `cargo run --release --example attention_bench -- [tokens] [heads] [head_dim] [batch]
//! [--fused-only] [--json]` (--fused-only skips the unfused run, for profiling;
//! tools/bench/kernels_side_by_side.py reads --json).

use std::time::Instant;

use candle_core::{Device, Tensor};
use pigment::bench::measure::{current_rss_bytes, peak_rss_bytes, reset_peak_rss};
use pigment::ops::set_fast_attention;
use pigment::unet::multi_head_attention;

/// The probabilities hook `multi_head_attention` takes (none here: the fused path).
type ProbsHook = fn(&Tensor) -> pigment::Result<Option<Tensor>>;

fn main() -> pigment::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let numbers: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let arg = |i: usize, default: usize| numbers.get(i).copied().unwrap_or(default);
    let (tokens, heads, head_dim, batch) = (arg(0, 4096), arg(1, 8), arg(2, 40), arg(3, 2));
    let fused_only = args.iter().any(|a| a == "--fused-only" || a == "fused");
    let json = args.iter().any(|a| a == "--json");
    let dev = Device::Cpu;
    let width = heads * head_dim;
    let q = Tensor::randn(0f32, 1., (batch, tokens, width), &dev)?;
    let k = Tensor::randn(0f32, 1., (batch, tokens, width), &dev)?;
    let v = Tensor::randn(0f32, 1., (batch, tokens, width), &dev)?;
    let flops = 4.0 * (batch * heads * tokens * tokens * head_dim) as f64;
    let no_hook: Option<ProbsHook> = None;
    // Memory of one fused call beyond its inputs (held before) and its output, measured first,
    // before the timed runs leave freed buffers in the heap for it to reuse.
    set_fast_attention(true);
    let output_bytes = (batch * tokens * width * 4) as f64;
    let extra = match (reset_peak_rss(), current_rss_bytes()) {
        (true, Some(before)) => {
            let out = multi_head_attention(&q, &k, &v, heads, false, no_hook)?;
            let peak = peak_rss_bytes().unwrap_or(before);
            drop(out);
            Some((peak as f64 - before as f64 - output_bytes).max(0.0))
        }
        _ => None,
    };
    let mut medians = Vec::new();
    for fused in [true, false] {
        if fused_only && !fused {
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
        medians.push((fused, times[1]));
    }
    let threads = candle_core::utils::get_num_threads();
    if json {
        let rows: Vec<String> = medians
            .iter()
            .map(|(fused, s)| {
                format!(
                    "\"{}\": {{\"seconds\": {s:.5}, \"gflops\": {:.1}}}",
                    if *fused { "fused" } else { "unfused" },
                    flops / s / 1e9
                )
            })
            .collect();
        println!(
            "{{\"tokens\": {tokens}, \"heads\": {heads}, \"head_dim\": {head_dim}, \"batch\": {batch}, \"threads\": {threads}, \"gflop\": {:.3}, {}, \"extra_bytes\": {}}}",
            flops / 1e9,
            rows.join(", "),
            extra.map_or("null".into(), |b| format!("{b:.0}"))
        );
        return Ok(());
    }
    for (fused, median) in medians {
        println!(
            "{}: {:.3} s, {:.1} GFLOP/s",
            if fused { "fused  " } else { "unfused" },
            median,
            flops / median / 1e9
        );
    }
    if let Some(bytes) = extra {
        println!(
            "fused: {:.2} MB beyond inputs and output ({:.2} MB per thread, {threads} threads)",
            bytes / 1e6,
            bytes / 1e6 / threads as f64
        );
    }
    Ok(())
}
