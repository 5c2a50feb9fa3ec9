//! CLIP's input normalisation (transformers' `CLIPImageProcessor` with OpenAI's statistics):
//! per-channel (x - mean) / std on RGB values in [0, 1].

use candle_core::Tensor;

use crate::error::{Error, Result};

/// OpenAI CLIP's RGB mean (`OPENAI_CLIP_MEAN` in transformers' image_utils.py).
pub const OPENAI_CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's RGB standard deviation (`OPENAI_CLIP_STD`).
pub const OPENAI_CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// `images` [batch, 3, h, w] with values in [0, 1] -> CLIP pixel values. (Pigment's image
/// tensors are in [-1, 1]: map them with `(x + 1) / 2` first.)
pub fn normalize(images: &Tensor) -> Result<Tensor> {
    match images.dims() {
        [_, 3, _, _] => {}
        dims => {
            return Err(Error::invalid(format!(
                "CLIP normalisation takes RGB images [batch, 3, height, width], got {dims:?}"
            )))
        }
    }
    let dev = images.device();
    let mean = Tensor::new(&OPENAI_CLIP_MEAN, dev)?.reshape((1, 3, 1, 1))?;
    let std = Tensor::new(&OPENAI_CLIP_STD, dev)?.reshape((1, 3, 1, 1))?;
    let x = images.to_dtype(candle_core::DType::F32)?;
    Ok(x.broadcast_sub(&mean)?.broadcast_div(&std)?)
}
