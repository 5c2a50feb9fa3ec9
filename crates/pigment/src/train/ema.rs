//! Exponential moving average of the weights (Polyak & Juditsky 1992), the weights diffusion
//! models are usually sampled with. Follows diffusers' `EMAModel` (diffusers/training_utils.py)
//! without `use_ema_warmup`: update n (1-based) uses
//! `decay_n = min(decay, (1 + s) / (10 + s))` with s = n - 1, and 0 for the first update, so
//! early averages are not dominated by the random initial weights; then
//! `shadow -= (1 - decay_n) (shadow - param)`.

use std::collections::HashMap;

use candle_core::{DType, Tensor};

use super::params::Params;
use crate::error::{Error, Result};

pub struct Ema {
    decay: f64,
    updates: u64,
    /// (name, f32 average), aligned with the parameters it was made from.
    shadow: Vec<(String, Tensor)>,
}

impl Ema {
    /// Starts the average at the current values of `params`.
    pub fn new(params: &Params, decay: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&decay) {
            return Err(Error::invalid(format!(
                "EMA decay {decay} must be in [0, 1] (typical: 0.999 or 0.9999)"
            )));
        }
        let shadow = params
            .iter()
            .map(|(n, v)| {
                Ok((
                    n.clone(),
                    v.as_tensor().to_dtype(DType::F32)?.copy()?.detach(),
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            decay,
            updates: 0,
            shadow,
        })
    }

    pub fn decay(&self) -> f64 {
        self.decay
    }

    /// Number of updates so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The decay the next update will use.
    pub fn next_decay(&self) -> f64 {
        let s = self.updates as f64;
        if self.updates == 0 {
            0.0
        } else {
            ((1.0 + s) / (10.0 + s)).min(self.decay)
        }
    }

    /// Moves the average toward the current `params` (the same list it was made from).
    pub fn update(&mut self, params: &Params) -> Result<()> {
        self.check_names(params.iter().map(|(n, _)| n.as_str()))?;
        let one_minus = 1.0 - self.next_decay();
        for ((_, avg), (_, var)) in self.shadow.iter_mut().zip(params) {
            let p = var.as_tensor().to_dtype(DType::F32)?;
            let step = (&*avg - &p)?.affine(one_minus, 0.0)?;
            *avg = (&*avg - step)?.detach();
        }
        self.updates += 1;
        Ok(())
    }

    /// The averaged weights by name (f32).
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.shadow.iter().cloned().collect()
    }

    /// Restores an average saved with [`Self::tensors`] after `updates` updates.
    pub fn load(&mut self, tensors: &HashMap<String, Tensor>, updates: u64) -> Result<()> {
        if tensors.len() != self.shadow.len() {
            return Err(Error::invalid(format!(
                "EMA weights hold {} tensors but {} parameters are trained: was the checkpoint \
                 made for other trainable weights?",
                tensors.len(),
                self.shadow.len()
            )));
        }
        for (name, avg) in &mut self.shadow {
            let t = tensors.get(name).ok_or_else(|| {
                Error::invalid(format!("EMA weights have no tensor for parameter {name}"))
            })?;
            if t.dims() != avg.dims() {
                return Err(Error::invalid(format!(
                    "EMA weight {name} has shape {:?} but the parameter has {:?}",
                    t.dims(),
                    avg.dims()
                )));
            }
            *avg = t.to_device(avg.device())?.to_dtype(DType::F32)?;
        }
        self.updates = updates;
        Ok(())
    }

    /// Writes the averages into `params` (for evaluation or export; keep a copy of the live
    /// weights first if training continues).
    pub fn copy_to(&self, params: &Params) -> Result<()> {
        self.check_names(params.iter().map(|(n, _)| n.as_str()))?;
        for ((_, avg), (_, var)) in self.shadow.iter().zip(params) {
            var.set(&avg.to_dtype(var.dtype())?)?;
        }
        Ok(())
    }

    fn check_names<'a>(&self, names: impl Iterator<Item = &'a str>) -> Result<()> {
        let mut count = 0;
        for ((expected, _), name) in self.shadow.iter().zip(names) {
            count += 1;
            if expected != name {
                return Err(Error::invalid(format!(
                    "EMA parameters differ from the ones it was made from: {name} where \
                     {expected} was expected"
                )));
            }
        }
        if count != self.shadow.len() {
            return Err(Error::invalid(
                "EMA parameters differ in number from the ones it was made from",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn decay_warms_up_and_average_follows_the_formula() {
        let var = Var::new(&[0.0f32], &Device::Cpu).unwrap();
        let params: Params = vec![("w".into(), var.clone())];
        let mut ema = Ema::new(&params, 0.5).unwrap();
        assert_eq!(ema.next_decay(), 0.0);
        var.set(&Tensor::new(&[10.0f32], &Device::Cpu).unwrap())
            .unwrap();
        ema.update(&params).unwrap(); // decay 0: copies
        assert_eq!(ema.tensors()["w"].to_vec1::<f32>().unwrap(), [10.0]);
        assert!((ema.next_decay() - 2.0 / 11.0).abs() < 1e-12);
        var.set(&Tensor::new(&[21.0f32], &Device::Cpu).unwrap())
            .unwrap();
        ema.update(&params).unwrap(); // 10 - (9/11)(10 - 21) = 19
        let w = ema.tensors()["w"].to_vec1::<f32>().unwrap()[0];
        assert!((w - 19.0).abs() < 1e-5, "{w}");
        for _ in 0..100 {
            ema.update(&params).unwrap();
        }
        assert_eq!(ema.next_decay(), 0.5); // capped at `decay`
        let other: Params = vec![("v".into(), var)];
        assert!(ema.update(&other).is_err());
        assert!(Ema::new(&params, 1.5).is_err());
    }
}
