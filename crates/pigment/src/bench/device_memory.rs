//! GPU memory of `pigment bench` on CUDA: the device's used bytes (total − free, from
//! `cuMemGetInfo`), read once and as a peak sampled by a background thread while a component
//! runs.
//!
//! Why total − free and not an allocator counter: candle allocates through cudarc's
//! stream-ordered pool (`cuMemAllocAsync`), which keeps no running peak, so the only figure
//! both engines share is what the driver sees. tools/bench/diffusers_bench.py samples PyTorch
//! the same way (`torch.cuda.mem_get_info`) next to its own `max_memory_allocated`. The figure
//! includes the CUDA context, cuBLAS workspaces and whatever else runs on the GPU, so it is the
//! process's footprint only when the benchmark has the GPU to itself.
//!
//! On the CPU, Metal, or a build without the `cuda` feature every reading is `None`.

use candle_core::Device;

/// How often the sampler reads the device's free memory.
const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_millis(1);

/// `(used, total)` bytes of `device` now; None unless it is a CUDA device.
pub fn device_memory(device: &Device) -> Option<(u64, u64)> {
    imp::read(device)
}

/// Reads the device's used bytes every [`SAMPLE_EVERY`] on a thread of its own until
/// [`PeakSampler::stop`]; the peak includes a reading at the start and one at the stop.
pub struct PeakSampler {
    inner: Option<imp::Sampler>,
}

impl PeakSampler {
    /// Starts sampling `device`; a sampler that reads nothing where `device` is not CUDA.
    pub fn start(device: &Device) -> Self {
        Self {
            inner: imp::Sampler::start(device, SAMPLE_EVERY),
        }
    }

    /// Stops the thread and returns the largest used-bytes reading, None where none was made.
    pub fn stop(self) -> Option<u64> {
        self.inner.and_then(imp::Sampler::stop)
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::thread::JoinHandle;
    use std::time::Duration;

    use candle_core::cuda::cudarc::driver::CudaContext;
    use candle_core::Device;

    fn context(device: &Device) -> Option<Arc<CudaContext>> {
        let cuda = device.as_cuda_device().ok()?;
        Some(cuda.cuda_stream().context().clone())
    }

    fn used(ctx: &CudaContext) -> Option<(u64, u64)> {
        // mem_get_info binds the context to the calling thread first.
        let (free, total) = ctx.mem_get_info().ok()?;
        Some((total.saturating_sub(free) as u64, total as u64))
    }

    pub fn read(device: &Device) -> Option<(u64, u64)> {
        let ctx = context(device)?;
        used(&ctx)
    }

    pub struct Sampler {
        stop: Arc<AtomicBool>,
        peak: Arc<AtomicU64>,
        ctx: Arc<CudaContext>,
        thread: JoinHandle<()>,
    }

    impl Sampler {
        pub fn start(device: &Device, every: Duration) -> Option<Self> {
            let ctx = context(device)?;
            let (first, _) = used(&ctx)?;
            let stop = Arc::new(AtomicBool::new(false));
            let peak = Arc::new(AtomicU64::new(first));
            let thread = {
                let (stop, peak, ctx) = (stop.clone(), peak.clone(), ctx.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Some((now, _)) = used(&ctx) {
                            peak.fetch_max(now, Ordering::Relaxed);
                        }
                        std::thread::sleep(every);
                    }
                })
            };
            Some(Self {
                stop,
                peak,
                ctx,
                thread,
            })
        }

        pub fn stop(self) -> Option<u64> {
            self.stop.store(true, Ordering::Relaxed);
            let joined = self.thread.join().is_ok();
            if let Some((now, _)) = used(&self.ctx) {
                self.peak.fetch_max(now, Ordering::Relaxed);
            }
            joined.then(|| self.peak.load(Ordering::Relaxed))
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use std::time::Duration;

    use candle_core::Device;

    pub fn read(_: &Device) -> Option<(u64, u64)> {
        None
    }

    pub struct Sampler;

    impl Sampler {
        pub fn start(_: &Device, _: Duration) -> Option<Self> {
            None
        }

        pub fn stop(self) -> Option<u64> {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_has_no_device_memory_reading() {
        assert_eq!(device_memory(&Device::Cpu), None);
        assert_eq!(PeakSampler::start(&Device::Cpu).stop(), None);
    }
}
