//! AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization", Algorithm 2) over
//! named candle `Var`s, with a state that can be saved and restored (candle_nn's AdamW keeps its
//! moments private, so a resumed run could not continue exactly).
//!
//! The update is torch.optim.AdamW's (torch/optim/adam.py, `_single_tensor_adam` with
//! `decoupled_weight_decay=True`, the CPU default), operation for operation so that rounding
//! agrees too:
//!
//! ```text
//! step += 1
//! p   *= 1 - lr * weight_decay                    (decoupled decay, before the moments)
//! m    = lerp(m, g, 1 - beta1)                     (= beta1 m + (1 - beta1) g)
//! v    = v * beta2 + (1 - beta2) g g
//! denom = sqrt(v) / sqrt(1 - beta2^step) + eps
//! p   += (-lr / (1 - beta1^step)) m / denom
//! ```
//!
//! Moments are kept in f32 whatever the parameter dtype (f16/bf16 parameters are updated in f32
//! and rounded back), and each parameter counts its own steps, as torch does for a parameter
//! that only sometimes receives a gradient.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::params::{Grads, Params};
use crate::error::{Error, Result};

/// Hyper-parameters, with torch.optim.AdamW's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

impl AdamWConfig {
    /// The same range checks as torch.optim.AdamW's constructor.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: f64, want: &str| {
            Err(Error::invalid(format!(
                "AdamW {what} = {v} is invalid: it must be {want}"
            )))
        };
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad("learning rate", self.lr, "a finite number >= 0");
        }
        if !(0.0..1.0).contains(&self.beta1) {
            return bad("beta1", self.beta1, "in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.beta2) {
            return bad("beta2", self.beta2, "in [0, 1)");
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return bad("eps", self.eps, "a finite number >= 0");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight decay", self.weight_decay, "a finite number >= 0");
        }
        Ok(())
    }
}

/// The per-parameter state torch calls `state[p]`: `step`, `exp_avg`, `exp_avg_sq`.
#[derive(Debug, Clone)]
struct Moments {
    step: u64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

pub struct AdamW {
    config: AdamWConfig,
    params: Params,
    /// Aligned with `params`; None until the parameter first receives a gradient.
    state: Vec<Option<Moments>>,
}

const EXP_AVG: &str = "exp_avg.";
const EXP_AVG_SQ: &str = "exp_avg_sq.";
const STEP: &str = "step.";

impl AdamW {
    pub fn new(params: Params, config: AdamWConfig) -> Result<Self> {
        config.validate()?;
        let state = vec![None; params.len()];
        Ok(Self {
            config,
            params,
            state,
        })
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    pub fn lr(&self) -> f64 {
        self.config.lr
    }

    /// The learning rate of the next steps (a schedule sets it before each step).
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// One update with `grads` aligned with [`Self::params`].
    pub fn step(&mut self, grads: &Grads) -> Result<()> {
        if grads.len() != self.params.len() {
            return Err(Error::invalid(format!(
                "AdamW got {} gradients for {} parameters",
                grads.len(),
                self.params.len()
            )));
        }
        let c = self.config.clone();
        // sqrt(1 - beta2^step) as a one-element tensor, made once per (step, device): every
        // parameter shares it (on a GPU, one upload per step instead of one per parameter).
        let mut bias_correction2: Option<(u64, Tensor)> = None;
        for (((name, var), grad), slot) in self.params.iter().zip(grads).zip(&mut self.state) {
            let Some(grad) = grad else { continue };
            if grad.dims() != var.dims() {
                return Err(Error::invalid(format!(
                    "gradient of {name} has shape {:?} but the parameter has {:?}",
                    grad.dims(),
                    var.dims()
                )));
            }
            let g = grad.to_dtype(DType::F32)?.detach();
            if slot.is_none() {
                *slot = Some(Moments {
                    step: 0,
                    exp_avg: g.zeros_like()?,
                    exp_avg_sq: g.zeros_like()?,
                });
            }
            let Some(moments) = slot.as_mut() else {
                continue;
            };
            moments.step += 1;
            let step = moments.step as f64;

            let mut p = var.as_tensor().to_dtype(DType::F32)?.detach();
            if c.weight_decay != 0.0 {
                p = p.affine(1.0 - c.lr * c.weight_decay, 0.0)?;
            }
            moments.exp_avg = lerp(&moments.exp_avg, &g, 1.0 - c.beta1)?.detach();
            let g2 = g.affine(1.0 - c.beta2, 0.0)?.mul(&g)?;
            moments.exp_avg_sq = (moments.exp_avg_sq.affine(c.beta2, 0.0)? + g2)?.detach();

            let bias_correction1 = 1.0 - c.beta1.powf(step);
            let step_size = c.lr / bias_correction1;
            // A true division by the scalar, as torch's `tensor / float` (candle's `/ f64`
            // multiplies by the reciprocal, which rounds differently).
            let bc2 = match &bias_correction2 {
                Some((s, t)) if *s == moments.step && t.device().same_device(g.device()) => {
                    t.clone()
                }
                _ => {
                    let value = (1.0 - c.beta2.powf(step)).sqrt() as f32;
                    let t = Tensor::new(value, g.device())?;
                    bias_correction2 = Some((moments.step, t.clone()));
                    t
                }
            };
            let denom = moments
                .exp_avg_sq
                .sqrt()?
                .broadcast_div(&bc2)?
                .affine(1.0, c.eps)?;
            let update = moments.exp_avg.affine(-step_size, 0.0)?.div(&denom)?;
            let p = (p + update)?.to_dtype(var.dtype())?.detach();
            var.set(&p)?;
        }
        Ok(())
    }

    /// The state as tensors: `exp_avg.NAME`, `exp_avg_sq.NAME` (f32, the parameter's shape) and
    /// `step.NAME` (i64 [1]) for every parameter that has taken a step.
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for ((name, var), slot) in self.params.iter().zip(&self.state) {
            let Some(m) = slot else { continue };
            out.insert(format!("{EXP_AVG}{name}"), m.exp_avg.clone());
            out.insert(format!("{EXP_AVG_SQ}{name}"), m.exp_avg_sq.clone());
            out.insert(
                format!("{STEP}{name}"),
                Tensor::new(&[m.step as i64], var.device())?,
            );
        }
        Ok(out)
    }

    /// Restores what [`Self::state_tensors`] saved. Every entry must name one of this
    /// optimiser's parameters with its shape; parameters absent from `tensors` start fresh.
    pub fn load_state_tensors(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let index: HashMap<&str, usize> = self
            .params
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.as_str(), i))
            .collect();
        for key in tensors.keys() {
            let name = [EXP_AVG, EXP_AVG_SQ, STEP]
                .iter()
                .find_map(|p| key.strip_prefix(p))
                .unwrap_or(key);
            if !index.contains_key(name) {
                return Err(Error::invalid(format!(
                    "optimizer state has an entry `{key}` for no trainable parameter: was it \
                     saved for another model or another set of trainable weights?"
                )));
            }
        }
        let mut state = vec![None; self.params.len()];
        for (i, (name, var)) in self.params.iter().enumerate() {
            let get = |prefix: &str| tensors.get(&format!("{prefix}{name}"));
            let (m, v, s) = match (get(EXP_AVG), get(EXP_AVG_SQ), get(STEP)) {
                (None, None, None) => continue,
                (Some(m), Some(v), Some(s)) => (m, v, s),
                _ => {
                    return Err(Error::invalid(format!(
                        "optimizer state of {name} is incomplete: it needs exp_avg, exp_avg_sq \
                         and step"
                    )))
                }
            };
            for t in [m, v] {
                if t.dims() != var.dims() {
                    return Err(Error::invalid(format!(
                        "optimizer state of {name} has shape {:?} but the parameter has {:?}",
                        t.dims(),
                        var.dims()
                    )));
                }
            }
            let step = s.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()?;
            let step = match step.as_slice() {
                [s] if *s >= 0 => *s as u64,
                _ => {
                    return Err(Error::invalid(format!(
                        "optimizer step count of {name} is not one non-negative integer"
                    )))
                }
            };
            let on = |t: &Tensor, d: &Device| -> Result<Tensor> {
                Ok(t.to_device(d)?.to_dtype(DType::F32)?)
            };
            state[i] = Some(Moments {
                step,
                exp_avg: on(m, var.device())?,
                exp_avg_sq: on(v, var.device())?,
            });
        }
        self.state = state;
        Ok(())
    }
}

/// torch's `lerp(start, end, weight)` CPU kernel: `start + w (end - start)` for w < 0.5,
/// otherwise `end - (end - start)(1 - w)` (aten/src/ATen/native/Lerp.h), which is exact at both
/// ends.
fn lerp(start: &Tensor, end: &Tensor, weight: f64) -> Result<Tensor> {
    let diff = (end - start)?;
    Ok(if weight < 0.5 {
        (start + diff.affine(weight, 0.0)?)?
    } else {
        (end - diff.affine(1.0 - weight, 0.0)?)?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn one_param(values: &[f32]) -> Params {
        let v = Var::from_slice(values, values.len(), &Device::Cpu).unwrap();
        vec![("w".to_string(), v)]
    }

    #[test]
    fn first_step_moves_each_weight_by_about_lr() {
        // With zero moments, step 1 gives m/(1-b1) = g, sqrt(v/(1-b2)) = |g|: a step of lr sign(g).
        let params = one_param(&[1.0, -2.0]);
        let cfg = AdamWConfig {
            lr: 0.1,
            weight_decay: 0.0,
            ..Default::default()
        };
        let mut opt = AdamW::new(params.clone(), cfg).unwrap();
        let g = Tensor::new(&[3.0f32, -0.5], &Device::Cpu).unwrap();
        opt.step(&vec![Some(g)]).unwrap();
        let w = params[0].1.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (w[0] - 0.9).abs() < 1e-6 && (w[1] + 1.9).abs() < 1e-6,
            "{w:?}"
        );
    }

    #[test]
    fn state_round_trip_and_bad_state_is_an_error() {
        let params = one_param(&[1.0, 2.0, 3.0]);
        let mut opt = AdamW::new(params.clone(), AdamWConfig::default()).unwrap();
        let g = Tensor::new(&[0.1f32, 0.2, -0.3], &Device::Cpu).unwrap();
        opt.step(&vec![Some(g.clone())]).unwrap();
        let saved = opt.state_tensors().unwrap();
        assert_eq!(saved.len(), 3);

        let copy = one_param(&params[0].1.as_tensor().to_vec1::<f32>().unwrap());
        let mut resumed = AdamW::new(copy.clone(), AdamWConfig::default()).unwrap();
        resumed.load_state_tensors(&saved).unwrap();
        opt.step(&vec![Some(g.clone())]).unwrap();
        resumed.step(&vec![Some(g)]).unwrap();
        assert_eq!(
            params[0].1.as_tensor().to_vec1::<f32>().unwrap(),
            copy[0].1.as_tensor().to_vec1::<f32>().unwrap()
        );

        let mut wrong = saved.clone();
        wrong.insert(
            "step.other".into(),
            Tensor::new(&[1i64], &Device::Cpu).unwrap(),
        );
        assert!(resumed.load_state_tensors(&wrong).is_err());
        let mut partial = saved;
        partial.remove("exp_avg_sq.w");
        assert!(resumed.load_state_tensors(&partial).is_err());
        let bad = AdamWConfig {
            beta2: 1.0,
            ..Default::default()
        };
        assert!(AdamW::new(one_param(&[0.0]), bad).is_err());
    }
}
