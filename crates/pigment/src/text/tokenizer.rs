//! The CLIP tokenizer: text -> token ids, exactly as transformers' `CLIPTokenizer` (transformers
//! 5, the `tokenizers` pipeline) gives them to the text encoder in diffusers' pipelines.
//!
//! Steps: special tokens are cut out of the raw text first (transformers' added tokens); each
//! remaining stretch is cleaned up and split into words (`pretokenize`); each word is mapped to
//! byte symbols (`byte_level`) and merged by BPE (`bpe`).

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::text::bpe::Bpe;
use crate::text::byte_level::bytes_as_unicode;
use crate::text::pretokenize::{normalize, split_words};
use crate::text::vocab_files::{
    embedded_vocab, read_added_tokens_json, read_folder_settings, read_tokenizer_json,
    read_vocab_and_merges, AddedToken, Merges, END_OF_TEXT, START_OF_TEXT,
};

/// CLIP's context length, the default when a folder does not say.
const CLIP_MAX_LENGTH: usize = 77;

pub struct ClipTokenizer {
    bpe: Bpe,
    /// Tokens matched verbatim in the raw text, before clean-up (BOS, EOS, pad, added tokens).
    specials: Vec<AddedToken>,
    bos: u32,
    eos: u32,
    pad: u32,
    model_max_length: usize,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .field("model_max_length", &self.model_max_length)
            .finish()
    }
}

/// One stretch of raw text: either a special token or text to tokenize.
enum Segment<'a> {
    Special(u32),
    Text(&'a str),
}

impl ClipTokenizer {
    fn build(
        vocab: HashMap<String, u32>,
        merges: &Merges,
        added: Vec<AddedToken>,
        bos_name: &str,
        eos_name: &str,
        pad_name: &str,
    ) -> Result<Self> {
        let mut specials = added;
        let lookup = |name: &str, role: &str| {
            vocab
                .get(name)
                .copied()
                .or_else(|| specials.iter().find(|t| t.content == name).map(|t| t.id))
                .ok_or_else(|| {
                    Error::Tokenizer(format!(
                        "the {role} token `{name}` is not in the vocabulary; check the tokenizer \
                         files (a CLIP vocabulary ends with {START_OF_TEXT} and {END_OF_TEXT})"
                    ))
                })
        };
        let (bos, eos, pad) = (
            lookup(bos_name, "start")?,
            lookup(eos_name, "end")?,
            lookup(pad_name, "padding")?,
        );
        for (name, id) in [(bos_name, bos), (eos_name, eos), (pad_name, pad)] {
            if !specials.iter().any(|t| t.content == name) {
                specials.push(AddedToken {
                    content: name.to_owned(),
                    id,
                });
            }
        }
        Ok(Self {
            bpe: Bpe::new(vocab, merges)?,
            specials,
            bos,
            eos,
            pad,
            model_max_length: CLIP_MAX_LENGTH,
        })
    }

    /// A `vocab.json` + `merges.txt` pair; pads with `<|endoftext|>` (transformers' default).
    pub fn from_files(vocab_json: &Path, merges_txt: &Path) -> Result<Self> {
        let (vocab, merges) = read_vocab_and_merges(vocab_json, merges_txt)?;
        Self::build(
            vocab,
            &merges,
            Vec::new(),
            START_OF_TEXT,
            END_OF_TEXT,
            END_OF_TEXT,
        )
    }

    /// Reads a diffusers `tokenizer/` folder: `tokenizer.json` (transformers 5) or `vocab.json` +
    /// `merges.txt` (transformers 4), with the special tokens and `model_max_length` of
    /// `tokenizer_config.json` / `special_tokens_map.json`. SD1 folders pad with
    /// `<|endoftext|>` (49407); SD2 (OpenCLIP) folders pad with `!` (id 0).
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let settings = read_folder_settings(dir)?;
        let (vocab, merges, mut added) = if dir.join("tokenizer.json").is_file() {
            read_tokenizer_json(&dir.join("tokenizer.json"))?
        } else if dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file() {
            let (vocab, merges) =
                read_vocab_and_merges(&dir.join("vocab.json"), &dir.join("merges.txt"))?;
            (vocab, merges, Vec::new())
        } else {
            return Err(Error::Tokenizer(format!(
                "{} holds neither tokenizer.json nor vocab.json + merges.txt; point Pigment at \
                 the `tokenizer` folder of a diffusers model, or leave it out to use the \
                 built-in CLIP vocabulary",
                dir.display()
            )));
        };
        added.extend(read_added_tokens_json(&dir.join("added_tokens.json"))?);
        let bos = settings.bos_token.as_deref().unwrap_or(START_OF_TEXT);
        let eos = settings.eos_token.as_deref().unwrap_or(END_OF_TEXT);
        let pad = settings.pad_token.as_deref().unwrap_or(END_OF_TEXT);
        let mut tokenizer = Self::build(vocab, &merges, added, bos, eos, pad)?;
        tokenizer.model_max_length = settings.model_max_length.unwrap_or(CLIP_MAX_LENGTH);
        Ok(tokenizer)
    }

    /// The standard CLIP vocabulary embedded in the binary, for checkpoints that carry no
    /// tokenizer. Pads with `<|endoftext|>`; SD2 checkpoints want `.with_pad_id(0)`.
    pub fn embedded() -> Result<Self> {
        let (vocab, merges) = embedded_vocab()?;
        Self::build(
            vocab,
            &merges,
            Vec::new(),
            START_OF_TEXT,
            END_OF_TEXT,
            END_OF_TEXT,
        )
    }

    /// Pads with `pad` instead. Like transformers setting `pad_token`, this also makes the pad
    /// token special: SD2's `!` is then cut out of the text on its own (`wow!!` -> `!`, `!`).
    pub fn with_pad_id(mut self, pad: u32) -> Self {
        self.pad = pad;
        if !self.specials.iter().any(|t| t.id == pad) {
            if let Some(name) = self.id_to_token(pad) {
                self.specials.push(AddedToken {
                    content: name,
                    id: pad,
                });
            }
        }
        self
    }

    /// Token ids of `text`, without BOS/EOS and without truncation.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for segment in self.segments(text) {
            match segment {
                Segment::Special(id) => ids.push(id),
                Segment::Text(stretch) => {
                    let normalized = normalize(stretch);
                    for word in split_words(&normalized) {
                        ids.extend(self.bpe.encode_word(&bytes_as_unicode(word))?);
                    }
                }
            }
        }
        Ok(ids)
    }

    /// What diffusers' pipelines feed the text encoder (`padding="max_length"`,
    /// `truncation=True`): BOS, the ids cut to `max_len - 2`, EOS, then pad up to `max_len`.
    pub fn encode_padded(&self, text: &str, max_len: usize) -> Result<Vec<u32>> {
        if max_len < 2 {
            return Err(Error::invalid(format!(
                "a padded CLIP token sequence needs room for start and end tokens: max_len is \
                 {max_len}, use at least 2 (Stable Diffusion uses {CLIP_MAX_LENGTH})"
            )));
        }
        let mut ids = self.encode(text)?;
        ids.truncate(max_len - 2);
        let mut padded = Vec::with_capacity(max_len);
        padded.push(self.bos);
        padded.extend(ids);
        padded.push(self.eos);
        padded.resize(max_len, self.pad);
        Ok(padded)
    }

    pub fn bos_id(&self) -> u32 {
        self.bos
    }

    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// The sequence length the text encoder was trained for (77 for CLIP).
    pub fn model_max_length(&self) -> usize {
        self.model_max_length
    }

    /// Number of ids, i.e. one more than the largest id (49,408 for CLIP).
    pub fn vocab_size(&self) -> usize {
        let max_vocab = self.bpe.vocab().values().max().copied();
        let max_added = self.specials.iter().map(|t| t.id).max();
        max_vocab.max(max_added).map_or(0, |m| m as usize + 1)
    }

    /// The id of a vocabulary entry (`cat</w>`, `<|endoftext|>`) or added token.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.bpe.vocab().get(token).copied().or_else(|| {
            self.specials
                .iter()
                .find(|t| t.content == token)
                .map(|t| t.id)
        })
    }

    /// The vocabulary entry of an id (linear search: for messages and tests, not hot loops).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.specials
            .iter()
            .find(|t| t.id == id)
            .map(|t| t.content.clone())
            .or_else(|| {
                self.bpe
                    .vocab()
                    .iter()
                    .find(|(_, &v)| v == id)
                    .map(|(k, _)| k.clone())
            })
    }

    /// Cuts special tokens out of the raw text: at each position the longest special token
    /// that starts there wins, scanning left to right (`tokenizers`' AddedVocabulary,
    /// leftmost-longest matching).
    fn segments<'a>(&self, text: &'a str) -> Vec<Segment<'a>> {
        let mut segments = Vec::new();
        let mut start = 0;
        let mut pos = 0;
        while pos < text.len() {
            let rest = &text[pos..];
            let found = self
                .specials
                .iter()
                .filter(|t| !t.content.is_empty() && rest.starts_with(t.content.as_str()))
                .max_by_key(|t| t.content.len());
            match found {
                Some(token) => {
                    if start < pos {
                        segments.push(Segment::Text(&text[start..pos]));
                    }
                    segments.push(Segment::Special(token.id));
                    pos += token.content.len();
                    start = pos;
                }
                None => pos += rest.chars().next().map_or(1, char::len_utf8),
            }
        }
        if start < text.len() {
            segments.push(Segment::Text(&text[start..]));
        }
        segments
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn astronaut_prompt_matches_clip() {
        let tok = ClipTokenizer::embedded().unwrap();
        let ids = tok
            .encode_padded("a photograph of an astronaut riding a horse", 10)
            .unwrap();
        assert_eq!(
            ids,
            [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]
        );
    }

    #[test]
    fn padding_and_truncation() {
        let tok = ClipTokenizer::embedded().unwrap();
        assert_eq!(
            tok.encode_padded("", 4).unwrap(),
            [49406, 49407, 49407, 49407]
        );
        let sd2 = ClipTokenizer::embedded().unwrap().with_pad_id(0);
        assert_eq!(
            sd2.encode_padded("a a a", 4).unwrap(),
            [49406, 320, 320, 49407]
        );
        assert_eq!(
            sd2.encode_padded("a", 5).unwrap(),
            [49406, 320, 49407, 0, 0]
        );
        assert!(tok.encode_padded("a", 1).is_err());
    }

    #[test]
    fn sd2_pad_token_is_cut_out_of_the_text() {
        let sd1 = ClipTokenizer::embedded().unwrap();
        let sd2 = ClipTokenizer::embedded().unwrap().with_pad_id(0);
        assert_eq!(sd1.encode("wow!!").unwrap(), [2781, 748]);
        assert_eq!(sd2.encode("wow!!").unwrap(), [2781, 0, 0]);
    }

    #[test]
    fn special_tokens_in_text_and_lookups() {
        let tok = ClipTokenizer::embedded().unwrap();
        assert_eq!(tok.encode("a<|endoftext|>b").unwrap(), [320, 49407, 321]);
        assert_eq!(tok.token_to_id("cat</w>"), Some(2368));
        assert_eq!(tok.id_to_token(49406).as_deref(), Some(START_OF_TEXT));
        assert_eq!(tok.vocab_size(), 49408);
        assert_eq!(tok.model_max_length(), 77);
    }

    #[test]
    fn folder_without_files_explains_itself() {
        let err = ClipTokenizer::from_folder(Path::new("/nonexistent/tokenizer")).unwrap_err();
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
    }
}
