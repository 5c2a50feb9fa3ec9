//! Byte-pair encoding of one pre-tokenized word, CLIP flavour (`</w>` marks the word's end).
//!
//! The word starts as one symbol per (byte-level) character, the last one carrying the `</w>`
//! suffix; then the adjacent pair with the lowest merge rank is merged, leftmost first on ties,
//! until no adjacent pair has a merge. This is `tokenizers/src/models/bpe/word.rs::merge_all`
//! (and, for merge lists learned by BPE, the same result as OpenAI CLIP `simple_tokenizer.py::bpe`).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::{Error, Result};

/// Marks the last symbol of a word in CLIP's vocabulary.
pub(crate) const END_OF_WORD: &str = "</w>";

/// Words cached at most; CLIP prompts reuse a small set of words. Same bound as `tokenizers`.
const CACHE_CAPACITY: usize = 10_000;

pub(crate) struct Bpe {
    vocab: HashMap<String, u32>,
    /// (left id, right id) -> (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

impl Bpe {
    /// `merges` in rank order (rank 0 merges first). Every symbol a merge uses or makes must be
    /// in `vocab`, as in every CLIP tokenizer file.
    pub(crate) fn new(vocab: HashMap<String, u32>, merges: &[(String, String)]) -> Result<Self> {
        let mut ranked = HashMap::with_capacity(merges.len());
        for (rank, (left, right)) in merges.iter().enumerate() {
            let id = |symbol: &str| {
                vocab.get(symbol).copied().ok_or_else(|| {
                    Error::Tokenizer(format!(
                        "merge {} (`{left} {right}`) uses `{symbol}`, which is not in the \
                         vocabulary: vocab.json and merges.txt do not belong together",
                        rank + 1
                    ))
                })
            };
            let pair = (id(left)?, id(right)?);
            let merged = id(&format!("{left}{right}"))?;
            // CLIP's list has no repeated pair; should a file repeat one, the first rank wins.
            ranked.entry(pair).or_insert((rank as u32, merged));
        }
        Ok(Self {
            vocab,
            merges: ranked,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn vocab(&self) -> &HashMap<String, u32> {
        &self.vocab
    }

    /// Token ids of one word already mapped to byte-level characters (see `byte_level`).
    pub(crate) fn encode_word(&self, word: &str) -> Result<Vec<u32>> {
        if let Some(ids) = self.cache.lock().ok().and_then(|c| c.get(word).cloned()) {
            return Ok(ids);
        }
        let ids = self.merge_word(word)?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(word.to_owned(), ids.clone());
        }
        Ok(ids)
    }

    fn merge_word(&self, word: &str) -> Result<Vec<u32>> {
        let chars: Vec<char> = word.chars().collect();
        let mut symbols = Vec::with_capacity(chars.len());
        for (i, c) in chars.iter().enumerate() {
            let mut symbol = c.to_string();
            if i + 1 == chars.len() {
                symbol.push_str(END_OF_WORD);
            }
            let id = self.vocab.get(&symbol).copied().ok_or_else(|| {
                Error::Tokenizer(format!(
                    "symbol `{symbol}` is missing from the vocabulary; a CLIP vocabulary holds \
                     all 256 byte symbols, with and without `{END_OF_WORD}`"
                ))
            })?;
            symbols.push(id);
        }
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(pos, pair)| {
                    self.merges
                        .get(&(pair[0], pair[1]))
                        .map(|&(rank, merged)| (rank, pos, merged))
                })
                .min_by_key(|&(rank, pos, _)| (rank, pos));
            let Some((_, pos, merged)) = best else {
                return Ok(symbols);
            };
            symbols[pos] = merged;
            symbols.remove(pos + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Bpe {
        let tokens = [
            "a", "b", "c", "a</w>", "b</w>", "c</w>", "ab", "abc</w>", "bc</w>",
        ];
        let vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let merges = [("a", "b"), ("b", "c</w>"), ("ab", "c</w>")]
            .iter()
            .map(|(l, r)| (l.to_string(), r.to_string()))
            .collect::<Vec<_>>();
        Bpe::new(vocab, &merges).expect("toy vocabulary is consistent")
    }

    #[test]
    fn lowest_rank_merges_first() {
        let bpe = toy();
        // "ab" (rank 0) beats "bc</w>" (rank 1), then "ab"+"c</w>" (rank 2) -> "abc</w>".
        assert_eq!(bpe.encode_word("abc").unwrap(), vec![7]);
        assert_eq!(bpe.encode_word("ba").unwrap(), vec![1, 3]);
        // Cached answer is the same.
        assert_eq!(bpe.encode_word("abc").unwrap(), vec![7]);
    }

    #[test]
    fn inconsistent_files_are_an_error_not_a_panic() {
        let vocab = [("a".to_string(), 0u32)].into_iter().collect();
        let merges = vec![("a".to_string(), "a".to_string())];
        let err = Bpe::new(vocab, &merges).err().expect("must fail");
        assert!(err.to_string().contains("not in the vocabulary"));
    }

    #[test]
    fn unknown_symbol_is_an_error() {
        assert!(toy().encode_word("z").is_err());
    }
}
