//! [`Checkpoint`]: an opened checkpoint, its configs, and lazy access to its tensors.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::backend::ComponentBackend;
use super::mapped::ComponentMap;
use super::stored::StoredDType;
use super::{diffusers_folder, safetensors_file, single_file, torch_file};
use super::{Component, Family, OpenOptions, Prediction, SourceFormat};
use crate::error::{Error, Result};
use crate::schedule::SchedulerConfig;
use crate::text::ClipTextConfig;
use crate::unet::UNet2DConditionConfig;
use crate::vae::AutoencoderKLConfig;

/// An opened Stable Diffusion checkpoint. Opening reads headers only; tensors are read when a
/// [`VarBuilder`] from [`Checkpoint::var_builder`] (or [`Checkpoint::tensor`]) asks for them.
#[derive(Clone)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub format: SourceFormat,
    pub family: Family,
    pub prediction: Prediction,
    pub text_config: ClipTextConfig,
    pub unet_config: UNet2DConditionConfig,
    pub vae_config: AutoencoderKLConfig,
    /// From scheduler/scheduler_config.json, or SD defaults + the prediction for single files;
    /// its `prediction_type` always agrees with [`Checkpoint::prediction`].
    pub scheduler_config: SchedulerConfig,
    /// The diffusers folder's `tokenizer/`, if present.
    pub tokenizer_dir: Option<PathBuf>,
    /// The dtype most stored weights have (by element count).
    pub stored_dtype: DType,
    /// Stored keys no component uses (sorted). Keys ignored on purpose are not listed here but
    /// summarised in `notes`.
    pub unknown_keys: Vec<String>,
    /// What Pigment decided or skipped while reading (prediction source, ignored EMA weights,
    /// the dropped OpenCLIP layer, family defaults that did not fit), for `pigment info`.
    pub notes: Vec<String>,
    components: [Arc<ComponentMap>; 3],
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("family", &self.family)
            .field("prediction", &self.prediction)
            .field("stored_dtype", &self.stored_dtype)
            .field("unknown_keys", &self.unknown_keys.len())
            .field("notes", &self.notes)
            .finish_non_exhaustive()
    }
}

/// What the format-specific openers produce.
pub(crate) struct Parts {
    pub path: PathBuf,
    pub format: SourceFormat,
    pub family: Family,
    pub prediction: Prediction,
    pub text_config: ClipTextConfig,
    pub unet_config: UNet2DConditionConfig,
    pub vae_config: AutoencoderKLConfig,
    pub scheduler_config: SchedulerConfig,
    pub tokenizer_dir: Option<PathBuf>,
    /// In [`Component::ALL`] order.
    pub maps: [ComponentMap; 3],
    pub unknown_keys: Vec<String>,
    pub notes: Vec<String>,
}

impl Checkpoint {
    /// Opens a diffusers folder, or a single `.safetensors` / `.ckpt` file in the LDM layout.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Checkpoint> {
        Self::open_with_config(path, opts, None)
    }

    /// [`Checkpoint::open`], with the configs of a diffusers folder `config` (its
    /// `unet/config.json`, `vae/config.json`, `text_encoder/config.json`,
    /// `scheduler/scheduler_config.json`, each optional) replacing the ones Pigment would read or
    /// derive, as diffusers' `from_single_file(config=...)`. Needed for single files of models whose
    /// head or group counts are not the SD1.x/2.x ones; the weights must agree with the configs.
    pub fn open_with_config(
        path: &Path,
        opts: &OpenOptions,
        config: Option<&Path>,
    ) -> Result<Checkpoint> {
        if !path.exists() {
            return Err(Error::checkpoint(
                path,
                "no such file or folder; check the path (a diffusers folder or a .safetensors/.ckpt file)",
            ));
        }
        if path.is_dir() {
            return diffusers_folder::open(path, opts, config);
        }
        if is_safetensors(path)? {
            let file = safetensors_file::read(path)?;
            single_file::open(
                path,
                SourceFormat::SingleFileSafetensors,
                file.tensors,
                &file.metadata,
                None,
                opts,
                config,
            )
        } else {
            let file = torch_file::read(path)?;
            single_file::open(
                path,
                SourceFormat::Ckpt,
                file.tensors,
                &HashMap::new(),
                file.global_step,
                opts,
                config,
            )
        }
    }

    pub(crate) fn assemble(parts: Parts) -> Checkpoint {
        let mut by_dtype: Vec<(DType, usize)> = Vec::new();
        for map in &parts.maps {
            for t in map.tensors.values() {
                if let StoredDType::Known(d) = t.stored.dtype {
                    match by_dtype.iter_mut().find(|(x, _)| *x == d) {
                        Some((_, n)) => *n = n.saturating_add(t.stored.elem_count()),
                        None => by_dtype.push((d, t.stored.elem_count())),
                    }
                }
            }
        }
        let stored_dtype = by_dtype
            .iter()
            .max_by_key(|(_, n)| *n)
            .map_or(DType::F32, |(d, _)| *d);
        let mut unknown_keys = parts.unknown_keys;
        unknown_keys.sort();
        unknown_keys.dedup();
        let mut scheduler_config = parts.scheduler_config;
        scheduler_config.prediction_type = parts.prediction.as_str().to_string();
        Checkpoint {
            path: parts.path,
            format: parts.format,
            family: parts.family,
            prediction: parts.prediction,
            text_config: parts.text_config,
            unet_config: parts.unet_config,
            vae_config: parts.vae_config,
            scheduler_config,
            tokenizer_dir: parts.tokenizer_dir,
            stored_dtype,
            unknown_keys,
            notes: parts.notes,
            components: parts.maps.map(Arc::new),
        }
    }

    fn map(&self, component: Component) -> &Arc<ComponentMap> {
        &self.components[component.index()]
    }

    /// A VarBuilder for one component, converting stored f16/bf16 to `dtype` on load, rooted at
    /// the internal names: TextEncoder at transformers' `text_model` level
    /// (`embeddings.token_embedding.weight`, `encoder.layers.0.self_attn.q_proj.weight`,
    /// `final_layer_norm.weight`) whatever the file's prefix; Unet / Vae at diffusers' names
    /// (`down_blocks.0.attentions.0.proj_in.weight`, `encoder.mid_block.attentions.0.to_q.weight`).
    pub fn var_builder(
        &self,
        component: Component,
        dtype: DType,
        device: &Device,
    ) -> Result<VarBuilder<'static>> {
        let backend = ComponentBackend {
            map: self.map(component).clone(),
        };
        Ok(VarBuilder::from_backend(
            Box::new(backend),
            dtype,
            device.clone(),
        ))
    }

    /// The internal shape of a component's tensor, if it has one by that name (LoRA matching).
    pub fn tensor_shape(&self, component: Component, name: &str) -> Option<Vec<usize>> {
        self.map(component).tensors.get(name)?.shape().ok()
    }

    /// Internal names of every tensor of a component, sorted.
    pub fn tensor_names(&self, component: Component) -> Vec<String> {
        self.map(component).tensors.keys().cloned().collect()
    }

    /// One tensor by internal name, on the CPU, converted to `dtype`.
    pub fn tensor(&self, component: Component, name: &str, dtype: DType) -> Result<Tensor> {
        Ok(self.map(component).load(name, dtype, &Device::Cpu)?)
    }

    /// The stored name a component's internal tensor is read from (for `pigment info` and tests).
    pub fn stored_name(&self, component: Component, name: &str) -> Option<String> {
        self.map(component)
            .tensors
            .get(name)
            .map(|t| t.stored_name.clone())
    }

    /// Number of scalars in a component's weights.
    pub fn parameter_count(&self, component: Component) -> usize {
        self.map(component).parameter_count()
    }
}

/// By extension, else by content: a safetensors file starts with a little-endian header length
/// followed by `{`; PyTorch files start with a zip signature or a pickle PROTO opcode.
fn is_safetensors(path: &Path) -> Result<bool> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("safetensors") => return Ok(true),
        Some("ckpt" | "pt" | "pth" | "bin") => return Ok(false),
        _ => {}
    }
    let mut head = [0u8; 9];
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let n = file.read(&mut head).map_err(|e| Error::io(path, e))?;
    let head = &head[..n];
    if head.starts_with(torch_file::ZIP_MAGIC) || head.first() == Some(&0x80) {
        return Ok(false);
    }
    if head.get(8) == Some(&b'{') {
        return Ok(true);
    }
    Err(Error::checkpoint(
        path,
        "not a checkpoint Pigment knows (neither safetensors nor a PyTorch pickle); pass a diffusers \
         folder, a .safetensors file or a .ckpt file",
    ))
}
