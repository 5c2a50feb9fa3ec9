//! ControlNetModel config: the fields of diffusers' ControlNet `config.json` with diffusers'
//! defaults (diffusers/models/controlnets/controlnet.py `ControlNetModel.__init__`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::unet::{PerBlock, UNet2DConditionConfig};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct ControlNetConfig {
    pub in_channels: usize,
    /// Channels of the control image (3 for RGB hints).
    pub conditioning_channels: usize,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    pub mid_block_type: Option<String>,
    pub only_cross_attention: PerBlock<bool>,
    pub block_out_channels: Vec<usize>,
    /// One value for every block (diffusers' ControlNet takes no per-block list).
    pub layers_per_block: usize,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    pub act_fn: String,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub cross_attention_dim: usize,
    pub transformer_layers_per_block: PerBlock<usize>,
    pub encoder_hid_dim: Option<usize>,
    pub encoder_hid_dim_type: Option<String>,
    /// The head COUNT in SD configs (diffusers' naming accident), as in the UNet config.
    pub attention_head_dim: PerBlock<usize>,
    pub num_attention_heads: Option<PerBlock<usize>>,
    pub use_linear_projection: bool,
    pub class_embed_type: Option<String>,
    pub addition_embed_type: Option<String>,
    pub addition_time_embed_dim: Option<usize>,
    pub num_class_embeds: Option<usize>,
    pub upcast_attention: bool,
    pub resnet_time_scale_shift: String,
    pub projection_class_embeddings_input_dim: Option<usize>,
    /// "rgb" or "bgr" (the model flips a BGR-trained hint's channels itself).
    pub controlnet_conditioning_channel_order: String,
    /// Channels of the small conv encoder of the control image; each step after the first
    /// halves the resolution, so 4 entries take 512 px to 64 latent px.
    pub conditioning_embedding_out_channels: Vec<usize>,
    /// Shuffle-style ControlNets: residuals are averaged over space, and the pipeline runs
    /// them in guess mode.
    pub global_pool_conditions: bool,
    pub addition_embed_type_num_heads: usize,
}

impl Default for ControlNetConfig {
    fn default() -> Self {
        let unet = UNet2DConditionConfig::default();
        Self {
            in_channels: 4,
            conditioning_channels: 3,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: unet.down_block_types,
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            only_cross_attention: PerBlock::One(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2,
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: "silu".into(),
            norm_num_groups: 32,
            norm_eps: 1e-5,
            cross_attention_dim: 1280,
            transformer_layers_per_block: PerBlock::One(1),
            encoder_hid_dim: None,
            encoder_hid_dim_type: None,
            attention_head_dim: PerBlock::One(8),
            num_attention_heads: None,
            use_linear_projection: false,
            class_embed_type: None,
            addition_embed_type: None,
            addition_time_embed_dim: None,
            num_class_embeds: None,
            upcast_attention: false,
            resnet_time_scale_shift: "default".into(),
            projection_class_embeddings_input_dim: None,
            controlnet_conditioning_channel_order: "rgb".into(),
            conditioning_embedding_out_channels: vec![16, 32, 96, 256],
            global_pool_conditions: false,
            addition_embed_type_num_heads: 64,
        }
    }
}

impl ControlNetConfig {
    /// The UNet config whose down path and mid block this ControlNet copies (Zhang et al. 2023,
    /// sec. 3.2: "a trainable copy of the encoding layers"), so the UNet's own block plan builds
    /// and checks them. Up blocks mirror the down blocks only to satisfy the plan; none is built.
    pub fn encoder_config(&self) -> Result<UNet2DConditionConfig> {
        match self.mid_block_type.as_deref() {
            Some("UNetMidBlock2DCrossAttn") => {}
            other => {
                return Err(Error::Config(format!(
                    "ControlNet `mid_block_type` = {other:?} is not supported by Pigment (only \
                     \"UNetMidBlock2DCrossAttn\", as every SD1.x / SD2.x ControlNet has)"
                )))
            }
        }
        if !matches!(
            self.controlnet_conditioning_channel_order.as_str(),
            "rgb" | "bgr"
        ) {
            return Err(Error::Config(format!(
                "ControlNet `controlnet_conditioning_channel_order` = {:?}: use \"rgb\" or \"bgr\"",
                self.controlnet_conditioning_channel_order
            )));
        }
        if self.conditioning_embedding_out_channels.is_empty() {
            return Err(Error::Config(
                "ControlNet `conditioning_embedding_out_channels` is empty".into(),
            ));
        }
        if self.conditioning_channels == 0 {
            return Err(Error::Config(
                "ControlNet `conditioning_channels` is 0".into(),
            ));
        }
        let up_block_types = self
            .down_block_types
            .iter()
            .rev()
            .map(|t| t.replace("Down", "Up"))
            .collect();
        Ok(UNet2DConditionConfig {
            in_channels: self.in_channels,
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift,
            down_block_types: self.down_block_types.clone(),
            mid_block_type: self.mid_block_type.clone(),
            up_block_types,
            only_cross_attention: self.only_cross_attention.clone(),
            block_out_channels: self.block_out_channels.clone(),
            layers_per_block: PerBlock::One(self.layers_per_block),
            downsample_padding: self.downsample_padding,
            mid_block_scale_factor: self.mid_block_scale_factor,
            act_fn: self.act_fn.clone(),
            norm_num_groups: self.norm_num_groups,
            norm_eps: self.norm_eps,
            cross_attention_dim: PerBlock::One(self.cross_attention_dim),
            transformer_layers_per_block: self.transformer_layers_per_block.clone(),
            attention_head_dim: self.attention_head_dim.clone(),
            num_attention_heads: self.num_attention_heads.clone(),
            use_linear_projection: self.use_linear_projection,
            upcast_attention: self.upcast_attention,
            resnet_time_scale_shift: self.resnet_time_scale_shift.clone(),
            class_embed_type: self.class_embed_type.clone(),
            addition_embed_type: self.addition_embed_type.clone(),
            num_class_embeds: self.num_class_embeds,
            encoder_hid_dim: self.encoder_hid_dim,
            encoder_hid_dim_type: self.encoder_hid_dim_type.clone(),
            ..UNet2DConditionConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unet::plan::UNetPlan;

    /// lllyasviel/sd-controlnet-canny's config.json (diffusers 0.14), trimmed to what it sets.
    const SD15_CANNY: &str = r#"{
        "_class_name": "ControlNetModel", "act_fn": "silu", "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280], "class_embed_type": null,
        "conditioning_embedding_out_channels": [16, 32, 96, 256],
        "controlnet_conditioning_channel_order": "rgb", "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                             "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
        "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
        "norm_num_groups": 32, "num_class_embeds": null, "only_cross_attention": false,
        "projection_class_embeddings_input_dim": null, "resnet_time_scale_shift": "default",
        "upcast_attention": false, "use_linear_projection": false
    }"#;

    #[test]
    fn sd15_config_plans_the_sd15_encoder() {
        let c: ControlNetConfig = serde_json::from_str(SD15_CANNY).unwrap();
        assert_eq!(c.mid_block_type.as_deref(), Some("UNetMidBlock2DCrossAttn"));
        assert!(!c.global_pool_conditions);
        let plan = UNetPlan::new(&c.encoder_config().unwrap()).unwrap();
        let heads: Vec<_> = plan.down.iter().map(|b| b.transformer.heads).collect();
        assert_eq!(heads, vec![8, 8, 8, 8]);
        assert!(!plan.down[3].cross_attention);
        assert_eq!(plan.time_embed_dim, 1280);
        assert_eq!(plan.mid.unwrap().cross_attention_dim, 768);
    }

    #[test]
    fn unsupported_values_are_config_errors() {
        let mut c: ControlNetConfig = serde_json::from_str(SD15_CANNY).unwrap();
        c.mid_block_type = Some("UNetMidBlock2D".into());
        let e = c.encoder_config().unwrap_err().to_string();
        assert!(e.contains("mid_block_type"), "{e}");
        let mut c: ControlNetConfig = serde_json::from_str(SD15_CANNY).unwrap();
        c.controlnet_conditioning_channel_order = "rbg".into();
        let e = c.encoder_config().unwrap_err().to_string();
        assert!(e.contains("rgb"), "{e}");
        let mut c: ControlNetConfig = serde_json::from_str(SD15_CANNY).unwrap();
        c.addition_embed_type = Some("text_time".into());
        let e = UNetPlan::new(&c.encoder_config().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("addition_embed_type"), "{e}");
    }
}
