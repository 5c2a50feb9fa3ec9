//! AUTOMATIC1111's prompt encoding (`modules/sd_hijack_clip.py`,
//! `FrozenCLIPEmbedderWithCustomWordsBase.forward`): each text is parsed for emphasis and
//! `BREAK`, laid out in 77-token chunks (75 tokens + BOS/EOS; SD2 pads with id 0 after the first
//! end token), each chunk index is encoded for the whole batch of texts, scaled by the emphasis
//! multipliers with the batch mean restored, and the chunks are joined on the token axis. Texts
//! with fewer chunks than the longest get the empty chunk (`empty_chunk()`), so every result of
//! one call has the same length.
//!
//! A1111 encodes the texts of one prompt's editing schedule in one batch, which matters only for
//! the mean that emphasis restores (it is taken over the batch); `encode_prompts_a1111` takes
//! the same batch and encodes each distinct text once.

use std::collections::HashMap;

use candle_core::Tensor;

use crate::error::Result;
use crate::pipelines::StableDiffusion;
use crate::text::prompt_syntax::{
    apply_emphasis_batch, parse_prompt_attention, tokenize_weighted_with_embeddings, EmphasisRow,
    PromptChunk, COMMA_PADDING_BACKTRACK,
};

impl StableDiffusion {
    /// A1111's conditioning of a batch of texts: one `[1, 77 * chunks, hidden]` tensor per text,
    /// all of the same length. `clip_skip` as A1111's "Clip skip" (1 = last layer).
    pub fn encode_prompts_a1111(&self, texts: &[&str], clip_skip: usize) -> Result<Vec<Tensor>> {
        let triggers = self.embedding_triggers()?;
        // Distinct texts in first-seen order, with how often each appears (process_texts' cache).
        let mut index_of: HashMap<&str, usize> = HashMap::new();
        let mut distinct: Vec<(Vec<PromptChunk>, usize)> = Vec::new();
        let mut text_index = Vec::with_capacity(texts.len());
        for &text in texts {
            let i = match index_of.get(text) {
                Some(&i) => i,
                None => {
                    let fragments = parse_prompt_attention(text);
                    let chunks = tokenize_weighted_with_embeddings(
                        &self.tokenizer,
                        &fragments,
                        COMMA_PADDING_BACKTRACK,
                        &triggers,
                    )?;
                    index_of.insert(text, distinct.len());
                    distinct.push((chunks, 0));
                    distinct.len() - 1
                }
            };
            distinct[i].1 += 1;
            text_index.push(i);
        }
        let empty = PromptChunk::empty(&self.tokenizer);
        let chunk_count = distinct.iter().map(|(c, _)| c.len()).max().unwrap_or(1);

        let mut joined: Vec<Vec<Tensor>> = vec![Vec::with_capacity(chunk_count); distinct.len()];
        for chunk_index in 0..chunk_count {
            let batch: Vec<&PromptChunk> = distinct
                .iter()
                .map(|(chunks, _)| chunks.get(chunk_index).unwrap_or(&empty))
                .collect();
            // Each distinct id row through the text encoder once, all in one batch.
            let mut row_of_ids: HashMap<&[u32], usize> = HashMap::new();
            let mut id_rows: Vec<Vec<u32>> = Vec::new();
            let rows: Vec<usize> = batch
                .iter()
                .map(|chunk| {
                    *row_of_ids.entry(chunk.ids.as_slice()).or_insert_with(|| {
                        id_rows.push(chunk.ids.clone());
                        id_rows.len() - 1
                    })
                })
                .collect();
            let z = self.encode_id_rows(id_rows, clip_skip)?;
            let zs = rows
                .iter()
                .map(|&r| Ok(z.narrow(0, r, 1)?))
                .collect::<Result<Vec<_>>>()?;
            let emphasis_rows: Vec<EmphasisRow> = batch
                .iter()
                .zip(&zs)
                .zip(&distinct)
                .map(|((chunk, z), (_, count))| EmphasisRow {
                    z,
                    multipliers: &chunk.multipliers,
                    count: *count,
                })
                .collect();
            for (i, z) in apply_emphasis_batch(&emphasis_rows)?
                .into_iter()
                .enumerate()
            {
                joined[i].push(z);
            }
        }
        let per_distinct = joined
            .into_iter()
            .map(|parts| Ok(Tensor::cat(&parts, 1)?.contiguous()?))
            .collect::<Result<Vec<_>>>()?;
        Ok(text_index
            .into_iter()
            .map(|i| per_distinct[i].clone())
            .collect())
    }
}
