//! SD2 text-encoder names of Stability single files (OpenCLIP ViT-H/14 text tower under
//! `cond_stage_model.model.`) -> transformers' CLIPTextModel names at the `text_model` level,
//! as diffusers' loaders/single_file_utils.py `convert_open_clip_checkpoint` converts them:
//! `transformer.resblocks.N` -> `encoder.layers.N` with `ln_1`/`ln_2` -> `layer_norm1`/`2`,
//! `mlp.c_fc`/`c_proj` -> `mlp.fc1`/`fc2`, `attn.out_proj` -> `self_attn.out_proj`, and the fused
//! `attn.in_proj_weight`/`bias` ([3H, H] / [3H]) split by rows into q, k, v.
//!
//! SD2 conditions on the penultimate layer of this tower (ldm's FrozenOpenCLIPEmbedder,
//! `layer="penultimate"`), so the last resblock is never used: like diffusers (which drops
//! `resblocks.23` by name), Pigment drops the last block and builds a model of
//! `resblocks - 1` layers. `text_projection` and `logit_scale` belong to the contrastive head.

use super::mapped::{KeyFate, Transform};

pub(crate) const PREFIX: &str = "cond_stage_model.model.";

/// (transformers, OpenCLIP) names of the modules outside the layers.
const TOP: &[(&str, &str)] = &[
    (
        "embeddings.token_embedding.weight",
        "token_embedding.weight",
    ),
    (
        "embeddings.position_embedding.weight",
        "positional_embedding",
    ),
    ("final_layer_norm.weight", "ln_final.weight"),
    ("final_layer_norm.bias", "ln_final.bias"),
];

/// (transformers, OpenCLIP) names inside a layer.
const LAYER: &[(&str, &str)] = &[
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    ("self_attn.out_proj", "attn.out_proj"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
];

/// Number of resblocks in the file: distinct `transformer.resblocks.N`.
pub(crate) fn resblocks<'a>(keys: impl Iterator<Item = &'a str>) -> usize {
    keys.filter_map(|k| {
        k.strip_prefix("transformer.resblocks.")?
            .split('.')
            .next()?
            .parse::<usize>()
            .ok()
    })
    .max()
    .map_or(0, |m| m.saturating_add(1))
}

/// Maps one key (without [`PREFIX`]); `shape` is its stored shape, `resblocks` the block count.
pub(crate) fn map_key(key: &str, shape: &[usize], resblocks: usize) -> KeyFate {
    if let Some((new, _)) = TOP.iter().find(|(_, old)| *old == key) {
        return KeyFate::one(new.to_string());
    }
    if key == "text_projection" || key == "logit_scale" {
        return KeyFate::Ignore(
            "OpenCLIP contrastive head (text_projection, logit_scale), unused by SD2",
        );
    }
    let Some(rest) = key.strip_prefix("transformer.resblocks.") else {
        return KeyFate::Unknown;
    };
    let Some((index, rest)) = rest.split_once('.') else {
        return KeyFate::Unknown;
    };
    let Ok(index) = index.parse::<usize>() else {
        return KeyFate::Unknown;
    };
    if index.saturating_add(1) == resblocks {
        return KeyFate::Ignore("last OpenCLIP resblock (SD2 uses the penultimate layer)");
    }
    let layer = format!("encoder.layers.{index}");
    if let Some(kind) = rest.strip_prefix("attn.in_proj_") {
        // [3H, H] weight or [3H] bias: H rows each for q, k, v.
        let hidden = shape.first().map_or(0, |rows| rows / 3);
        return KeyFate::Use(
            ["q", "k", "v"]
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    let transform = Transform::Rows {
                        start: i * hidden,
                        count: hidden,
                    };
                    (format!("{layer}.self_attn.{x}_proj.{kind}"), transform)
                })
                .collect(),
        );
    }
    for (new, old) in LAYER {
        if let Some(param) = rest.strip_prefix(old).and_then(|r| r.strip_prefix('.')) {
            return KeyFate::one(format!("{layer}.{new}.{param}"));
        }
    }
    KeyFate::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_open_clip_names_and_splits_in_proj() {
        assert_eq!(
            map_key("positional_embedding", &[77, 1024], 24),
            KeyFate::one("embeddings.position_embedding.weight".into())
        );
        assert_eq!(
            map_key("transformer.resblocks.22.mlp.c_proj.bias", &[1024], 24),
            KeyFate::one("encoder.layers.22.mlp.fc2.bias".into())
        );
        let KeyFate::Use(split) = map_key(
            "transformer.resblocks.0.attn.in_proj_weight",
            &[3072, 1024],
            24,
        ) else {
            panic!("in_proj not mapped");
        };
        assert_eq!(split.len(), 3);
        assert_eq!(split[2].0, "encoder.layers.0.self_attn.v_proj.weight");
        assert_eq!(
            split[2].1,
            Transform::Rows {
                start: 2048,
                count: 1024
            }
        );
        assert!(matches!(
            map_key("transformer.resblocks.23.ln_1.weight", &[1024], 24),
            KeyFate::Ignore(_)
        ));
        assert!(matches!(
            map_key("text_projection", &[1024, 1024], 24),
            KeyFate::Ignore(_)
        ));
        assert_eq!(map_key("visual.proj", &[1], 24), KeyFate::Unknown);
    }
}
