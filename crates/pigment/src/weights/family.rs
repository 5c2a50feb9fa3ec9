//! What a model family implies when a checkpoint does not say: the published SD1.x / SD2.x
//! hyper-parameters that tensor shapes cannot reveal, the default prediction type and image
//! size, and how a diffusers folder's configs reveal the family. The rules are summarised in
//! the module docs of `weights`.

use std::collections::HashMap;
use std::path::Path;

use super::{Family, Prediction};
use crate::error::{Error, Result};
use crate::text::ClipTextConfig;
use crate::unet::{PerBlock, UNet2DConditionConfig};
use crate::vae::AutoencoderKLConfig;

/// SD 2.0-base's training step count, which diffusers' `_legacy_load_scheduler` takes as the
/// sign of an epsilon-prediction SD2 checkpoint.
const SD2_BASE_GLOBAL_STEP: i64 = 875_000;

/// Channels per attention head in OpenCLIP ViT-H and SD2's UNet (v2-inference.yaml
/// `num_head_channels: 64`); also OpenAI CLIP ViT-L's text tower (768 / 12).
const HEAD_CHANNELS: usize = 64;

impl Family {
    pub(crate) fn text_template(self) -> ClipTextConfig {
        match self {
            Family::Sd1 => ClipTextConfig::sd1(),
            Family::Sd2 => ClipTextConfig::sd2(),
        }
    }

    pub(crate) fn unet_template(self) -> UNet2DConditionConfig {
        match self {
            Family::Sd1 => UNet2DConditionConfig::sd1(),
            Family::Sd2 => UNet2DConditionConfig {
                // As stabilityai/stable-diffusion-2-1's unet/config.json, which diffusers'
                // from_single_file uses for every SD2 file.
                upcast_attention: true,
                ..UNet2DConditionConfig::sd2()
            },
        }
    }

    /// 512 for SD1 and SD2-base (epsilon), 768 for SD2-v.
    pub(crate) fn image_size(self, prediction: Prediction) -> usize {
        match (self, prediction) {
            (Family::Sd2, Prediction::VPrediction) => 768,
            _ => 512,
        }
    }

    /// Family of a diffusers folder: the text encoder's activation (quick_gelu: OpenAI CLIP,
    /// SD1; gelu: OpenCLIP, SD2), else its width (768 / 1024), else the UNet's
    /// cross_attention_dim.
    pub(crate) fn from_configs(text: &ClipTextConfig, unet: &UNet2DConditionConfig) -> Family {
        match (text.hidden_act.as_str(), text.hidden_size) {
            ("quick_gelu", _) => Family::Sd1,
            ("gelu", _) => Family::Sd2,
            (_, 768) => Family::Sd1,
            (_, 1024) => Family::Sd2,
            _ if unet.cross_attention_dim.get(0) == 1024 => Family::Sd2,
            _ => Family::Sd1,
        }
    }
}

/// Head counts, group counts and sample sizes of derived (single-file) configs, with a note
/// for each rule that does not fit the shapes.
pub(crate) fn apply_rules(
    family: Family,
    image_size: usize,
    text: &mut ClipTextConfig,
    unet: &mut UNet2DConditionConfig,
    vae: &mut AutoencoderKLConfig,
    notes: &mut Vec<String>,
) {
    let mut misfits: Vec<String> = Vec::new();
    let mut misfit = |what: String| misfits.push(what);
    let heads = |channels: usize| (channels / HEAD_CHANNELS).max(1);
    if !text.hidden_size.is_multiple_of(HEAD_CHANNELS) {
        misfit(format!(
            "text width {} is not a multiple of {HEAD_CHANNELS}; using 1 attention head",
            text.hidden_size
        ));
    }
    text.num_attention_heads = heads(text.hidden_size);
    let attending: Vec<usize> = unet
        .block_out_channels
        .iter()
        .zip(&unet.down_block_types)
        .filter(|(_, t)| t.starts_with("CrossAttn"))
        .map(|(c, _)| *c)
        .collect();
    match family {
        Family::Sd1 => {
            unet.attention_head_dim = PerBlock::One(8);
            if let Some(c) = attending.iter().find(|c| !c.is_multiple_of(8)) {
                misfit(format!(
                    "UNet width {c} does not split into SD1's 8 attention heads"
                ));
            }
        }
        Family::Sd2 => {
            if let Some(c) = attending.iter().find(|c| !c.is_multiple_of(HEAD_CHANNELS)) {
                misfit(format!(
                    "UNet width {c} is not a multiple of SD2's {HEAD_CHANNELS} channels per head; \
                     using at least 1 head"
                ));
            }
            unet.attention_head_dim =
                PerBlock::Each(unet.block_out_channels.iter().map(|&c| heads(c)).collect());
        }
    }
    unet.num_attention_heads = None;
    for (what, groups, channels) in [
        ("UNet", unet.norm_num_groups, &unet.block_out_channels),
        ("VAE", vae.norm_num_groups, &vae.block_out_channels),
    ] {
        if let Some(c) = channels.iter().find(|c| !c.is_multiple_of(groups)) {
            misfit(format!(
                "{what} width {c} does not split into {groups} GroupNorm groups"
            ));
        }
    }
    if !misfits.is_empty() {
        notes.push(format!(
            "not a standard {family} model ({}); open it with a diffusers config folder \
             (`--config DIR` on the command line, Checkpoint::open_with_config in the library) to load it exactly",
            misfits.join("; ")
        ));
    }
    vae.sample_size = image_size;
    unet.sample_size = image_size / vae.downscale_factor();
}

/// A scheduler config's `prediction_type`.
pub(crate) fn parse_prediction_type(value: &str, source: &Path) -> Result<Prediction> {
    match value {
        "epsilon" => Ok(Prediction::Epsilon),
        "v_prediction" => Ok(Prediction::VPrediction),
        other => Err(Error::Config(format!(
            "{}: prediction_type `{other}` is not supported (Pigment handles epsilon and \
             v_prediction); override it with --prediction",
            source.display()
        ))),
    }
}

/// The prediction type of a single file without an override, and why.
pub(crate) fn single_file_prediction(
    family: Family,
    metadata: &HashMap<String, String>,
    has_v_pred_marker: bool,
    global_step: Option<i64>,
) -> (Prediction, String) {
    if let Some(p) = metadata.get("modelspec.prediction_type") {
        match p.as_str() {
            "v" | "v_prediction" => {
                return (
                    Prediction::VPrediction,
                    "modelspec.prediction_type metadata".into(),
                )
            }
            "epsilon" => {
                return (
                    Prediction::Epsilon,
                    "modelspec.prediction_type metadata".into(),
                )
            }
            _ => {}
        }
    }
    if let Some(arch) = metadata.get("modelspec.architecture") {
        if arch.starts_with("stable-diffusion-v2") {
            let p = if arch.ends_with("-v") {
                Prediction::VPrediction
            } else {
                Prediction::Epsilon
            };
            return (p, format!("modelspec.architecture `{arch}`"));
        }
    }
    if has_v_pred_marker {
        return (
            Prediction::VPrediction,
            "the file's `v_pred` marker key".into(),
        );
    }
    match (family, global_step) {
        (Family::Sd1, _) => (Prediction::Epsilon, "SD1.x default".into()),
        (Family::Sd2, Some(SD2_BASE_GLOBAL_STEP)) => (
            Prediction::Epsilon,
            format!("global_step {SD2_BASE_GLOBAL_STEP} (SD 2.0-base), as diffusers decides"),
        ),
        (Family::Sd2, _) => (
            Prediction::VPrediction,
            "SD2.x default (the 768-v models); use --prediction epsilon for SD2-base files".into(),
        ),
    }
}
