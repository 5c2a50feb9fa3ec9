//! UNet names of original LDM single files (CompVis/Stability `openaimodel.py`, under
//! `model.diffusion_model.`) -> diffusers' UNet2DConditionModel names.
//!
//! The inverse of nothing clever: diffusers' loaders/single_file_utils.py
//! (`convert_ldm_unet_checkpoint`, `update_unet_resnet_ldm_to_diffusers`) does the same walk.
//! LDM numbers its blocks flat: `input_blocks.0` is conv_in, then per level `layers_per_block`
//! (resnet `.0`, attention `.1`) slots and, except at the last level, a downsampler slot
//! (`.0.op`); `middle_block.0/1/2` are resnet, attention, resnet; `output_blocks` has
//! `layers_per_block + 1` slots per level, the last of which ends with an upsampler (`.1.conv`
//! without attention, `.2.conv` with). Attention internals (`proj_in`, `transformer_blocks.N.attn1.to_q`,
//! ...) have the same names on both sides.

use super::mapped::KeyFate;

pub(crate) const PREFIX: &str = "model.diffusion_model.";

/// (diffusers module, LDM module) for the modules outside the blocks.
const TOP: &[(&str, &str)] = &[
    ("time_embedding.linear_1", "time_embed.0"),
    ("time_embedding.linear_2", "time_embed.2"),
    ("conv_in", "input_blocks.0.0"),
    ("conv_norm_out", "out.0"),
    ("conv_out", "out.2"),
];

/// (diffusers, LDM) names inside a ResnetBlock2D.
const RESNET: &[(&str, &str)] = &[
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
];

/// Block structure read off the LDM key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnetLayout {
    pub levels: usize,
    pub layers_per_block: usize,
}

impl UnetLayout {
    /// From the UNet keys (without the prefix): levels = downsamplers + 1, and
    /// `input_blocks` = 1 + levels * layers_per_block + (levels - 1).
    pub fn detect<'a>(keys: impl Iterator<Item = &'a str> + Clone) -> Result<Self, String> {
        let index = |key: &'a str, block: &str| -> Option<usize> {
            key.strip_prefix(block)?.split('.').next()?.parse().ok()
        };
        let inputs = keys.clone().filter_map(|k| index(k, "input_blocks.")).max();
        let outputs = keys
            .clone()
            .filter_map(|k| index(k, "output_blocks."))
            .max();
        let mut downsamplers: Vec<usize> = keys
            .filter(|k| k.contains(".0.op."))
            .filter_map(|k| index(k, "input_blocks."))
            .collect();
        downsamplers.sort_unstable();
        downsamplers.dedup();
        let (Some(inputs), Some(outputs)) = (inputs, outputs) else {
            return Err("the UNet has no input_blocks/output_blocks".into());
        };
        let levels = downsamplers.len() + 1;
        let num_inputs = inputs.saturating_add(1);
        let slots = num_inputs
            .checked_sub(levels)
            .filter(|s| *s > 0 && s.is_multiple_of(levels));
        let Some(slots) = slots else {
            return Err(format!(
                "{num_inputs} input_blocks do not divide into {levels} levels"
            ));
        };
        let layout = Self {
            levels,
            layers_per_block: slots / levels,
        };
        if outputs.saturating_add(1) != levels * (layout.layers_per_block + 1) {
            return Err(format!(
                "{} output_blocks do not match {levels} levels of {} layers",
                outputs.saturating_add(1),
                layout.layers_per_block
            ));
        }
        Ok(layout)
    }
}

/// Maps one UNet key (without [`PREFIX`]) to its diffusers name.
pub(crate) fn map_key(key: &str, layout: &UnetLayout) -> KeyFate {
    match map_name(key, layout) {
        Some(name) => KeyFate::one(name),
        None => KeyFate::Unknown,
    }
}

fn map_name(key: &str, layout: &UnetLayout) -> Option<String> {
    for (new, old) in TOP {
        if let Some(param) = key.strip_prefix(old).and_then(|r| r.strip_prefix('.')) {
            return Some(format!("{new}.{param}"));
        }
    }
    let mut parts = key.splitn(3, '.');
    let (block, index, tail) = (parts.next()?, parts.next()?, parts.next()?);
    let index: usize = index.parse().ok()?;
    let per_level = layout.layers_per_block + 1;
    match block {
        "middle_block" => match index {
            0 => Some(format!("mid_block.resnets.0.{}", resnet(tail)?)),
            1 => Some(format!("mid_block.attentions.0.{tail}")),
            2 => Some(format!("mid_block.resnets.1.{}", resnet(tail)?)),
            _ => None,
        },
        "input_blocks" if index >= 1 => {
            let (slot, rest) = tail.split_once('.')?;
            let (level, layer) = ((index - 1) / per_level, (index - 1) % per_level);
            if level >= layout.levels {
                return None;
            }
            match (slot, rest.strip_prefix("op.")) {
                ("0", Some(param)) if layer == layout.layers_per_block => {
                    Some(format!("down_blocks.{level}.downsamplers.0.conv.{param}"))
                }
                ("0", None) if layer < layout.layers_per_block => Some(format!(
                    "down_blocks.{level}.resnets.{layer}.{}",
                    resnet(rest)?
                )),
                ("1", _) if layer < layout.layers_per_block => {
                    Some(format!("down_blocks.{level}.attentions.{layer}.{rest}"))
                }
                _ => None,
            }
        }
        "output_blocks" => {
            let (slot, rest) = tail.split_once('.')?;
            let (level, layer) = (index / per_level, index % per_level);
            if level >= layout.levels {
                return None;
            }
            match (slot, rest.strip_prefix("conv.")) {
                ("0", _) => Some(format!(
                    "up_blocks.{level}.resnets.{layer}.{}",
                    resnet(rest)?
                )),
                ("1" | "2", Some(param)) if layer == layout.layers_per_block => {
                    Some(format!("up_blocks.{level}.upsamplers.0.conv.{param}"))
                }
                ("1", None) => Some(format!("up_blocks.{level}.attentions.{layer}.{rest}")),
                _ => None,
            }
        }
        _ => None,
    }
}

fn resnet(rest: &str) -> Option<String> {
    RESNET.iter().find_map(|(new, old)| {
        let param = rest.strip_prefix(old)?.strip_prefix('.')?;
        Some(format!("{new}.{param}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SD: UnetLayout = UnetLayout {
        levels: 4,
        layers_per_block: 2,
    };

    fn name(key: &str) -> Option<String> {
        match map_key(key, &SD) {
            KeyFate::Use(v) => Some(v[0].0.clone()),
            _ => None,
        }
    }

    #[test]
    fn maps_the_sd15_names_diffusers_maps() {
        let cases = [
            ("time_embed.2.bias", "time_embedding.linear_2.bias"),
            ("input_blocks.0.0.weight", "conv_in.weight"),
            (
                "input_blocks.1.0.in_layers.2.weight",
                "down_blocks.0.resnets.0.conv1.weight",
            ),
            (
                "input_blocks.3.0.op.weight",
                "down_blocks.0.downsamplers.0.conv.weight",
            ),
            (
                "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
                "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
            ),
            (
                "input_blocks.4.0.skip_connection.bias",
                "down_blocks.1.resnets.0.conv_shortcut.bias",
            ),
            (
                "middle_block.1.proj_in.weight",
                "mid_block.attentions.0.proj_in.weight",
            ),
            (
                "middle_block.2.emb_layers.1.weight",
                "mid_block.resnets.1.time_emb_proj.weight",
            ),
            (
                "output_blocks.2.1.conv.weight",
                "up_blocks.0.upsamplers.0.conv.weight",
            ),
            (
                "output_blocks.5.2.conv.bias",
                "up_blocks.1.upsamplers.0.conv.bias",
            ),
            (
                "output_blocks.5.1.norm.weight",
                "up_blocks.1.attentions.2.norm.weight",
            ),
            (
                "output_blocks.11.0.out_layers.3.weight",
                "up_blocks.3.resnets.2.conv2.weight",
            ),
            ("out.2.weight", "conv_out.weight"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(name(ldm).as_deref(), Some(diffusers), "{ldm}");
        }
        for unknown in [
            "input_blocks.13.0.in_layers.0.weight",
            "label_emb.0.0.weight",
            "middle_block.3.x.weight",
        ] {
            assert_eq!(name(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn detects_levels_and_layers_from_key_names() {
        let mut keys = vec!["input_blocks.0.0.weight".to_string()];
        for i in 1..12 {
            keys.push(format!("input_blocks.{i}.0.in_layers.0.weight"));
        }
        for i in [3, 6, 9] {
            keys.push(format!("input_blocks.{i}.0.op.weight"));
        }
        for i in 0..12 {
            keys.push(format!("output_blocks.{i}.0.in_layers.0.weight"));
        }
        let layout = UnetLayout::detect(keys.iter().map(String::as_str)).unwrap();
        assert_eq!(layout, SD);
        keys.push("output_blocks.12.0.in_layers.0.weight".into());
        assert!(UnetLayout::detect(keys.iter().map(String::as_str)).is_err());
    }
}
