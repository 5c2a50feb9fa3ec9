//! Diffusers folders (as `save_pretrained` writes them): `model_index.json`, and per component a
//! sub-folder with `config.json` and weights named `diffusion_pytorch_model[.fp16].safetensors`
//! (UNet, VAE) or `model[.fp16].safetensors` (text encoder), possibly sharded with an
//! `.index.json`, or the older pickled `.bin` form. The plain file wins over the fp16 variant,
//! safetensors over `.bin`, as diffusers' loader prefers them.
//!
//! Names are already internal, except two layouts of the wild: the text encoder's `text_model.`
//! prefix (transformers 4 writes it, 5 does not) is dropped, and VAE attention weights of folders
//! saved before diffusers 0.14 (`query`, `key`, `value`, `proj_attn`) are renamed, as diffusers'
//! `_convert_deprecated_attention_blocks` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::checkpoint::{Checkpoint, Parts};
use super::config_files::{config_path, read_json, scheduler_path, ConfigSet};
use super::mapped::{ComponentMap, MappedTensor, Transform};
use super::stored::StoredTable;
use super::{derive, expected, family, safetensors_file, torch_file, validate};
use super::{Component, Family, OpenOptions, Prediction, SourceFormat};
use crate::error::{Error, Result};
use crate::schedule::SchedulerConfig;

/// Old diffusers VAE attention names -> current ones.
const LEGACY_VAE_ATTENTION: &[(&str, &str)] = &[
    ("query", "to_q"),
    ("key", "to_k"),
    ("value", "to_v"),
    ("proj_attn", "to_out.0"),
];

pub(crate) fn open(dir: &Path, opts: &OpenOptions, config: Option<&Path>) -> Result<Checkpoint> {
    let has_index = dir.join("model_index.json").is_file();
    let has_components = Component::ALL.iter().any(|c| dir.join(c.folder()).is_dir());
    if !has_index && !has_components {
        return Err(Error::checkpoint(
            dir,
            "not a diffusers folder: it has no model_index.json and no unet/, vae/ or text_encoder/ \
             folder; pass a diffusers folder (as save_pretrained writes it) or a single .safetensors/.ckpt file",
        ));
    }
    let mut maps = Component::ALL.map(|c| ComponentMap::new(c, dir.to_path_buf()));
    let mut unknown = Vec::new();
    for map in maps.iter_mut() {
        let folder = dir.join(map.component.folder());
        map.path = folder.clone();
        let table = read_weights(&folder, map.component)?;
        for (stored_name, stored) in &table {
            let (name, transform) = internal_name(map.component, stored_name);
            if let Some(name) = name {
                map.tensors
                    .insert(name, MappedTensor::new(stored_name, stored, transform));
            }
        }
    }

    let mut notes = Vec::new();
    let local = ConfigSet::read(dir)?;
    let given = match config {
        Some(other) => ConfigSet::read_override(other)?.or(local),
        None => local,
    };
    let need = |c: Component| {
        Error::checkpoint(config_path(dir, c), "missing; a diffusers folder has a config.json per component, re-download or re-save the folder")
    };
    let (text_config, text_src) = given.text.ok_or_else(|| need(Component::TextEncoder))?;
    let (unet_config, unet_src) = given.unet.ok_or_else(|| need(Component::Unet))?;
    let (vae_config, vae_src) = given.vae.ok_or_else(|| need(Component::Vae))?;
    let family = Family::from_configs(&text_config, &unet_config);

    let (scheduler_config, from_config) = match given.scheduler {
        Some((c, p)) => {
            let p = family::parse_prediction_type(&c.prediction_type, &p).map(Some);
            let p = if opts.prediction.is_some() {
                p.unwrap_or(None)
            } else {
                p?
            };
            (c, p)
        }
        None => {
            notes.push(format!(
                "no {}; using Stable Diffusion's scheduler defaults",
                scheduler_path(dir).display()
            ));
            (SchedulerConfig::default(), None)
        }
    };
    let prediction = match (opts.prediction, from_config) {
        (Some(p), _) => {
            notes.push(format!("prediction type {p} (--prediction)"));
            p
        }
        (None, Some(p)) => p,
        (None, None) => {
            let p = match family {
                Family::Sd1 => Prediction::Epsilon,
                Family::Sd2 => Prediction::VPrediction,
            };
            notes.push(format!("prediction type {p} ({family} default)"));
            p
        }
    };

    for (map, source) in maps.iter_mut().zip([&text_src, &unet_src, &vae_src]) {
        let shapes = map.shapes().map_err(|e| Error::checkpoint(&map.path, e))?;
        let problems = match map.component {
            Component::TextEncoder => derive::text(&shapes, &text_config)
                .map(|d| derive::text_disagreements(&text_config, &d)),
            Component::Unet => derive::unet(&shapes, &unet_config)
                .map(|d| derive::unet_disagreements(&unet_config, &d)),
            Component::Vae => derive::vae(&shapes, &vae_config)
                .map(|d| derive::vae_disagreements(&vae_config, &d)),
        };
        let problems = problems.map_err(|e| {
            Error::checkpoint(
                &map.path,
                format!("cannot read the {}'s structure: {e}", map.component),
            )
        })?;
        if !problems.is_empty() {
            return Err(Error::checkpoint(
                source,
                format!(
                    "does not match the weights in {} ({}); the config and the weights do not belong \
                     together, re-download the folder",
                    map.path.display(),
                    problems.join("; ")
                ),
            ));
        }
        let want = match map.component {
            Component::TextEncoder => Ok(expected::text(&text_config)),
            Component::Unet => expected::unet(&unet_config),
            Component::Vae => expected::vae(&vae_config),
        }
        .map_err(|e| Error::checkpoint(source, format!("unsupported {}: {e}", map.component)))?;
        let folder = map.component.folder();
        let extra = validate::check(map, &want, &source.display().to_string())?;
        unknown.extend(extra.into_iter().map(|k| format!("{folder}/{k}")));
    }

    let tokenizer = dir.join("tokenizer");
    Ok(Checkpoint::assemble(Parts {
        path: dir.to_path_buf(),
        format: SourceFormat::DiffusersFolder,
        family,
        prediction,
        text_config,
        unet_config,
        vae_config,
        scheduler_config,
        tokenizer_dir: tokenizer.is_dir().then_some(tokenizer),
        maps,
        unknown_keys: unknown,
        notes,
    }))
}

/// Internal name of a stored key, or `None` for buffers that are not weights.
fn internal_name(component: Component, stored: &str) -> (Option<String>, Transform) {
    match component {
        Component::TextEncoder => {
            let name = stored.strip_prefix("text_model.").unwrap_or(stored);
            if name == "embeddings.position_ids" {
                return (None, Transform::None);
            }
            (Some(name.to_string()), Transform::None)
        }
        Component::Vae => {
            if let Some((prefix, rest)) = stored.split_once(".mid_block.attentions.0.") {
                if let Some((part, param)) = rest.rsplit_once('.') {
                    let part = LEGACY_VAE_ATTENTION
                        .iter()
                        .find(|(old, _)| *old == part)
                        .map_or(part, |(_, new)| new);
                    let transform = if param == "weight" && part != "group_norm" {
                        Transform::ConvToLinear
                    } else {
                        Transform::None
                    };
                    return (
                        Some(format!("{prefix}.mid_block.attentions.0.{part}.{param}")),
                        transform,
                    );
                }
            }
            (Some(stored.to_string()), Transform::None)
        }
        Component::Unet => (Some(stored.to_string()), Transform::None),
    }
}

/// The weight file names diffusers looks for, in its order of preference.
fn candidates(component: Component) -> Vec<String> {
    let bases: &[&str] = match component {
        Component::TextEncoder => &["model", "pytorch_model"],
        _ => &["diffusion_pytorch_model"],
    };
    let mut out = Vec::new();
    for ext in [".safetensors", ".safetensors.index.json", ".bin"] {
        for variant in ["", ".fp16"] {
            for base in bases {
                out.push(format!("{base}{variant}{ext}"));
            }
        }
    }
    out
}

fn read_weights(folder: &Path, component: Component) -> Result<StoredTable> {
    let names = candidates(component);
    let Some(file) = names.iter().map(|n| folder.join(n)).find(|p| p.is_file()) else {
        return Err(Error::checkpoint(
            folder,
            format!(
                "no {} weights here: expected one of {}; re-download or re-save the folder",
                component,
                names.join(", ")
            ),
        ));
    };
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if name.ends_with(".safetensors") {
        Ok(safetensors_file::read(&file)?.tensors)
    } else if name.ends_with(".index.json") {
        read_shards(folder, &file)
    } else {
        Ok(torch_file::read(&file)?.tensors)
    }
}

/// A sharded safetensors model: `{"weight_map": {tensor: shard file}}`.
fn read_shards(folder: &Path, index: &Path) -> Result<StoredTable> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let index: Index = read_json(index)?;
    let mut shards: Vec<&String> = index.weight_map.values().collect();
    shards.sort();
    shards.dedup();
    let mut table = StoredTable::new();
    for shard in shards {
        let path: PathBuf = folder.join(shard);
        table.extend(safetensors_file::read(&path)?.tensors);
    }
    Ok(table)
}
