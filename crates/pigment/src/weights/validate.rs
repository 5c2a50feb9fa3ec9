//! Checking a component's tensors against the list its config implies (expected.rs): missing
//! tensors and wrong shapes are errors, tensors the model does not use are set aside and
//! reported as unknown keys.

use super::expected::Shapes;
use super::mapped::ComponentMap;
use super::stored::StoredDType;
use crate::error::{Error, Result};

/// Removes the tensors `expected` does not list and returns their stored names; errors when a
/// listed tensor is missing, has another shape or a dtype candle cannot read.
/// `config_source` names where the config came from, for the message.
pub(crate) fn check(
    map: &mut ComponentMap,
    expected: &Shapes,
    config_source: &str,
) -> Result<Vec<String>> {
    let fail = |message: String| Error::checkpoint(&map.path, message);
    let missing: Vec<&String> = expected
        .keys()
        .filter(|k| !map.tensors.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        let examples: Vec<String> = missing.iter().take(4).map(|k| format!("`{k}`")).collect();
        return Err(fail(format!(
            "the {} is incomplete for its config ({config_source}): {} of its {} tensors are missing, \
             e.g. {}; the file is damaged, or it is not a Stable Diffusion 1.x/2.x model of this shape",
            map.component,
            missing.len(),
            expected.len(),
            examples.join(", ")
        )));
    }
    for (name, want) in expected {
        let t = &map.tensors[name];
        let got = t.shape().map_err(&fail)?;
        if &got != want {
            return Err(fail(format!(
                "tensor `{}` (the {}'s `{name}`) has shape {got:?} but {config_source} implies {want:?}; \
                 the weights and the config do not belong together",
                t.stored_name, map.component
            )));
        }
        if let StoredDType::Unsupported(d) = &t.stored.dtype {
            return Err(fail(format!(
                "tensor `{}` is stored as {d}, which Pigment cannot read; convert the checkpoint to f16, bf16 or f32",
                t.stored_name
            )));
        }
    }
    let unknown: Vec<String> = map
        .tensors
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .cloned()
        .collect();
    Ok(unknown
        .into_iter()
        .filter_map(|k| map.tensors.remove(&k))
        .map(|t| t.stored_name)
        .collect())
}
