//! Learning-rate schedules: linear warm-up, then constant or a half-cosine decay to a floor
//! (Loshchilov & Hutter 2017, SGDR, without restarts; the shape of diffusers'
//! `get_cosine_schedule_with_warmup` with a floor added).
//!
//! `lr_at(step)` is the rate of optimiser step `step` (0-based). Warm-up reaches the peak at
//! step `warmup_steps - 1` (diffusers' LambdaLR starts at 0 and wastes the first step on a zero
//! rate; this one does not).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// `lr` after `warmup_steps` of linear warm-up (diffusers' "constant_with_warmup").
    Constant { lr: f64, warmup_steps: u64 },
    /// Linear warm-up to `peak_lr`, then `min_lr + (peak_lr - min_lr) (1 + cos(pi p)) / 2` with
    /// p going from 0 at the end of warm-up to 1 at `total_steps`; `min_lr` afterwards.
    WarmupCosine {
        peak_lr: f64,
        warmup_steps: u64,
        total_steps: u64,
        min_lr: f64,
    },
}

impl LrSchedule {
    pub fn constant(lr: f64) -> Self {
        Self::Constant {
            lr,
            warmup_steps: 0,
        }
    }

    pub fn lr_at(&self, step: u64) -> f64 {
        match *self {
            Self::Constant { lr, warmup_steps } => lr * warmup(step, warmup_steps),
            Self::WarmupCosine {
                peak_lr,
                warmup_steps,
                total_steps,
                min_lr,
            } => {
                if step < warmup_steps {
                    return peak_lr * warmup(step, warmup_steps);
                }
                let span = total_steps.saturating_sub(warmup_steps).max(1);
                let progress = ((step - warmup_steps) as f64 / span as f64).min(1.0);
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                min_lr + (peak_lr - min_lr) * cosine
            }
        }
    }

    pub fn validate(&self) -> Result<()> {
        let rate = |what: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "learning rate schedule: {what} = {v} must be a finite number >= 0"
                )))
            }
        };
        match *self {
            Self::Constant { lr, .. } => rate("lr", lr),
            Self::WarmupCosine {
                peak_lr,
                warmup_steps,
                total_steps,
                min_lr,
            } => {
                rate("peak_lr", peak_lr)?;
                rate("min_lr", min_lr)?;
                if min_lr > peak_lr {
                    return Err(Error::invalid(format!(
                        "learning rate schedule: min_lr {min_lr} is above peak_lr {peak_lr}"
                    )));
                }
                if warmup_steps > total_steps {
                    return Err(Error::invalid(format!(
                        "learning rate schedule: {warmup_steps} warm-up steps exceed the \
                         {total_steps} total steps"
                    )));
                }
                Ok(())
            }
        }
    }
}

/// Linear warm-up factor of step `step`: (step + 1) / warmup_steps, 1 afterwards.
fn warmup(step: u64, warmup_steps: u64) -> f64 {
    if step >= warmup_steps {
        1.0
    } else {
        (step + 1) as f64 / warmup_steps as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_the_floor() {
        let s = LrSchedule::WarmupCosine {
            peak_lr: 1.0,
            warmup_steps: 4,
            total_steps: 14,
            min_lr: 0.1,
        };
        assert_eq!(s.lr_at(0), 0.25);
        assert_eq!(s.lr_at(3), 1.0);
        assert_eq!(s.lr_at(4), 1.0);
        assert!((s.lr_at(9) - 0.55).abs() < 1e-12); // half-way: (1 + 0.1) / 2
        assert!((s.lr_at(14) - 0.1).abs() < 1e-12);
        assert!((s.lr_at(1000) - 0.1).abs() < 1e-12);
        let lrs: Vec<f64> = (4..15).map(|i| s.lr_at(i)).collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
        assert!(s.validate().is_ok());
    }

    #[test]
    fn constant_and_bad_schedules() {
        let c = LrSchedule::Constant {
            lr: 2.0,
            warmup_steps: 2,
        };
        assert_eq!(c.lr_at(0), 1.0);
        assert_eq!(c.lr_at(5), 2.0);
        assert_eq!(LrSchedule::constant(3.0).lr_at(0), 3.0);
        let bad = LrSchedule::WarmupCosine {
            peak_lr: 1.0,
            warmup_steps: 10,
            total_steps: 5,
            min_lr: 0.0,
        };
        assert!(bad.validate().is_err());
        assert!(LrSchedule::constant(f64::NAN).validate().is_err());
    }
}
