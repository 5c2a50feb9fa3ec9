//! The `pigment` binary as a user runs it: images written with their metadata, and every kind of
//! bad input answered with a clear error (exit code 1, no panic, nothing half-written).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn pigment(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pigment"))
        .args(args)
        .env_remove("PIGMENT_MODEL")
        .output()
        .expect("run pigment")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn tiny_sd1() -> String {
    fixtures().join("models/tiny-sd1").display().to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A failed run: exit code 1, no panic, and a message containing `needle`.
fn assert_clean_error(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "expected exit 1, stderr: {err}");
    assert!(!err.contains("panicked"), "panic on bad input: {err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
}

fn generate(model: &str, out: &Path, extra: &[&str]) -> Output {
    let out = out.display().to_string();
    let mut args = vec!["generate", "a red star", "--model", model, "--out", &out];
    // Defaults for a fast run, unless the case sets them itself.
    for (flag, value) in [
        ("--steps", "2"),
        ("--width", "64"),
        ("--height", "64"),
        ("--seed", "5"),
    ] {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend_from_slice(extra);
    pigment(&args)
}

#[test]
fn generate_writes_png_with_parameters_and_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("star.png");
    let run = generate(
        &tiny_sd1(),
        &out,
        &["--sampler", "euler", "--negative", "blurry"],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("s/step"),
        "summary line: {}",
        stderr(&run)
    );
    let params = pigment::image::read_png_parameters(&out).unwrap().unwrap();
    assert!(
        params.starts_with("a red star\nNegative prompt: blurry\n"),
        "{params}"
    );
    for field in [
        "Steps: 2",
        "Sampler: Euler",
        "CFG scale: 7.5",
        "Seed: 5",
        "Size: 64x64",
    ] {
        assert!(params.contains(field), "`{field}` missing from {params}");
    }
    let first = image::open(&out).unwrap().to_rgb8();
    assert_eq!(first.dimensions(), (64, 64));

    let again = generate(
        &tiny_sd1(),
        &out,
        &["--sampler", "euler", "--negative", "blurry", "--force"],
    );
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(
        first,
        image::open(&out).unwrap().to_rgb8(),
        "same seed, same image"
    );
}

/// `--guidance-rescale` changes the image, is written into the PNG parameters under the name
/// A1111's CFG-rescale extension uses, and is refused outside [0, 1].
#[test]
fn guidance_rescale_is_applied_recorded_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.png");
    let rescaled = dir.path().join("rescaled.png");
    let run = generate(&tiny_sd1(), &plain, &["--cfg", "9"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let run = generate(
        &tiny_sd1(),
        &rescaled,
        &["--cfg", "9", "--guidance-rescale", "0.7"],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let params = pigment::image::read_png_parameters(&rescaled)
        .unwrap()
        .unwrap();
    assert!(params.contains("CFG Rescale phi: 0.7"), "{params}");
    let plain_params = pigment::image::read_png_parameters(&plain)
        .unwrap()
        .unwrap();
    assert!(!plain_params.contains("Rescale"), "{plain_params}");
    assert_ne!(
        image::open(&plain).unwrap().to_rgb8(),
        image::open(&rescaled).unwrap().to_rgb8(),
        "rescale changes the result"
    );
    let out = dir.path().join("x.png");
    assert_clean_error(
        &generate(&tiny_sd1(), &out, &["--guidance-rescale", "1.5"]),
        "--guidance-rescale 1.5",
    );
    assert!(!out.exists());
}

#[test]
fn batch_writes_numbered_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.png");
    let run = generate(&tiny_sd1(), &out, &["--batch", "2", "--sampler", "ddim"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(dir.path().join("b-1.png").exists() && dir.path().join("b-2.png").exists());
    assert!(!out.exists());
}

#[test]
fn bad_sizes_steps_and_samplers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let model = tiny_sd1();
    assert_clean_error(&generate(&model, &out, &["--width", "65"]), "multiple of 8");
    assert_clean_error(&generate(&model, &out, &["--steps", "0"]), "--steps 0");
    assert_clean_error(&generate(&model, &out, &["--sampler", "plms2"]), "plms2");
    assert_clean_error(&generate(&model, &out, &["--clip-skip", "0"]), "clip-skip");
    assert_clean_error(&generate(&model, &out, &["--dtype", "bf16"]), "f16");
    assert_clean_error(&generate(&model, &out, &["--dtype", "f8"]), "unknown dtype");
    assert_clean_error(
        &generate(&model, &out, &["--device", "cuda"]),
        "--features cuda",
    );
    assert!(!out.exists(), "nothing written on error");
}

#[test]
fn missing_truncated_and_foreign_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let missing = dir.path().join("nope.safetensors");
    assert_clean_error(
        &generate(&missing.display().to_string(), &out, &[]),
        "nope.safetensors",
    );

    let full = std::fs::read(fixtures().join("single_file/tiny-sd1.safetensors")).unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    assert_clean_error(
        &generate(&truncated.display().to_string(), &out, &[]),
        "truncated",
    );

    let foreign = dir.path().join("foreign.safetensors");
    let header = br#"{"encoder.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 4]);
    std::fs::write(&foreign, bytes).unwrap();
    assert_clean_error(
        &generate(&foreign.display().to_string(), &out, &[]),
        "Stable Diffusion",
    );

    assert!(!out.exists());
}

#[test]
fn existing_output_and_missing_folder_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("taken.png");
    std::fs::write(&out, b"mine").unwrap();
    assert_clean_error(&generate(&tiny_sd1(), &out, &[]), "--force");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"mine",
        "user's file untouched"
    );

    let nowhere = dir.path().join("no/such/folder/x.png");
    assert_clean_error(&generate(&tiny_sd1(), &nowhere, &[]), "does not exist");
}

#[test]
fn info_describes_folder_and_single_file() {
    for path in [
        tiny_sd1(),
        fixtures()
            .join("single_file/tiny-sd2.safetensors")
            .display()
            .to_string(),
    ] {
        let out = pigment(&["info", &path, "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(doc["parameters"]["unet"].as_u64().unwrap() > 0, "{doc}");
        let family = doc["family"].as_str().unwrap();
        assert!(family == "SD1.x" || family == "SD2.x", "{doc}");
    }
}
