//! Wall-clock medians, the process's peak resident memory (Linux /proc) and, on CUDA, the
//! device memory in use ([`super::device_memory`]).

use std::time::Instant;

use candle_core::Device;

use super::device_memory::PeakSampler;
use crate::error::Result;

/// A /proc/self/status field in kB ("VmHWM:  123 kB"), as bytes; None off Linux.
fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The peak resident set size since start or the last [`reset_peak_rss`] (VmHWM).
pub fn peak_rss_bytes() -> Option<u64> {
    status_kb("VmHWM:")
}

/// The current resident set size (VmRSS).
pub fn current_rss_bytes() -> Option<u64> {
    status_kb("VmRSS:")
}

/// Sets VmHWM back to the current RSS (Linux 4.0+: `echo 5 > /proc/self/clear_refs`), so that
/// the next reading is the peak of what runs in between. False where that is not possible.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The median of `values` (the mean of the middle two for an even count); 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// What [`time_runs`] measured.
#[derive(Debug, Clone, Default)]
pub struct Timed {
    /// Seconds of each timed run (warm-up runs left out).
    pub runs: Vec<f64>,
    /// Peak RSS over the timed runs (None where VmHWM cannot be reset).
    pub peak_rss: Option<u64>,
    /// Peak device memory in use over the timed runs (CUDA only; see
    /// [`super::device_memory`]).
    pub peak_device: Option<u64>,
}

/// Runs `work` `warmup` times untimed (the first CUDA call of a kernel loads its module, and the
/// allocator grows), then `repeats` times timed, results dropped at once. The device is waited
/// for before each timer starts and before it is read, so on an asynchronous device (CUDA,
/// Metal) each time covers the work itself and nothing queued before it.
pub fn time_runs<T>(
    repeats: usize,
    warmup: usize,
    device: &Device,
    mut work: impl FnMut() -> Result<T>,
) -> Result<Timed> {
    for _ in 0..warmup {
        drop(work()?);
    }
    device.synchronize()?;
    let reset = reset_peak_rss();
    let sampler = PeakSampler::start(device);
    let mut runs = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        device.synchronize()?;
        let start = Instant::now();
        let out = work()?;
        device.synchronize()?;
        runs.push(start.elapsed().as_secs_f64());
        drop(out);
    }
    Ok(Timed {
        runs,
        peak_rss: if reset { peak_rss_bytes() } else { None },
        peak_device: sampler.stop(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn warm_up_runs_are_made_but_not_timed() -> Result<()> {
        let mut calls = 0;
        let timed = time_runs(3, 2, &Device::Cpu, || {
            calls += 1;
            Ok(calls)
        })?;
        assert_eq!(calls, 5);
        assert_eq!(timed.runs.len(), 3);
        assert!(timed.runs.iter().all(|&t| t >= 0.0));
        // No device memory reading off CUDA.
        assert_eq!(timed.peak_device, None);
        Ok(())
    }

    #[test]
    fn peak_rss_sees_a_large_allocation() {
        if !reset_peak_rss() {
            return; // not Linux: nothing to check
        }
        let before = peak_rss_bytes().unwrap();
        let block = vec![1u8; 64 << 20];
        std::hint::black_box(&block);
        let after = peak_rss_bytes().unwrap();
        assert!(after >= before + (60 << 20), "{before} -> {after}");
    }
}
