//! LoRA merged at load, against diffusers' pipeline whose weights were changed by the definition
//! W += scale * (alpha / rank) * up @ down in torch (fixtures from
//! tools/reference/make_lora_fixtures.py): kohya, PEFT and legacy attention-processor layouts,
//! linear and conv (1x1 and 3x3) updates on the UNet and the text encoder, two LoRAs at once with
//! scales 0.8 and -0.5; scale 0 is the base model bit for bit; keys matching no module are
//! reported; an SD2-shaped LoRA on an SD1 model is refused naming the key and both shapes.
//!
//! Tolerances (those of txt2img_parity.rs): final 8-bit images within 2/255 per pixel; final
//! latents within 2e-3 max abs relative to max(1, max |reference|).

mod common;
use common::*;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use pigment::image::tensor_to_images;
use pigment::pipelines::{LoadOptions, StableDiffusion, Txt2ImgRequest};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    id: String,
    loras: Vec<(String, f64)>,
    prompt: String,
    steps: usize,
    cfg: f64,
    seed: u64,
    width: usize,
    height: usize,
    sampler: String,
}

fn lora(name: &str) -> PathBuf {
    fixtures().join("lora").join(name)
}

fn load(loras: &[(&str, f64)]) -> pigment::Result<StableDiffusion> {
    let options = LoadOptions {
        loras: loras.iter().map(|(f, s)| (lora(f), *s)).collect(),
        ..LoadOptions::default()
    };
    StableDiffusion::load(&fixtures().join("models/tiny-sd1"), &options)
}

fn cases() -> Vec<Case> {
    serde_json::from_str(&std::fs::read_to_string(lora("cases.json")).unwrap()).unwrap()
}

fn run(model: &StableDiffusion, case: &Case) -> (Tensor, Tensor) {
    let request = Txt2ImgRequest {
        prompt: case.prompt.clone(),
        negative_prompt: String::new(),
        steps: case.steps,
        cfg_scale: case.cfg,
        sampler: case.sampler.parse().unwrap(),
        karras: false,
        eta: 0.0,
        seed: case.seed,
        width: case.width,
        height: case.height,
        batch_size: 1,
        clip_skip: 1,
        ..Txt2ImgRequest::default()
    };
    let out = model.txt2img(&request, &mut |_, _| {}).unwrap();
    let pixels: Vec<f32> = tensor_to_images(&out.decoded)
        .unwrap()
        .iter()
        .flat_map(|img| img.as_raw().iter().map(|&v| v as f32))
        .collect();
    let n = pixels.len();
    (
        out.latents,
        Tensor::from_vec(pixels, n, &Device::Cpu).unwrap(),
    )
}

#[test]
fn merged_loras_match_the_torch_definition() {
    let outputs =
        candle_core::safetensors::load(lora("outputs.safetensors"), &Device::Cpu).unwrap();
    let base_latents = &outputs["base.latents"];
    let mut failures = Vec::new();
    for case in cases() {
        let loras: Vec<(&str, f64)> = case.loras.iter().map(|(f, s)| (f.as_str(), *s)).collect();
        let model = load(&loras).unwrap();
        let (latents, pixels) = run(&model, &case);
        let want_latents = &outputs[&format!("{}.latents", case.id)];
        let want_pixels = outputs[&format!("{}.image", case.id)]
            .to_dtype(DType::F32)
            .unwrap();
        let latent_err = max_abs_diff(&latents, want_latents) / max_abs(want_latents).max(1.0);
        let pixel_err = max_abs_diff(&pixels, &want_pixels);
        // How far the LoRA moves the result: the comparison must be able to tell it apart.
        let lora_effect = max_abs_diff(want_latents, base_latents);
        let what = format!(
            "{}: latents rel err {latent_err:.2e}, pixels max diff {pixel_err}, LoRA moves latents by {lora_effect:.3}",
            case.id
        );
        println!("{what}");
        if latent_err > 2e-3 || pixel_err > 2.0 || (case.id != "base" && lora_effect < 0.05) {
            failures.push(what);
        }
        for report in &model.lora_reports {
            assert!(
                report.matched > 0,
                "{}: nothing matched",
                report.path.display()
            );
        }
    }
    assert!(
        failures.is_empty(),
        "off the reference:\n{}",
        failures.join("\n")
    );
}

#[test]
fn scale_zero_is_the_base_model_bit_for_bit() {
    let case = cases().into_iter().find(|c| c.id == "base").unwrap();
    let (base_latents, base_pixels) = run(&load(&[]).unwrap(), &case);
    let zero = load(&[("kohya.safetensors", 0.0), ("peft.safetensors", 0.0)]).unwrap();
    let (latents, pixels) = run(&zero, &case);
    let bits = |t: &Tensor| -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    assert_eq!(bits(&latents), bits(&base_latents));
    assert_eq!(bits(&pixels), bits(&base_pixels));
}

#[test]
fn reports_matched_weights_and_keys_that_match_no_module() {
    let model = load(&[
        ("kohya.safetensors", 0.8),
        ("peft.safetensors", 1.0),
        ("legacy.safetensors", 1.0),
    ])
    .unwrap();
    let by_file: HashMap<String, _> = model
        .lora_reports
        .iter()
        .map(|r| {
            (
                r.path.file_name().unwrap().to_string_lossy().into_owned(),
                r,
            )
        })
        .collect();
    // 8 attention projections + mid to_q + proj_in + conv1 + ff proj + 6 text-encoder weights.
    let kohya = by_file["kohya.safetensors"];
    assert_eq!(kohya.matched, 18);
    assert_eq!(kohya.scale, 0.8);
    assert_eq!(
        kohya.unmatched_keys,
        [
            "lora_unet_input_blocks_1_1_proj_in.lora_down.weight",
            "lora_unet_input_blocks_1_1_proj_in.lora_up.weight"
        ]
    );
    assert_eq!(by_file["peft.safetensors"].matched, 18);
    assert!(by_file["peft.safetensors"].unmatched_keys.is_empty());
    assert_eq!(by_file["legacy.safetensors"].matched, 10);
    assert!(by_file["legacy.safetensors"].unmatched_keys.is_empty());
}

#[test]
fn an_sd2_shaped_lora_on_sd1_is_refused_naming_key_and_shapes() {
    let err = match load(&[("sd2_shaped.safetensors", 1.0)]) {
        Ok(_) => panic!("an SD2-shaped LoRA loaded on SD1"),
        Err(e) => e.to_string(),
    };
    for needle in [
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight",
        "[4, 1024]",
        "[16, 32]",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
    ] {
        assert!(err.contains(needle), "`{needle}` missing from: {err}");
    }
}

#[test]
fn a_missing_lora_file_is_a_clear_error() {
    let err = match load(&[("no-such-lora.safetensors", 1.0)]) {
        Ok(_) => panic!("a missing LoRA file loaded"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("no-such-lora.safetensors") && err.contains("no such file"),
        "{err}"
    );
}
