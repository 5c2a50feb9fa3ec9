//! candle_nn's `SimpleBackend` over a component map: a `VarBuilder` asks for internal names and
//! gets each tensor read from the file, transformed and converted to its dtype only then.

use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::Init;

use super::mapped::ComponentMap;

pub(crate) struct ComponentBackend {
    pub map: Arc<ComponentMap>,
}

impl candle_nn::var_builder::SimpleBackend for ComponentBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _init: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.map.load(name, dtype, device)?;
        if tensor.shape() != &shape {
            let stored = self
                .map
                .tensors
                .get(name)
                .map(|t| t.stored_name.as_str())
                .unwrap_or(name);
            candle_core::bail!(
                "checkpoint {}: {} tensor `{name}` (stored as `{stored}`) has shape {:?} but the model \
                 expects {:?}; the weights do not fit the model config",
                self.map.path.display(),
                self.map.component,
                tensor.dims(),
                shape.dims()
            );
        }
        Ok(tensor)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.map.load(name, dtype, device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map.tensors.contains_key(name)
    }
}
