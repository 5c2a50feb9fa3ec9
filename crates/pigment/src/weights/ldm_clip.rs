//! SD1 text-encoder names of LDM single files -> transformers' CLIPTextModel names at the
//! `text_model` level. SD1 files store the HF CLIP model itself under
//! `cond_stage_model.transformer.` (diffusers' `convert_ldm_clip_checkpoint` only strips that
//! prefix), with the `text_model.` level in all but the oldest files; the
//! `embeddings.position_ids` buffer (int64 in some files, float in others) is not a weight.

use super::mapped::KeyFate;

pub(crate) const PREFIX: &str = "cond_stage_model.transformer.";

/// Maps one key (without [`PREFIX`]).
pub(crate) fn map_key(key: &str) -> KeyFate {
    let name = key.strip_prefix("text_model.").unwrap_or(key);
    if name == "embeddings.position_ids" {
        return KeyFate::Ignore("position_ids buffer (positions are 0..77, recomputed)");
    }
    let known = ["embeddings.", "encoder.layers.", "final_layer_norm."];
    if known.iter().any(|p| name.starts_with(p)) {
        KeyFate::one(name.to_string())
    } else {
        KeyFate::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_the_text_model_level_and_ignores_position_ids() {
        assert_eq!(
            map_key("text_model.encoder.layers.3.mlp.fc1.weight"),
            KeyFate::one("encoder.layers.3.mlp.fc1.weight".into())
        );
        assert_eq!(
            map_key("embeddings.token_embedding.weight"),
            KeyFate::one("embeddings.token_embedding.weight".into())
        );
        assert!(matches!(
            map_key("text_model.embeddings.position_ids"),
            KeyFate::Ignore(_)
        ));
        assert_eq!(map_key("text_projection.weight"), KeyFate::Unknown);
    }
}
