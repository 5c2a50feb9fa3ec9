//! UNet2DConditionModel config: the fields of diffusers' `unet/config.json` that SD1.x / SD2.x
//! use, with diffusers' defaults (diffusers/models/unets/unet_2d_condition.py).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A config field that diffusers allows as either one value or one value per block.
#[derive(Debug, Clone, PartialEq)]
pub enum PerBlock<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// The value for block `i` of `n`.
    pub fn get(&self, i: usize) -> T {
        match self {
            PerBlock::One(v) => v.clone(),
            PerBlock::Each(v) => v[i.min(v.len().saturating_sub(1))].clone(),
        }
    }
    pub fn len(&self) -> Option<usize> {
        match self {
            PerBlock::One(_) => None,
            PerBlock::Each(v) => Some(v.len()),
        }
    }
    pub fn is_empty(&self) -> bool {
        matches!(self, PerBlock::Each(v) if v.is_empty())
    }
}

impl<T: Serialize> Serialize for PerBlock<T> {
    /// Written back the way diffusers writes it: a bare value or a list.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PerBlock::One(v) => v.serialize(s),
            PerBlock::Each(v) => v.serialize(s),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for PerBlock<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<T> {
            One(T),
            Each(Vec<T>),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::One(v) => PerBlock::One(v),
            Raw::Each(v) => PerBlock::Each(v),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct UNet2DConditionConfig {
    pub sample_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub center_input_sample: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    pub mid_block_type: Option<String>,
    pub up_block_types: Vec<String>,
    pub only_cross_attention: PerBlock<bool>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: PerBlock<usize>,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    pub act_fn: String,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub cross_attention_dim: PerBlock<usize>,
    pub transformer_layers_per_block: PerBlock<usize>,
    /// Despite its name, the number of attention heads per block in SD1 (8) and SD2
    /// ([5, 10, 20, 20]) configs: diffusers keeps the misnomer (see `num_attention_heads`).
    pub attention_head_dim: PerBlock<usize>,
    /// When set, the number of heads; when absent diffusers uses `attention_head_dim` as the
    /// number of heads (unet_2d_condition.py: `num_attention_heads = num_attention_heads or
    /// attention_head_dim`).
    pub num_attention_heads: Option<PerBlock<usize>>,
    pub dual_cross_attention: bool,
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
    pub resnet_time_scale_shift: String,
    pub class_embed_type: Option<String>,
    pub addition_embed_type: Option<String>,
    pub num_class_embeds: Option<usize>,
    pub time_embedding_type: String,
    pub conv_in_kernel: usize,
    pub conv_out_kernel: usize,
    pub time_cond_proj_dim: Option<usize>,
    /// Width of the time embedding; diffusers' default (None) is `4 * block_out_channels[0]`.
    pub time_embedding_dim: Option<usize>,
    // The fields below exist only so that a config using them is refused (Error::Config) rather
    // than silently run as something else: Pigment supports only their diffusers defaults.
    pub time_embedding_act_fn: Option<String>,
    pub timestep_post_act: Option<String>,
    pub encoder_hid_dim: Option<usize>,
    pub encoder_hid_dim_type: Option<String>,
    pub attention_type: String,
    pub cross_attention_norm: Option<String>,
    pub reverse_transformer_layers_per_block: Option<serde_json::Value>,
}

impl Default for UNet2DConditionConfig {
    fn default() -> Self {
        Self {
            sample_size: 64,
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: vec![
                "CrossAttnDownBlock2D".into(),
                "CrossAttnDownBlock2D".into(),
                "CrossAttnDownBlock2D".into(),
                "DownBlock2D".into(),
            ],
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            up_block_types: vec![
                "UpBlock2D".into(),
                "CrossAttnUpBlock2D".into(),
                "CrossAttnUpBlock2D".into(),
                "CrossAttnUpBlock2D".into(),
            ],
            only_cross_attention: PerBlock::One(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: PerBlock::One(2),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: "silu".into(),
            norm_num_groups: 32,
            norm_eps: 1e-5,
            cross_attention_dim: PerBlock::One(1280),
            transformer_layers_per_block: PerBlock::One(1),
            attention_head_dim: PerBlock::One(8),
            num_attention_heads: None,
            dual_cross_attention: false,
            use_linear_projection: false,
            upcast_attention: false,
            resnet_time_scale_shift: "default".into(),
            class_embed_type: None,
            addition_embed_type: None,
            num_class_embeds: None,
            time_embedding_type: "positional".into(),
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            time_cond_proj_dim: None,
            time_embedding_dim: None,
            time_embedding_act_fn: None,
            timestep_post_act: None,
            encoder_hid_dim: None,
            encoder_hid_dim_type: None,
            attention_type: "default".into(),
            cross_attention_norm: None,
            reverse_transformer_layers_per_block: None,
        }
    }
}

impl UNet2DConditionConfig {
    /// SD1.x (v1-inference.yaml as diffusers writes it).
    pub fn sd1() -> Self {
        Self {
            cross_attention_dim: PerBlock::One(768),
            attention_head_dim: PerBlock::One(8),
            ..Self::default()
        }
    }

    /// SD2.x (v2-inference(-v).yaml as diffusers writes it).
    pub fn sd2() -> Self {
        Self {
            cross_attention_dim: PerBlock::One(1024),
            attention_head_dim: PerBlock::Each(vec![5, 10, 20, 20]),
            use_linear_projection: true,
            ..Self::default()
        }
    }
}
