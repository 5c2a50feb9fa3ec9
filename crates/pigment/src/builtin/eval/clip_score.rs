//! CLIP score (Hessel et al. 2021, "CLIPScore", without their 2.5 weight; as torchmetrics'
//! `CLIPScore`): 100 x the cosine similarity of a caption's and an image's CLIP features.
//! Measured with the built-in model's own small CLIP, which knows this world's captions.

use std::path::Path;

use ::image::imageops::{self, FilterType};
use ::image::RgbImage;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::image::image_to_tensor;
use crate::text::ClipTokenizer;
use crate::vision::{l2_normalize, normalize, ClipConfig, ClipModel};

/// A CLIP model with the tokenizer and input sizes it needs to score (caption, image) pairs.
pub struct ClipScorer {
    model: ClipModel,
    tokenizer: ClipTokenizer,
    text_length: usize,
    image_size: usize,
    device: Device,
}

impl ClipScorer {
    /// `model` built from `config` (on `device`, in f32). Captions are tokenized with the
    /// embedded CLIP vocabulary, so the text tower must have its 49,408 ids.
    pub fn new(model: ClipModel, config: &ClipConfig, device: &Device) -> Result<Self> {
        let tokenizer = ClipTokenizer::embedded()?;
        let vocab = config.text_config.vocab_size;
        if tokenizer.vocab_size() > vocab {
            return Err(Error::Config(format!(
                "the CLIP text tower has {vocab} token ids but the CLIP tokenizer uses {}: the \
                 CLIP score needs a text_config.vocab_size of at least that",
                tokenizer.vocab_size()
            )));
        }
        let text_length = config.text_config.max_position_embeddings;
        if text_length < 2 {
            return Err(Error::Config(format!(
                "CLIP text_config.max_position_embeddings is {text_length}: it must be at least 2 \
                 (start and end tokens)"
            )));
        }
        Ok(Self {
            model,
            tokenizer,
            text_length,
            image_size: config.vision_config.image_size,
            device: device.clone(),
        })
    }

    /// A `CLIPModel` folder: `config.json` (transformers' `CLIPConfig`) and `model.safetensors`
    /// (`text_model.*`, `vision_model.*`, `text_projection.weight`, `visual_projection.weight`,
    /// `logit_scale`).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let config: ClipConfig = serde_json::from_str(&text).map_err(|e| {
            Error::Config(format!(
                "{}: not a CLIP config ({e}); expected transformers' CLIPConfig with \
                 text_config, vision_config and projection_dim",
                config_path.display()
            ))
        })?;
        config.vision_config.check_supported()?;
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(Error::checkpoint(
                &weights,
                "missing: a CLIP folder holds config.json and model.safetensors",
            ));
        }
        let mut tensors = candle_core::safetensors::load(&weights, device)
            .map_err(|e| Error::checkpoint(&weights, e.to_string()))?;
        // A CLIP folder inside a Stable Diffusion folder may leave its text tower out and share
        // the pipeline's `text_encoder/` (the built-in model does: it is the same tower).
        let sibling = dir.join("../text_encoder/model.safetensors");
        if !tensors.keys().any(|k| k.starts_with("text_model.")) && sibling.is_file() {
            let text = candle_core::safetensors::load(&sibling, device)
                .map_err(|e| Error::checkpoint(&sibling, e.to_string()))?;
            tensors.extend(
                text.into_iter()
                    .filter(|(k, _)| k.starts_with("text_model.")),
            );
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let model = ClipModel::new(vb, &config).map_err(|e| {
            Error::checkpoint(
                &weights,
                format!("not a CLIPModel matching config.json: {e}"),
            )
        })?;
        Self::new(model, &config, device)
    }

    /// L2-normalised text features of `caption`, [1, projection_dim]; token ids padded (and
    /// truncated) to the text tower's `max_position_embeddings`.
    pub fn text_features(&self, caption: &str) -> Result<Tensor> {
        let ids = self.tokenizer.encode_padded(caption, self.text_length)?;
        let ids = Tensor::new(ids.as_slice(), &self.device)?.unsqueeze(0)?;
        l2_normalize(&self.model.text_features(&ids)?)
    }

    /// L2-normalised image features, [1, projection_dim]. The image is resized as
    /// transformers' `CLIPImageProcessor` does (shortest side to `image_size`, bicubic, then a
    /// centre crop; the image crate's Catmull-Rom cubic stands in for PIL's bicubic).
    pub fn image_features(&self, image: &RgbImage) -> Result<Tensor> {
        let fitted = fit(image, self.image_size as u32)?;
        let unit = ((image_to_tensor(&fitted, &self.device)? + 1.0)? / 2.0)?;
        l2_normalize(&self.model.image_features(&normalize(&unit)?)?)
    }

    /// 100 x cosine(text, image), not clipped (see `Tally::clip_score` for the clipped mean).
    pub fn score(&self, caption: &str, image: &RgbImage) -> Result<f64> {
        let text = self.text_features(caption)?;
        let image = self.image_features(image)?;
        let cosine = (text * image)?.sum_all()?.to_scalar::<f32>()?;
        Ok(100.0 * f64::from(cosine))
    }
}

/// Shortest side to `size` (aspect kept), then the centre `size x size`.
fn fit(image: &RgbImage, size: u32) -> Result<RgbImage> {
    let (w, h) = image.dimensions();
    if size == 0 || w == 0 || h == 0 {
        return Err(Error::invalid(format!(
            "cannot fit a {w}x{h} image to CLIP's {size}x{size} input"
        )));
    }
    if (w, h) == (size, size) {
        return Ok(image.clone());
    }
    let scale = size as f64 / w.min(h) as f64;
    let (rw, rh) = (
        ((w as f64 * scale).round() as u32).max(size),
        ((h as f64 * scale).round() as u32).max(size),
    );
    let resized = imageops::resize(image, rw, rh, FilterType::CatmullRom);
    let (x, y) = ((rw - size) / 2, (rh - size) / 2);
    Ok(imageops::crop_imm(&resized, x, y, size, size).to_image())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_aspect_and_crops_the_centre() {
        let mut wide = RgbImage::new(64, 32);
        for (x, _, p) in wide.enumerate_pixels_mut() {
            *p = ::image::Rgb([if (16..48).contains(&x) { 255 } else { 0 }; 3]);
        }
        let fitted = fit(&wide, 16).unwrap();
        assert_eq!(fitted.dimensions(), (16, 16));
        // The centre crop of the wide image is the white middle band.
        assert!(fitted.pixels().all(|p| p.0[0] > 200), "{fitted:?}");
        assert!(fit(&wide, 0).is_err());
    }
}
