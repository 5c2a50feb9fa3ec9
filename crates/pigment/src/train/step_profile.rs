//! Where a training step's time goes: wall time per phase (rendering the batch, forward,
//! backward, clipping, the optimiser, the EMA), summed over the steps of a run. On a GPU the
//! ops only queue kernels, so each phase ends by waiting for the device
//! (`Device::synchronize`): the split is then honest, at the price of losing the overlap of
//! one phase's queuing with the previous phase's kernels. Off unless asked for
//! ([`super::Trainer::enable_step_profile`]; `pigment train --profile-steps`).

use std::fmt::Write as _;
use std::time::Instant;

use candle_core::Device;

use crate::error::Result;

/// The parts of a step, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPhase {
    /// Drawing the micro-batches' data (`prepare` of [`super::Trainer::run_split`]).
    Prepare,
    /// The loss, and reading its value.
    Forward,
    /// The gradients.
    Backward,
    /// Forward and backward of micro-batches running in parallel, not separable.
    ForwardBackward,
    /// The global gradient norm and clipping.
    Clip,
    /// AdamW and the parameter clamps.
    Optimizer,
    /// The moving average of the weights.
    Ema,
    /// The loss log and the progress report.
    Log,
}

impl StepPhase {
    pub const ALL: [StepPhase; 8] = [
        StepPhase::Prepare,
        StepPhase::Forward,
        StepPhase::Backward,
        StepPhase::ForwardBackward,
        StepPhase::Clip,
        StepPhase::Optimizer,
        StepPhase::Ema,
        StepPhase::Log,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StepPhase::Prepare => "prepare",
            StepPhase::Forward => "forward",
            StepPhase::Backward => "backward",
            StepPhase::ForwardBackward => "forward+backward",
            StepPhase::Clip => "clip",
            StepPhase::Optimizer => "optimizer",
            StepPhase::Ema => "ema",
            StepPhase::Log => "log",
        }
    }

    /// Position in [`Self::ALL`], which lists the variants in declaration order.
    fn index(self) -> usize {
        self as usize
    }
}

/// Seconds per phase over the profiled steps.
pub struct StepProfile {
    device: Device,
    seconds: [f64; StepPhase::ALL.len()],
    steps: u64,
    mark: Instant,
}

impl StepProfile {
    /// A profile of steps whose work runs on `device`.
    pub fn new(device: Device) -> Self {
        Self {
            device,
            seconds: [0.0; StepPhase::ALL.len()],
            steps: 0,
            mark: Instant::now(),
        }
    }

    /// Starts timing a step's first phase.
    pub fn start_step(&mut self) {
        self.mark = Instant::now();
    }

    /// Ends `phase`: waits for the device's queued work, then books the time since the
    /// previous mark to it.
    pub fn end(&mut self, phase: StepPhase) -> Result<()> {
        self.device.synchronize()?;
        let now = Instant::now();
        self.seconds[phase.index()] += (now - self.mark).as_secs_f64();
        self.mark = now;
        Ok(())
    }

    /// Counts one finished step.
    pub fn end_step(&mut self) {
        self.steps += 1;
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Mean seconds per step spent in `phase`.
    pub fn mean_seconds(&self, phase: StepPhase) -> f64 {
        self.seconds[phase.index()] / self.steps.max(1) as f64
    }

    /// One line: the mean milliseconds per step of each phase that took any time, and their
    /// sum, e.g. `12 steps, ms per step: prepare 3.1, forward 40.2, ... (total 120.4)`.
    pub fn report(&self) -> String {
        let mut line = format!("{} steps, ms per step:", self.steps);
        let mut total = 0.0;
        let mut first = true;
        for phase in StepPhase::ALL {
            let ms = self.mean_seconds(phase) * 1e3;
            if ms > 0.0 {
                let sep = if first { " " } else { ", " };
                first = false;
                let _ = write!(line, "{sep}{} {ms:.1}", phase.name());
                total += ms;
            }
        }
        let _ = write!(line, " (total {total:.1})");
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn books_each_phase_and_reports_means_per_step() {
        let mut profile = StepProfile::new(Device::Cpu);
        for _ in 0..2 {
            profile.start_step();
            std::thread::sleep(std::time::Duration::from_millis(20));
            profile.end(StepPhase::Prepare).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
            profile.end(StepPhase::Optimizer).unwrap();
            profile.end_step();
        }
        assert_eq!(profile.steps(), 2);
        let prepare = profile.mean_seconds(StepPhase::Prepare);
        let optimizer = profile.mean_seconds(StepPhase::Optimizer);
        assert!((0.02..0.5).contains(&prepare), "prepare {prepare}");
        assert!(
            (0.002..prepare).contains(&optimizer),
            "optimizer {optimizer}"
        );
        assert_eq!(profile.mean_seconds(StepPhase::Backward), 0.0);
        let report = profile.report();
        assert!(
            report.starts_with("2 steps, ms per step: prepare "),
            "{report}"
        );
        assert!(report.contains(", optimizer "), "{report}");
        assert!(!report.contains("backward"), "{report}");
        assert!(
            report.ends_with(')') && report.contains("(total "),
            "{report}"
        );
    }
}
