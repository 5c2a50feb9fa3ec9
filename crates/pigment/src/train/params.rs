//! The trainable parameters as a list of (name, `Var`) sorted by name, and their gradients as a
//! list aligned with it. A `VarMap` is a `HashMap`, whose order changes from run to run; the
//! optimiser, the gradient norm and checkpoints must not depend on that order.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::VarMap;

use crate::error::{Error, Result};

/// Named variables, sorted by name.
pub type Params = Vec<(String, Var)>;

/// One gradient per parameter, aligned with [`Params`]; `None` where the loss did not depend on
/// the parameter (the optimiser skips it, as torch skips a parameter whose `.grad` is None).
pub type Grads = Vec<Option<Tensor>>;

/// Every variable of `varmap`, sorted by name.
pub fn named_vars(varmap: &VarMap) -> Result<Params> {
    named_vars_where(varmap, |_| true)
}

/// The variables of `varmap` whose name passes `keep` (e.g. only the LoRA weights), sorted.
pub fn named_vars_where(varmap: &VarMap, keep: impl Fn(&str) -> bool) -> Result<Params> {
    let data = varmap.data().lock().map_err(|_| {
        Error::invalid("the VarMap's lock is poisoned by a panic in another thread")
    })?;
    let mut params: Params = data
        .iter()
        .filter(|(name, _)| keep(name))
        .map(|(name, var)| (name.clone(), var.clone()))
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(params)
}

/// The gradients of `params` in `store` (what `loss.backward()` returned).
pub fn gradients(params: &Params, store: &GradStore) -> Grads {
    params
        .iter()
        .map(|(_, var)| store.get(var.as_tensor()).cloned())
        .collect()
}

/// `acc += grads`, parameter by parameter (gradient accumulation over micro-batches).
pub fn accumulate(acc: &mut Grads, grads: Grads) -> Result<()> {
    if acc.is_empty() {
        *acc = grads;
        return Ok(());
    }
    for (a, g) in acc.iter_mut().zip(grads) {
        *a = match (a.take(), g) {
            (Some(x), Some(y)) => Some((x + y)?),
            (x, y) => x.or(y),
        };
    }
    Ok(())
}

/// Total number of scalar parameters.
pub fn count(params: &Params) -> usize {
    params.iter().map(|(_, v)| v.elem_count()).sum()
}
