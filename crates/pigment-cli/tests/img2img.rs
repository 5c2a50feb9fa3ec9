//! `pigment generate --init-image FILE --strength S` as a user runs it: the PNG matches
//! diffusers' StableDiffusionImg2ImgPipeline (the library's parity fixture), its metadata records
//! the strength, and bad input gets a clear error (exit code 1, no panic, no output file).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn init_png() -> String {
    fixtures().join("img2img/init.png").display().to_string()
}

/// `pigment generate` on tiny-sd1 writing to `out`, with `extra` flags.
fn generate(out: &Path, extra: &[&str]) -> Output {
    let model = fixtures().join("models/tiny-sd1").display().to_string();
    let out = out.display().to_string();
    let mut args = vec![
        "generate",
        "a red star above a small green square",
        "--model",
        &model,
        "--out",
        &out,
        "--steps",
        "5",
        "--seed",
        "42",
    ];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_pigment"))
        .args(&args)
        .env_remove("PIGMENT_MODEL")
        .output()
        .expect("run pigment")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_clean_error(run: &Output, out: &Path, needle: &str) {
    let err = stderr(run);
    assert_eq!(run.status.code(), Some(1), "expected exit 1, stderr: {err}");
    assert!(!err.contains("panicked"), "panic on bad input: {err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
    assert!(!out.exists(), "an output was written despite the error");
}

/// The raw bytes of one tensor of tests/fixtures/img2img/outputs.safetensors (format: u64 LE
/// header length, JSON header with `data_offsets`, data), without a tensor crate.
fn fixture_tensor_bytes(name: &str) -> Vec<u8> {
    let file = std::fs::read(fixtures().join("img2img/outputs.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&file[8..8 + header_len]).unwrap();
    let entry = &header[name];
    assert_eq!(entry["dtype"], "U8", "{name}");
    let offsets = entry["data_offsets"].as_array().unwrap();
    let (start, end) = (offsets[0].as_u64().unwrap(), offsets[1].as_u64().unwrap());
    file[8 + header_len + start as usize..8 + header_len + end as usize].to_vec()
}

#[test]
fn img2img_png_matches_diffusers_and_records_the_strength() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("edit.png");
    let init = init_png();
    // case04 of tests/fixtures/img2img: Euler, strength 0.75 (the default), 5 steps, seed 42.
    let run = generate(&out, &["--init-image", &init, "--sampler", "euler"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("strength 0.75 · 3 of 5 steps run"),
        "summary: {}",
        stderr(&run)
    );

    let params = pigment::image::read_png_parameters(&out).unwrap().unwrap();
    for field in ["Denoising strength: 0.75", "Size: 64x64", "Seed: 42"] {
        assert!(params.contains(field), "`{field}` missing from {params}");
    }

    let got = image::open(&out).unwrap().to_rgb8();
    let want = fixture_tensor_bytes("case04.image");
    // Same bar as the library's parity test: within 2/255 per pixel.
    let worst = got
        .as_raw()
        .iter()
        .zip(&want)
        .map(|(&a, &b)| a.abs_diff(b))
        .max()
        .unwrap();
    assert_eq!(got.as_raw().len(), want.len());
    assert!(worst <= 2, "pixels differ from diffusers by up to {worst}");
}

#[test]
fn bad_img2img_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let init = init_png();

    for strength in ["0", "1.5", "-0.2", "NaN"] {
        let flag = format!("--strength={strength}");
        let run = generate(&out, &["--init-image", &init, &flag]);
        assert_clean_error(&run, &out, "must be in (0, 1]");
    }
    let run = generate(&out, &["--strength", "0.5"]);
    assert_clean_error(&run, &out, "pass --init-image");

    let missing = dir.path().join("missing.png").display().to_string();
    let run = generate(&out, &["--init-image", &missing]);
    assert_clean_error(&run, &out, "no such file");

    let text = dir.path().join("notes.png");
    std::fs::write(&text, "not an image").unwrap();
    let run = generate(&out, &["--init-image", &text.display().to_string()]);
    assert_clean_error(&run, &out, "is not an image");

    let run = generate(&out, &["--init-image", &init, "--width", "128"]);
    assert_clean_error(&run, &out, "init image is 64x64 but 128x64 was requested");

    let odd = dir.path().join("odd.png");
    image::RgbImage::new(60, 64).save(&odd).unwrap();
    let run = generate(&out, &["--init-image", &odd.display().to_string()]);
    assert_clean_error(&run, &out, "resize it to 56x64");

    let run = generate(&out, &["--init-image", &init, "--strength", "0.1"]);
    assert_clean_error(&run, &out, "raise --steps to at least 10");
}
