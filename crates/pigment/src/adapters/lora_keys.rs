//! Which model weight a LoRA file's key belongs to.
//!
//! Layouts found in the wild:
//! - kohya / AUTOMATIC1111: `lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q`
//!   `.lora_down.weight` / `.lora_up.weight` / `.alpha`, and `lora_te_text_model_encoder_layers_0_`
//!   `self_attn_q_proj...`. The module path is diffusers' with dots replaced by underscores, which
//!   is ambiguous (`to_out_0`, `ff_net_0_proj`), so keys are matched against the model's own
//!   module names with the same replacement rather than by undoing it.
//! - diffusers / PEFT: `unet.<module>.lora_A.weight` / `.lora_B.weight`,
//!   `text_encoder.text_model.<module>.lora_A.weight` (peft's `base_model.model.` prefix allowed).
//! - LoHa (LyCORIS, A1111's network_hada.py): `lora_unet_<module>.hada_w1_a` / `hada_w1_b` /
//!   `hada_w2_a` / `hada_w2_b` / `.alpha`, kohya module names.
//! - older diffusers attention processors: `unet.<attn>.processor.to_q_lora.down.weight`
//!   (`to_out_lora` is `to_out.0`) and `text_encoder.<module>.lora_linear_layer.down.weight`.

use std::collections::HashMap;

use crate::weights::{Checkpoint, Component};

/// Which factor of the update a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// `lora_down` / `lora_A`: `[rank, in]` (or `[rank, in, kh, kw]` for a conv).
    Down,
    /// `lora_up` / `lora_B`: `[out, rank]` (or `[out, rank, 1, 1]`).
    Up,
    /// The scalar alpha; the update is scaled by alpha / rank.
    Alpha,
    /// LoHa (LyCORIS): `hada_w1_a` `[out, rank]`, the first pair's up factor.
    HadaW1A,
    /// `hada_w1_b` `[rank, in * kh * kw]`, the first pair's down factor.
    HadaW1B,
    /// `hada_w2_a`, the second pair's up factor.
    HadaW2A,
    /// `hada_w2_b`, the second pair's down factor.
    HadaW2B,
    /// `hada_t1` / `hada_t2`: LoHa with a CP-decomposed conv kernel, which Pigment does not
    /// apply (its keys are reported).
    HadaTucker,
}

/// Suffixes of every layout, longest first so `_lora.down.weight` is not read as `.down.weight`.
const SUFFIXES: [(&str, Part); 17] = [
    (".lora_linear_layer.down.weight", Part::Down),
    (".lora_linear_layer.up.weight", Part::Up),
    (".lora_down.weight", Part::Down),
    (".lora_up.weight", Part::Up),
    ("_lora.down.weight", Part::Down),
    ("_lora.up.weight", Part::Up),
    (".lora.down.weight", Part::Down),
    (".lora.up.weight", Part::Up),
    (".lora_A.weight", Part::Down),
    (".lora_B.weight", Part::Up),
    (".alpha", Part::Alpha),
    (".hada_w1_a", Part::HadaW1A),
    (".hada_w1_b", Part::HadaW1B),
    (".hada_w2_a", Part::HadaW2A),
    (".hada_w2_b", Part::HadaW2B),
    (".hada_t1", Part::HadaTucker),
    (".hada_t2", Part::HadaTucker),
];

/// Splits a key into the module it adapts (as written in the file) and the part it holds.
pub(crate) fn split_key(key: &str) -> Option<(&str, Part)> {
    SUFFIXES
        .iter()
        .find_map(|(suffix, part)| key.strip_suffix(suffix).map(|module| (module, *part)))
}

/// The model's adaptable weights under every name a LoRA file may use for their module.
pub(crate) struct ModuleIndex {
    names: HashMap<String, (Component, String)>,
}

impl ModuleIndex {
    /// Every `.weight` of the text encoder and UNet, under its kohya and dotted names.
    pub fn new(ck: &Checkpoint) -> Self {
        let all = [Component::TextEncoder, Component::Unet]
            .into_iter()
            .flat_map(|c| ck.tensor_names(c).into_iter().map(move |n| (c, n)));
        Self::from_names(all)
    }

    /// The index of the given `(component, internal weight name)`s (text encoder and UNet).
    pub fn from_names(all: impl IntoIterator<Item = (Component, String)>) -> Self {
        let mut names = HashMap::new();
        for (component, name) in all {
            let Some(module) = name.strip_suffix(".weight") else {
                continue;
            };
            let target = (component, name.clone());
            let (kohya, dotted) = match component {
                // Internal text-encoder names start below transformers' `text_model` level.
                Component::TextEncoder => {
                    let full = format!("text_model.{module}");
                    (
                        format!("lora_te_{}", full.replace('.', "_")),
                        format!("text_encoder.{full}"),
                    )
                }
                _ => (
                    format!("lora_unet_{}", module.replace('.', "_")),
                    format!("unet.{module}"),
                ),
            };
            names.insert(kohya, target.clone());
            names.insert(dotted, target.clone());
            match component {
                // PEFT files saved from a bare UNet have no `unet.` prefix.
                Component::Unet => names.insert(module.to_string(), target),
                // transformers 5 dropped the `text_model` level, so newer files may too.
                _ => names.insert(format!("text_encoder.{module}"), target),
            };
        }
        Self { names }
    }

    /// The component and internal weight name a file's module string refers to.
    pub fn resolve(&self, module: &str) -> Option<&(Component, String)> {
        let module = module.strip_prefix("base_model.model.").unwrap_or(module);
        if let Some(found) = self.names.get(module) {
            return Some(found);
        }
        // Old attention processors: `attn1.processor.to_q`, `attn1.processor.to_out`.
        let legacy = module.replace(".processor.", ".");
        let legacy = match legacy.strip_suffix(".to_out") {
            Some(stem) => format!("{stem}.to_out.0"),
            None => legacy,
        };
        self.names.get(&legacy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_every_layout() {
        let cases = [
            (
                "lora_unet_mid_block_attentions_0_proj_in.lora_down.weight",
                "lora_unet_mid_block_attentions_0_proj_in",
                Part::Down,
            ),
            (
                "lora_te_text_model_encoder_layers_0_mlp_fc1.alpha",
                "lora_te_text_model_encoder_layers_0_mlp_fc1",
                Part::Alpha,
            ),
            (
                "unet.mid_block.attentions.0.proj_in.lora_B.weight",
                "unet.mid_block.attentions.0.proj_in",
                Part::Up,
            ),
            (
                "unet.a.attn1.processor.to_out_lora.down.weight",
                "unet.a.attn1.processor.to_out",
                Part::Down,
            ),
            (
                "text_encoder.text_model.x.q_proj.lora_linear_layer.up.weight",
                "text_encoder.text_model.x.q_proj",
                Part::Up,
            ),
        ];
        for (key, module, part) in cases {
            assert_eq!(split_key(key), Some((module, part)), "{key}");
        }
        assert_eq!(split_key("unet.conv_in.weight"), None);
    }
}
