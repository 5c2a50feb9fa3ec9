//! CLIP's contrastive objective (Radford et al. 2021, Figure 3; InfoNCE, van den Oord et al.
//! 2018): in a batch of N (image, text) pairs, each image must pick out its own text among the
//! N texts and each text its own image. Features are L2-normalised, their cosines scaled by
//! exp(logit_scale), and the loss is the mean of the two cross-entropies (transformers'
//! `clip_loss`, models/clip/modeling_clip.py).
//!
//! The temperature is learned as a log-parameterised scalar (the `logit_scale` of
//! [`crate::vision::ClipModel`], initialised to ln(1/0.07)) and clipped at ln 100 so logits are
//! never scaled by more than 100: register it with
//! `trainer.clamp_param("logit_scale", 0.0, MAX_LOGIT_SCALE)` (OpenCLIP clamps it after every
//! optimiser step the same way).

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::vision::{l2_normalize, ClipModel};

/// ln 100: the largest logit scale (Radford et al. 2021, section 2.5).
pub const MAX_LOGIT_SCALE: f64 = 4.605_170_185_988_092;

/// The symmetric InfoNCE loss of `text_features` and `image_features` ([N, D] each, row i of
/// one paired with row i of the other, not normalised) at temperature exp(-logit_scale).
pub fn contrastive_loss(
    text_features: &Tensor,
    image_features: &Tensor,
    logit_scale: &Tensor,
) -> Result<Tensor> {
    let (n, d) = text_features.dims2()?;
    if image_features.dims() != [n, d] {
        return Err(Error::invalid(format!(
            "contrastive loss needs as many image features as text features, with the same \
             width: got {:?} and {:?}",
            image_features.dims(),
            text_features.dims()
        )));
    }
    let text = l2_normalize(&text_features.to_dtype(DType::F32)?)?;
    let image = l2_normalize(&image_features.to_dtype(DType::F32)?)?;
    let scale = logit_scale.to_dtype(DType::F32)?.exp()?;
    let logits_per_text = text.matmul(&image.t()?)?.broadcast_mul(&scale)?;
    let labels = Tensor::arange(0u32, n as u32, text_features.device())?;
    let text_loss = candle_nn::loss::cross_entropy(&logits_per_text, &labels)?;
    let image_loss = candle_nn::loss::cross_entropy(&logits_per_text.t()?, &labels)?;
    Ok(((text_loss + image_loss)? * 0.5)?)
}

/// The loss of `model` on paired `input_ids` [N, seq] and `pixel_values` [N, 3, size, size].
pub fn clip_loss(model: &ClipModel, input_ids: &Tensor, pixel_values: &Tensor) -> Result<Tensor> {
    let text = model.text_features(input_ids)?;
    let image = model.image_features(pixel_values)?;
    contrastive_loss(&text, &image, model.logit_scale())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matched_pairs_give_low_loss_and_swapped_pairs_high() {
        let dev = Device::Cpu;
        let feats = Tensor::new(&[[1f32, 0., 0.], [0., 1., 0.], [0., 0., 1.]], &dev).unwrap();
        let swapped = Tensor::new(&[[0f32, 1., 0.], [1., 0., 0.], [0., 0., 1.]], &dev).unwrap();
        let scale = Tensor::new(MAX_LOGIT_SCALE as f32, &dev).unwrap();
        let good = contrastive_loss(&feats, &feats, &scale)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let bad = contrastive_loss(&feats, &swapped, &scale)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // Matched: -log(e^100 / (e^100 + 2 e^0)) ~ 2 e^-100.
        assert!(good < 1e-6, "{good}");
        assert!(bad > 60.0, "{bad}");
        // At a vanishing scale every logit is equal: ln N.
        let zero = Tensor::new(-40f32, &dev).unwrap();
        let flat = contrastive_loss(&feats, &swapped, &zero)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((flat - 3f32.ln()).abs() < 1e-6);
        assert!(contrastive_loss(&feats, &feats.narrow(0, 0, 2).unwrap(), &zero).is_err());
    }
}
