//! `pigment generate --init-image FILE --mask FILE` as a user runs it: the PNG matches
//! diffusers' StableDiffusionInpaintPipeline (the library's parity fixture, on the 4-channel
//! tiny-sd1 with its RGB mask), the metadata records strength and mask blur, --mask-blur changes
//! the result, and bad input gets a clear error (exit code 1, no panic, no output file).

mod common;
use common::*;

/// `pigment generate` on tiny-sd1 as the fixtures ran it, with `extra` flags.
fn generate(out: &Path, extra: &[&str]) -> Output {
    generate_on_tiny_sd1(
        out,
        &[&["--steps", "5", "--sampler", "euler"][..], extra].concat(),
    )
}

use std::path::Path;
use std::process::Output;

fn fixture(name: &str) -> String {
    fixtures().join("inpaint").join(name).display().to_string()
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
    let want = fixture_u8_tensor("inpaint", "case07.image");
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
