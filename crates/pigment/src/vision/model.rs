//! The CLIP vision transformer (Radford et al. 2021, section 2.4; a ViT, Dosovitskiy et al.
//! 2021): patches embedded by a strided convolution, a learned class token and position
//! embeddings, a pre-norm transformer, and the class token's final state as the image's pooled
//! representation. Mirrors transformers' `CLIPVisionTransformer` (models/clip/modeling_clip.py),
//! weight names included.

use candle_core::{Module, Tensor};
use candle_nn::{conv2d_no_bias, Conv2d, Conv2dConfig, Init, VarBuilder};

use crate::ops::{layer_norm, LayerNorm};

use super::config::ClipVisionConfig;
use super::encoder::Encoder;
use crate::error::{Error, Result};

/// What the vision tower returns.
#[derive(Debug, Clone)]
pub struct ClipVisionOutput {
    /// [batch, 1 + patches, hidden]: the encoder's final hidden states (before post_layernorm).
    pub last_hidden_state: Tensor,
    /// [batch, hidden]: `post_layernorm` of the class token's final state.
    pub pooler_output: Tensor,
}

pub struct ClipVisionModel {
    config: ClipVisionConfig,
    patch_embedding: Conv2d,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    encoder: Encoder,
    post_layernorm: LayerNorm,
}

impl ClipVisionModel {
    /// `vb` rooted at transformers' `vision_model` level: `embeddings.patch_embedding.weight`,
    /// `embeddings.class_embedding`, `embeddings.position_embedding.weight`,
    /// `pre_layrnorm.*` (transformers' spelling), `encoder.layers.{i}.*`, `post_layernorm.*`.
    /// New variables get transformers' initial distributions for the embeddings.
    pub fn new(vb: VarBuilder, cfg: &ClipVisionConfig) -> Result<Self> {
        cfg.check_supported()?;
        let h = cfg.hidden_size;
        let emb = vb.pp("embeddings");
        let positions = cfg.grid() * cfg.grid() + 1;
        let conv_cfg = Conv2dConfig {
            stride: cfg.patch_size,
            ..Default::default()
        };
        let class_std = (h as f64).powf(-0.5) * cfg.initializer_factor;
        let position_std = cfg.initializer_range * cfg.initializer_factor;
        Ok(Self {
            patch_embedding: conv2d_no_bias(
                cfg.num_channels,
                h,
                cfg.patch_size,
                conv_cfg,
                emb.pp("patch_embedding"),
            )?,
            class_embedding: emb.get_with_hints(
                h,
                "class_embedding",
                Init::Randn {
                    mean: 0.0,
                    stdev: class_std,
                },
            )?,
            position_embedding: emb.pp("position_embedding").get_with_hints(
                (positions, h),
                "weight",
                Init::Randn {
                    mean: 0.0,
                    stdev: position_std,
                },
            )?,
            pre_layrnorm: layer_norm(h, cfg.layer_norm_eps, vb.pp("pre_layrnorm"))?,
            encoder: Encoder::new(vb.pp("encoder"), cfg)?,
            post_layernorm: layer_norm(h, cfg.layer_norm_eps, vb.pp("post_layernorm"))?,
            config: cfg.clone(),
        })
    }

    pub fn config(&self) -> &ClipVisionConfig {
        &self.config
    }

    pub fn num_layers(&self) -> usize {
        self.encoder.num_layers()
    }

    /// `pixel_values` [batch, num_channels, image_size, image_size], normalised as CLIP's
    /// image processor does (see [`super::normalize`]).
    pub fn forward(&self, pixel_values: &Tensor) -> Result<ClipVisionOutput> {
        let states = self.hidden_states(pixel_values)?;
        let last = states
            .last()
            .cloned()
            .ok_or_else(|| Error::Config("CLIP vision tower has no layers".into()))?;
        let pooled = self
            .post_layernorm
            .forward(&last.narrow(1, 0, 1)?.squeeze(1)?)?;
        Ok(ClipVisionOutput {
            last_hidden_state: last,
            pooler_output: pooled,
        })
    }

    /// transformers' `hidden_states`: the embeddings after `pre_layrnorm`, then every layer's
    /// output (CLIP interrogators read the penultimate one).
    pub fn hidden_states(&self, pixel_values: &Tensor) -> Result<Vec<Tensor>> {
        let cfg = &self.config;
        let dims = pixel_values.dims();
        let expected = [cfg.num_channels, cfg.image_size, cfg.image_size];
        if dims.len() != 4 || dims[1..] != expected {
            return Err(Error::invalid(format!(
                "CLIP vision input must be [batch, {}, {}, {}], got shape {dims:?}: resize \
                 and crop the image to {} pixels first",
                expected[0], expected[1], expected[2], cfg.image_size
            )));
        }
        let batch = dims[0];
        let h = cfg.hidden_size;
        let x = pixel_values.to_dtype(self.class_embedding.dtype())?;
        let patches = self
            .patch_embedding
            .forward(&x)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let class = self
            .class_embedding
            .reshape((1, 1, h))?
            .broadcast_as((batch, 1, h))?;
        let x = Tensor::cat(&[&class, &patches], 1)?;
        let x = x.broadcast_add(&self.position_embedding.unsqueeze(0)?)?;
        let x = self.pre_layrnorm.forward(&x)?;
        let mut states = vec![x.clone()];
        states.extend(self.encoder.forward_all(&x)?);
        Ok(states)
    }
}
