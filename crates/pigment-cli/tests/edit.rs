//! `pigment edit IMAGE INSTRUCTION` as a user runs it: the PNG matches diffusers'
//! StableDiffusionInstructPix2PixPipeline (the library's parity fixture: tiny-sd1 with the
//! 8-channel fixture UNet), the metadata records both guidance scales, --image-cfg changes the
//! result, and bad input gets a clear error (exit code 1, no panic, no output file): a
//! 4-channel model, an image whose size is not a multiple of 8, a missing image.

mod common;
use common::*;

use std::path::Path;
use std::process::Output;

/// tiny-sd1 with its unet replaced by tests/fixtures/pix2pix/unet8, under `dir`.
fn pix2pix_model(dir: &Path) -> String {
    let folder = dir.join("tiny-pix2pix");
    let tiny = fixtures().join("models/tiny-sd1");
    for part in ["scheduler", "text_encoder", "tokenizer", "vae"] {
        copy_dir(&tiny.join(part), &folder.join(part));
    }
    std::fs::copy(
        tiny.join("model_index.json"),
        folder.join("model_index.json"),
    )
    .unwrap();
    copy_dir(&fixtures().join("pix2pix/unet8"), &folder.join("unet"));
    folder.display().to_string()
}

fn init() -> String {
    fixtures().join("pix2pix/init.png").display().to_string()
}

/// `pigment edit IMAGE "make it winter"` with `model`, writing to `out`, with `extra` flags.
fn edit(image: &str, model: &str, out: &Path, extra: &[&str]) -> Output {
    let out = out.display().to_string();
    let mut args = vec![
        "edit",
        image,
        "make it winter",
        "--model",
        model,
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
    pigment(&args)
}

#[test]
fn edit_png_matches_diffusers_and_image_cfg_changes_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = pix2pix_model(dir.path());
    let out = dir.path().join("edit.png");
    // case03 of tests/fixtures/pix2pix: Euler, 5 steps, seed 42, cfg 7.5, image cfg 1.5 (the
    // CLI's defaults for both scales).
    let run = edit(&init(), &model, &out, &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    let params = pigment::image::read_png_parameters(&out).unwrap().unwrap();
    for field in [
        "make it winter",
        "CFG scale: 7.5",
        "Image CFG scale: 1.5",
        "Seed: 42",
    ] {
        assert!(params.contains(field), "`{field}` missing from {params}");
    }
    let got = image::open(&out).unwrap().to_rgb8();
    let want = fixture_u8_tensor("pix2pix", "case03.image");
    // Same bar as the library's parity test: within 2/255 per pixel.
    let worst = max_diff(got.as_raw(), &want);
    assert!(worst <= 2, "pixels differ from diffusers by up to {worst}");

    // case04: image cfg 1.0.
    let other = dir.path().join("other.png");
    let run = edit(&init(), &model, &other, &["--image-cfg", "1.0"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let got = image::open(&other).unwrap().to_rgb8();
    let worst = max_diff(got.as_raw(), &fixture_u8_tensor("pix2pix", "case04.image"));
    assert!(
        worst <= 2,
        "--image-cfg 1: pixels differ from diffusers by up to {worst}"
    );
    assert!(
        max_diff(got.as_raw(), &want) > 2,
        "--image-cfg changed nothing"
    );
}

#[test]
fn bad_edit_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = pix2pix_model(dir.path());
    let out = dir.path().join("x.png");

    let ordinary = fixtures().join("models/tiny-sd1").display().to_string();
    let run = edit(&init(), &ordinary, &out, &[]);
    assert_clean_error(&run, &out, "in_channels 4");
    assert!(stderr(&run).contains("in_channels 8"), "{}", stderr(&run));

    let odd = dir.path().join("odd.png");
    image::RgbImage::new(60, 64).save(&odd).unwrap();
    let run = edit(&odd.display().to_string(), &model, &out, &[]);
    assert_clean_error(&run, &out, "60x64");
    assert!(stderr(&run).contains("multiples of 8"), "{}", stderr(&run));

    let missing = dir.path().join("missing.png").display().to_string();
    let run = edit(&missing, &model, &out, &[]);
    assert_clean_error(&run, &out, "no such file");
    assert!(stderr(&run).contains("missing.png"), "{}", stderr(&run));

    let run = edit(&init(), &model, &out, &["--image-cfg", "nan"]);
    assert_clean_error(&run, &out, "--image-cfg");
}
