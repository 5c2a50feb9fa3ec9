//! The CLIP dual encoder (transformers' `CLIPModel`): the text tower's EOS-token state and the
//! vision tower's pooled state, each projected without bias into a shared embedding space
//! (`text_projection`, `visual_projection`), compared by cosine similarity scaled by
//! `exp(logit_scale)` (Radford et al. 2021, Figure 3).

use candle_core::{DType, Module, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::ops::{linear_no_bias, Linear};

use super::config::ClipConfig;
use super::model::ClipVisionModel;
use crate::error::{Error, Result};
use crate::text::ClipTextModel;

pub struct ClipModel {
    text_model: ClipTextModel,
    vision_model: ClipVisionModel,
    text_projection: Linear,
    visual_projection: Linear,
    logit_scale: Tensor,
    eos_token_id: Option<u32>,
}

impl ClipModel {
    /// `vb` rooted at the CLIPModel weights: `text_model.*`, `vision_model.*`,
    /// `text_projection.weight`, `visual_projection.weight`, `logit_scale` (a scalar).
    pub fn new(vb: VarBuilder, cfg: &ClipConfig) -> Result<Self> {
        let p = cfg.projection_dim;
        Ok(Self {
            text_model: ClipTextModel::new(vb.pp("text_model"), &cfg.text_config)?,
            vision_model: ClipVisionModel::new(vb.pp("vision_model"), &cfg.vision_config)?,
            text_projection: linear_no_bias(
                cfg.text_config.hidden_size,
                p,
                vb.pp("text_projection"),
            )?,
            visual_projection: linear_no_bias(
                cfg.vision_config.hidden_size,
                p,
                vb.pp("visual_projection"),
            )?,
            logit_scale: vb.get_with_hints(
                (),
                "logit_scale",
                Init::Const(cfg.logit_scale_init_value),
            )?,
            eos_token_id: cfg.text_config.eos_token_id,
        })
    }

    pub fn text_model(&self) -> &ClipTextModel {
        &self.text_model
    }

    pub fn vision_model(&self) -> &ClipVisionModel {
        &self.vision_model
    }

    /// The learned log temperature (a scalar tensor; `exp` of it multiplies the cosines).
    pub fn logit_scale(&self) -> &Tensor {
        &self.logit_scale
    }

    /// transformers' `get_text_features`: text_projection of the EOS token's final state,
    /// [batch, projection_dim], not normalised. `input_ids` [batch, seq].
    pub fn text_features(&self, input_ids: &Tensor) -> Result<Tensor> {
        let hidden = self.text_model.forward(input_ids)?;
        let pooled = eos_pooled(&hidden, input_ids, self.eos_token_id)?;
        Ok(self.text_projection.forward(&pooled)?)
    }

    /// transformers' `get_image_features`: visual_projection of the pooled class token,
    /// [batch, projection_dim], not normalised.
    pub fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let pooled = self.vision_model.forward(pixel_values)?.pooler_output;
        Ok(self.visual_projection.forward(&pooled)?)
    }

    /// `logits_per_image` [images, texts]: exp(logit_scale) times the cosine similarities.
    pub fn logits_per_image(&self, pixel_values: &Tensor, input_ids: &Tensor) -> Result<Tensor> {
        let image = l2_normalize(&self.image_features(pixel_values)?)?;
        let text = l2_normalize(&self.text_features(input_ids)?)?;
        let scale = self.logit_scale.exp()?;
        Ok(image.matmul(&text.t()?)?.broadcast_mul(&scale)?)
    }
}

/// Each row divided by its L2 norm (transformers divides by `norm(p=2, dim=-1)`).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(candle_core::D::Minus1)?.sqrt()?;
    Ok(x.broadcast_div(&norm)?)
}

/// The hidden state at each sequence's end-of-text token: [batch, seq, hidden] -> [batch,
/// hidden]. As transformers' `CLIPTextTransformer`: the first position holding `eos_token_id`
/// (position 0 if none does); for the legacy configs with `eos_token_id` 2, the position of the
/// largest id (the EOS token is the last of the vocabulary), which is also used when no
/// `eos_token_id` is configured.
pub fn eos_pooled(
    last_hidden_state: &Tensor,
    input_ids: &Tensor,
    eos_token_id: Option<u32>,
) -> Result<Tensor> {
    let (batch, seq, hidden) = last_hidden_state.dims3()?;
    if input_ids.dims() != [batch, seq] {
        return Err(Error::invalid(format!(
            "input ids have shape {:?} but the hidden states are [{batch}, {seq}, ...]",
            input_ids.dims()
        )));
    }
    let ids = input_ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    let rows: Vec<u32> = ids
        .iter()
        .enumerate()
        .map(|(b, row)| {
            let pos = match eos_token_id {
                Some(eos) if eos != 2 => row.iter().position(|&t| t == eos).unwrap_or(0),
                _ => first_argmax(row),
            };
            (b * seq + pos) as u32
        })
        .collect();
    let index = Tensor::from_vec(rows, batch, last_hidden_state.device())?;
    Ok(last_hidden_state
        .reshape((batch * seq, hidden))?
        .index_select(&index, 0)?)
}

/// Index of the first largest value (torch's argmax tie rule).
fn first_argmax(row: &[u32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn pools_at_the_first_eos() {
        let dev = Device::Cpu;
        let hidden = Tensor::arange(0f32, 12., &dev)
            .unwrap()
            .reshape((2, 3, 2))
            .unwrap();
        let ids = Tensor::new(&[[5u32, 9, 9], [5, 6, 9]], &dev).unwrap();
        let pooled = eos_pooled(&hidden, &ids, Some(9)).unwrap();
        assert_eq!(
            pooled.to_vec2::<f32>().unwrap(),
            vec![vec![2., 3.], vec![10., 11.]]
        );
        let legacy = eos_pooled(&hidden, &ids, None).unwrap();
        assert_eq!(legacy.to_vec2::<f32>().unwrap()[0], vec![2., 3.]);
        let wrong = Tensor::new(&[[5u32, 9]], &dev).unwrap();
        assert!(eos_pooled(&hidden, &wrong, Some(9)).is_err());
    }
}
