//! Every parameter's gradient against a reference's, for the training parity tests.

use std::collections::HashMap;

use candle_core::Tensor;
use candle_nn::VarMap;

use super::max_abs;

/// Tolerance on each parameter's gradient: max |pigment - torch| <= 1e-3 * max |torch| over
/// that tensor. Both run in f32 with different operation orders (and Pigment's fast exp/erf),
/// which moves gradients by ~1e-5 relative; a wrong or missing backward is off by O(1).
pub const GRAD_TOLERANCE: f32 = 1e-3;
/// Gradients that are zero in exact arithmetic (a bias followed by a group norm of one channel
/// per group, a key bias, which softmax cancels) come out as ~1e-9 rounding noise in both: the
/// scale a tensor's error is measured against is at least this fraction of the largest
/// gradient of the model.
pub const SCALE_FLOOR: f32 = 1e-3;

/// Compare the gradient `grads` holds for each variable of `vars` with `reference[prefix +
/// name]`; panics listing every parameter off by more than [`GRAD_TOLERANCE`] or without a
/// gradient.
pub fn check_gradients(
    name: &str,
    vars: &VarMap,
    grads: &candle_core::backprop::GradStore,
    reference: &HashMap<String, Tensor>,
    prefix: &str,
) {
    let data = vars.data().lock().unwrap();
    let expected = |param: &str| {
        reference
            .get(&format!("{prefix}{param}"))
            .unwrap_or_else(|| panic!("the reference has no gradient for {param}"))
    };
    let largest = data
        .keys()
        .map(|param| max_abs(expected(param)))
        .fold(0f32, f32::max);
    let mut failures = Vec::new();
    let mut worst = (0f32, String::new());
    for (param, var) in data.iter() {
        let reference = expected(param);
        let scale = max_abs(reference).max(SCALE_FLOOR * largest);
        let Some(grad) = grads.get(var.as_tensor()) else {
            failures.push(format!("{param}: no gradient (torch's: up to {scale:e})"));
            continue;
        };
        let diff = max_abs(&(grad - reference).unwrap());
        let relative = diff / scale;
        if relative > worst.0 {
            worst = (relative, param.clone());
        }
        if diff > GRAD_TOLERANCE * scale {
            failures.push(format!(
                "{param}: max diff {diff:e} against a scale of {scale:e} ({relative:.2e} relative)"
            ));
        }
    }
    eprintln!(
        "{name}: {} gradients, worst relative error {:.2e} ({})",
        data.len(),
        worst.0,
        worst.1
    );
    assert!(
        failures.is_empty(),
        "{name}: {} of {} gradients differ from torch:\n{}",
        failures.len(),
        data.len(),
        failures.join("\n")
    );
}
