//! A hook in [`super::Linear`] and [`super::Conv2d`] for adapters computed in the forward
//! instead of merged into the weight (run-time LoRA): `y = layer(x) + adapter(x)`. Which layers
//! get one is decided while a model is built: inside a [`LayerAdapterScope`], every linear or
//! conv layer asks the scope's function for an adapter by its weight name (diffusers' name, e.g.
//! `down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight`). Outside a scope, and
//! for layers the function passes over, nothing changes.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use candle_core::Tensor;

/// Adds its contribution to a layer's output.
pub trait LayerAdapter: Send + Sync + std::fmt::Debug {
    /// `y` (the layer's own output for input `x`) plus the adapter's term.
    fn adapt(&self, x: &Tensor, y: Tensor) -> candle_core::Result<Tensor>;

    /// Whether `adapt` adds anything now (an empty run-time LoRA slot does not): layers with
    /// no active adapter may take fused paths that never call it.
    fn is_active(&self) -> bool {
        true
    }
}

/// The kind of layer an adapter is asked for; a conv adapter applies its first factor with the
/// layer's own stride and padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerGeometry {
    Linear,
    Conv2d { stride: usize, padding: usize },
}

/// `(weight name, geometry) -> adapter`, consulted once per layer while the model is built.
pub type AdapterFactory = dyn Fn(&str, LayerGeometry) -> Option<Arc<dyn LayerAdapter>>;

thread_local! {
    static FACTORY: RefCell<Option<Rc<AdapterFactory>>> = const { RefCell::new(None) };
}

/// While alive, layers built on this thread ask `factory` for their adapter.
pub struct LayerAdapterScope {
    previous: Option<Rc<AdapterFactory>>,
}

impl LayerAdapterScope {
    pub fn enter(factory: Rc<AdapterFactory>) -> Self {
        let previous = FACTORY.with(|f| f.borrow_mut().replace(factory));
        Self { previous }
    }
}

impl Drop for LayerAdapterScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        FACTORY.with(|f| *f.borrow_mut() = previous);
    }
}

/// The adapter of the layer whose weights live under `prefix`, if a scope gives it one.
pub(crate) fn adapter_for(prefix: &str, geometry: LayerGeometry) -> Option<Arc<dyn LayerAdapter>> {
    FACTORY.with(|f| {
        let factory = f.borrow().clone()?;
        factory(&format!("{prefix}.weight"), geometry)
    })
}

/// `y` plus `adapter`'s term, when there is one.
pub(crate) fn adapted(
    adapter: Option<&Arc<dyn LayerAdapter>>,
    x: &Tensor,
    y: Tensor,
) -> candle_core::Result<Tensor> {
    match adapter {
        Some(a) => a.adapt(x, y),
        None => Ok(y),
    }
}
