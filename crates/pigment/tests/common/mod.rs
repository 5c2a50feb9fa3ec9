//! Helpers shared by the parity tests: fixture paths, tensor distances, and the tiny model with
//! another UNet swapped in (the inpainting and InstructPix2Pix fixtures).
// Each test file uses a different subset of these.
#![allow(dead_code)]

pub mod gradients;

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use pigment::pipelines::{LoadOptions, StableDiffusion};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// max |t|.
pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// max |a - b| over the elements in order (the shapes may differ, e.g. HWC against NHWC).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a.flatten_all().unwrap() - b.flatten_all().unwrap()).unwrap())
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// tiny-sd1 with its unet replaced by the fixture folder `unet` (e.g. "inpaint/unet9"),
/// assembled in a temporary folder of its own (tests run on parallel threads) and loaded.
pub fn load_tiny_sd1_with_unet(unet: &str) -> StableDiffusion {
    let dir = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path();
    for part in ["scheduler", "text_encoder", "tokenizer", "vae"] {
        copy_dir(&dir.join("models/tiny-sd1").join(part), &folder.join(part));
    }
    std::fs::copy(
        dir.join("models/tiny-sd1/model_index.json"),
        folder.join("model_index.json"),
    )
    .unwrap();
    copy_dir(&dir.join(unet), &folder.join("unet"));
    StableDiffusion::load(folder, &LoadOptions::default()).unwrap()
}

/// How far a run is from the fixture `id` of a whole-run parity file: the final latents' max
/// abs error relative to max(1, max |reference|), and the 8-bit images' max pixel difference
/// when `with_image` (some fixtures store latents only). The bars all such tests state are
/// 2e-3 and 2/255.
pub fn reference_errors(
    out: &pigment::pipelines::Txt2ImgOutput,
    outputs: &std::collections::HashMap<String, Tensor>,
    id: &str,
    with_image: bool,
) -> (f32, f32) {
    let want_latents = &outputs[&format!("{id}.latents")];
    let latent_err = max_abs_diff(&out.latents, want_latents) / max_abs(want_latents).max(1.0);
    if !with_image {
        return (latent_err, 0.0);
    }
    let want_images = outputs[&format!("{id}.image")]
        .to_dtype(candle_core::DType::F32)
        .unwrap();
    let got: Vec<f32> = pigment::image::tensor_to_images(&out.decoded)
        .unwrap()
        .iter()
        .flat_map(|img| img.as_raw().iter().map(|&v| v as f32))
        .collect();
    let got = Tensor::from_vec(got, want_images.shape(), want_images.device()).unwrap();
    (latent_err, max_abs_diff(&got, &want_images))
}
