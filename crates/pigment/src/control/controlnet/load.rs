//! Opening a ControlNet: a diffusers folder (`config.json` + `diffusion_pytorch_model[.fp16]
//! .safetensors` or `.bin`) or one file, either in the original layout (`control_model.*`, as
//! lllyasviel's `.pth` / `.safetensors` releases) or already in diffusers' names. A single file
//! has no config: the structure comes from tensor shapes, and what shapes cannot tell (head
//! counts, GroupNorm groups, eps, attention upcast) from the UNet it will run with, of which
//! a ControlNet is a copy; without a UNet, SD1's and SD2's published rules by
//! cross_attention_dim (768: 8 heads; 1024: 64 channels per head), as weights/ does for UNets.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::{Init, VarBuilder};

use super::config::ControlNetConfig;
use super::model::ControlNetModel;
use super::single_file_keys::{self, PREFIX};
use crate::error::{Error, Result};
use crate::unet::{PerBlock, UNet2DConditionConfig};
use crate::weights::mapped::{MappedTensor, Transform};
use crate::weights::stored::StoredTable;
use crate::weights::{safetensors_file, torch_file};

/// Loads a ControlNet from `path` (folder or file) with weights converted to `dtype`. `unet`:
/// the config of the UNet it will control, used for what a single file's shapes cannot tell
/// (ignored for a diffusers folder, whose config.json says everything).
pub fn load_controlnet(
    path: &Path,
    unet: Option<&UNet2DConditionConfig>,
    dtype: DType,
    device: &Device,
) -> Result<ControlNetModel> {
    let (config, tensors) = if path.is_dir() {
        open_folder(path)?
    } else if path.is_file() {
        open_file(path, unet)?
    } else {
        return Err(Error::invalid(format!(
            "ControlNet {}: no such file or folder; pass a diffusers ControlNet folder (config.json + \
             diffusion_pytorch_model.safetensors) or a ControlNet .safetensors/.pth file",
            path.display()
        )));
    };
    let backend = TableBackend {
        path: path.display().to_string(),
        tensors: Arc::new(tensors),
    };
    let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
    ControlNetModel::new(vb, &config).map_err(|e| match e {
        Error::Config(m) => Error::Config(format!("ControlNet {}: {m}", path.display())),
        other => other,
    })
}

type Table = BTreeMap<String, MappedTensor>;

fn read_table(path: &Path) -> Result<StoredTable> {
    let is_safetensors = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    if is_safetensors {
        Ok(safetensors_file::read(path)?.tensors)
    } else {
        Ok(torch_file::read(path)?.tensors)
    }
}

fn open_folder(dir: &Path) -> Result<(ControlNetConfig, Table)> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| {
        Error::checkpoint(
            &config_path,
            format!("cannot read the ControlNet config ({e}); a diffusers ControlNet folder holds config.json"),
        )
    })?;
    let config: ControlNetConfig = serde_json::from_str(&text).map_err(|e| {
        Error::checkpoint(&config_path, format!("not a ControlNet config.json: {e}"))
    })?;
    let candidates = [
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.fp16.safetensors",
        "diffusion_pytorch_model.bin",
        "diffusion_pytorch_model.fp16.bin",
    ];
    let Some(weights) = candidates.iter().map(|n| dir.join(n)).find(|p| p.is_file()) else {
        return Err(Error::checkpoint(
            dir,
            "no diffusion_pytorch_model.safetensors (or .fp16.safetensors / .bin) next to config.json",
        ));
    };
    let table = read_table(&weights)?
        .iter()
        .map(|(name, stored)| {
            (
                name.clone(),
                MappedTensor::new(name, stored, Transform::None),
            )
        })
        .collect();
    Ok((config, table))
}

fn open_file(
    path: &Path,
    unet: Option<&UNet2DConditionConfig>,
) -> Result<(ControlNetConfig, Table)> {
    let stored = read_table(path)?;
    let fail = |m: String| Error::checkpoint(path, m);
    let mut table = Table::new();
    if stored
        .keys()
        .any(|k| k.starts_with("controlnet_cond_embedding."))
    {
        // Already diffusers' names (a folder's weights file passed on its own).
        for (name, t) in &stored {
            table.insert(name.clone(), MappedTensor::new(name, t, Transform::None));
        }
    } else {
        let prefix = if stored.keys().any(|k| k.starts_with(PREFIX)) {
            PREFIX
        } else {
            ""
        };
        let keys = || stored.keys().filter_map(|k| k.strip_prefix(prefix));
        if !keys().any(|k| k.starts_with("input_hint_block.")) {
            return Err(fail(
                "not a ControlNet: no `control_model.input_hint_block.*` (original layout) or \
                 `controlnet_cond_embedding.*` (diffusers) tensors"
                    .into(),
            ));
        }
        let layout = single_file_keys::detect_layout(keys()).map_err(&fail)?;
        let hint_last = single_file_keys::hint_last(keys()).unwrap_or(0);
        for (key, t) in &stored {
            let Some(short) = key.strip_prefix(prefix) else {
                continue;
            };
            if let Some(name) = single_file_keys::diffusers_name(short, &layout, hint_last) {
                table.insert(name, MappedTensor::new(key, t, Transform::None));
            }
        }
    }
    let shapes: BTreeMap<String, Vec<usize>> = table
        .iter()
        .map(|(k, t)| (k.clone(), t.stored.shape.clone()))
        .collect();
    let config = derive_config(&shapes, unet).map_err(fail)?;
    Ok((config, table))
}

fn shape<'a>(s: &'a BTreeMap<String, Vec<usize>>, name: &str) -> Result<&'a [usize], String> {
    s.get(name)
        .map(Vec::as_slice)
        .ok_or_else(|| format!("tensor `{name}` is missing; the ControlNet file is incomplete"))
}

fn dim(s: &BTreeMap<String, Vec<usize>>, name: &str, i: usize) -> Result<usize, String> {
    shape(s, name)?
        .get(i)
        .copied()
        .ok_or_else(|| format!("tensor `{name}` has too few dimensions"))
}

/// How many `N` occur in names `{prefix}N.…`.
fn count(s: &BTreeMap<String, Vec<usize>>, prefix: &str) -> usize {
    let found: std::collections::BTreeSet<usize> = s
        .keys()
        .filter_map(|k| k.strip_prefix(prefix)?.split('.').next()?.parse().ok())
        .collect();
    found.len()
}

fn has_prefix(s: &BTreeMap<String, Vec<usize>>, prefix: &str) -> bool {
    s.keys().any(|k| k.starts_with(prefix))
}

/// A single file's config: structure from shapes (diffusers names), the rest from `unet`.
fn derive_config(
    s: &BTreeMap<String, Vec<usize>>,
    unet: Option<&UNet2DConditionConfig>,
) -> Result<ControlNetConfig, String> {
    let mut c = ControlNetConfig {
        in_channels: dim(s, "conv_in.weight", 1)?,
        conditioning_channels: dim(s, "controlnet_cond_embedding.conv_in.weight", 1)?,
        ..ControlNetConfig::default()
    };
    let n = count(s, "down_blocks.");
    if n == 0 {
        return Err("no down blocks found".into());
    }
    c.block_out_channels.clear();
    c.down_block_types.clear();
    let mut depth = Vec::new();
    for i in 0..n {
        c.block_out_channels.push(dim(
            s,
            &format!("down_blocks.{i}.resnets.0.conv1.weight"),
            0,
        )?);
        let attn = format!("down_blocks.{i}.attentions.0.");
        let cross = has_prefix(s, &attn);
        depth.push(if cross {
            count(s, &format!("{attn}transformer_blocks."))
        } else {
            1
        });
        c.down_block_types.push(
            if cross {
                "CrossAttnDownBlock2D"
            } else {
                "DownBlock2D"
            }
            .into(),
        );
    }
    c.layers_per_block = count(s, "down_blocks.0.resnets.");
    c.transformer_layers_per_block = match depth.first() {
        Some(&d) if depth.iter().all(|&x| x == d) => PerBlock::One(d),
        _ => PerBlock::Each(depth),
    };
    let blocks = count(s, "controlnet_cond_embedding.blocks.");
    c.conditioning_embedding_out_channels =
        vec![dim(s, "controlnet_cond_embedding.conv_in.weight", 0)?];
    for k in (1..blocks).step_by(2) {
        c.conditioning_embedding_out_channels.push(dim(
            s,
            &format!("controlnet_cond_embedding.blocks.{k}.weight"),
            0,
        )?);
    }
    if let Some((_, k)) = s.iter().find(|(k, _)| k.ends_with(".attn2.to_k.weight")) {
        c.cross_attention_dim = *k.get(1).ok_or("attn2.to_k is not 2-d")?;
    }
    if let Some((_, p)) = s.iter().find(|(k, _)| k.ends_with(".proj_in.weight")) {
        c.use_linear_projection = p.len() == 2;
    }
    match unet {
        Some(u) => {
            c.attention_head_dim = u.attention_head_dim.clone();
            c.num_attention_heads = u.num_attention_heads.clone();
            c.norm_num_groups = u.norm_num_groups;
            c.norm_eps = u.norm_eps;
            c.upcast_attention = u.upcast_attention;
            c.flip_sin_to_cos = u.flip_sin_to_cos;
            c.freq_shift = u.freq_shift;
            c.downsample_padding = u.downsample_padding;
            c.resnet_time_scale_shift = u.resnet_time_scale_shift.clone();
            c.only_cross_attention = u.only_cross_attention.clone();
        }
        None => match c.cross_attention_dim {
            768 => c.attention_head_dim = PerBlock::One(8),
            1024 => {
                c.attention_head_dim =
                    PerBlock::Each(c.block_out_channels.iter().map(|&ch| ch / 64).collect());
                c.upcast_attention = true;
            }
            other => {
                return Err(format!(
                    "cross_attention_dim {other} is neither SD1.x (768) nor SD2.x (1024), so the \
                     attention head counts are unknown; load it together with its Stable \
                     Diffusion model (which supplies them) or convert it to a diffusers folder"
                ))
            }
        },
    }
    Ok(c)
}

/// candle's `SimpleBackend` over a name -> stored-tensor table: each tensor is read from the
/// mapped file and converted only when the model asks for it.
struct TableBackend {
    path: String,
    tensors: Arc<Table>,
}

impl TableBackend {
    fn load(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let t = self.tensors.get(name).ok_or_else(|| {
            candle_core::Error::msg(format!(
                "ControlNet {}: no tensor `{name}`; the weights do not fit the ControlNet config",
                self.path
            ))
        })?;
        t.load_as(dtype, device).map_err(|e| {
            candle_core::Error::msg(format!(
                "ControlNet {}: reading `{}`: {e}",
                self.path, t.stored_name
            ))
        })
    }
}

impl candle_nn::var_builder::SimpleBackend for TableBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _init: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.load(name, dtype, device)?;
        if tensor.shape() != &shape {
            candle_core::bail!(
                "ControlNet {}: tensor `{name}` has shape {:?} but the config implies {:?}; the \
                 weights do not fit the ControlNet config",
                self.path,
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
        self.load(name, dtype, device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}
