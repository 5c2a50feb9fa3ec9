//! Config values read off tensor shapes (internal names), and the comparison of a config with
//! them. A single-file checkpoint has no config, so its structure (channels, block counts, which
//! blocks attend, in_channels 4/8/9, cross_attention_dim, linear or conv projections, text
//! encoder sizes, VAE channels) is derived here, as diffusers' create_*_diffusers_config_from_ldm
//! read it from the LDM yaml; for a diffusers folder the same derivation checks its config.json.
//! Values shapes cannot tell (head counts, GroupNorm groups, activation, eps) come from the
//! template config passed in.

use super::expected::Shapes;
use crate::text::ClipTextConfig;
use crate::unet::{PerBlock, UNet2DConditionConfig};
use crate::vae::AutoencoderKLConfig;

fn shape<'a>(s: &'a Shapes, name: &str) -> Result<&'a [usize], String> {
    s.get(name)
        .map(Vec::as_slice)
        .ok_or_else(|| format!("tensor `{name}` is missing"))
}

fn dim(s: &Shapes, name: &str, i: usize) -> Result<usize, String> {
    shape(s, name)?
        .get(i)
        .copied()
        .ok_or_else(|| format!("tensor `{name}` has too few dimensions"))
}

/// How many `N` there are in names `{prefix}N.…`; they must run 0, 1, ... without gaps.
fn count(s: &Shapes, prefix: &str) -> Result<usize, String> {
    let found: std::collections::BTreeSet<usize> = s
        .keys()
        .filter_map(|k| {
            k.strip_prefix(prefix)?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .collect();
    match found.last() {
        Some(&last) if last.saturating_add(1) != found.len() => {
            Err(format!("the `{prefix}N` numbering has gaps"))
        }
        _ => Ok(found.len()),
    }
}

fn has_prefix(s: &Shapes, prefix: &str) -> bool {
    s.range(prefix.to_string()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(prefix))
}

fn per_block(values: Vec<usize>) -> PerBlock<usize> {
    match values.first() {
        Some(&v) if values.iter().all(|&x| x == v) => PerBlock::One(v),
        _ => PerBlock::Each(values),
    }
}

/// `template` with every UNet field that shapes determine replaced by what the shapes say.
pub(crate) fn unet(
    s: &Shapes,
    template: &UNet2DConditionConfig,
) -> Result<UNet2DConditionConfig, String> {
    let mut c = template.clone();
    let conv_in = shape(s, "conv_in.weight")?;
    let conv_out = shape(s, "conv_out.weight")?;
    if conv_in.len() != 4 || conv_out.len() != 4 {
        return Err("conv_in/conv_out are not 4-d conv weights".into());
    }
    (c.in_channels, c.conv_in_kernel) = (conv_in[1], conv_in[2]);
    (c.out_channels, c.conv_out_kernel) = (conv_out[0], conv_out[2]);
    let n = count(s, "down_blocks.")?;
    if n == 0 {
        return Err("no down_blocks".into());
    }
    let mut layers = Vec::new();
    let mut depth = Vec::new();
    c.block_out_channels.clear();
    c.down_block_types.clear();
    c.up_block_types.clear();
    for i in 0..n {
        c.block_out_channels.push(dim(
            s,
            &format!("down_blocks.{i}.resnets.0.conv1.weight"),
            0,
        )?);
        layers.push(count(s, &format!("down_blocks.{i}.resnets."))?);
        let attn = format!("down_blocks.{i}.attentions.0.");
        let cross = has_prefix(s, &attn);
        depth.push(if cross {
            count(s, &format!("{attn}transformer_blocks."))?
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
        let up_cross = has_prefix(s, &format!("up_blocks.{i}.attentions.0."));
        c.up_block_types.push(
            if up_cross {
                "CrossAttnUpBlock2D"
            } else {
                "UpBlock2D"
            }
            .into(),
        );
    }
    c.layers_per_block = per_block(layers);
    c.transformer_layers_per_block = per_block(depth);
    c.mid_block_type = if has_prefix(s, "mid_block.attentions.0.") {
        Some("UNetMidBlock2DCrossAttn".into())
    } else if has_prefix(s, "mid_block.") {
        Some("UNetMidBlock2D".into())
    } else {
        None
    };
    if let Some((_, k)) = s.iter().find(|(k, _)| k.ends_with(".attn2.to_k.weight")) {
        c.cross_attention_dim = PerBlock::One(*k.get(1).ok_or("attn2.to_k is not 2-d")?);
    }
    if let Some((_, p)) = s.iter().find(|(k, _)| k.ends_with(".proj_in.weight")) {
        c.use_linear_projection = p.len() == 2;
    }
    c.time_cond_proj_dim = s
        .get("time_embedding.cond_proj.weight")
        .and_then(|w| w.get(1).copied());
    let temb = dim(s, "time_embedding.linear_1.weight", 0)?;
    let default_temb = c.block_out_channels[0].saturating_mul(4);
    c.time_embedding_dim = match c.time_embedding_dim {
        Some(d) if d == temb => Some(d),
        _ if temb == default_temb => None,
        _ => Some(temb),
    };
    Ok(c)
}

pub(crate) fn vae(
    s: &Shapes,
    template: &AutoencoderKLConfig,
) -> Result<AutoencoderKLConfig, String> {
    let mut c = template.clone();
    c.in_channels = dim(s, "encoder.conv_in.weight", 1)?;
    c.out_channels = dim(s, "decoder.conv_out.weight", 0)?;
    c.latent_channels = dim(s, "decoder.conv_in.weight", 1)?;
    let n = count(s, "encoder.down_blocks.")?;
    if n == 0 {
        return Err("no encoder.down_blocks".into());
    }
    c.block_out_channels = (0..n)
        .map(|i| {
            dim(
                s,
                &format!("encoder.down_blocks.{i}.resnets.0.conv1.weight"),
                0,
            )
        })
        .collect::<Result<_, _>>()?;
    c.layers_per_block = count(s, "encoder.down_blocks.0.resnets.")?;
    c.down_block_types = vec!["DownEncoderBlock2D".into(); n];
    c.up_block_types = vec!["UpDecoderBlock2D".into(); n];
    c.use_quant_conv = s.contains_key("quant_conv.weight");
    c.use_post_quant_conv = s.contains_key("post_quant_conv.weight");
    c.mid_block_add_attention = has_prefix(s, "encoder.mid_block.attentions.0.");
    Ok(c)
}

pub(crate) fn text(s: &Shapes, template: &ClipTextConfig) -> Result<ClipTextConfig, String> {
    let mut c = template.clone();
    let tokens = shape(s, "embeddings.token_embedding.weight")?;
    let [vocab, hidden] = tokens else {
        return Err("token_embedding is not 2-d".into());
    };
    (c.vocab_size, c.hidden_size) = (*vocab, *hidden);
    c.max_position_embeddings = dim(s, "embeddings.position_embedding.weight", 0)?;
    c.intermediate_size = dim(s, "encoder.layers.0.mlp.fc1.weight", 0)?;
    c.num_hidden_layers = count(s, "encoder.layers.")?;
    Ok(c)
}

/// Each structural field where `given` disagrees with `derived`, as "field: config X, weights Y".
pub(crate) fn unet_disagreements(
    given: &UNet2DConditionConfig,
    derived: &UNet2DConditionConfig,
) -> Vec<String> {
    let n = derived.block_out_channels.len();
    let blocks = |p: &PerBlock<usize>, only: &dyn Fn(usize) -> bool| -> Vec<usize> {
        (0..n).filter(|&i| only(i)).map(|i| p.get(i)).collect()
    };
    let all = |_: usize| true;
    let attends = |i: usize| derived.down_block_types[i].starts_with("CrossAttn");
    let mut out = Vec::new();
    let mut check = |field: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{field}: config {a}, weights {b}"));
        }
    };
    check(
        "in_channels",
        given.in_channels.to_string(),
        derived.in_channels.to_string(),
    );
    check(
        "out_channels",
        given.out_channels.to_string(),
        derived.out_channels.to_string(),
    );
    check(
        "conv_in_kernel",
        given.conv_in_kernel.to_string(),
        derived.conv_in_kernel.to_string(),
    );
    check(
        "conv_out_kernel",
        given.conv_out_kernel.to_string(),
        derived.conv_out_kernel.to_string(),
    );
    check(
        "block_out_channels",
        format!("{:?}", given.block_out_channels),
        format!("{:?}", derived.block_out_channels),
    );
    check(
        "down_block_types",
        format!("{:?}", given.down_block_types),
        format!("{:?}", derived.down_block_types),
    );
    check(
        "up_block_types",
        format!("{:?}", given.up_block_types),
        format!("{:?}", derived.up_block_types),
    );
    check(
        "mid_block_type",
        format!("{:?}", given.mid_block_type),
        format!("{:?}", derived.mid_block_type),
    );
    check(
        "layers_per_block",
        format!("{:?}", blocks(&given.layers_per_block, &all)),
        format!("{:?}", blocks(&derived.layers_per_block, &all)),
    );
    check(
        "transformer_layers_per_block",
        format!(
            "{:?}",
            blocks(&given.transformer_layers_per_block, &attends)
        ),
        format!(
            "{:?}",
            blocks(&derived.transformer_layers_per_block, &attends)
        ),
    );
    if (0..n).any(attends) {
        check(
            "cross_attention_dim",
            format!("{:?}", blocks(&given.cross_attention_dim, &attends)),
            format!("{:?}", blocks(&derived.cross_attention_dim, &attends)),
        );
        check(
            "use_linear_projection",
            given.use_linear_projection.to_string(),
            derived.use_linear_projection.to_string(),
        );
    }
    check(
        "time_cond_proj_dim",
        format!("{:?}", given.time_cond_proj_dim),
        format!("{:?}", derived.time_cond_proj_dim),
    );
    out
}

pub(crate) fn vae_disagreements(
    given: &AutoencoderKLConfig,
    derived: &AutoencoderKLConfig,
) -> Vec<String> {
    let fields: [(&str, String, String); 8] = [
        (
            "in_channels",
            given.in_channels.to_string(),
            derived.in_channels.to_string(),
        ),
        (
            "out_channels",
            given.out_channels.to_string(),
            derived.out_channels.to_string(),
        ),
        (
            "latent_channels",
            given.latent_channels.to_string(),
            derived.latent_channels.to_string(),
        ),
        (
            "block_out_channels",
            format!("{:?}", given.block_out_channels),
            format!("{:?}", derived.block_out_channels),
        ),
        (
            "layers_per_block",
            given.layers_per_block.to_string(),
            derived.layers_per_block.to_string(),
        ),
        (
            "use_quant_conv",
            given.use_quant_conv.to_string(),
            derived.use_quant_conv.to_string(),
        ),
        (
            "use_post_quant_conv",
            given.use_post_quant_conv.to_string(),
            derived.use_post_quant_conv.to_string(),
        ),
        (
            "mid_block_add_attention",
            given.mid_block_add_attention.to_string(),
            derived.mid_block_add_attention.to_string(),
        ),
    ];
    differing(&fields)
}

pub(crate) fn text_disagreements(given: &ClipTextConfig, derived: &ClipTextConfig) -> Vec<String> {
    let fields: [(&str, String, String); 5] = [
        (
            "vocab_size",
            given.vocab_size.to_string(),
            derived.vocab_size.to_string(),
        ),
        (
            "hidden_size",
            given.hidden_size.to_string(),
            derived.hidden_size.to_string(),
        ),
        (
            "intermediate_size",
            given.intermediate_size.to_string(),
            derived.intermediate_size.to_string(),
        ),
        (
            "num_hidden_layers",
            given.num_hidden_layers.to_string(),
            derived.num_hidden_layers.to_string(),
        ),
        (
            "max_position_embeddings",
            given.max_position_embeddings.to_string(),
            derived.max_position_embeddings.to_string(),
        ),
    ];
    differing(&fields)
}

fn differing(fields: &[(&str, String, String)]) -> Vec<String> {
    fields
        .iter()
        .filter(|(_, a, b)| a != b)
        .map(|(f, a, b)| format!("{f}: config {a}, weights {b}"))
        .collect()
}
