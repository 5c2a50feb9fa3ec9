//! `pigment bench`'s engine side: full-size architectures with random weights made in memory
//! ([`Arch`]), per-component timings (median of repeats), peak RSS from /proc, and FLOP counts
//! of the actual config ([`flops`]) for GFLOP/s, and on CUDA the device memory in use
//! ([`device_memory`]). tools/bench/diffusers_bench.py measures the
//! same things with diffusers on PyTorch, with the same JSON fields.

mod arch;
pub mod device_memory;
pub mod flops;
pub mod measure;
mod random_weights;
mod runner;

pub use arch::{Arch, ArchConfigs};
pub use random_weights::RandomWeights;
pub use runner::{run_bench, BenchComponent, BenchOptions, BenchReport, BenchRow};
