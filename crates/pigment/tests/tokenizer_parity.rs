//! CLIP tokenizer parity with transformers' `CLIPTokenizer` (transformers 5, as diffusers uses
//! it). Fixture: tests/fixtures/text/tokenizer.json, made by
//! tools/reference/make_text_fixtures.py. Tolerance: none, ids must be identical.

use std::path::{Path, PathBuf};

use pigment::text::ClipTokenizer;
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture() -> Value {
    let path = repo_root().join("tests/fixtures/text/tokenizer.json");
    let text = std::fs::read_to_string(&path).expect("tokenizer fixture is committed");
    serde_json::from_str(&text).expect("tokenizer fixture is JSON")
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("id list")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect()
}

/// Compares every case; lists all mismatches at once so a failure shows the whole picture.
fn check_cases(tok: &ClipTokenizer, cases: &Value, max_len: usize, label: &str) {
    let cases = cases.as_array().expect("case list");
    assert!(cases.len() >= 25, "{label}: fixture has too few prompts");
    let mut failures = Vec::new();
    for case in cases {
        let prompt = case["prompt"].as_str().expect("prompt");
        let got = tok.encode(prompt).expect("encode");
        let want = ids(&case["ids"]);
        if got != want {
            failures.push(format!(
                "{prompt:?}\n  encode got  {got:?}\n  want {want:?}"
            ));
        }
        let got = tok.encode_padded(prompt, max_len).expect("encode_padded");
        let want = ids(&case["padded"]);
        if got != want {
            failures.push(format!(
                "{prompt:?}\n  padded got  {got:?}\n  want {want:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{label}: {} mismatches\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn max_len(fx: &Value) -> usize {
    fx["max_len"].as_u64().expect("max_len") as usize
}

#[test]
fn astronaut_prompt_gives_the_known_ids() {
    let tok = ClipTokenizer::embedded().unwrap();
    assert_eq!(
        tok.encode_padded("a photograph of an astronaut riding a horse", 10)
            .unwrap(),
        [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]
    );
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.pad_id()),
        (49406, 49407, 49407)
    );
    assert_eq!(tok.model_max_length(), 77);
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(49407));
    assert_eq!(tok.token_to_id("horse</w>"), Some(4558));
    assert_eq!(tok.token_to_id("no-such-token"), None);
}

#[test]
fn embedded_vocabulary_matches_reference() {
    let fx = fixture();
    let tok = ClipTokenizer::embedded().unwrap();
    check_cases(&tok, &fx["embedded"], max_len(&fx), "embedded");
}

#[test]
fn vocab_and_merges_files_match_reference() {
    // tiny-sd1's tokenizer folder holds OpenAI's vocabulary as vocab.json + merges.txt.
    let fx = fixture();
    let dir = repo_root().join("tests/fixtures/models/tiny-sd1/tokenizer");
    let tok = ClipTokenizer::from_files(&dir.join("vocab.json"), &dir.join("merges.txt")).unwrap();
    check_cases(&tok, &fx["embedded"], max_len(&fx), "from_files");
}

#[test]
fn tokenizer_folders_match_reference() {
    let fx = fixture();
    for (name, expected_pad) in [("tiny-sd1", 49407), ("tiny-sd2", 0)] {
        let folder = &fx["folders"][name];
        let dir = repo_root()
            .join("tests/fixtures/models")
            .join(name)
            .join("tokenizer");
        let tok = ClipTokenizer::from_folder(&dir).unwrap();
        assert_eq!(tok.pad_id() as u64, folder["pad_id"].as_u64().unwrap());
        assert_eq!(tok.pad_id(), expected_pad, "{name}");
        assert_eq!(
            tok.model_max_length() as u64,
            folder["model_max_length"].as_u64().unwrap()
        );
        check_cases(&tok, &folder["cases"], max_len(&fx), name);
    }
}

#[test]
fn embedded_with_sd2_pad_matches_sd2_folder() {
    // A single-file SD2 checkpoint carries no tokenizer: the embedded vocabulary padded with
    // "!" must behave as diffusers' SD2 tokenizer folder does.
    let fx = fixture();
    let tok = ClipTokenizer::embedded().unwrap().with_pad_id(0);
    check_cases(
        &tok,
        &fx["folders"]["tiny-sd2"]["cases"],
        max_len(&fx),
        "embedded+pad0",
    );
}

#[test]
fn missing_or_broken_files_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(ClipTokenizer::from_folder(tmp.path()).is_err());
    let vocab = tmp.path().join("vocab.json");
    let merges = tmp.path().join("merges.txt");
    std::fs::write(&vocab, "not json").unwrap();
    std::fs::write(&merges, "#version: 0.2\na b\n").unwrap();
    let err = ClipTokenizer::from_files(&vocab, &merges).unwrap_err();
    assert!(err.to_string().contains("vocab.json"), "{err}");
    std::fs::write(&vocab, r#"{"a": 0, "b": 1}"#).unwrap();
    let err = ClipTokenizer::from_files(&vocab, &merges).unwrap_err();
    assert!(err.to_string().contains("not in the vocabulary"), "{err}");
}
