//! Weighted fragments -> 77-token chunks, as AUTOMATIC1111's `modules/sd_hijack_clip.py`
//! (`FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line` and `process_tokens`) builds them, so
//! that prompts longer than CLIP's 75-token window are encoded in pieces instead of cut off.
//!
//! Rules: the tokens of all fragments are laid out in chunks of 75; a `BREAK` fragment closes
//! the current chunk; when a chunk is full and its last comma is at most 20 tokens back
//! (`comma_padding_backtrack`), the tokens after that comma move to the next chunk. Each chunk is
//! padded to 75 with the end token and wrapped as `[BOS] + 75 + [EOS]`; multipliers are the
//! fragment weights, 1.0 on BOS, EOS and padding. Where the pad token differs from the end token
//! (SD2/OpenCLIP pads with id 0), everything after the first end token becomes the pad token.

use super::attention::{BREAK_TEXT, BREAK_WEIGHT};
use crate::error::Result;
use crate::text::ClipTokenizer;

/// Prompt tokens per chunk (CLIP's 77 minus BOS and EOS; A1111 `chunk_length`).
pub const CHUNK_LENGTH: usize = 75;

/// A1111's default `comma_padding_backtrack`.
pub const COMMA_PADDING_BACKTRACK: usize = 20;

/// One 77-token window of a prompt: ids for the text encoder and one emphasis multiplier per id.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptChunk {
    pub ids: Vec<u32>,
    pub multipliers: Vec<f32>,
}

impl PromptChunk {
    /// A1111's `empty_chunk()`: BOS then end tokens (pad tokens after the first, for SD2).
    pub fn empty(tokenizer: &ClipTokenizer) -> Self {
        let mut builder = ChunkBuilder::new(tokenizer, 0);
        builder.next_chunk();
        builder.finish().into_iter().next().unwrap_or(PromptChunk {
            ids: Vec::new(),
            multipliers: Vec::new(),
        })
    }
}

/// Chunks of weighted fragments (from `parse_prompt_attention`), with A1111's default comma
/// backtrack of 20 tokens.
pub fn tokenize_weighted(
    tokenizer: &ClipTokenizer,
    fragments: &[(String, f32)],
) -> Result<Vec<PromptChunk>> {
    tokenize_weighted_with_backtrack(tokenizer, fragments, COMMA_PADDING_BACKTRACK)
}

/// [`tokenize_weighted`] with another `comma_padding_backtrack` (0 turns the rule off).
pub fn tokenize_weighted_with_backtrack(
    tokenizer: &ClipTokenizer,
    fragments: &[(String, f32)],
    comma_padding_backtrack: usize,
) -> Result<Vec<PromptChunk>> {
    tokenize_weighted_with_embeddings(tokenizer, fragments, comma_padding_backtrack, &[])
}

/// A textual-inversion embedding as `tokenize_line` sees it: the token ids of its trigger word
/// (the name tokenized without BOS/EOS, as A1111's `EmbeddingDatabase.register_embedding`
/// does) and one id per vector, which the chunk holds where the embedding stands. (A1111 puts
/// placeholder zeros there and patches the token embeddings afterwards; ids whose rows of the
/// token-embedding table are the vectors give the same encoder input.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingTrigger {
    pub name_ids: Vec<u32>,
    pub vector_ids: Vec<u32>,
}

/// [`tokenize_weighted_with_backtrack`] with textual-inversion embeddings: where the tokens of a
/// fragment spell an embedding's trigger word (the longest match wins, as A1111's
/// `find_embedding_at_position`), its vectors take `vector_ids.len()` places, all with the
/// fragment's weight; an embedding that does not fit in the current chunk starts the next one.
pub fn tokenize_weighted_with_embeddings(
    tokenizer: &ClipTokenizer,
    fragments: &[(String, f32)],
    comma_padding_backtrack: usize,
    embeddings: &[EmbeddingTrigger],
) -> Result<Vec<PromptChunk>> {
    let comma = tokenizer.token_to_id(",</w>");
    // Longest trigger first; a stable sort keeps the given order among equal lengths.
    let mut triggers: Vec<&EmbeddingTrigger> = embeddings
        .iter()
        .filter(|e| !e.name_ids.is_empty() && e.vector_ids.len() <= CHUNK_LENGTH)
        .collect();
    triggers.sort_by_key(|e| std::cmp::Reverse(e.name_ids.len()));
    let mut builder = ChunkBuilder::new(tokenizer, comma_padding_backtrack);
    for (text, weight) in fragments {
        if text == BREAK_TEXT && *weight == BREAK_WEIGHT {
            builder.next_chunk();
            continue;
        }
        let tokens = tokenizer.encode(text)?;
        let mut position = 0;
        while position < tokens.len() {
            let id = tokens[position];
            builder.make_room(Some(id) == comma);
            let rest = &tokens[position..];
            match triggers.iter().find(|e| rest.starts_with(&e.name_ids)) {
                Some(embedding) => {
                    builder.push_embedding(&embedding.vector_ids, *weight);
                    position += embedding.name_ids.len();
                }
                None => {
                    builder.tokens.push(id);
                    builder.multipliers.push(*weight);
                    position += 1;
                }
            }
        }
    }
    if !builder.tokens.is_empty() || builder.chunks.is_empty() {
        builder.next_chunk();
    }
    Ok(builder.finish())
}

/// The state of A1111's `tokenize_line` loop.
struct ChunkBuilder {
    bos: u32,
    eos: u32,
    pad: u32,
    backtrack: usize,
    chunks: Vec<PromptChunk>,
    tokens: Vec<u32>,
    multipliers: Vec<f32>,
    /// Index in `tokens` of the last comma of the current chunk.
    last_comma: Option<usize>,
}

impl ChunkBuilder {
    fn new(tokenizer: &ClipTokenizer, backtrack: usize) -> Self {
        Self {
            bos: tokenizer.bos_id(),
            eos: tokenizer.eos_id(),
            pad: tokenizer.pad_id(),
            backtrack,
            chunks: Vec::new(),
            tokens: Vec::new(),
            multipliers: Vec::new(),
            last_comma: None,
        }
    }

    /// What `tokenize_line` does before placing a token: remember a comma, move the text after
    /// a recent comma to the next chunk when this one is full, start a new chunk when full.
    fn make_room(&mut self, is_comma: bool) {
        if is_comma {
            self.last_comma = Some(self.tokens.len());
        } else if let Some(comma) = self.last_comma {
            if self.backtrack != 0
                && self.tokens.len() == CHUNK_LENGTH
                && CHUNK_LENGTH - comma <= self.backtrack
            {
                let moved_tokens = self.tokens.split_off(comma + 1);
                let moved_multipliers = self.multipliers.split_off(comma + 1);
                self.next_chunk();
                self.tokens = moved_tokens;
                self.multipliers = moved_multipliers;
            }
        }
        if self.tokens.len() == CHUNK_LENGTH {
            self.next_chunk();
        }
    }

    /// An embedding's vectors, in the next chunk when they do not fit in this one.
    fn push_embedding(&mut self, vector_ids: &[u32], weight: f32) {
        if self.tokens.len() + vector_ids.len() > CHUNK_LENGTH {
            self.next_chunk();
        }
        self.tokens.extend_from_slice(vector_ids);
        self.multipliers
            .extend(std::iter::repeat_n(weight, vector_ids.len()));
    }

    /// A1111's `next_chunk`: pad, wrap, store, start an empty chunk.
    fn next_chunk(&mut self) {
        let mut ids = Vec::with_capacity(CHUNK_LENGTH + 2);
        ids.push(self.bos);
        ids.append(&mut self.tokens);
        ids.resize(CHUNK_LENGTH + 1, self.eos);
        ids.push(self.eos);
        let mut multipliers = Vec::with_capacity(CHUNK_LENGTH + 2);
        multipliers.push(1.0);
        multipliers.append(&mut self.multipliers);
        multipliers.resize(CHUNK_LENGTH + 2, 1.0);
        self.last_comma = None;
        self.chunks.push(PromptChunk { ids, multipliers });
    }

    /// Applies `process_tokens`' SD2 padding (pad id after the first end token).
    fn finish(self) -> Vec<PromptChunk> {
        let (eos, pad) = (self.eos, self.pad);
        let mut chunks = self.chunks;
        if eos != pad {
            for chunk in &mut chunks {
                if let Some(first_end) = chunk.ids.iter().position(|&id| id == eos) {
                    for id in &mut chunk.ids[first_end + 1..] {
                        *id = pad;
                    }
                }
            }
        }
        chunks
    }
}
