//! Prompt text to conditioning: tokenize, pad to the model's context, run the text encoder.
//! Mirrors diffusers' `StableDiffusionPipeline.encode_prompt` (truncation to the tokenizer's
//! `model_max_length`, no attention mask for CLIP text encoders, `clip_skip`).

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::pipelines::StableDiffusion;

impl StableDiffusion {
    /// Hidden states for each prompt, stacked on the batch axis: [prompts.len(), seq, hidden].
    /// `clip_skip` follows AUTOMATIC1111: 1 = last layer, 2 = penultimate, ...
    /// Textual-inversion trigger words added with `add_textual_inversion` are replaced by their
    /// vectors, as diffusers' `maybe_convert_prompt` + added tokens do.
    pub fn encode_prompts(&self, prompts: &[&str], clip_skip: usize) -> Result<Tensor> {
        let rows = prompts
            .iter()
            .map(|prompt| self.plain_prompt_ids(prompt))
            .collect::<Result<Vec<_>>>()?;
        self.encode_id_rows(rows, clip_skip)
    }

    /// The text encoder on rows of token ids of equal length: [rows, seq, hidden] in the
    /// model's compute dtype.
    pub(crate) fn encode_id_rows(&self, rows: Vec<Vec<u32>>, clip_skip: usize) -> Result<Tensor> {
        if clip_skip == 0 || clip_skip > self.text_encoder_layers() {
            return Err(Error::invalid(format!(
                "--clip-skip {clip_skip}: must be between 1 (use the last layer) and {} (the text encoder's layer count)",
                self.text_encoder_layers()
            )));
        }
        let count = rows.len();
        let seq = rows
            .first()
            .map_or(self.tokenizer.model_max_length(), Vec::len);
        let flat: Vec<u32> = rows.into_iter().flatten().collect();
        let ids = Tensor::from_vec(flat, (count, seq), &self.device)?;
        let hidden = if clip_skip == 1 {
            self.text_encoder.forward(&ids)?
        } else {
            self.text_encoder.forward_with_clip_skip(&ids, clip_skip)?
        };
        // The text encoder may compute in a different dtype than the UNet expects.
        Ok(hidden.to_dtype(self.dtype)?.contiguous()?)
    }

    fn text_encoder_layers(&self) -> usize {
        self.text_config.num_hidden_layers
    }
}

/// Repeat each row of [n, ...] `times` times in place: [a, a, b, b] (diffusers'
/// `repeat(1, num_images_per_prompt, 1).view(...)`).
pub fn repeat_rows(t: &Tensor, times: usize) -> Result<Tensor> {
    if times == 1 {
        return Ok(t.clone());
    }
    let n = t.dim(0)?;
    let mut rows = Vec::with_capacity(n * times);
    for i in 0..n {
        let row = t.narrow(0, i, 1)?;
        for _ in 0..times {
            rows.push(row.clone());
        }
    }
    Ok(Tensor::cat(&rows, 0)?)
}
