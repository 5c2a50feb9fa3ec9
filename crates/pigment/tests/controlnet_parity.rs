//! ControlNet against diffusers (fixtures from tools/reference/make_controlnet_fixtures.py): the
//! tiny ControlNet's forward residuals (plain, guess mode, global_pool_conditions), the original
//! single-file layout against the diffusers folder, and whole StableDiffusionControlNetPipeline
//! runs on tiny-sd1 (one ControlNet; two summed with their own scales and start/end; guess mode
//! with guidance and a batch; guidance off) and a StableDiffusionControlNetImg2ImgPipeline run.
//!
//! Tolerances: residuals within 1e-4 max abs relative to max(1, max |reference|) (f32 rounding
//! over the encoder's layers); whole runs within 2e-3 relative on the final latents and 2/255
//! per pixel, the bars of every whole-run parity test (tests/common `reference_errors`).

mod common;
use common::*;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use pigment::control::{load_controlnet, ControlNetModel, ControlNetOutput};
use pigment::image::load_image;
use pigment::pipelines::{
    control_image_tensor, ControlNetRequest, ControlNetUnit, Img2ImgRequest, LoadOptions,
    StableDiffusion, Txt2ImgRequest,
};
use serde::Deserialize;

fn folder() -> std::path::PathBuf {
    fixtures().join("controlnet/tiny-controlnet")
}

fn forward_fixture() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        fixtures().join("controlnet/forward.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

fn run(
    model: &ControlNetModel,
    f: &HashMap<String, Tensor>,
    scale: f64,
    guess: bool,
) -> ControlNetOutput {
    model
        .forward(
            &f["sample"],
            421.0,
            &f["encoder_hidden_states"],
            &f["controlnet_cond"],
            scale,
            guess,
        )
        .unwrap()
}

/// Max abs error of every residual relative to max(1, max |reference|).
fn residual_error(out: &ControlNetOutput, f: &HashMap<String, Tensor>, tag: &str) -> f32 {
    assert_eq!(out.down.len(), 9, "tiny-sd1 has 9 skip connections");
    let mut worst = 0f32;
    for (i, d) in out.down.iter().enumerate() {
        let want = &f[&format!("{tag}.down.{i}")];
        assert_eq!(d.dims(), want.dims(), "{tag} down {i}");
        worst = worst.max(max_abs_diff(d, want) / max_abs(want).max(1.0));
    }
    let want = &f[&format!("{tag}.mid")];
    assert_eq!(out.mid.dims(), want.dims(), "{tag} mid");
    worst.max(max_abs_diff(&out.mid, want) / max_abs(want).max(1.0))
}

#[test]
fn forward_residuals_match_diffusers() {
    let f = forward_fixture();
    let model = load_controlnet(&folder(), None, DType::F32, &Device::Cpu).unwrap();
    // The zero convolutions are randomised in the fixture: the residuals must not be zero.
    assert!(max_abs(&f["plain.mid"]) > 1e-2);
    for (tag, scale, guess) in [("plain", 0.7, false), ("guess", 0.8, true)] {
        let err = residual_error(&run(&model, &f, scale, guess), &f, tag);
        println!("{tag}: residual rel err {err:.2e}");
        assert!(err < 1e-4, "{tag}: {err}");
    }
}

#[test]
fn global_pool_conditions_average_the_residuals_over_space() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&folder(), tmp.path());
    let config_path = tmp.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["global_pool_conditions"] = serde_json::Value::Bool(true);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let model = load_controlnet(tmp.path(), None, DType::F32, &Device::Cpu).unwrap();
    let f = forward_fixture();
    let out = run(&model, &f, 0.9, false);
    assert_eq!(out.mid.dims(), &[2, 32, 1, 1]);
    let err = residual_error(&out, &f, "pool");
    assert!(err < 1e-4, "pool: {err}");
}

/// The original layout (`control_model.input_hint_block...`, written by the fixture script and
/// read back there by diffusers' from_single_file) gives the folder's residuals exactly; its
/// head and group counts come from the UNet it is loaded for.
#[test]
fn single_file_matches_the_folder() {
    let f = forward_fixture();
    let sd = StableDiffusion::load(&fixtures().join("models/tiny-sd1"), &LoadOptions::default())
        .unwrap();
    let file = fixtures().join("controlnet/tiny-controlnet.safetensors");
    let single = load_controlnet(&file, Some(sd.unet.config()), DType::F32, &Device::Cpu).unwrap();
    let reference = load_controlnet(&folder(), None, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(single.config().block_out_channels, vec![16, 32, 32]);
    assert_eq!(
        single.config().conditioning_embedding_out_channels,
        vec![8, 8, 16, 16]
    );
    let (a, b) = (
        run(&single, &f, 1.0, false),
        run(&reference, &f, 1.0, false),
    );
    for (x, y) in a.down.iter().zip(&b.down).chain([(&a.mid, &b.mid)]) {
        assert_eq!(max_abs_diff(x, y), 0.0);
    }
    // Without a UNet, a model that is neither SD1 nor SD2 cannot be guessed: a clear error.
    let err = match load_controlnet(&file, None, DType::F32, &Device::Cpu) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("loaded without head counts"),
    };
    assert!(err.contains("cross_attention_dim 32"), "{err}");
}

#[derive(Deserialize)]
struct Unit {
    image: String,
    scale: f64,
    start: f64,
    end: f64,
}

#[derive(Deserialize)]
struct Case {
    id: String,
    prompt: String,
    negative: String,
    steps: usize,
    cfg: f64,
    seed: u64,
    width: usize,
    height: usize,
    batch: usize,
    sampler: String,
    guess_mode: bool,
    units: Vec<Unit>,
    /// StableDiffusionControlNetImg2ImgPipeline cases: the init image and strength.
    #[serde(default)]
    init: Option<String>,
    #[serde(default)]
    strength: Option<f64>,
}

fn control_unit(model: &Arc<ControlNetModel>, dir: &Path, u: &Unit) -> ControlNetUnit {
    let image = load_image(&dir.join(&u.image)).unwrap();
    ControlNetUnit {
        model: model.clone(),
        image: control_image_tensor(&image, &Device::Cpu).unwrap(),
        scale: u.scale,
        start: u.start,
        end: u.end,
    }
}

#[test]
fn pipeline_runs_match_diffusers() {
    let dir = fixtures().join("controlnet");
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let outputs =
        candle_core::safetensors::load(dir.join("outputs.safetensors"), &Device::Cpu).unwrap();
    let sd = StableDiffusion::load(&fixtures().join("models/tiny-sd1"), &LoadOptions::default())
        .unwrap();
    let model = Arc::new(load_controlnet(&folder(), None, DType::F32, &Device::Cpu).unwrap());
    let mut failures = Vec::new();
    for case in &cases {
        let req = Txt2ImgRequest {
            prompt: case.prompt.clone(),
            negative_prompt: case.negative.clone(),
            steps: case.steps,
            cfg_scale: case.cfg,
            sampler: case.sampler.parse().unwrap(),
            seed: case.seed,
            width: case.width,
            height: case.height,
            batch_size: case.batch,
            ..Txt2ImgRequest::default()
        };
        let control = ControlNetRequest {
            units: case
                .units
                .iter()
                .map(|u| control_unit(&model, &dir, u))
                .collect(),
            guess_mode: case.guess_mode,
        };
        let out = match (&case.init, case.strength) {
            (Some(init), Some(strength)) => {
                let init = load_image(&dir.join(init)).unwrap();
                let req = Img2ImgRequest::new(req, init, strength);
                sd.img2img_controlnet(&req, &control, &mut |_, _| {})
            }
            _ => sd.txt2img_controlnet(&req, &control, &mut |_, _| {}),
        }
        .unwrap();
        let (latent_err, pixel_err) = reference_errors(&out, &outputs, &case.id, true);
        let what = format!(
            "{} {} ({} units, guess {}): latents rel err {latent_err:.2e}, pixels max diff {pixel_err}",
            case.id,
            case.sampler,
            case.units.len(),
            case.guess_mode
        );
        println!("{what}");
        if latent_err > 2e-3 || pixel_err > 2.0 {
            failures.push(what);
        }
    }
    assert!(
        failures.is_empty(),
        "cases off the reference:\n{}",
        failures.join("\n")
    );
}

/// diffusers' controlnet_keep: the unit acts while i/n >= start and (i+1)/n <= end.
#[test]
fn keep_follows_diffusers_rule() {
    use pigment::pipelines::controlnet::controlnet_keep;
    let keeps: Vec<f64> = (0..5).map(|i| controlnet_keep(i, 5, 0.0, 0.6)).collect();
    assert_eq!(keeps, vec![1.0, 1.0, 1.0, 0.0, 0.0]);
    let keeps: Vec<f64> = (0..5).map(|i| controlnet_keep(i, 5, 0.4, 1.0)).collect();
    assert_eq!(keeps, vec![0.0, 0.0, 1.0, 1.0, 1.0]);
}
