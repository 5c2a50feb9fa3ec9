//! VAE names of original LDM single files (`first_stage_model.*`, taming/ldm `model.py`) ->
//! diffusers' AutoencoderKL names, as diffusers' loaders/single_file_utils.py
//! (`convert_ldm_vae_checkpoint`, `update_vae_attentions_ldm_to_diffusers`, `conv_attn_to_linear`)
//! converts them. Two things are not renames:
//! - the decoder's `up.N` counts from the lowest resolution's *end*: LDM `up.{n-1-i}` is
//!   diffusers `up_blocks.{i}`;
//! - the mid-block attention's q/k/v/proj_out are 1x1 convs in LDM (`[C, C, 1, 1]`) and linear
//!   layers in diffusers (`[C, C]`): same bytes, new shape (files converted back from diffusers
//!   may already hold `[C, C]`; both are accepted).

use super::mapped::{KeyFate, Transform};

pub(crate) const PREFIX: &str = "first_stage_model.";

/// (diffusers, LDM) for the modules outside the blocks.
const TOP: &[(&str, &str)] = &[
    ("encoder.conv_in", "encoder.conv_in"),
    ("encoder.conv_out", "encoder.conv_out"),
    ("encoder.conv_norm_out", "encoder.norm_out"),
    ("decoder.conv_in", "decoder.conv_in"),
    ("decoder.conv_out", "decoder.conv_out"),
    ("decoder.conv_norm_out", "decoder.norm_out"),
    ("quant_conv", "quant_conv"),
    ("post_quant_conv", "post_quant_conv"),
];

/// (diffusers, LDM) inside the mid-block attention.
const ATTENTION: &[(&str, &str)] = &[
    ("group_norm", "norm"),
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("to_out.0", "proj_out"),
];

/// Maps one VAE key (without [`PREFIX`]); `levels` is the number of decoder `up.N` levels.
pub(crate) fn map_key(key: &str, levels: usize) -> KeyFate {
    match map_name(key, levels) {
        Some((name, transform)) => KeyFate::Use(vec![(name, transform)]),
        None => KeyFate::Unknown,
    }
}

/// Number of decoder levels: distinct `decoder.up.N`.
pub(crate) fn levels<'a>(keys: impl Iterator<Item = &'a str>) -> usize {
    let mut seen: Vec<&str> = keys
        .filter_map(|k| k.strip_prefix("decoder.up.")?.split('.').next())
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len()
}

fn map_name(key: &str, levels: usize) -> Option<(String, Transform)> {
    let plain = |s: String| Some((s, Transform::None));
    for (new, old) in TOP {
        if let Some(param) = key.strip_prefix(old).and_then(|r| r.strip_prefix('.')) {
            return plain(format!("{new}.{param}"));
        }
    }
    let (coder, rest) = key.split_once('.')?;
    if coder != "encoder" && coder != "decoder" {
        return None;
    }
    if let Some(mid) = rest.strip_prefix("mid.") {
        let (module, rest) = mid.split_once('.')?;
        return match module {
            "block_1" | "block_2" => {
                let i = if module == "block_1" { 0 } else { 1 };
                plain(format!("{coder}.mid_block.resnets.{i}.{}", resnet(rest)))
            }
            "attn_1" => {
                let (part, param) = rest.rsplit_once('.')?;
                let (new, _) = ATTENTION.iter().find(|(_, old)| *old == part)?;
                let transform = if param == "weight" && part != "norm" {
                    Transform::ConvToLinear
                } else {
                    Transform::None
                };
                Some((
                    format!("{coder}.mid_block.attentions.0.{new}.{param}"),
                    transform,
                ))
            }
            _ => None,
        };
    }
    let (kind, rest) = rest.split_once('.')?;
    let (level, rest) = rest.split_once('.')?;
    let level: usize = level.parse().ok()?;
    let (block, level) = match (coder, kind) {
        ("encoder", "down") => ("down_blocks", level),
        ("decoder", "up") if level < levels => ("up_blocks", levels - 1 - level),
        _ => return None,
    };
    if let Some(layer_rest) = rest.strip_prefix("block.") {
        let (layer, param) = layer_rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        return plain(format!(
            "{coder}.{block}.{level}.resnets.{layer}.{}",
            resnet(param)
        ));
    }
    let sampler = if block == "down_blocks" {
        "downsample"
    } else {
        "upsample"
    };
    let param = rest.strip_prefix(sampler)?.strip_prefix(".conv.")?;
    let new = if block == "down_blocks" {
        "downsamplers"
    } else {
        "upsamplers"
    };
    plain(format!("{coder}.{block}.{level}.{new}.0.conv.{param}"))
}

/// Resnet parameter names agree except the shortcut.
fn resnet(rest: &str) -> String {
    match rest.strip_prefix("nin_shortcut.") {
        Some(param) => format!("conv_shortcut.{param}"),
        None => rest.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_sd_vae_names_diffusers_maps() {
        let cases = [
            (
                "encoder.norm_out.weight",
                "encoder.conv_norm_out.weight",
                Transform::None,
            ),
            (
                "encoder.down.1.block.0.nin_shortcut.weight",
                "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
                Transform::None,
            ),
            (
                "encoder.down.0.downsample.conv.bias",
                "encoder.down_blocks.0.downsamplers.0.conv.bias",
                Transform::None,
            ),
            (
                "decoder.up.3.block.2.conv1.weight",
                "decoder.up_blocks.0.resnets.2.conv1.weight",
                Transform::None,
            ),
            (
                "decoder.up.1.upsample.conv.weight",
                "decoder.up_blocks.2.upsamplers.0.conv.weight",
                Transform::None,
            ),
            (
                "decoder.mid.block_2.norm2.bias",
                "decoder.mid_block.resnets.1.norm2.bias",
                Transform::None,
            ),
            (
                "encoder.mid.attn_1.proj_out.weight",
                "encoder.mid_block.attentions.0.to_out.0.weight",
                Transform::ConvToLinear,
            ),
            (
                "encoder.mid.attn_1.q.bias",
                "encoder.mid_block.attentions.0.to_q.bias",
                Transform::None,
            ),
            (
                "encoder.mid.attn_1.norm.weight",
                "encoder.mid_block.attentions.0.group_norm.weight",
                Transform::None,
            ),
            (
                "post_quant_conv.weight",
                "post_quant_conv.weight",
                Transform::None,
            ),
        ];
        for (ldm, diffusers, transform) in cases {
            assert_eq!(
                map_key(ldm, 4),
                KeyFate::Use(vec![(diffusers.to_string(), transform)]),
                "{ldm}"
            );
        }
        for unknown in [
            "decoder.up.4.block.0.conv1.weight",
            "loss.logvar",
            "encoder.mid.attn_1.x.weight",
        ] {
            assert_eq!(map_key(unknown, 4), KeyFate::Unknown, "{unknown}");
        }
    }
}
