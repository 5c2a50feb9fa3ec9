//! `pigment generate --init-image FILE --mask FILE` as a user runs it: the PNG matches
//! diffusers' StableDiffusionInpaintPipeline (the library's parity fixture, on the 4-channel
//! tiny-sd1 with its RGB mask), the metadata records strength and mask blur, --mask-blur changes
//! the result, and bad input gets a clear error (exit code 1, no panic, no output file).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn fixture(name: &str) -> String {
    fixtures().join("inpaint").join(name).display().to_string()
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
        "--sampler",
        "euler",
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

/// The raw bytes of one U8 tensor of tests/fixtures/inpaint/outputs.safetensors.
fn fixture_tensor_bytes(name: &str) -> Vec<u8> {
    let file = std::fs::read(fixtures().join("inpaint/outputs.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&file[8..8 + header_len]).unwrap();
    let entry = &header[name];
    assert_eq!(entry["dtype"], "U8", "{name}");
    let offsets = entry["data_offsets"].as_array().unwrap();
    let (start, end) = (offsets[0].as_u64().unwrap(), offsets[1].as_u64().unwrap());
    file[8 + header_len + start as usize..8 + header_len + end as usize].to_vec()
}

fn max_diff(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, &y)| x.abs_diff(y)).max().unwrap()
}

#[test]
fn inpaint_png_matches_diffusers_and_mask_blur_changes_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("inpaint.png");
    let (init, mask) = (fixture("init.png"), fixture("mask.png"));
    // case07 of tests/fixtures/inpaint: tiny-sd1, Euler, strength 0.75, 5 steps, seed 42.
    let run = generate(&out, &["--init-image", &init, "--mask", &mask]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("inpainting "), "{}", stderr(&run));
    let params = pigment::image::read_png_parameters(&out).unwrap().unwrap();
    for field in ["Denoising strength: 0.75", "Mask blur: 0", "Seed: 42"] {
        assert!(params.contains(field), "`{field}` missing from {params}");
    }
    let got = image::open(&out).unwrap().to_rgb8();
    let want = fixture_tensor_bytes("case07.image");
    // Same bar as the library's parity test: within 2/255 per pixel.
    let worst = max_diff(got.as_raw(), &want);
    assert!(worst <= 2, "pixels differ from diffusers by up to {worst}");

    let blurred = dir.path().join("blurred.png");
    let run = generate(
        &blurred,
        &["--init-image", &init, "--mask", &mask, "--mask-blur", "4"],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let params = pigment::image::read_png_parameters(&blurred)
        .unwrap()
        .unwrap();
    assert!(params.contains("Mask blur: 4"), "{params}");
    let other = image::open(&blurred).unwrap().to_rgb8();
    assert!(
        max_diff(other.as_raw(), &want) > 2,
        "--mask-blur 4 changed nothing"
    );
}

#[test]
fn bad_inpaint_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let (init, mask) = (fixture("init.png"), fixture("mask.png"));

    let run = generate(&out, &["--mask", &mask]);
    assert_clean_error(&run, &out, "pass --init-image");

    let run = generate(&out, &["--init-image", &init, "--mask-blur", "4"]);
    assert_clean_error(&run, &out, "pass --mask FILE");

    let run = generate(
        &out,
        &["--init-image", &init, "--mask", &mask, "--mask-blur=-1"],
    );
    assert_clean_error(&run, &out, "--mask-blur -1");

    let small = dir.path().join("small.png");
    image::GrayImage::new(32, 64).save(&small).unwrap();
    let run = generate(
        &out,
        &[
            "--init-image",
            &init,
            "--mask",
            &small.display().to_string(),
        ],
    );
    assert_clean_error(&run, &out, "--mask is 32x64 but the init image is 64x64");

    let text = dir.path().join("mask.txt");
    std::fs::write(&text, "not an image").unwrap();
    let run = generate(
        &out,
        &["--init-image", &init, "--mask", &text.display().to_string()],
    );
    assert_clean_error(&run, &out, "is not an image");
    assert!(stderr(&run).contains("--mask"), "{}", stderr(&run));
}
