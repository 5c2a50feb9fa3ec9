//! Reading checkpoints: diffusers folders, single-file LDM checkpoints (`.safetensors`, `.ckpt`),
//! mapped lazily onto the internal (diffusers / transformers) weight names.
//!
//! [`Checkpoint::open`] reads headers only: file names, dtypes, shapes. It works out the family
//! (SD1.x / SD2.x), the prediction type and the three component configs, checks every tensor a
//! config implies is present with the right shape, and keeps a table from internal names to
//! stored tensors (plus a reshape or row slice where the layouts differ). [`Checkpoint::var_builder`]
//! then reads each tensor from the memory-mapped file only when a model asks for it, converting
//! to the compute dtype on the way, so a load peaks at about one copy of the weights.
//!
//! # What Pigment decides for a single file (no config.json)
//! - Family: an OpenCLIP text tower (`cond_stage_model.model.*`) is SD2.x, the HF CLIP one
//!   (`cond_stage_model.transformer.*`) SD1.x.
//! - Structure (channels, layers, attention blocks, in_channels 4/8/9, cross_attention_dim,
//!   linear projections, text and VAE sizes) from tensor shapes; see derive.rs.
//! - What shapes cannot tell, from the family's published configs (v1-inference.yaml,
//!   v2-inference(-v).yaml as diffusers converts them): SD1 8 heads per attention, SD2 64 channels
//!   per head; 32 GroupNorm groups; quick_gelu (SD1) or gelu (SD2) text activation and
//!   channels/64 text heads; SD2 `upcast_attention` (as stabilityai/stable-diffusion-2-1). When a
//!   rule does not fit (a non-standard model), a note says so; open it with
//!   [`Checkpoint::open_with_config`] and a diffusers folder holding the model's config files
//!   (like diffusers' `from_single_file(config=)`).
//! - Prediction, first match wins: [`OpenOptions::prediction`]; the safetensors metadata
//!   `modelspec.prediction_type` (`v`/`epsilon`) or a `-v` `modelspec.architecture`; a `v_pred`
//!   marker tensor (written by some trainers); SD1 is epsilon; SD2 is epsilon when the .ckpt's
//!   `global_step` is 875000 (SD 2.0-base), else v-prediction. That is the rule of diffusers'
//!   `_legacy_load_scheduler`; its current `from_single_file` takes the scheduler of
//!   stabilityai/stable-diffusion-2-1 (v-prediction) for every SD2 file. SD2-base single files
//!   therefore need `--prediction epsilon` (here as in diffusers) unless metadata tells.
//! - Default image size: 512 for SD1 and for SD2 epsilon (2.x-base), 768 for SD2 v-prediction;
//!   diffusers uses 768 for every SD2 file. It sets the UNet's and VAE's `sample_size`.
//! - Scheduler: diffusers' SD defaults (scaled_linear 0.00085..0.012, 1000 steps, leading,
//!   steps_offset 1) with the prediction above.
//! - EMA copies (`model_ema.*`), LDM schedule buffers (`betas`, `alphas_cumprod`, ...), the
//!   position_ids buffer, OpenCLIP's contrastive head and last resblock are ignored with a note;
//!   anything else unused is listed in [`Checkpoint::unknown_keys`].

mod backend;
mod checkpoint;
mod config_files;
mod derive;
mod diffusers_folder;
mod expected;
mod family;
mod ldm_clip;
mod ldm_open_clip;
pub(crate) mod ldm_unet;
mod ldm_vae;
pub(crate) mod mapped;
mod pickle;
pub(crate) mod safetensors_file;
mod single_file;
pub(crate) mod stored;
pub(crate) mod torch_file;
mod validate;

pub use checkpoint::Checkpoint;
pub(crate) use torch_file::load_all as load_torch_tensors;
pub(crate) use torch_file::load_all_with_metadata as load_torch_tensors_with_metadata;

/// Model family of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Sd1,
    Sd2,
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::Sd1 => "SD1.x",
            Family::Sd2 => "SD2.x",
        })
    }
}

/// What the UNet predicts: the noise (epsilon) or the velocity v (Salimans & Ho 2022, eq. 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prediction {
    Epsilon,
    VPrediction,
}

impl Prediction {
    /// The scheduler config's `prediction_type` value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Prediction::Epsilon => "epsilon",
            Prediction::VPrediction => "v_prediction",
        }
    }
}

impl std::fmt::Display for Prediction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Prediction {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "epsilon" | "eps" => Ok(Prediction::Epsilon),
            "v" | "v_prediction" | "v-prediction" => Ok(Prediction::VPrediction),
            other => Err(crate::Error::invalid(format!(
                "unknown prediction type `{other}`; use `epsilon` or `v` (v_prediction)"
            ))),
        }
    }
}

/// The three weight-bearing parts of a Stable Diffusion checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    TextEncoder,
    Unet,
    Vae,
}

impl Component {
    pub const ALL: [Component; 3] = [Component::TextEncoder, Component::Unet, Component::Vae];

    /// The component's sub-folder in a diffusers folder.
    pub fn folder(&self) -> &'static str {
        match self {
            Component::TextEncoder => "text_encoder",
            Component::Unet => "unet",
            Component::Vae => "vae",
        }
    }

    pub(crate) fn index(&self) -> usize {
        *self as usize
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Component::TextEncoder => "text encoder",
            Component::Unet => "UNet",
            Component::Vae => "VAE",
        })
    }
}

/// How the checkpoint was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceFormat {
    /// A diffusers folder (model_index.json, unet/, vae/, text_encoder/, ...).
    DiffusersFolder,
    /// One `.safetensors` file in the original LDM (CompVis / Stability) layout.
    SingleFileSafetensors,
    /// One PyTorch pickle (`.ckpt`, `.pt`, `.pth`, `.bin`) in the LDM layout, read without running code.
    Ckpt,
}

/// Choices the caller can impose on [`Checkpoint::open`].
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Override the prediction type (the CLI's `--prediction`).
    pub prediction: Option<Prediction>,
}
