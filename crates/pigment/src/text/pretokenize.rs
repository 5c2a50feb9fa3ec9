//! Text clean-up and the split into words, as the CLIP tokenizer of transformers does it.
//!
//! Reference: transformers 5 `models/clip/tokenization_clip.py` (a `tokenizers` pipeline; the
//! same pipeline is in every diffusers `tokenizer/tokenizer.json`):
//! - normalizer: `NFC`, `Replace(\s+ -> " ")`, `Lowercase` (per character, so a final `Σ`
//!   becomes `σ`, not `ς`);
//! - pre-tokenizer: `Split(CLIP_PATTERN, invert)` keeps the matches and drops the rest (only
//!   whitespace is left unmatched), then `ByteLevel(use_regex)` splits each piece again with
//!   GPT-2's pattern and maps bytes to printable characters.
//!
//! Unlike OpenAI's `simple_tokenizer.py` (and transformers 4's slow tokenizer with ftfy
//! installed), this path does not run ftfy nor unescape HTML entities: `&amp;` stays three words.
//! Pigment matches what diffusers feeds its text encoder today.

use std::sync::OnceLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

/// CLIP's word pattern (OpenAI `simple_tokenizer.py`, case-insensitive there; lowercase here).
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// GPT-2's pattern as `tokenizers`' ByteLevel pre-tokenizer uses it, minus its whitespace
/// alternatives (`\s+(?!\S)|\s+`) and optional leading spaces: a CLIP piece holds no
/// whitespace. It only changes CLIP pieces that spell a special token in another case, e.g.
/// `<|ENDOFTEXT|>` -> `<|`, `endoftext`, `|>`.
const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+";

fn compiled(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    // The patterns are constants checked by the tests below: compiling them cannot fail.
    cell.get_or_init(|| Regex::new(pattern).expect("constant tokenizer pattern compiles"))
}

/// NFC, then lowercase character by character. (Collapsing whitespace runs, the reference's
/// middle step, changes nothing here because the split drops whitespace anyway.)
pub(crate) fn normalize(text: &str) -> String {
    text.nfc().flat_map(char::to_lowercase).collect()
}

/// The words of normalized text, in order.
pub(crate) fn split_words(normalized: &str) -> Vec<&str> {
    static CLIP: OnceLock<Regex> = OnceLock::new();
    static GPT2: OnceLock<Regex> = OnceLock::new();
    let (clip, gpt2) = (compiled(&CLIP, CLIP_PATTERN), compiled(&GPT2, GPT2_PATTERN));
    clip.find_iter(normalized)
        .flat_map(|piece| gpt2.find_iter(piece.as_str()).map(|m| m.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_letters_single_digits_punctuation_and_contractions() {
        let n = normalize("It's 42 CATS!!  and\tdogs");
        assert_eq!(
            split_words(&n),
            ["it", "'s", "4", "2", "cats", "!!", "and", "dogs"]
        );
    }

    #[test]
    fn composes_to_nfc_and_lowercases_per_character() {
        assert_eq!(normalize("Cafe\u{301}"), "café");
        assert_eq!(normalize("ΟΔΟΣ"), "οδοσ");
    }

    #[test]
    fn special_token_spelled_in_capitals_splits_like_gpt2() {
        let n = normalize("<|ENDOFTEXT|>");
        assert_eq!(split_words(&n), ["<|", "endoftext", "|>"]);
        assert_eq!(split_words("<|endoftext|>"), ["<|", "endoftext", "|>"]);
    }
}
