//! The cores' f32 FMA peak, the figure BENCHMARKS.md's "share of peak" columns divide by:
//! each thread runs independent chains of fused multiply-adds on 12 vector registers (enough
//! to cover the FMA latency on current x86 cores), AVX-512 and AVX2 separately, all threads at
//! once; GFLOP/s = 2 * lanes * FMAs / wall time, best of 3.
//!
//! cargo run --release -p pigment --example peak_flops [threads] [--json]

use std::time::Instant;

/// FMAs per chain per run: about a second of work per thread at ~100 GFLOP/s.
const ITERATIONS: u64 = 200_000_000;
/// Independent accumulators per thread.
const CHAINS: usize = 12;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn chains_avx512(iterations: u64) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(0.0); CHAINS];
    let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    for _ in 0..iterations {
        for v in &mut acc {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn chains_avx2(iterations: u64) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(0.0); CHAINS];
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    for _ in 0..iterations {
        for v in &mut acc {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut sum = 0.0;
    for v in acc {
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 floats, what one unaligned 256-bit store writes.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
        sum += lanes.iter().sum::<f32>();
    }
    sum
}

/// GFLOP/s of `threads` threads each running `run`, best of 3.
fn measure(threads: usize, lanes: usize, run: fn(u64) -> f32) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        let sums: f32 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| s.spawn(move || run(ITERATIONS)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        std::hint::black_box(sums);
        best = best.min(start.elapsed().as_secs_f64());
    }
    (threads as u64 * ITERATIONS * CHAINS as u64 * lanes as u64 * 2) as f64 / best / 1e9
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let threads: usize = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut results: Vec<(&str, f64)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY (both closures): each feature was detected on this CPU just above.
            results.push((
                "avx512",
                measure(threads, 16, |n| unsafe { chains_avx512(n) }),
            ));
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            results.push(("avx2", measure(threads, 8, |n| unsafe { chains_avx2(n) })));
        }
    }
    let peak = results.iter().map(|r| r.1).fold(0.0, f64::max);
    if json {
        let fields: Vec<String> = results
            .iter()
            .map(|(name, g)| format!("\"{name}\": {g:.1}"))
            .collect();
        println!(
            "{{\"threads\": {threads}, \"peak_gflops\": {peak:.1}, {}}}",
            fields.join(", ")
        );
    } else {
        for (name, g) in &results {
            println!("{name} FMA, {threads} threads: {g:.1} GFLOP/s");
        }
        println!("peak: {peak:.1} GFLOP/s");
    }
}
