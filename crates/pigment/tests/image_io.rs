//! Image conversion parity with diffusers, PNG metadata, and safe writes, through the public API.
//!
//! Parity fixtures come from tools/reference/make_image_fixtures.py (diffusers'
//! VaeImageProcessor and PIL). Tolerance: none. Bytes must be equal, and preprocessed floats
//! must have the same bit patterns, since these are exact integer/float conversions.

use candle_core::{Device, Tensor};
use image::RgbImage;
use pigment::image::{
    image_to_tensor, load_image, read_png_parameters, save_png, tensor_to_images,
    GenerationParameters,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/image")
}

fn fixture() -> Value {
    let text = std::fs::read_to_string(fixture_dir().join("vae_image_processor.json"))
        .expect("fixture missing: run tools/reference/make_image_fixtures.py");
    serde_json::from_str(&text).unwrap()
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn sample_image() -> RgbImage {
    RgbImage::from_fn(24, 16, |x, y| {
        image::Rgb([(x * 10) as u8, (y * 15) as u8, (x ^ y) as u8])
    })
}

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn tensor_to_images_matches_diffusers_postprocess() {
    let doc = fixture();
    let post = &doc["postprocess"];
    let shape: Vec<usize> = u64s(&post["shape"]).iter().map(|&d| d as usize).collect();
    let values: Vec<f32> = u64s(&post["input_bits"])
        .iter()
        .map(|&b| f32::from_bits(b as u32))
        .collect();
    let want: Vec<u8> = u64s(&post["output_nhwc"])
        .iter()
        .map(|&b| b as u8)
        .collect();
    let t = Tensor::from_vec(values, shape.as_slice(), &Device::Cpu).unwrap();
    let images = tensor_to_images(&t).unwrap();
    assert_eq!(images.len(), shape[0]);
    let got: Vec<u8> = images.iter().flat_map(|im| im.as_raw().clone()).collect();
    assert_eq!(got.len(), want.len());
    let mismatches: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
    assert!(
        mismatches.is_empty(),
        "{} bytes differ, first at {:?}",
        mismatches.len(),
        mismatches.first()
    );
}

#[test]
fn image_to_tensor_matches_diffusers_preprocess() {
    let doc = fixture();
    let pre = &doc["preprocess"];
    let (h, w) = (
        pre["height"].as_u64().unwrap() as u32,
        pre["width"].as_u64().unwrap() as u32,
    );
    let pixels: Vec<u8> = u64s(&pre["input_hwc"]).iter().map(|&b| b as u8).collect();
    let img = RgbImage::from_raw(w, h, pixels).unwrap();
    let t = image_to_tensor(&img, &Device::Cpu).unwrap();
    let want_shape: Vec<usize> = u64s(&pre["output_shape"])
        .iter()
        .map(|&d| d as usize)
        .collect();
    assert_eq!(t.dims(), want_shape.as_slice());
    let got: Vec<u64> = t
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits() as u64)
        .collect();
    assert_eq!(got, u64s(&pre["output_bits"]));
}

#[test]
fn png_parameters_are_written_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let img = sample_image();
    for (name, text, chunk) in [
        (
            "latin1.png",
            "a cat, café\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 24x16",
            b"tEXt",
        ),
        (
            "utf8.png",
            "森の狐\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 24x16",
            b"iTXt",
        ),
    ] {
        let path = dir.path().join(name);
        save_png(&path, &img, Some(text), false).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            bytes.windows(4).any(|w| w == chunk),
            "{name}: no {:?} chunk",
            std::str::from_utf8(chunk)
        );
        assert_eq!(read_png_parameters(&path).unwrap().as_deref(), Some(text));
        assert_eq!(load_image(&path).unwrap(), img, "{name}: pixels changed");
    }
    let plain = dir.path().join("plain.png");
    save_png(&plain, &img, None, false).unwrap();
    assert_eq!(read_png_parameters(&plain).unwrap(), None);
}

#[test]
fn reads_parameters_that_pil_wrote_like_a1111() {
    let doc = fixture();
    for (name, text) in doc["pil_png_texts"].as_object().unwrap() {
        let path = fixture_dir().join(name);
        let got = read_png_parameters(&path).unwrap();
        assert_eq!(got.as_deref(), text.as_str(), "{name}");
        let params = GenerationParameters::from_infotext(got.as_deref().unwrap()).unwrap();
        assert_eq!((params.width, params.height), (64, 32));
        assert_eq!(load_image(&path).unwrap().dimensions(), (64, 32));
    }
}

#[test]
fn infotext_survives_a_png_round_trip() {
    let params = GenerationParameters {
        prompt: "a lighthouse at dusk, oil painting".into(),
        negative_prompt: "lowres".into(),
        steps: 30,
        sampler: "DPM++ 2M SDE".into(),
        schedule_type: Some("Karras".into()),
        cfg_scale: 6.5,
        seed: 3_000_000_000,
        width: 24,
        height: 16,
        model_name: Some("tiny-sd1".into()),
        model_hash: Some("0123abcd".into()),
        clip_skip: Some(2),
        extra: vec![("Eta".into(), "0.5".into())],
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.png");
    save_png(&path, &sample_image(), Some(&params.to_infotext()), false).unwrap();
    let text = read_png_parameters(&path).unwrap().unwrap();
    assert_eq!(GenerationParameters::from_infotext(&text).unwrap(), params);
}

#[test]
fn an_existing_file_is_kept_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.png");
    save_png(&path, &sample_image(), Some("first"), false).unwrap();
    let before = std::fs::read(&path).unwrap();

    let err = save_png(&path, &sample_image(), Some("second"), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert!(err.contains("out.png"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "refused write changed the file"
    );
    assert_eq!(
        entries(dir.path()),
        ["out.png"],
        "temporary file left behind"
    );

    save_png(&path, &sample_image(), Some("second"), true).unwrap();
    assert_eq!(
        read_png_parameters(&path).unwrap().as_deref(),
        Some("second")
    );
    assert_eq!(
        entries(dir.path()),
        ["out.png"],
        "temporary file left behind"
    );
}

#[test]
fn a_folder_that_is_a_file_or_missing_is_named_in_the_error() {
    // Tests may run as root, so permissions cannot make a folder unwritable; a path under a
    // regular file cannot be written by anyone.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, b"x").unwrap();
    let err = save_png(&file.join("out.png"), &sample_image(), None, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&file.display().to_string()) && err.contains("not a folder"),
        "{err}"
    );

    let missing = dir.path().join("missing");
    let err = save_png(&missing.join("out.png"), &sample_image(), None, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&missing.display().to_string()) && err.contains("does not exist"),
        "{err}"
    );
    assert_eq!(entries(dir.path()), ["not-a-folder"]);
}

#[test]
fn a_failed_encode_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.png");
    // A zero-width image cannot be encoded as PNG.
    let empty = RgbImage::new(0, 4);
    assert!(save_png(&path, &empty, Some("x"), false).is_err());
    assert!(
        entries(dir.path()).is_empty(),
        "left behind: {:?}",
        entries(dir.path())
    );
}

#[test]
fn loading_reports_missing_files_and_non_images() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.png");
    let err = load_image(&missing).unwrap_err().to_string();
    assert!(
        err.contains("nope.png") && err.contains("no such file"),
        "{err}"
    );

    let text = dir.path().join("notes.png");
    std::fs::write(&text, b"this is not a picture").unwrap();
    let err = load_image(&text).unwrap_err().to_string();
    assert!(
        err.contains("notes.png") && err.contains("not an image"),
        "{err}"
    );
    let err = read_png_parameters(&text).unwrap_err().to_string();
    assert!(
        err.contains("notes.png") && err.contains("not a readable PNG"),
        "{err}"
    );
}
