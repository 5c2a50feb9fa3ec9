//! Reproducible initial weights: a `VarBuilder` that creates each new variable in a `VarMap`
//! from (seed, variable name) with candle's init hints (the same distributions `VarMap` uses:
//! kaiming for weights, uniform for biases, ones/zeros for norms). candle's own `VarMap` draws
//! from an unseeded generator, so two runs would start from different weights; here the same
//! seed gives the same model, whatever order the layers are built in.

use std::collections::HashMap;
use std::path::Path;
use std::sync::MutexGuard;

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};

use crate::error::{Error, Result};

use super::prng::TrainRng;

struct SeededVarMap {
    varmap: VarMap,
    seed: u64,
}

/// A `VarBuilder` over `varmap` whose new variables are drawn from `seed` (existing ones are
/// returned as they are, as `VarBuilder::from_varmap` does). Build the model with it, then hand
/// `varmap`'s variables to the optimiser.
pub fn seeded_var_builder(
    varmap: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    let backend = SeededVarMap {
        varmap: varmap.clone(),
        seed,
    };
    VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
}

/// Fine-tuning's start: overwrite every variable of `vars` with the tensor of the same name in
/// the safetensors file `path`, converted to the variable's dtype (so an f16 export can seed an
/// f32 run). Every variable must be in the file with its shape, else nothing is changed and the
/// error names the first mismatch: a different model's file is refused, never half-loaded.
pub fn init_vars_from_file(vars: &VarMap, path: &Path) -> Result<()> {
    let loaded = read_init_file(path, "this stage's model")?;
    let data = lock_vars(vars)?;
    let mut problems = Vec::new();
    for (name, var) in data.iter() {
        match loaded.get(name) {
            Some(t) if t.dims() == var.dims() => {}
            Some(t) => problems.push(format!(
                "{name} is {:?} in the file, {:?} in the model",
                t.dims(),
                var.dims()
            )),
            None => problems.push(format!("{name} is missing")),
        }
    }
    problems.sort();
    if let Some(first) = problems.first() {
        // Only weights missing, none mismatched: most likely a model the recipe has grown
        // from, which --grow loads.
        let hint = if problems.iter().all(|p| p.ends_with(" is missing")) {
            ", or add --grow if this model grew from the file's (new blocks start untrained)"
        } else {
            ""
        };
        return Err(Error::invalid(format!(
            "--init {} does not fit this model: {} of its {} weights differ ({first}); give \
             weights of the same config{hint}",
            path.display(),
            problems.len(),
            data.len(),
        )));
    }
    for (name, var) in data.iter() {
        var.set(
            &loaded[name]
                .to_dtype(var.dtype())?
                .to_device(var.device())?,
        )?;
    }
    Ok(())
}

/// What [`grow_vars_from_file`] did: the variables it loaded, and those the file lacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrowReport {
    pub loaded: usize,
    /// New variables, sorted: their seeded init, or zero for a new attention's `proj_out`.
    pub new: Vec<String>,
}

/// Growing a model: like [`init_vars_from_file`], but the model may have variables the file
/// lacks (blocks added to a trained network, e.g. a cross-attention transformer at another
/// resolution). Every tensor of the file must still be a variable of the model, with its
/// shape, so an unrelated file is refused. New variables keep their seeded init, except the
/// output projection (`proj_out`) of a new attention block, which starts at zero: such a block
/// is residual (diffusers' Transformer2DModel adds its input back), so it then passes its
/// input through and the grown model computes exactly what the file's model did; training
/// opens it from there (the zero-initialised output layer of ControlNet, Zhang et al. 2023,
/// section 3.1).
pub fn grow_vars_from_file(vars: &VarMap, path: &Path) -> Result<GrowReport> {
    let loaded = read_init_file(path, "the model to grow")?;
    let data = lock_vars(vars)?;
    let mut problems = Vec::new();
    for (name, t) in &loaded {
        match data.get(name) {
            Some(var) if var.dims() == t.dims() => {}
            Some(var) => problems.push(format!(
                "{name} is {:?} in the file, {:?} in the model",
                t.dims(),
                var.dims()
            )),
            None => problems.push(format!("{name} is not in the model")),
        }
    }
    problems.sort();
    if let Some(first) = problems.first() {
        return Err(Error::invalid(format!(
            "--init {} cannot grow into this model: {} of its {} weights do not fit ({first}); \
             a grown model must keep every weight of the old one",
            path.display(),
            problems.len(),
            loaded.len(),
        )));
    }
    let mut new = Vec::new();
    for (name, var) in data.iter() {
        match loaded.get(name) {
            Some(t) => var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?,
            None => {
                if name.contains(".proj_out.") {
                    var.set(&var.as_tensor().zeros_like()?)?;
                }
                new.push(name.clone());
            }
        }
    }
    new.sort();
    Ok(GrowReport {
        loaded: loaded.len(),
        new,
    })
}

/// The tensors of an `--init` file, on the CPU; a missing file is named with what it should be.
fn read_init_file(path: &Path, what: &str) -> Result<HashMap<String, Tensor>> {
    if !path.is_file() {
        return Err(Error::invalid(format!(
            "--init {}: no such file; give the .safetensors weights of {what}",
            path.display()
        )));
    }
    Ok(candle_core::safetensors::load(path, &Device::Cpu)?)
}

fn lock_vars(vars: &VarMap) -> Result<MutexGuard<'_, HashMap<String, Var>>> {
    vars.data()
        .lock()
        .map_err(|_| Error::invalid("the variable map's lock is poisoned"))
}

/// The initial values of variable `name` with `shape` under `init`, from `seed`.
pub fn initial_values(shape: &Shape, init: Init, seed: u64, name: &str) -> Vec<f32> {
    let n = shape.elem_count();
    let mut rng = TrainRng::for_name(seed, name);
    let uniform = |rng: &mut TrainRng, lo: f64, up: f64| -> Vec<f32> {
        (0..n)
            .map(|_| (lo + (up - lo) * rng.uniform()) as f32)
            .collect()
    };
    let normal = |rng: &mut TrainRng, mean: f64, std: f64| -> Vec<f32> {
        rng.normal_vec(n)
            .into_iter()
            .map(|z| (mean + std * z as f64) as f32)
            .collect()
    };
    match init {
        Init::Const(v) => vec![v as f32; n],
        Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev),
        Init::Uniform { lo, up } => uniform(&mut rng, lo, up),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                candle_nn::init::NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(&mut rng, -bound, bound)
                }
                candle_nn::init::NormalOrUniform::Normal => normal(&mut rng, 0.0, std),
            }
        }
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("the VarMap's lock is poisoned".into()))?;
        if let Some(var) = data.get(name) {
            let t = var.as_tensor();
            if t.shape() != &shape {
                candle_core::bail!(
                    "variable {name} exists with shape {:?}, requested {:?}",
                    t.dims(),
                    shape.dims()
                );
            }
            return Ok(t.clone());
        }
        let values = initial_values(&shape, init, self.seed, name);
        let t = Tensor::from_vec(values, shape, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("variable {name}: a seeded VarMap needs the shape; use `get`")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Module;

    #[test]
    fn same_seed_same_weights_in_any_build_order() {
        let build = |seed: u64, reverse: bool| {
            let map = VarMap::new();
            let vb = seeded_var_builder(&map, seed, DType::F32, &Device::Cpu);
            let names = if reverse { ["b", "a"] } else { ["a", "b"] };
            for n in names {
                candle_nn::linear(4, 3, vb.pp(n)).unwrap();
            }
            let ln = candle_nn::layer_norm(3, 1e-5, vb.pp("ln")).unwrap();
            let x = Tensor::new(&[[1f32, 2., 3.]], &Device::Cpu).unwrap();
            let y = ln.forward(&x).unwrap();
            let w = map.data().lock().unwrap()["a.weight"]
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (w, y.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        };
        let (a, norm) = build(1, false);
        assert_eq!(a, build(1, true).0);
        assert_ne!(a, build(2, false).0);
        // candle's linear: kaiming-normal weights with std sqrt(2 / fan_in)
        assert!(a.iter().all(|v| v.abs() < 5.0 * (2f32 / 4.0).sqrt()));
        assert!(a.iter().any(|&v| v != 0.0));
        // layer norm weight 1, bias 0: a plain normalisation
        assert!((norm.iter().sum::<f32>()).abs() < 1e-5);
    }
}
