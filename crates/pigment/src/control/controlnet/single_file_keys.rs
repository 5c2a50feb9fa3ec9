//! Original ControlNet single files (lllyasviel/ControlNet `cldm/cldm.py`, keys under
//! `control_model.`) -> diffusers' ControlNetModel names, as diffusers'
//! loaders/single_file_utils.py `convert_controlnet_checkpoint` maps them.
//!
//! The encoder copy uses the LDM UNet names (`time_embed`, `input_blocks`, `middle_block`) and
//! reuses the UNet's table (weights/ldm_unet.rs). ControlNet's own parts:
//! - `input_hint_block.{2k}`: a Sequential of convs with SiLUs between them (odd indices), i.e.
//!   `conv_in` at 0, `blocks.{k - 1}` after it, and the last conv `conv_out`;
//! - `zero_convs.N.0` -> `controlnet_down_blocks.N`; `middle_block_out.0` -> `controlnet_mid_block`.

use crate::weights::ldm_unet::{self, UnetLayout};
use crate::weights::mapped::KeyFate;

/// The key prefix of ControlNet weights in original files.
pub(crate) const PREFIX: &str = "control_model.";

/// Levels and layers of the encoder copy, read off the `input_blocks` names (keys without
/// [`PREFIX`]): levels = downsamplers + 1 and `input_blocks` = 1 + levels * layers + levels - 1.
pub(crate) fn detect_layout<'a>(
    keys: impl Iterator<Item = &'a str> + Clone,
) -> Result<UnetLayout, String> {
    let index = |key: &'a str| -> Option<usize> {
        key.strip_prefix("input_blocks.")?
            .split('.')
            .next()?
            .parse()
            .ok()
    };
    let Some(last) = keys.clone().filter_map(index).max() else {
        return Err("no `input_blocks` (the encoder copy of the UNet) found".into());
    };
    let mut downsamplers: Vec<usize> = keys
        .filter(|k| k.contains(".0.op."))
        .filter_map(index)
        .collect();
    downsamplers.sort_unstable();
    downsamplers.dedup();
    let levels = downsamplers.len() + 1;
    let slots = (last + 1)
        .checked_sub(levels)
        .filter(|s| *s > 0 && s.is_multiple_of(levels))
        .ok_or_else(|| {
            format!(
                "{} input_blocks do not divide into {levels} levels",
                last + 1
            )
        })?;
    Ok(UnetLayout {
        levels,
        layers_per_block: slots / levels,
    })
}

/// The diffusers name of one key (without [`PREFIX`]); `hint_last` is the highest
/// `input_hint_block` index (the conv_out). None for keys the map does not know.
pub(crate) fn diffusers_name(key: &str, layout: &UnetLayout, hint_last: usize) -> Option<String> {
    if let Some(rest) = key.strip_prefix("input_hint_block.") {
        let (index, param) = rest.split_once('.')?;
        let index: usize = index.parse().ok()?;
        if !index.is_multiple_of(2) {
            return None;
        }
        let module = match index {
            0 => "conv_in".to_string(),
            i if i == hint_last => "conv_out".to_string(),
            i => format!("blocks.{}", i / 2 - 1),
        };
        return Some(format!("controlnet_cond_embedding.{module}.{param}"));
    }
    if let Some(rest) = key.strip_prefix("zero_convs.") {
        let (n, param) = rest.split_once(".0.")?;
        let n: usize = n.parse().ok()?;
        return Some(format!("controlnet_down_blocks.{n}.{param}"));
    }
    if let Some(param) = key.strip_prefix("middle_block_out.0.") {
        return Some(format!("controlnet_mid_block.{param}"));
    }
    match ldm_unet::map_key(key, layout) {
        KeyFate::Use(names) if names.len() == 1 => names.into_iter().next().map(|(n, _)| n),
        _ => None,
    }
}

/// The highest `input_hint_block` index among `keys` (without [`PREFIX`]).
pub(crate) fn hint_last<'a>(keys: impl Iterator<Item = &'a str>) -> Option<usize> {
    keys.filter_map(|k| {
        k.strip_prefix("input_hint_block.")?
            .split('.')
            .next()?
            .parse()
            .ok()
    })
    .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SD: UnetLayout = UnetLayout {
        levels: 4,
        layers_per_block: 2,
    };

    #[test]
    fn maps_the_names_diffusers_converts() {
        let cases = [
            (
                "input_hint_block.0.weight",
                "controlnet_cond_embedding.conv_in.weight",
            ),
            (
                "input_hint_block.2.bias",
                "controlnet_cond_embedding.blocks.0.bias",
            ),
            (
                "input_hint_block.12.weight",
                "controlnet_cond_embedding.blocks.5.weight",
            ),
            (
                "input_hint_block.14.weight",
                "controlnet_cond_embedding.conv_out.weight",
            ),
            ("zero_convs.11.0.weight", "controlnet_down_blocks.11.weight"),
            ("middle_block_out.0.bias", "controlnet_mid_block.bias"),
            ("input_blocks.0.0.weight", "conv_in.weight"),
            ("time_embed.0.weight", "time_embedding.linear_1.weight"),
            (
                "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
                "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
            ),
            (
                "input_blocks.9.0.op.bias",
                "down_blocks.2.downsamplers.0.conv.bias",
            ),
            (
                "middle_block.2.in_layers.0.weight",
                "mid_block.resnets.1.norm1.weight",
            ),
        ];
        for (key, name) in cases {
            assert_eq!(diffusers_name(key, &SD, 14).as_deref(), Some(name), "{key}");
        }
        assert_eq!(diffusers_name("input_hint_block.1.weight", &SD, 14), None);
        assert_eq!(diffusers_name("zero_convs.1.weight", &SD, 14), None);
    }

    #[test]
    fn layout_comes_from_input_block_names() {
        let mut keys: Vec<String> = (0..12)
            .map(|i| format!("input_blocks.{i}.0.weight"))
            .collect();
        keys.extend([3, 6, 9].map(|i| format!("input_blocks.{i}.0.op.weight")));
        let layout = detect_layout(keys.iter().map(String::as_str)).unwrap();
        assert_eq!(layout, SD);
        assert!(detect_layout(std::iter::empty()).is_err());
    }
}
