//! CLIP dual-encoder parity with transformers 5.24 (CLIPModel) on a tiny random model: the
//! vision tower, EOS pooling + projections, logits, the contrastive loss and every parameter's gradient (tolerance: common/gradients.rs).
//! Fixtures: tools/reference/make_clip_fixtures.py -> tests/fixtures/vision/.
//! Tolerance: max |pigment - transformers| <= 1e-5 in f32 (same f32 weights on both sides; the
//! gap is summation order, measured at about 1e-6).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use pigment::train::clip::clip_loss;
use pigment::vision::{ClipConfig, ClipModel};

use common::gradients::check_gradients;

const TOLERANCE: f32 = 1e-5;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vision")
}

fn config() -> ClipConfig {
    let text = std::fs::read_to_string(fixtures().join("tiny-clip/config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("clip_reference.safetensors"), &Device::Cpu)
        .unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
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

fn check(what: &str, ours: &Tensor, theirs: &Tensor) {
    let d = max_diff(ours, theirs);
    println!("{what}: max diff {d:e}");
    assert!(d <= TOLERANCE, "{what}: max diff {d} > {TOLERANCE}");
}

/// The model as trainable variables holding the fixture weights.
fn trainable_model() -> (VarMap, ClipModel) {
    let mut map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    let model = ClipModel::new(vb, &config()).unwrap();
    map.load(fixtures().join("tiny-clip/model.safetensors"))
        .unwrap();
    (map, model)
}

#[test]
fn vision_tower_features_and_logits_match_transformers() {
    let r = reference();
    let (_map, model) = trainable_model();
    let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
    let pixels = &r["pixel_values"];

    let vision = model.vision_model().forward(pixels).unwrap();
    check(
        "vision last_hidden_state",
        &vision.last_hidden_state,
        &r["vision_last_hidden_state"],
    );
    check(
        "vision pooler_output",
        &vision.pooler_output,
        &r["vision_pooler_output"],
    );
    let states = model.vision_model().hidden_states(pixels).unwrap();
    check(
        "vision penultimate layer",
        &states[states.len() - 2],
        &r["vision_penultimate"],
    );
    check(
        "image features",
        &model.image_features(pixels).unwrap(),
        &r["image_features"],
    );
    check(
        "text features (EOS pooling)",
        &model.text_features(&ids).unwrap(),
        &r["text_features"],
    );
    check(
        "logits_per_image",
        &model.logits_per_image(pixels, &ids).unwrap(),
        &r["logits_per_image"],
    );
}

#[test]
fn contrastive_loss_and_gradients_match_transformers() {
    let r = reference();
    let (map, model) = trainable_model();
    let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
    let loss = clip_loss(&model, &ids, &r["pixel_values"]).unwrap();
    check("loss", &loss.reshape(1).unwrap(), &r["loss"]);

    let grads = loss.backward().unwrap();
    let vars = map.data().lock().unwrap();
    let grad = |name: &str| grads.get(vars[name].as_tensor()).unwrap().clone();
    check(
        "d loss / d logit_scale",
        &grad("logit_scale").reshape(1).unwrap(),
        &r["grad_logit_scale"],
    );
    check(
        "d loss / d visual_projection",
        &grad("visual_projection.weight"),
        &r["grad_visual_projection"],
    );
    drop(vars);
    // Every parameter, the attention projections of both towers included (their gradients
    // flow through the softmax).
    check_gradients("clip", &map, &grads, &r, "grad.");
}

#[test]
fn wrong_image_size_is_an_error() {
    let (_map, model) = trainable_model();
    let pixels = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let err = model.image_features(&pixels).err().unwrap().to_string();
    assert!(err.contains("16"), "{err}");
}
