//! LoRA applied at run time instead of merged: each adapted layer computes
//! `y = x W^T + b + sum_i factor_i * (x down_i^T) up_i^T` (Hu et al. 2021, eq. 3, in the order
//! peft's `lora.Linear.forward` uses), and for a conv `y = conv(x, W) + sum_i factor_i *
//! conv1x1(conv(x, down_i), up_i)` with `down_i` at the layer's own stride and padding (peft's
//! `lora.Conv2d`, kohya's LoCon). The factors live in one slot per layer, shared between the
//! layer and [`RuntimeLoras`], so a library user can switch or re-weight LoRAs without
//! reloading the model (`StableDiffusion::set_loras`); the numbers equal the merged mode's up to
//! float rounding.

use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex, RwLock};

use candle_core::{DType, Device, Tensor};

use super::lora::{LoraReport, LoraSet};
use super::lora_keys::ModuleIndex;
use crate::error::{Error, Result};
use crate::ops::layer_adapter::{AdapterFactory, LayerAdapter, LayerGeometry};
use crate::weights::Component;

/// How LoRAs are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoraMode {
    /// Added into the weights as they load: no cost per step; changing LoRAs means reloading.
    #[default]
    Merge,
    /// Computed in each forward of the adapted layers: a little slower per step; LoRAs can be
    /// switched or re-weighted on the loaded model.
    Runtime,
}

impl std::str::FromStr for LoraMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "merge" => Ok(Self::Merge),
            "runtime" => Ok(Self::Runtime),
            other => Err(Error::invalid(format!(
                "--lora-mode {other}: use merge (the default: LoRAs added into the weights at \
                 load) or runtime (applied in each forward, switchable without reloading)"
            ))),
        }
    }
}

/// One LoRA's term for one layer, in the compute dtype on the model's device.
#[derive(Debug)]
enum Factors {
    /// `factor * (x down^T) up^T`.
    LowRank {
        /// Linear: `[rank, in]`; conv: `[rank, in, kh, kw]`.
        down: Tensor,
        /// Linear: `[out, rank]`; conv: `[out, rank, 1, 1]`.
        up: Tensor,
        factor: f64,
    },
    /// LoHa, whose update has no low-rank form: `x delta^T` with the whole update (factor
    /// included), `[out, in]` or `[out, in, kh, kw]`.
    Dense(Tensor),
}

/// A layer's run-time LoRA terms.
#[derive(Debug)]
pub(crate) struct Slot {
    geometry: LayerGeometry,
    /// The layer's weight shape, against which LoRA factors are checked.
    shape: Vec<usize>,
    factors: RwLock<Vec<Factors>>,
}

impl LayerAdapter for Slot {
    fn is_active(&self) -> bool {
        !self
            .factors
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    fn adapt(&self, x: &Tensor, mut y: Tensor) -> candle_core::Result<Tensor> {
        let factors = self.factors.read().unwrap_or_else(|e| e.into_inner());
        for f in factors.iter() {
            let term = match (f, self.geometry) {
                (Factors::LowRank { down, up, factor }, LayerGeometry::Linear) => {
                    let in_dim = down.dim(1)?;
                    let rows = x.elem_count() / in_dim.max(1);
                    (x.reshape((rows, in_dim))?
                        .matmul(&down.t()?)?
                        .matmul(&up.t()?)?
                        .reshape(y.shape())?
                        * *factor)?
                }
                (
                    Factors::LowRank { down, up, factor },
                    LayerGeometry::Conv2d { stride, padding },
                ) => {
                    (x.conv2d(down, padding, stride, 1, 1)?
                        .conv2d(up, 0, 1, 1, 1)?
                        * *factor)?
                }
                (Factors::Dense(delta), LayerGeometry::Linear) => {
                    let in_dim = delta.dim(1)?;
                    let rows = x.elem_count() / in_dim.max(1);
                    x.reshape((rows, in_dim))?
                        .matmul(&delta.t()?)?
                        .reshape(y.shape())?
                }
                (Factors::Dense(delta), LayerGeometry::Conv2d { stride, padding }) => {
                    x.conv2d(delta, padding, stride, 1, 1)?
                }
            };
            y = (y + term)?;
        }
        Ok(y)
    }
}

/// The run-time LoRA slots of a loaded model's text encoder and UNet, by component and weight
/// name, and the LoRAs now in them.
#[derive(Debug, Clone)]
pub struct RuntimeLoras {
    slots: Arc<HashMap<(Component, String), Arc<Slot>>>,
    device: Device,
    dtype: DType,
}

/// The slots made while a model is built (filled by [`RuntimeLoras::factory`]).
pub(crate) type SlotSink = Rc<Mutex<HashMap<(Component, String), Arc<Slot>>>>;

impl RuntimeLoras {
    /// A [`crate::ops::layer_adapter::LayerAdapterScope`] function for `component`: every
    /// linear or conv layer gets an (empty) slot, recorded in `sink`; `shapes` holds the
    /// component's weight shapes.
    pub(crate) fn factory(
        component: Component,
        shapes: HashMap<String, Vec<usize>>,
        sink: SlotSink,
    ) -> Rc<AdapterFactory> {
        Rc::new(move |name: &str, geometry: LayerGeometry| {
            let shape = shapes.get(name)?.clone();
            let slot = Arc::new(Slot {
                geometry,
                shape,
                factors: RwLock::new(Vec::new()),
            });
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((component, name.to_string()), slot.clone());
            Some(slot as Arc<dyn LayerAdapter>)
        })
    }

    pub(crate) fn from_sink(sink: SlotSink, device: &Device, dtype: DType) -> Self {
        let slots = std::mem::take(&mut *sink.lock().unwrap_or_else(|e| e.into_inner()));
        Self {
            slots: Arc::new(slots),
            device: device.clone(),
            dtype,
        }
    }

    /// Replaces the LoRAs in every slot with `loras` (file, scale), checked against the
    /// layers' shapes as at load; an empty list removes them all. On error nothing changes.
    pub fn set(&self, loras: &[(PathBuf, f64)]) -> Result<Vec<LoraReport>> {
        let index = ModuleIndex::from_names(self.slots.keys().cloned());
        let shape_of =
            |c: Component, n: &str| self.slots.get(&(c, n.to_string())).map(|s| s.shape.clone());
        let set = LoraSet::load_with(&index, &shape_of, loras)?;
        let mut fresh: HashMap<(Component, String), Vec<Factors>> = HashMap::new();
        for component in [Component::TextEncoder, Component::Unet] {
            for (name, deltas) in set.deltas(component) {
                let Some(slot) = self.slots.get(&(component, name.clone())) else {
                    continue;
                };
                let mut list = Vec::with_capacity(deltas.len());
                let place = |t: Tensor| -> Result<Tensor> {
                    Ok(t.to_dtype(self.dtype)?.to_device(&self.device)?)
                };
                for d in deltas {
                    if d.hadamard.is_some() {
                        list.push(Factors::Dense(place(
                            d.dense()?.reshape(slot.shape.as_slice())?,
                        )?));
                        continue;
                    }
                    let (rank, out) = (d.down.dim(0)?, d.up.dim(0)?);
                    let (down, up) = match slot.geometry {
                        LayerGeometry::Linear => (d.down.clone(), d.up.clone()),
                        LayerGeometry::Conv2d { .. } => {
                            let s = &slot.shape;
                            let (cin, kh, kw) = (s[1], s[2], s[3]);
                            (
                                d.down.reshape((rank, cin, kh, kw))?,
                                d.up.reshape((out, rank, 1, 1))?,
                            )
                        }
                    };
                    list.push(Factors::LowRank {
                        down: place(down)?,
                        up: place(up)?,
                        factor: d.factor,
                    });
                }
                fresh.insert((component, name.clone()), list);
            }
        }
        for (key, slot) in self.slots.iter() {
            let factors = fresh.remove(key).unwrap_or_default();
            *slot.factors.write().unwrap_or_else(|e| e.into_inner()) = factors;
        }
        Ok(set.reports().to_vec())
    }

    /// Number of layers that can take a run-time LoRA.
    pub fn layers(&self) -> usize {
        self.slots.len()
    }
}

/// Runs `build` (the construction of `component`'s model) with every linear and conv layer
/// given a run-time LoRA slot, recorded in `sink`, when `enabled`; otherwise just runs it.
pub(crate) fn with_runtime_slots<T>(
    enabled: bool,
    ck: &crate::weights::Checkpoint,
    component: Component,
    sink: &SlotSink,
    build: impl FnOnce() -> Result<T>,
) -> Result<T> {
    if !enabled {
        return build();
    }
    let shapes = ck
        .tensor_names(component)
        .into_iter()
        .filter_map(|n| Some((n.clone(), ck.tensor_shape(component, &n)?)))
        .collect();
    let _scope = crate::ops::layer_adapter::LayerAdapterScope::enter(RuntimeLoras::factory(
        component,
        shapes,
        sink.clone(),
    ));
    build()
}

impl crate::pipelines::StableDiffusion {
    /// Run-time mode only ([`LoraMode::Runtime`] at load): replaces the model's LoRAs with
    /// `loras` (file, scale) without reloading it; `&[]` removes them. Updates `lora_reports`.
    pub fn set_loras(&mut self, loras: &[(PathBuf, f64)]) -> Result<()> {
        let Some(runtime) = &self.runtime_loras else {
            return Err(Error::invalid(
                "set_loras: this model merged its LoRAs at load (LoraMode::Merge); load it with \
                 LoadOptions { lora_mode: LoraMode::Runtime, .. } to switch LoRAs without reloading",
            ));
        };
        self.lora_reports = runtime.set(loras)?;
        Ok(())
    }
}
