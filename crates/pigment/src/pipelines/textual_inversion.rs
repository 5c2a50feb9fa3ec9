//! Textual-inversion embeddings in a loaded model: their vectors become extra rows of the text
//! encoder's token-embedding table, and the prompt tokenizers put those rows' ids where a
//! trigger word stands.
//!
//! - Plain (diffusers) prompts: the trigger is matched in the text, as diffusers'
//!   `load_textual_inversion` adds it to the tokenizer (`<tok>`, `<tok>_1`, ... for a
//!   multi-vector embedding, which `maybe_convert_prompt` spells out); the ids then go through
//!   the usual truncation to 77 tokens.
//! - AUTOMATIC1111 prompts: the trigger is matched in the token stream of each fragment
//!   (`EmbeddingDatabase.find_embedding_at_position`), so its vectors carry the fragment's
//!   emphasis and obey the chunking rules (see `text::prompt_syntax::EmbeddingTrigger`).

use std::cmp::Reverse;

use crate::adapters::TextualInversion;
use crate::error::{Error, Result};
use crate::pipelines::StableDiffusion;
use crate::text::prompt_syntax::EmbeddingTrigger;

/// An embedding added to a model: its trigger word and the ids of its vectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedEmbedding {
    pub name: String,
    /// Id of the first vector's row in the token-embedding table; the others follow.
    pub first_id: u32,
    pub vectors: usize,
}

impl LoadedEmbedding {
    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.vectors as u32).map(|i| self.first_id + i)
    }
}

impl StableDiffusion {
    /// Adds a textual-inversion embedding; prompts then call it up by `embedding.name`. An
    /// embedding whose width is not the text encoder's hidden size (an SD2 embedding on SD1)
    /// or whose name is taken is refused.
    pub fn add_textual_inversion(&mut self, embedding: &TextualInversion) -> Result<()> {
        let hidden = self.text_config.hidden_size;
        if embedding.width() != hidden {
            return Err(Error::invalid(format!(
                "embedding `{}` ({}) has vectors of width {}, but this model's text encoder has \
                 hidden size {hidden}: it was trained for another model family (SD 1.x uses 768, \
                 SD 2.x 1024); use an embedding made for this model",
                embedding.name,
                embedding.path.display(),
                embedding.width(),
            )));
        }
        if self.embeddings.iter().any(|e| e.name == embedding.name) {
            return Err(Error::invalid(format!(
                "embedding `{}` ({}) is loaded twice; each trigger word may name one embedding",
                embedding.name,
                embedding.path.display()
            )));
        }
        // A deferred model's text encoder loads here, so the vectors get their ids; a later
        // reload appends the same rows again in the same order (same ids).
        self.ensure_text_encoder()?;
        let first_id = self
            .text_encoder
            .append_token_embeddings(&embedding.vectors)?;
        self.residency.token_rows.push(embedding.vectors.clone());
        self.embeddings.push(LoadedEmbedding {
            name: embedding.name.clone(),
            first_id,
            vectors: embedding.vector_count(),
        });
        Ok(())
    }

    /// The textual-inversion embeddings added so far.
    pub fn textual_inversions(&self) -> &[LoadedEmbedding] {
        &self.embeddings
    }

    /// diffusers' token ids of a prompt: BOS, the ids cut to 75, EOS, padding to 77, with each
    /// trigger word (leftmost first, the longest where several start at one place) replaced by
    /// its vector ids.
    pub(crate) fn plain_prompt_ids(&self, prompt: &str) -> Result<Vec<u32>> {
        let max_len = self.tokenizer.model_max_length();
        if self.embeddings.is_empty() {
            return self.tokenizer.encode_padded(prompt, max_len);
        }
        let mut ids = Vec::new();
        let mut rest = prompt;
        loop {
            let found = self
                .embeddings
                .iter()
                .filter_map(|e| rest.find(e.name.as_str()).map(|at| (at, e)))
                .min_by_key(|(at, e)| (*at, Reverse(e.name.len())));
            let Some((at, embedding)) = found else {
                ids.extend(self.tokenizer.encode(rest)?);
                break;
            };
            ids.extend(self.tokenizer.encode(&rest[..at])?);
            ids.extend(embedding.ids());
            rest = &rest[at + embedding.name.len()..];
        }
        ids.truncate(max_len.saturating_sub(2));
        let mut padded = Vec::with_capacity(max_len);
        padded.push(self.tokenizer.bos_id());
        padded.extend(ids);
        padded.push(self.tokenizer.eos_id());
        padded.resize(max_len, self.tokenizer.pad_id());
        Ok(padded)
    }

    /// The embeddings as A1111's chunker matches them: by the tokens of their names.
    pub(crate) fn embedding_triggers(&self) -> Result<Vec<EmbeddingTrigger>> {
        self.embeddings
            .iter()
            .map(|e| {
                Ok(EmbeddingTrigger {
                    name_ids: self.tokenizer.encode(&e.name)?,
                    vector_ids: e.ids().collect(),
                })
            })
            .collect()
    }
}
