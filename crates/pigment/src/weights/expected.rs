//! Every tensor a component must have, with its shape, given its config: the parameter list of
//! diffusers' UNet2DConditionModel / AutoencoderKL and transformers' CLIPTextModel for the
//! configurations SD1.x/SD2.x use (diffusers/models/unets/unet_2d_condition.py, unet_2d_blocks.py,
//! resnet.py, attention_processor.py, transformers_2d; autoencoders/vae.py; transformers
//! models/clip/modeling_clip.py). Checking a checkpoint against this list at open time turns
//! "config and weights disagree" into one clear error instead of a failure deep inside a model.

use std::collections::BTreeMap;

use crate::text::ClipTextConfig;
use crate::unet::UNet2DConditionConfig;
use crate::vae::AutoencoderKLConfig;

pub(crate) type Shapes = BTreeMap<String, Vec<usize>>;

#[derive(Default)]
struct List(Shapes);

impl List {
    fn add(&mut self, name: String, shape: Vec<usize>) {
        self.0.insert(name, shape);
    }
    fn linear(&mut self, p: &str, out: usize, inp: usize, bias: bool) {
        self.add(format!("{p}.weight"), vec![out, inp]);
        if bias {
            self.add(format!("{p}.bias"), vec![out]);
        }
    }
    fn conv(&mut self, p: &str, out: usize, inp: usize, k: usize) {
        self.add(format!("{p}.weight"), vec![out, inp, k, k]);
        self.add(format!("{p}.bias"), vec![out]);
    }
    fn norm(&mut self, p: &str, c: usize) {
        self.add(format!("{p}.weight"), vec![c]);
        self.add(format!("{p}.bias"), vec![c]);
    }
    /// resnet.py ResnetBlock2D (time_embedding_norm "default").
    fn resnet(&mut self, p: &str, inp: usize, out: usize, temb: Option<usize>) {
        self.norm(&format!("{p}.norm1"), inp);
        self.conv(&format!("{p}.conv1"), out, inp, 3);
        if let Some(t) = temb {
            self.linear(&format!("{p}.time_emb_proj"), out, t, true);
        }
        self.norm(&format!("{p}.norm2"), out);
        self.conv(&format!("{p}.conv2"), out, out, 3);
        if inp != out {
            self.conv(&format!("{p}.conv_shortcut"), out, inp, 1);
        }
    }
    /// attention_processor.py Attention: q/k/v without bias, out projection with.
    fn attention(&mut self, p: &str, inner: usize, kv: usize) {
        self.linear(&format!("{p}.to_q"), inner, inner, false);
        self.linear(&format!("{p}.to_k"), inner, kv, false);
        self.linear(&format!("{p}.to_v"), inner, kv, false);
        self.linear(&format!("{p}.to_out.0"), inner, inner, true);
    }
}

/// One Transformer2DModel of a cross-attention block.
struct Transformer {
    channels: usize,
    heads: usize,
    layers: usize,
    cross: usize,
    linear: bool,
    only_cross: bool,
}

impl List {
    fn transformer(&mut self, p: &str, t: &Transformer) -> Result<(), String> {
        if t.heads == 0 {
            return Err(format!("{p}: zero attention heads"));
        }
        // CrossAttn*Block2D: Transformer2DModel(heads, channels // heads, in_channels=channels).
        let inner = t.heads.saturating_mul(t.channels / t.heads);
        self.norm(&format!("{p}.norm"), t.channels);
        let project = |l: &mut List, name: &str, out: usize, inp: usize| {
            if t.linear {
                l.linear(&format!("{p}.{name}"), out, inp, true)
            } else {
                l.conv(&format!("{p}.{name}"), out, inp, 1)
            }
        };
        project(self, "proj_in", inner, t.channels);
        for b in 0..t.layers {
            let tb = format!("{p}.transformer_blocks.{b}");
            self.norm(&format!("{tb}.norm1"), inner);
            self.attention(
                &format!("{tb}.attn1"),
                inner,
                if t.only_cross { t.cross } else { inner },
            );
            self.norm(&format!("{tb}.norm2"), inner);
            self.attention(&format!("{tb}.attn2"), inner, t.cross);
            self.norm(&format!("{tb}.norm3"), inner);
            // GEGLU feed-forward, mult 4.
            self.linear(
                &format!("{tb}.ff.net.0.proj"),
                inner.saturating_mul(8),
                inner,
                true,
            );
            self.linear(
                &format!("{tb}.ff.net.2"),
                inner,
                inner.saturating_mul(4),
                true,
            );
        }
        project(self, "proj_out", t.channels, inner);
        Ok(())
    }
}

pub(crate) fn unet(cfg: &UNet2DConditionConfig) -> Result<Shapes, String> {
    let b = &cfg.block_out_channels;
    let n = b.len();
    if n == 0 {
        return Err("block_out_channels is empty".into());
    }
    if cfg.down_block_types.len() != n || cfg.up_block_types.len() != n {
        return Err(format!(
            "{n} block_out_channels but {} down and {} up block types",
            cfg.down_block_types.len(),
            cfg.up_block_types.len()
        ));
    }
    if cfg.class_embed_type.is_some()
        || cfg.addition_embed_type.is_some()
        || cfg.num_class_embeds.is_some()
    {
        return Err(
            "class/addition embeddings (SD upscaler, unCLIP, SDXL) are not supported".into(),
        );
    }
    if cfg.time_embedding_type != "positional" || cfg.resnet_time_scale_shift != "default" {
        return Err(
            "only positional time embeddings with the default resnet time scale are supported"
                .into(),
        );
    }
    let heads = cfg
        .num_attention_heads
        .as_ref()
        .unwrap_or(&cfg.attention_head_dim);
    let transformer = |level: usize, channels: usize| Transformer {
        channels,
        heads: heads.get(level),
        layers: cfg.transformer_layers_per_block.get(level),
        cross: cfg.cross_attention_dim.get(level),
        linear: cfg.use_linear_projection,
        only_cross: cfg.only_cross_attention.get(level),
    };
    let mut l = List::default();
    let b0 = b[0];
    let temb = cfg.time_embedding_dim.unwrap_or(b0.saturating_mul(4));
    l.conv("conv_in", b0, cfg.in_channels, cfg.conv_in_kernel);
    l.linear("time_embedding.linear_1", temb, b0, true);
    l.linear("time_embedding.linear_2", temb, temb, true);
    if let Some(d) = cfg.time_cond_proj_dim {
        l.linear("time_embedding.cond_proj", b0, d, false);
    }
    for (i, kind) in cfg.down_block_types.iter().enumerate() {
        let cross = match kind.as_str() {
            "CrossAttnDownBlock2D" => true,
            "DownBlock2D" => false,
            other => return Err(format!("down block type {other} is not supported")),
        };
        let (inp, out) = (if i == 0 { b0 } else { b[i - 1] }, b[i]);
        for j in 0..cfg.layers_per_block.get(i) {
            let p = format!("down_blocks.{i}");
            l.resnet(
                &format!("{p}.resnets.{j}"),
                if j == 0 { inp } else { out },
                out,
                Some(temb),
            );
            if cross {
                l.transformer(&format!("{p}.attentions.{j}"), &transformer(i, out))?;
            }
        }
        if i + 1 < n {
            l.conv(&format!("down_blocks.{i}.downsamplers.0.conv"), out, out, 3);
        }
    }
    let c = b[n - 1];
    match cfg.mid_block_type.as_deref() {
        Some("UNetMidBlock2DCrossAttn") => {
            l.resnet("mid_block.resnets.0", c, c, Some(temb));
            let mut t = transformer(n - 1, c);
            t.only_cross = false;
            l.transformer("mid_block.attentions.0", &t)?;
            l.resnet("mid_block.resnets.1", c, c, Some(temb));
        }
        None => {}
        Some(other) => return Err(format!("mid block type {other} is not supported")),
    }
    let mut prev = b[n - 1];
    for (i, kind) in cfg.up_block_types.iter().enumerate() {
        let cross = match kind.as_str() {
            "CrossAttnUpBlock2D" => true,
            "UpBlock2D" => false,
            other => return Err(format!("up block type {other} is not supported")),
        };
        let level = n - 1 - i; // diffusers reverses every per-block list for the up path
        let out = b[level];
        let skip_in = b[level.saturating_sub(1)];
        let layers = cfg.layers_per_block.get(level) + 1;
        for j in 0..layers {
            let skip = if j + 1 == layers { skip_in } else { out };
            let inp = if j == 0 { prev } else { out };
            let p = format!("up_blocks.{i}");
            l.resnet(
                &format!("{p}.resnets.{j}"),
                inp.saturating_add(skip),
                out,
                Some(temb),
            );
            if cross {
                l.transformer(&format!("{p}.attentions.{j}"), &transformer(level, out))?;
            }
        }
        if i + 1 < n {
            l.conv(&format!("up_blocks.{i}.upsamplers.0.conv"), out, out, 3);
        }
        prev = out;
    }
    l.norm("conv_norm_out", b0);
    l.conv("conv_out", cfg.out_channels, b0, cfg.conv_out_kernel);
    Ok(l.0)
}

pub(crate) fn vae(cfg: &AutoencoderKLConfig) -> Result<Shapes, String> {
    let b = &cfg.block_out_channels;
    let n = b.len();
    if n == 0 {
        return Err("block_out_channels is empty".into());
    }
    if cfg.down_block_types.len() != n
        || cfg
            .down_block_types
            .iter()
            .any(|t| t != "DownEncoderBlock2D")
    {
        return Err(format!("down_block_types must be {n} x DownEncoderBlock2D"));
    }
    if cfg.up_block_types.len() != n || cfg.up_block_types.iter().any(|t| t != "UpDecoderBlock2D") {
        return Err(format!("up_block_types must be {n} x UpDecoderBlock2D"));
    }
    let (latent, lpb, c) = (cfg.latent_channels, cfg.layers_per_block, b[n - 1]);
    let mut l = List::default();
    l.conv("encoder.conv_in", b[0], cfg.in_channels, 3);
    for i in 0..n {
        let (inp, out) = (if i == 0 { b[0] } else { b[i - 1] }, b[i]);
        for j in 0..lpb {
            let p = format!("encoder.down_blocks.{i}.resnets.{j}");
            l.resnet(&p, if j == 0 { inp } else { out }, out, None);
        }
        if i + 1 < n {
            l.conv(
                &format!("encoder.down_blocks.{i}.downsamplers.0.conv"),
                out,
                out,
                3,
            );
        }
    }
    let mid = |l: &mut List, p: &str| {
        l.resnet(&format!("{p}.resnets.0"), c, c, None);
        if cfg.mid_block_add_attention {
            let a = format!("{p}.attentions.0");
            l.norm(&format!("{a}.group_norm"), c);
            for x in ["to_q", "to_k", "to_v", "to_out.0"] {
                l.linear(&format!("{a}.{x}"), c, c, true);
            }
        }
        l.resnet(&format!("{p}.resnets.1"), c, c, None);
    };
    mid(&mut l, "encoder.mid_block");
    l.norm("encoder.conv_norm_out", c);
    l.conv("encoder.conv_out", latent.saturating_mul(2), c, 3);
    if cfg.use_quant_conv {
        l.conv(
            "quant_conv",
            latent.saturating_mul(2),
            latent.saturating_mul(2),
            1,
        );
    }
    if cfg.use_post_quant_conv {
        l.conv("post_quant_conv", latent, latent, 1);
    }
    l.conv("decoder.conv_in", c, latent, 3);
    mid(&mut l, "decoder.mid_block");
    let mut prev = c;
    for i in 0..n {
        let out = b[n - 1 - i];
        for j in 0..=lpb {
            let p = format!("decoder.up_blocks.{i}.resnets.{j}");
            l.resnet(&p, if j == 0 { prev } else { out }, out, None);
        }
        if i + 1 < n {
            l.conv(
                &format!("decoder.up_blocks.{i}.upsamplers.0.conv"),
                out,
                out,
                3,
            );
        }
        prev = out;
    }
    l.norm("decoder.conv_norm_out", b[0]);
    l.conv("decoder.conv_out", cfg.out_channels, b[0], 3);
    Ok(l.0)
}

/// CLIPTextModel at the `text_model` level.
pub(crate) fn text(cfg: &ClipTextConfig) -> Shapes {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let mut l = List::default();
    l.add(
        "embeddings.token_embedding.weight".into(),
        vec![cfg.vocab_size, h],
    );
    l.add(
        "embeddings.position_embedding.weight".into(),
        vec![cfg.max_position_embeddings, h],
    );
    for n in 0..cfg.num_hidden_layers {
        let p = format!("encoder.layers.{n}");
        for x in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            l.linear(&format!("{p}.self_attn.{x}"), h, h, true);
        }
        l.norm(&format!("{p}.layer_norm1"), h);
        l.linear(&format!("{p}.mlp.fc1"), i, h, true);
        l.linear(&format!("{p}.mlp.fc2"), h, i, true);
        l.norm(&format!("{p}.layer_norm2"), h);
    }
    l.norm("final_layer_norm", h);
    l.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parameter counts of the published models (diffusers `num_parameters()`).
    #[test]
    fn sd15_and_sd21_parameter_counts() {
        let count = |s: &Shapes| {
            s.values()
                .map(|v| v.iter().product::<usize>())
                .sum::<usize>()
        };
        assert_eq!(
            count(&unet(&UNet2DConditionConfig::sd1()).unwrap()),
            859_520_964
        );
        assert_eq!(
            count(&unet(&UNet2DConditionConfig::sd2()).unwrap()),
            865_910_724
        );
        assert_eq!(count(&vae(&AutoencoderKLConfig::sd()).unwrap()), 83_653_863);
        assert_eq!(count(&text(&ClipTextConfig::sd1())), 123_060_480);
        assert_eq!(count(&text(&ClipTextConfig::sd2())), 340_387_840);
    }
}
