//! CLIP text encoder parity with transformers' `CLIPTextModel` on the tiny SD1 (quick_gelu,
//! `text_model.`-prefixed keys) and SD2 (gelu, unprefixed keys) text encoders.
//! Fixtures: tests/fixtures/text/text_encoder_sd{1,2}.safetensors, made by
//! tools/reference/make_text_fixtures.py from tests/fixtures/models/tiny-sd{1,2}.
//! Tolerance: max |pigment - transformers| <= 1e-4 in f32.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use pigment::text::{ClipTextConfig, ClipTextModel, ClipTokenizer};

const TOLERANCE: f32 = 1e-4;
const PROMPTS: [&str; 3] = [
    "a photograph of an astronaut riding a horse",
    "(masterpiece:1.2), a red cat!!",
    "",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load_model(name: &str) -> ClipTextModel {
    let dir = repo_root()
        .join("tests/fixtures/models")
        .join(name)
        .join("text_encoder");
    let config_text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let cfg: ClipTextConfig = serde_json::from_str(&config_text).unwrap();
    // SAFETY: the fixture file is not modified while the test maps it.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
    }
    .unwrap();
    // transformers 4 saves `text_model.`-prefixed keys, transformers 5 does not.
    let vb = if vb.contains_tensor("text_model.embeddings.token_embedding.weight") {
        vb.pp("text_model")
    } else {
        vb
    };
    ClipTextModel::new(vb, &cfg).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn check(name: &str, fixture: &str) {
    let path = repo_root().join("tests/fixtures/text").join(fixture);
    let expected: HashMap<String, Tensor> =
        candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let input_ids = expected["input_ids"].to_dtype(DType::U32).unwrap();

    // The ids came from transformers' tokenizer; ours must give the same ones.
    let tok = ClipTokenizer::from_folder(
        &repo_root()
            .join("tests/fixtures/models")
            .join(name)
            .join("tokenizer"),
    )
    .unwrap();
    for (row, prompt) in PROMPTS.iter().enumerate() {
        assert_eq!(
            tok.encode_padded(prompt, 77).unwrap(),
            input_ids.get(row).unwrap().to_vec1::<u32>().unwrap(),
            "{name}: {prompt:?}"
        );
    }

    let model = load_model(name);
    let outputs = [
        ("last_hidden_state", model.forward(&input_ids).unwrap()),
        (
            "last_hidden_state",
            model.forward_with_clip_skip(&input_ids, 1).unwrap(),
        ),
        (
            "clip_skip_2",
            model.forward_with_clip_skip(&input_ids, 2).unwrap(),
        ),
        (
            "clip_skip_3",
            model.forward_with_clip_skip(&input_ids, 3).unwrap(),
        ),
    ];
    for (key, got) in outputs {
        let want = &expected[key];
        let diff = max_abs_diff(&got, want);
        println!("{name} {key}: max abs diff {diff:e}");
        assert!(
            diff <= TOLERANCE,
            "{name} {key}: max abs diff {diff} > {TOLERANCE}"
        );
    }
    // The three clip-skip outputs really differ (so the checks above are not vacuous).
    assert!(max_abs_diff(&expected["last_hidden_state"], &expected["clip_skip_2"]) > 1e-2);
    assert!(max_abs_diff(&expected["clip_skip_2"], &expected["clip_skip_3"]) > 1e-2);
}

#[test]
fn sd1_text_encoder_matches_transformers() {
    check("tiny-sd1", "text_encoder_sd1.safetensors");
}

#[test]
fn sd2_text_encoder_matches_transformers() {
    check("tiny-sd2", "text_encoder_sd2.safetensors");
}

#[test]
fn batch_rows_are_independent() {
    // Row 0 alone gives the same result as inside the batch of three.
    let model = load_model("tiny-sd1");
    let tok = ClipTokenizer::embedded().unwrap();
    let one = Tensor::new(tok.encode_padded(PROMPTS[0], 77).unwrap(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let rows: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| tok.encode_padded(p, 77).unwrap())
        .collect();
    let batch = Tensor::new(rows, &Device::Cpu).unwrap();
    let alone = model.forward(&one).unwrap();
    let in_batch = model.forward(&batch).unwrap().narrow(0, 0, 1).unwrap();
    assert!(max_abs_diff(&alone, &in_batch) <= 1e-5);
}
