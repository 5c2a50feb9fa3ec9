//! The UNet config checked and resolved into one spec per block, the way diffusers'
//! `UNet2DConditionModel.__init__` (models/unets/unet_2d_condition.py) expands it: per-block
//! values broadcast from single values, up blocks read the reversed lists, and
//! `num_attention_heads = num_attention_heads or attention_head_dim` (SD configs give the head
//! COUNT in `attention_head_dim`). Anything Pigment cannot run is an `Error::Config` here, before
//! a single weight is read.

use super::config::{PerBlock, UNet2DConditionConfig};
use crate::error::{Error, Result};

/// One down or up block.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BlockSpec {
    /// CrossAttn*Block2D (resnets + Transformer2DModels) rather than plain Down/UpBlock2D.
    pub cross_attention: bool,
    pub out_channels: usize,
    /// Number of resnets (for an up block: `layers_per_block + 1`).
    pub layers: usize,
    pub transformer: TransformerSpec,
}

/// What every Transformer2DModel of a block is built with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TransformerSpec {
    pub layers: usize,
    pub heads: usize,
    pub cross_attention_dim: usize,
    pub only_cross_attention: bool,
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
    pub norm_groups: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UNetPlan {
    pub down: Vec<BlockSpec>,
    /// In forward order (deepest first), with diffusers' reversed per-block values.
    pub up: Vec<BlockSpec>,
    /// UNetMidBlock2DCrossAttn; None for `mid_block_type: null`.
    pub mid: Option<TransformerSpec>,
    /// Width of the sinusoidal timestep features (`block_out_channels[0]`).
    pub time_proj_dim: usize,
    /// Width of the time embedding fed to every resnet.
    pub time_embed_dim: usize,
    /// ResnetBlock2D `time_embedding_norm == "scale_shift"` (else "default").
    pub scale_shift: bool,
}

fn unsupported(field: &str, value: impl std::fmt::Debug, supported: &str) -> Error {
    Error::Config(format!(
        "UNet `{field}` = {value:?} is not supported by Pigment ({supported})"
    ))
}

/// Per-block values: one value for all blocks, or exactly one per block.
fn per_block<T: Clone + std::fmt::Debug>(field: &str, v: &PerBlock<T>, n: usize) -> Result<Vec<T>> {
    match v {
        PerBlock::One(x) => Ok(vec![x.clone(); n]),
        PerBlock::Each(xs) if xs.len() == n => Ok(xs.clone()),
        PerBlock::Each(xs) => Err(Error::Config(format!(
            "UNet `{field}` has {} values but there are {n} blocks (`down_block_types`): give one value or one per block",
            xs.len()
        ))),
    }
}

/// diffusers strips a leading "UNetRes" from block type names (unet_2d_blocks.py get_down_block).
fn block_type(name: &str) -> &str {
    name.strip_prefix("UNetRes").unwrap_or(name)
}

fn check_unsupported_fields(c: &UNet2DConditionConfig) -> Result<()> {
    if !matches!(c.act_fn.as_str(), "silu" | "swish") {
        return Err(unsupported("act_fn", &c.act_fn, "only \"silu\""));
    }
    if c.time_embedding_type != "positional" {
        return Err(unsupported(
            "time_embedding_type",
            &c.time_embedding_type,
            "only \"positional\"",
        ));
    }
    if c.resnet_time_scale_shift != "default" && c.resnet_time_scale_shift != "scale_shift" {
        return Err(unsupported(
            "resnet_time_scale_shift",
            &c.resnet_time_scale_shift,
            "\"default\" or \"scale_shift\"",
        ));
    }
    if c.attention_type != "default" {
        return Err(unsupported(
            "attention_type",
            &c.attention_type,
            "only \"default\"",
        ));
    }
    if c.dual_cross_attention {
        return Err(unsupported("dual_cross_attention", true, "only false"));
    }
    let must_be_none: [(&str, Option<String>); 8] = [
        ("class_embed_type", c.class_embed_type.clone()),
        (
            "num_class_embeds",
            c.num_class_embeds.map(|v| v.to_string()),
        ),
        ("addition_embed_type", c.addition_embed_type.clone()),
        ("time_embedding_act_fn", c.time_embedding_act_fn.clone()),
        ("timestep_post_act", c.timestep_post_act.clone()),
        ("encoder_hid_dim", c.encoder_hid_dim.map(|v| v.to_string())),
        ("encoder_hid_dim_type", c.encoder_hid_dim_type.clone()),
        ("cross_attention_norm", c.cross_attention_norm.clone()),
    ];
    for (field, value) in must_be_none {
        if let Some(v) = value {
            return Err(unsupported(field, v, "only null"));
        }
    }
    if let Some(v) = &c.reverse_transformer_layers_per_block {
        if !v.is_null() {
            return Err(unsupported(
                "reverse_transformer_layers_per_block",
                v,
                "only null",
            ));
        }
    }
    for (field, k) in [
        ("conv_in_kernel", c.conv_in_kernel),
        ("conv_out_kernel", c.conv_out_kernel),
    ] {
        if k.is_multiple_of(2) {
            return Err(unsupported(field, k, "an odd kernel size"));
        }
    }
    Ok(())
}

impl UNetPlan {
    pub(crate) fn new(c: &UNet2DConditionConfig) -> Result<Self> {
        check_unsupported_fields(c)?;
        let n = c.down_block_types.len();
        if n == 0 {
            return Err(Error::Config("UNet `down_block_types` is empty".into()));
        }
        if c.up_block_types.len() != n {
            return Err(Error::Config(format!(
                "UNet has {n} `down_block_types` but {} `up_block_types`: they must match",
                c.up_block_types.len()
            )));
        }
        if c.block_out_channels.len() != n {
            return Err(Error::Config(format!(
                "UNet has {n} `down_block_types` but {} `block_out_channels`: they must match",
                c.block_out_channels.len()
            )));
        }
        let layers = per_block("layers_per_block", &c.layers_per_block, n)?;
        let transformer_layers = per_block(
            "transformer_layers_per_block",
            &c.transformer_layers_per_block,
            n,
        )?;
        let heads = match &c.num_attention_heads {
            Some(h) => per_block("num_attention_heads", h, n)?,
            None => per_block("attention_head_dim", &c.attention_head_dim, n)?,
        };
        let cross_dims = per_block("cross_attention_dim", &c.cross_attention_dim, n)?;
        let only_cross = per_block("only_cross_attention", &c.only_cross_attention, n)?;
        let groups = c.norm_num_groups;
        if groups == 0 {
            return Err(unsupported("norm_num_groups", 0, "a positive group count"));
        }
        for &ch in &c.block_out_channels {
            if ch == 0 || !ch.is_multiple_of(groups) {
                return Err(Error::Config(format!(
                    "UNet `block_out_channels` value {ch} is not a multiple of `norm_num_groups` = {groups}"
                )));
            }
        }
        let transformer = |i: usize| TransformerSpec {
            layers: transformer_layers[i],
            heads: heads[i],
            cross_attention_dim: cross_dims[i],
            only_cross_attention: only_cross[i],
            use_linear_projection: c.use_linear_projection,
            upcast_attention: c.upcast_attention,
            norm_groups: groups,
        };
        let check_heads = |i: usize, channels: usize, what: &str| -> Result<()> {
            let h = heads[i];
            if h == 0 || !channels.is_multiple_of(h) {
                return Err(Error::Config(format!(
                    "UNet {what}: {channels} channels cannot be split into {h} attention heads \
                     (`attention_head_dim` / `num_attention_heads` holds the head count)"
                )));
            }
            Ok(())
        };

        let mut down = Vec::with_capacity(n);
        for (i, name) in c.down_block_types.iter().enumerate() {
            let cross_attention = match block_type(name) {
                "CrossAttnDownBlock2D" => true,
                "DownBlock2D" => false,
                other => {
                    return Err(unsupported(
                        &format!("down_block_types[{i}]"),
                        other,
                        "CrossAttnDownBlock2D or DownBlock2D",
                    ))
                }
            };
            if cross_attention {
                check_heads(i, c.block_out_channels[i], &format!("down block {i}"))?;
            }
            if layers[i] == 0 {
                return Err(unsupported("layers_per_block", 0, "at least 1"));
            }
            down.push(BlockSpec {
                cross_attention,
                out_channels: c.block_out_channels[i],
                layers: layers[i],
                transformer: transformer(i),
            });
        }

        let mut up = Vec::with_capacity(n);
        for (i, name) in c.up_block_types.iter().enumerate() {
            let j = n - 1 - i; // diffusers: reversed(per-block list)[i]
            let cross_attention = match block_type(name) {
                "CrossAttnUpBlock2D" => true,
                "UpBlock2D" => false,
                other => {
                    return Err(unsupported(
                        &format!("up_block_types[{i}]"),
                        other,
                        "CrossAttnUpBlock2D or UpBlock2D",
                    ))
                }
            };
            if cross_attention {
                check_heads(j, c.block_out_channels[j], &format!("up block {i}"))?;
            }
            up.push(BlockSpec {
                cross_attention,
                out_channels: c.block_out_channels[j],
                layers: layers[j] + 1,
                transformer: transformer(j),
            });
        }

        let mid = match c.mid_block_type.as_deref() {
            None => None,
            Some("UNetMidBlock2DCrossAttn") => {
                check_heads(n - 1, c.block_out_channels[n - 1], "mid block")?;
                Some(TransformerSpec {
                    // UNetMidBlock2DCrossAttn takes no only_cross_attention (unet_2d_blocks.py).
                    only_cross_attention: false,
                    ..transformer(n - 1)
                })
            }
            Some(other) => {
                return Err(unsupported(
                    "mid_block_type",
                    other,
                    "UNetMidBlock2DCrossAttn or null",
                ))
            }
        };

        let time_proj_dim = c.block_out_channels[0];
        Ok(Self {
            down,
            up,
            mid,
            time_proj_dim,
            time_embed_dim: c.time_embedding_dim.unwrap_or(4 * time_proj_dim),
            scale_shift: c.resnet_time_scale_shift == "scale_shift",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd2_head_counts_come_from_attention_head_dim() {
        let plan = UNetPlan::new(&UNet2DConditionConfig::sd2()).unwrap();
        let heads: Vec<_> = plan.down.iter().map(|b| b.transformer.heads).collect();
        assert_eq!(heads, vec![5, 10, 20, 20]);
        let up_heads: Vec<_> = plan.up.iter().map(|b| b.transformer.heads).collect();
        assert_eq!(up_heads, vec![20, 20, 10, 5]);
        assert_eq!(plan.mid.as_ref().unwrap().heads, 20);
        assert_eq!(plan.up[0].layers, 3);
        assert_eq!(plan.time_embed_dim, 1280);
    }

    #[test]
    fn unsupported_values_name_the_field() {
        let mut c = UNet2DConditionConfig::sd1();
        c.down_block_types[1] = "SimpleCrossAttnDownBlock2D".into();
        let e = UNetPlan::new(&c).unwrap_err().to_string();
        assert!(
            e.contains("down_block_types[1]") && e.contains("SimpleCrossAttnDownBlock2D"),
            "{e}"
        );

        let mut c = UNet2DConditionConfig::sd1();
        c.class_embed_type = Some("timestep".into());
        let e = UNetPlan::new(&c).unwrap_err().to_string();
        assert!(e.contains("class_embed_type"), "{e}");

        let mut c = UNet2DConditionConfig::sd1();
        c.attention_head_dim = PerBlock::Each(vec![8, 8]);
        let e = UNetPlan::new(&c).unwrap_err().to_string();
        assert!(
            e.contains("attention_head_dim") && e.contains("2 values"),
            "{e}"
        );

        let mut c = UNet2DConditionConfig::sd1();
        c.attention_head_dim = PerBlock::One(7);
        let e = UNetPlan::new(&c).unwrap_err().to_string();
        assert!(e.contains("attention heads"), "{e}");
    }
}
