//! Reading LoRA files and matching them to a checkpoint's weights.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::lora_keys::{split_key, ModuleIndex, Part};
use super::lora_merge::{LoraBackend, LoraDelta};
use crate::error::{Error, Result};
use crate::weights::{Checkpoint, Component};

/// What became of one LoRA file.
#[derive(Debug, Clone)]
pub struct LoraReport {
    pub path: PathBuf,
    pub scale: f64,
    /// Number of model weights it updates.
    pub matched: usize,
    /// File keys that match no module of the model (or lack their down/up partner), sorted.
    pub unmatched_keys: Vec<String>,
}

/// The merged updates of several LoRAs, by component and internal weight name.
#[derive(Debug, Clone, Default)]
pub struct LoraSet {
    deltas: [Arc<HashMap<String, Vec<LoraDelta>>>; 2],
    reports: Vec<LoraReport>,
}

/// One module's keys in a file.
#[derive(Default)]
struct Group<'a> {
    down: Option<(&'a str, &'a Tensor)>,
    up: Option<(&'a str, &'a Tensor)>,
    alpha: Option<(&'a str, &'a Tensor)>,
    /// LoHa: w1_a, w1_b, w2_a, w2_b.
    hada: [Option<(&'a str, &'a Tensor)>; 4],
    /// LoHa keys of a kind not applied (CP-decomposed kernels).
    unsupported: Vec<&'a str>,
}

impl LoraSet {
    /// Reads each `(file, scale)` and matches its keys to `ck`'s text encoder and UNet. A LoRA
    /// whose factors do not fit the weight it names (one made for another model) is an error.
    pub fn load(ck: &Checkpoint, loras: &[(PathBuf, f64)]) -> Result<Self> {
        Self::load_with(&ModuleIndex::new(ck), &|c, n| ck.tensor_shape(c, n), loras)
    }

    /// [`Self::load`] against any set of weights: `index` names them, `shape_of` gives a
    /// weight's shape (run-time LoRA matches the layers of a loaded model this way).
    pub(crate) fn load_with(
        index: &ModuleIndex,
        shape_of: &dyn Fn(Component, &str) -> Option<Vec<usize>>,
        loras: &[(PathBuf, f64)],
    ) -> Result<Self> {
        let mut deltas: [HashMap<String, Vec<LoraDelta>>; 2] = Default::default();
        let mut reports = Vec::new();
        for (path, scale) in loras {
            if !scale.is_finite() {
                return Err(Error::invalid(format!(
                    "LoRA {}: scale {scale} is not a number; use e.g. 0.8",
                    path.display()
                )));
            }
            let tensors = read_lora(path)?;
            let mut groups: BTreeMap<&str, Group> = BTreeMap::new();
            let mut unmatched = Vec::new();
            for (key, tensor) in &tensors {
                match split_key(key) {
                    Some((module, part)) => {
                        let g = groups.entry(module).or_default();
                        let slot = match part {
                            Part::Down => &mut g.down,
                            Part::Up => &mut g.up,
                            Part::Alpha => &mut g.alpha,
                            Part::HadaW1A => &mut g.hada[0],
                            Part::HadaW1B => &mut g.hada[1],
                            Part::HadaW2A => &mut g.hada[2],
                            Part::HadaW2B => &mut g.hada[3],
                            Part::HadaTucker => {
                                g.unsupported.push(key.as_str());
                                continue;
                            }
                        };
                        *slot = Some((key.as_str(), tensor));
                    }
                    None => unmatched.push(key.clone()),
                }
            }
            let mut matched = 0;
            for (module, g) in groups {
                let target = index.resolve(module);
                // LoHa: the first pair takes the place of (down, up), the second is multiplied
                // in element by element.
                let (down, up, second) = match g.hada {
                    [Some(w1a), Some(w1b), Some(w2a), Some(w2b)] if g.unsupported.is_empty() => {
                        (Some(w1b), Some(w1a), Some((w2b, w2a)))
                    }
                    _ => (g.down, g.up, None),
                };
                let has_hada = g.hada.iter().any(Option::is_some) || !g.unsupported.is_empty();
                let (Some((component, name)), Some(down), Some(up)) = (target, down, up) else {
                    unmatched.extend(
                        [g.down, g.up, g.alpha]
                            .into_iter()
                            .chain(g.hada)
                            .flatten()
                            .map(|(k, _)| k.to_string())
                            .chain(g.unsupported.iter().map(|k| k.to_string())),
                    );
                    continue;
                };
                if has_hada && second.is_none() {
                    unmatched.extend(
                        g.hada
                            .into_iter()
                            .flatten()
                            .map(|(k, _)| k.to_string())
                            .chain(g.unsupported.iter().map(|k| k.to_string())),
                    );
                }
                let shape = shape_of(*component, name).unwrap_or_default();
                let target = format!("the {component} weight `{name}`");
                let mut delta = LoraDelta::new(path, down, up, g.alpha, *scale, &shape, &target)?;
                if let Some((w2b, w2a)) = second {
                    delta = delta.with_hadamard(path, w2b, w2a, &target)?;
                }
                matched += 1;
                if *scale != 0.0 {
                    deltas[slot(*component)]
                        .entry(name.clone())
                        .or_default()
                        .push(delta);
                }
            }
            unmatched.sort();
            reports.push(LoraReport {
                path: path.clone(),
                scale: *scale,
                matched,
                unmatched_keys: unmatched,
            });
        }
        let [te, unet] = deltas;
        Ok(Self {
            deltas: [Arc::new(te), Arc::new(unet)],
            reports,
        })
    }

    /// One report per file, in the order given.
    pub fn reports(&self) -> &[LoraReport] {
        &self.reports
    }

    /// The updates of `component`'s weights (none for the VAE), by internal weight name.
    pub(crate) fn deltas(&self, component: Component) -> &HashMap<String, Vec<LoraDelta>> {
        &self.deltas[slot(component)]
    }

    /// `ck`'s VarBuilder for `component`, returning each weight with its LoRA updates added.
    pub fn var_builder(
        &self,
        ck: &Checkpoint,
        component: Component,
        dtype: DType,
        device: &Device,
    ) -> Result<VarBuilder<'static>> {
        let inner = ck.var_builder(component, dtype, device)?;
        let deltas = match component {
            Component::Vae => return Ok(inner),
            c => &self.deltas[slot(c)],
        };
        if deltas.is_empty() {
            return Ok(inner);
        }
        let backend = LoraBackend {
            inner,
            deltas: deltas.clone(),
        };
        Ok(VarBuilder::from_backend(
            Box::new(backend),
            dtype,
            device.clone(),
        ))
    }
}

fn slot(component: Component) -> usize {
    match component {
        Component::TextEncoder => 0,
        _ => 1,
    }
}

/// All tensors of a LoRA file, on the CPU (LoRA files are small): `.safetensors`, or a PyTorch
/// pickle (`.pt`, `.ckpt`, `.bin`, `.pth`) read by the project's own reader (no code is run).
fn read_lora(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.is_file() {
        return Err(Error::invalid(format!(
            "LoRA {}: no such file; pass --lora FILE.safetensors:SCALE",
            path.display()
        )));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if matches!(ext.as_str(), "pt" | "ckpt" | "bin" | "pth") {
        return Ok(crate::weights::load_torch_tensors(path)?
            .into_iter()
            .collect());
    }
    candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
        Error::checkpoint(
            path,
            format!(
                "not a readable LoRA .safetensors file ({e}); Pigment reads LoRAs as .safetensors \
                 or PyTorch .pt/.ckpt"
            ),
        )
    })
}
