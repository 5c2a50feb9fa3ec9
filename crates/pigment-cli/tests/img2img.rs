//! `pigment generate --init-image FILE --strength S` as a user runs it: the PNG matches
//! diffusers' StableDiffusionImg2ImgPipeline (the library's parity fixture), its metadata records
//! the strength, and bad input gets a clear error (exit code 1, no panic, no output file).

mod common;
use common::*;

/// `pigment generate` on tiny-sd1 as the fixtures ran it, with `extra` flags.
fn generate(out: &Path, extra: &[&str]) -> Output {
    generate_on_tiny_sd1(out, &[&["--steps", "5"][..], extra].concat())
}

use std::path::Path;
use std::process::Output;

fn init_png() -> String {
    fixtures().join("img2img/init.png").display().to_string()
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
    let want = fixture_u8_tensor("img2img", "case04.image");
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
