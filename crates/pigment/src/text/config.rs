//! CLIP text-encoder config: the fields of transformers' `CLIPTextConfig` (`config.json` of a
//! diffusers `text_encoder/` folder), with transformers' defaults.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    /// `quick_gelu` (OpenAI CLIP, SD1) or `gelu` (OpenCLIP ViT-H, SD2).
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub projection_dim: usize,
    pub pad_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            projection_dim: 512,
            pad_token_id: Some(1),
            bos_token_id: Some(49406),
            eos_token_id: Some(49407),
        }
    }
}

impl ClipTextConfig {
    /// SD1.x: OpenAI CLIP ViT-L/14 text tower.
    pub fn sd1() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            projection_dim: 768,
            ..Self::default()
        }
    }

    /// SD2.x: OpenCLIP ViT-H/14 text tower, last layer dropped (SD2 conditions on the
    /// penultimate layer, which diffusers stores as a 23-layer model).
    pub fn sd2() -> Self {
        Self {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 23,
            num_attention_heads: 16,
            projection_dim: 512,
            hidden_act: "gelu".into(),
            ..Self::default()
        }
    }
}
