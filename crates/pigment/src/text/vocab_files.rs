//! Reading CLIP vocabularies: `vocab.json` + `merges.txt`, `tokenizer.json`, the tokenizer
//! settings of a diffusers `tokenizer/` folder, and OpenAI's BPE file embedded in the binary.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::text::bpe::END_OF_WORD;
use crate::text::byte_level::byte_to_unicode;

/// OpenAI CLIP's merge list, as shipped by OpenAI and open_clip (see `assets/*.LICENSE.txt`).
const EMBEDDED_BPE_GZ: &[u8] = include_bytes!("../../assets/bpe_simple_vocab_16e6.txt.gz");

/// CLIP uses the first 48,894 merges of the file: 49,408 tokens = 2 x 256 byte symbols +
/// 48,894 merges + 2 special tokens (OpenAI `simple_tokenizer.py`: `merges[1:49152-256-2+1]`).
const CLIP_MERGES: usize = 49152 - 256 - 2;

pub(crate) const START_OF_TEXT: &str = "<|startoftext|>";
pub(crate) const END_OF_TEXT: &str = "<|endoftext|>";

pub(crate) type Merges = Vec<(String, String)>;

/// A token matched in the raw text before normalisation (transformers' added/special tokens).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AddedToken {
    pub content: String,
    pub id: u32,
}

/// The vocabulary and merges of the embedded OpenAI file, built as `simple_tokenizer.py` does.
pub(crate) fn embedded_vocab() -> Result<(HashMap<String, u32>, Merges)> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(EMBEDDED_BPE_GZ)
        .read_to_string(&mut text)
        .map_err(|e| Error::Tokenizer(format!("embedded CLIP vocabulary is corrupt: {e}")))?;
    // Line 0 is a header; merge lines follow.
    let merges = parse_merge_lines(text.lines().skip(1).take(CLIP_MERGES), "embedded BPE file")?;
    if merges.len() != CLIP_MERGES {
        return Err(Error::Tokenizer(format!(
            "embedded CLIP vocabulary holds {} merges, expected {CLIP_MERGES}",
            merges.len()
        )));
    }
    // GPT-2 order: the printable bytes first, then the rest, i.e. the symbols by code point.
    let mut bytes = *byte_to_unicode();
    bytes.sort_unstable();
    let tokens = bytes
        .iter()
        .map(|c| c.to_string())
        .chain(bytes.iter().map(|c| format!("{c}{END_OF_WORD}")))
        .chain(merges.iter().map(|(l, r)| format!("{l}{r}")))
        .chain([START_OF_TEXT.to_owned(), END_OF_TEXT.to_owned()]);
    let vocab = tokens.enumerate().map(|(i, t)| (t, i as u32)).collect();
    Ok((vocab, merges))
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

fn read_json(path: &Path) -> Result<Value> {
    serde_json::from_str(&read_text(path)?)
        .map_err(|e| Error::Tokenizer(format!("{} is not valid JSON: {e}", path.display())))
}

fn parse_merge_lines<'a>(lines: impl Iterator<Item = &'a str>, source: &str) -> Result<Merges> {
    let mut merges = Vec::new();
    for (n, line) in lines.enumerate() {
        if line.starts_with("#version") || line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(l), Some(r), None) if !l.is_empty() && !r.is_empty() => {
                merges.push((l.to_owned(), r.to_owned()))
            }
            _ => {
                return Err(Error::Tokenizer(format!(
                    "{source}, line {}: expected two symbols separated by one space, got `{line}`",
                    n + 1
                )))
            }
        }
    }
    Ok(merges)
}

fn vocab_from_json(value: &Value, source: &str) -> Result<HashMap<String, u32>> {
    let map = value.as_object().ok_or_else(|| {
        Error::Tokenizer(format!(
            "{source}: the vocabulary must be a JSON object of token -> id"
        ))
    })?;
    map.iter()
        .map(|(token, id)| {
            id.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .map(|id| (token.clone(), id))
                .ok_or_else(|| {
                    Error::Tokenizer(format!("{source}: token `{token}` has a bad id {id}"))
                })
        })
        .collect()
}

/// `vocab.json` (token -> id) and `merges.txt` (one `left right` pair per line, rank order).
pub(crate) fn read_vocab_and_merges(
    vocab_json: &Path,
    merges_txt: &Path,
) -> Result<(HashMap<String, u32>, Merges)> {
    let vocab = vocab_from_json(&read_json(vocab_json)?, &vocab_json.display().to_string())?;
    let merges = parse_merge_lines(
        read_text(merges_txt)?.lines(),
        &merges_txt.display().to_string(),
    )?;
    Ok((vocab, merges))
}

/// The BPE model and added tokens of a `tokenizers` file (what transformers 5 saves).
pub(crate) fn read_tokenizer_json(
    path: &Path,
) -> Result<(HashMap<String, u32>, Merges, Vec<AddedToken>)> {
    let source = path.display().to_string();
    let json = read_json(path)?;
    let model = &json["model"];
    if model["type"].as_str() != Some("BPE")
        || model["end_of_word_suffix"].as_str() != Some(END_OF_WORD)
    {
        return Err(Error::Tokenizer(format!(
            "{source} is not a CLIP tokenizer (expected a BPE model with end-of-word suffix \
             `{END_OF_WORD}`); point Pigment at the Stable Diffusion `tokenizer/` folder"
        )));
    }
    let vocab = vocab_from_json(&model["vocab"], &source)?;
    let bad_merges = || Error::Tokenizer(format!("{source}: `model.merges` is malformed"));
    let mut merges = Merges::new();
    for merge in model["merges"].as_array().ok_or_else(bad_merges)? {
        // `tokenizers` writes merges as "left right" (older) or ["left", "right"] (newer).
        let pair = match merge {
            Value::String(s) => s.split_once(' ').map(|(l, r)| (l.to_owned(), r.to_owned())),
            Value::Array(a) => match (
                a.first().and_then(Value::as_str),
                a.get(1).and_then(Value::as_str),
            ) {
                (Some(l), Some(r)) if a.len() == 2 => Some((l.to_owned(), r.to_owned())),
                _ => None,
            },
            _ => None,
        };
        merges.push(pair.ok_or_else(bad_merges)?);
    }
    let mut added = Vec::new();
    for token in json["added_tokens"].as_array().into_iter().flatten() {
        let content = token["content"].as_str();
        let id = token["id"].as_u64().and_then(|id| u32::try_from(id).ok());
        match (content, id) {
            (Some(content), Some(id)) => added.push(AddedToken {
                content: content.to_owned(),
                id,
            }),
            _ => {
                return Err(Error::Tokenizer(format!(
                    "{source}: an entry of `added_tokens` lacks `content` or `id`"
                )))
            }
        }
    }
    Ok((vocab, merges, added))
}

/// `added_tokens.json` (token -> id) of a transformers 4 folder, if present.
pub(crate) fn read_added_tokens_json(path: &Path) -> Result<Vec<AddedToken>> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let map = vocab_from_json(&read_json(path)?, &path.display().to_string())?;
    let mut added: Vec<AddedToken> = map
        .into_iter()
        .map(|(content, id)| AddedToken { content, id })
        .collect();
    added.sort_by_key(|t| t.id);
    Ok(added)
}

/// Special-token names and the maximum length set by `tokenizer_config.json` and
/// `special_tokens_map.json` (the latter wins, as in transformers).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct FolderSettings {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub model_max_length: Option<usize>,
}

/// A token setting is either `"<|endoftext|>"` or `{"content": "<|endoftext|>", ...}`.
fn token_name(value: &Value) -> Option<String> {
    value
        .as_str()
        .or_else(|| value["content"].as_str())
        .map(str::to_owned)
}

pub(crate) fn read_folder_settings(dir: &Path) -> Result<FolderSettings> {
    let mut settings = FolderSettings::default();
    for file in ["tokenizer_config.json", "special_tokens_map.json"] {
        let path = dir.join(file);
        if !path.is_file() {
            continue;
        }
        let json = read_json(&path)?;
        let fields = [
            ("bos_token", &mut settings.bos_token),
            ("eos_token", &mut settings.eos_token),
            ("pad_token", &mut settings.pad_token),
        ];
        for (key, slot) in fields {
            if let Some(name) = token_name(&json[key]) {
                *slot = Some(name);
            }
        }
        // transformers writes a huge float (1e30) when a tokenizer has no limit: ignore it.
        if let Some(n) = json["model_max_length"].as_u64() {
            settings.model_max_length = usize::try_from(n).ok().filter(|&n| n <= 1 << 20);
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_vocabulary_has_clip_layout() {
        let (vocab, merges) = embedded_vocab().unwrap();
        assert_eq!(vocab.len(), 49408);
        assert_eq!(merges.len(), 48894);
        assert_eq!(merges[0], ("i".to_owned(), "n".to_owned()));
        assert_eq!(vocab["!"], 0);
        assert_eq!(vocab["!</w>"], 256);
        assert_eq!(vocab["in"], 512);
        assert_eq!(vocab[START_OF_TEXT], 49406);
        assert_eq!(vocab[END_OF_TEXT], 49407);
    }

    #[test]
    fn malformed_merge_line_names_the_line() {
        let err = parse_merge_lines(["#version: 0.2", "a b", "abc"].into_iter(), "m.txt")
            .expect_err("must fail");
        assert!(err.to_string().contains("m.txt, line 3"), "{err}");
    }

    #[test]
    fn token_settings_accept_strings_and_objects() {
        assert_eq!(token_name(&serde_json::json!("!")).as_deref(), Some("!"));
        let obj = serde_json::json!({"content": "<|endoftext|>", "lstrip": false});
        assert_eq!(token_name(&obj).as_deref(), Some(END_OF_TEXT));
        assert_eq!(token_name(&Value::Null), None);
    }
}
