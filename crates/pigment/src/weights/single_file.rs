//! Single-file checkpoints in the original LDM layout (CompVis SD1 / Stability SD2): one state
//! dict whose key prefixes name the component (`model.diffusion_model.` UNet,
//! `first_stage_model.` VAE, `cond_stage_model.transformer.` SD1 CLIP or
//! `cond_stage_model.model.` SD2 OpenCLIP). Each component's keys go through its table-driven
//! map (ldm_unet.rs, ldm_vae.rs, ldm_clip.rs, ldm_open_clip.rs); configs come from the shapes
//! (derive.rs) and the family rules (family.rs), or from `OpenOptions::config`.

use std::collections::HashMap;
use std::path::Path;

use super::checkpoint::{Checkpoint, Parts};
use super::config_files::ConfigSet;
use super::mapped::{ComponentMap, KeyFate, MappedTensor};
use super::stored::StoredTable;
use super::{derive, expected, family, ldm_clip, ldm_open_clip, ldm_unet, ldm_vae, validate};
use super::{Component, Family, OpenOptions, SourceFormat};

use crate::error::{Error, Result};
use crate::vae::AutoencoderKLConfig;

/// Top-level buffers of LDM's DDPM/LatentDiffusion module (ldm/models/diffusion/ddpm.py
/// `register_schedule`): the training schedule, which the scheduler config recomputes.
const SCHEDULE_BUFFERS: &[&str] = &[
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "logvar",
];

/// Marker tensor some trainers (ComfyUI, kohya) add to v-prediction files.
const V_PRED_MARKER: &str = "v_pred";

pub(crate) fn open(
    path: &Path,
    format: SourceFormat,
    table: StoredTable,
    metadata: &HashMap<String, String>,
    global_step: Option<i64>,
    opts: &OpenOptions,
    config: Option<&Path>,
) -> Result<Checkpoint> {
    let fail = |m: String| Error::checkpoint(path, m);
    let has = |prefix: &str| table.keys().any(|k| k.starts_with(prefix));
    let (clip, open_clip) = (has(ldm_clip::PREFIX), has(ldm_open_clip::PREFIX));
    let (unet, vae) = (has(ldm_unet::PREFIX), has(ldm_vae::PREFIX));
    if !(unet || vae || clip || open_clip) {
        return Err(fail(not_sd_message(&table)));
    }
    let family = match (clip, open_clip) {
        (true, false) => Family::Sd1,
        (false, true) => Family::Sd2,
        (true, true) => {
            return Err(fail(
                "holds both a CLIP (`cond_stage_model.transformer.*`) and an OpenCLIP \
                 (`cond_stage_model.model.*`) text encoder; this is not an SD1.x/2.x layout Pigment knows"
                    .into(),
            ))
        }
        (false, false) => return Err(fail(missing_message("text encoder", "cond_stage_model.*"))),
    };
    if !unet {
        return Err(fail(missing_message("UNet", ldm_unet::PREFIX)));
    }
    if !vae {
        return Err(fail(missing_message("VAE", ldm_vae::PREFIX)));
    }

    let mut notes = Vec::new();
    let mut unknown = Vec::new();
    let mut maps = Component::ALL.map(|c| ComponentMap::new(c, path.to_path_buf()));
    let mut ignored: Vec<(&'static str, usize)> = Vec::new();
    let mut ignore = |why: &'static str| match ignored.iter_mut().find(|(w, _)| *w == why) {
        Some((_, n)) => *n += 1,
        None => ignored.push((why, 1)),
    };

    let unet_keys = table
        .keys()
        .filter_map(|k| k.strip_prefix(ldm_unet::PREFIX));
    let layout = ldm_unet::UnetLayout::detect(unet_keys)
        .map_err(|e| fail(format!("unexpected UNet layout: {e}")))?;
    let vae_levels = ldm_vae::levels(table.keys().filter_map(|k| k.strip_prefix(ldm_vae::PREFIX)));
    let resblocks = ldm_open_clip::resblocks(
        table
            .keys()
            .filter_map(|k| k.strip_prefix(ldm_open_clip::PREFIX)),
    );

    for (key, stored) in &table {
        let (component, fate) = if let Some(k) = key.strip_prefix(ldm_unet::PREFIX) {
            (Component::Unet, ldm_unet::map_key(k, &layout))
        } else if let Some(k) = key.strip_prefix(ldm_vae::PREFIX) {
            (Component::Vae, ldm_vae::map_key(k, vae_levels))
        } else if let Some(k) = key.strip_prefix(ldm_clip::PREFIX) {
            (Component::TextEncoder, ldm_clip::map_key(k))
        } else if let Some(k) = key.strip_prefix(ldm_open_clip::PREFIX) {
            (
                Component::TextEncoder,
                ldm_open_clip::map_key(k, &stored.shape, resblocks),
            )
        } else if key.starts_with("model_ema.") {
            ignore(
                "EMA copies of the UNet (`model_ema.*`); Pigment loads `model.diffusion_model.*`",
            );
            continue;
        } else if SCHEDULE_BUFFERS.contains(&key.as_str()) {
            ignore("LDM schedule buffers (`betas`, `alphas_cumprod`, ...); the scheduler config defines them");
            continue;
        } else if key == V_PRED_MARKER {
            continue;
        } else {
            unknown.push(key.clone());
            continue;
        };
        match fate {
            KeyFate::Use(targets) => {
                let map = &mut maps[component.index()];
                for (name, transform) in targets {
                    map.tensors
                        .insert(name, MappedTensor::new(key, stored, transform));
                }
            }
            KeyFate::Ignore(why) => ignore(why),
            KeyFate::Unknown => unknown.push(key.clone()),
        }
    }
    for (why, n) in ignored {
        notes.push(format!("ignored {n} tensor(s): {why}"));
    }

    let given = match config {
        Some(dir) => ConfigSet::read_override(dir)?,
        None => ConfigSet::default(),
    };
    let (prediction, why) = match (opts.prediction, &given.scheduler) {
        (Some(p), _) => (p, "--prediction".to_string()),
        (None, Some((c, source))) => (
            family::parse_prediction_type(&c.prediction_type, source)?,
            source.display().to_string(),
        ),
        (None, None) => family::single_file_prediction(
            family,
            metadata,
            table.contains_key(V_PRED_MARKER),
            global_step,
        ),
    };
    notes.push(format!("prediction type {prediction} ({why})"));

    let shapes = |c: Component| maps[c.index()].shapes().map_err(&fail);
    let (text_shapes, unet_shapes, vae_shapes) = (
        shapes(Component::TextEncoder)?,
        shapes(Component::Unet)?,
        shapes(Component::Vae)?,
    );
    let derived =
        |e: String, what: Component| fail(format!("cannot read the {what}'s structure: {e}"));
    let mut text_config = derive::text(&text_shapes, &family.text_template())
        .map_err(|e| derived(e, Component::TextEncoder))?;
    let mut unet_config = derive::unet(&unet_shapes, &family.unet_template())
        .map_err(|e| derived(e, Component::Unet))?;
    let mut vae_config = derive::vae(&vae_shapes, &AutoencoderKLConfig::sd())
        .map_err(|e| derived(e, Component::Vae))?;
    let mut rule_notes = Vec::new();
    family::apply_rules(
        family,
        family.image_size(prediction),
        &mut text_config,
        &mut unet_config,
        &mut vae_config,
        &mut rule_notes,
    );
    let mismatch = |source: &Path, problems: Vec<String>| {
        fail(format!(
            "{} does not match the weights ({}); pass the config of this model",
            source.display(),
            problems.join("; ")
        ))
    };
    if let Some((c, p)) = given.text {
        let problems = derive::text_disagreements(&c, &text_config);
        if !problems.is_empty() {
            return Err(mismatch(&p, problems));
        }
        text_config = c;
    }
    if let Some((c, p)) = given.unet {
        let problems = derive::unet_disagreements(&c, &unet_config);
        if !problems.is_empty() {
            return Err(mismatch(&p, problems));
        }
        unet_config = c;
    }
    if let Some((c, p)) = given.vae {
        let problems = derive::vae_disagreements(&c, &vae_config);
        if !problems.is_empty() {
            return Err(mismatch(&p, problems));
        }
        vae_config = c;
    }
    if config.is_none() {
        notes.extend(rule_notes);
    }
    let scheduler_config = given.scheduler.map(|(c, _)| c).unwrap_or_default();

    let source = match config {
        Some(dir) => format!("the configs of {} and the file's shapes", dir.display()),
        None => "the config derived from the file's shapes".to_string(),
    };
    let expectations = [
        Ok(expected::text(&text_config)),
        expected::unet(&unet_config),
        expected::vae(&vae_config),
    ];
    for (map, want) in maps.iter_mut().zip(expectations) {
        let want = want.map_err(|e| fail(format!("unsupported {}: {e}", map.component)))?;
        unknown.extend(validate::check(map, &want, &source)?);
    }
    Ok(Checkpoint::assemble(Parts {
        path: path.to_path_buf(),
        format,
        family,
        prediction,
        text_config,
        unet_config,
        vae_config,
        scheduler_config,
        tokenizer_dir: None,
        maps,
        unknown_keys: unknown,
        notes,
    }))
}

fn missing_message(what: &str, prefix: &str) -> String {
    format!(
        "has no {what} weights (`{prefix}*`); Pigment needs a complete SD1.x/2.x checkpoint \
         (UNet, VAE and text encoder in one file) or a diffusers folder"
    )
}

/// "Not a Stable Diffusion 1.x/2.x checkpoint", with example keys and a hint for the formats
/// people most often pass by mistake.
fn not_sd_message(table: &StoredTable) -> String {
    let examples: Vec<String> = table.keys().take(3).map(|k| format!("`{k}`")).collect();
    let found = if examples.is_empty() {
        "no tensors at all".to_string()
    } else {
        format!("keys like {}", examples.join(", "))
    };
    let any = |p: &str| table.keys().any(|k| k.starts_with(p) || k.contains(p));
    let hint = if any("conditioner.embedders.") {
        " (this looks like an SDXL checkpoint, which Pigment does not load yet)"
    } else if any("lora_") || any(".lora_") {
        " (this looks like a LoRA; load it as an adapter on top of a model)"
    } else if any("down_blocks.") || any("text_model.") || any("encoder.layers.") {
        " (this looks like one diffusers component file; pass the diffusers folder that contains it)"
    } else {
        ""
    };
    format!(
        "not a Stable Diffusion 1.x/2.x checkpoint: found {found}{hint}; Pigment supports diffusers \
         folders, LDM single files (.safetensors/.ckpt)"
    )
}
