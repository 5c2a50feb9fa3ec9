//! `pigment generate --window N --stride N` (MultiDiffusion panoramas) as a user runs it: the PNG
//! matches diffusers' StableDiffusionPanoramaPipeline (the library's parity fixture), the metadata
//! records window and stride, a size beyond the model's native one turns MultiDiffusion on by
//! itself, and bad input gets a clear error (exit code 1, no panic, no output file).

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

#[test]
fn panorama_png_matches_diffusers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("wide.png");
    // case00 of tests/fixtures/panorama: Euler, 192x64 px, window 8, stride 4, 5 steps, seed 42.
    let run = generate(
        &out,
        &[
            "--width", "192", "--height", "64", "--window", "8", "--stride", "4",
        ],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("MultiDiffusion: window 8 cells, stride 4, 25 model evaluations"),
        "{}",
        stderr(&run)
    );
    let params = pigment::image::read_png_parameters(&out).unwrap().unwrap();
    for field in [
        "Size: 192x64",
        "MultiDiffusion: \"window 8, stride 4\"",
        "Seed: 42",
    ] {
        assert!(params.contains(field), "`{field}` missing from {params}");
    }
    let got = image::open(&out).unwrap().to_rgb8();
    // Same bar as the library's parity test: within 2/255 per pixel.
    let worst = max_diff(got.as_raw(), &fixture_u8_tensor("panorama", "case00.image"));
    assert!(worst <= 2, "pixels differ from diffusers by up to {worst}");
}

#[test]
fn circular_panorama_png_matches_diffusers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("round.png");
    // case08 of tests/fixtures/panorama: as case00 with circular_padding=True (6 wrapped views).
    let run = generate(
        &out,
        &[
            "--width",
            "192",
            "--height",
            "64",
            "--window",
            "8",
            "--stride",
            "4",
            "--circular",
        ],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let params = pigment::image::read_png_parameters(&out).unwrap().unwrap();
    assert!(params.contains("window 8, stride 4, circular"), "{params}");
    let got = image::open(&out).unwrap().to_rgb8();
    // Same bar as the library's parity test: within 2/255 per pixel.
    let worst = max_diff(got.as_raw(), &fixture_u8_tensor("panorama", "case08.image"));
    assert!(worst <= 2, "pixels differ from diffusers by up to {worst}");
}

#[test]
fn panorama_flag_turns_multidiffusion_on_and_a_large_size_alone_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("auto.png");
    let run = generate(&out, &["--width", "128", "--height", "64", "--panorama"]);
    assert!(run.status.success(), "{}", stderr(&run));
    // Window = native 8 cells, stride 8 / 8 = 1: (16 - 8) / 1 + 1 = 9 views, 5 steps each.
    assert!(
        stderr(&run).contains("window 8 cells, stride 1, 45 model evaluations"),
        "{}",
        stderr(&run)
    );
    let params = pigment::image::read_png_parameters(&out).unwrap().unwrap();
    assert!(params.contains("window 8, stride 1"), "{params}");

    // Without a MultiDiffusion flag a larger size is plain txt2img, as in diffusers.
    let plain = dir.path().join("plain.png");
    let run = generate(&plain, &["--width", "128", "--height", "64"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(!stderr(&run).contains("MultiDiffusion"), "{}", stderr(&run));
}

#[test]
fn bad_panorama_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let wide = ["--width", "192", "--height", "64"];
    fn with<'a>(wide: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [wide, extra].concat()
    }

    let run = generate(&out, &with(&wide, &["--window", "16"]));
    assert_clean_error(
        &run,
        &out,
        "--window 16: larger than the 8x24-cell latent canvas",
    );
    let run = generate(&out, &with(&wide, &["--window", "8", "--stride", "0"]));
    assert_clean_error(&run, &out, "--stride 0");
    let run = generate(&out, &with(&wide, &["--window", "8", "--stride", "9"]));
    assert_clean_error(
        &run,
        &out,
        "--stride 9: must be between 1 and the window (8)",
    );
    let run = generate(&out, &["--width", "196", "--height", "64", "--window", "8"]);
    assert_clean_error(&run, &out, "--width 196: must be a positive multiple of 8");

    let init = fixtures().join("inpaint/init.png").display().to_string();
    let run = generate(&out, &["--init-image", &init, "--window", "8"]);
    assert_clean_error(&run, &out, "text-to-image only");

    let run = generate(&out, &with(&wide, &["--region", "0,0,32:a cat"]));
    assert_clean_error(&run, &out, "expected LEFT,TOP,WIDTH,HEIGHT:PROMPT");
    let run = generate(&out, &with(&wide, &["--region", "0,0,32,32"]));
    assert_clean_error(&run, &out, "expected LEFT,TOP,WIDTH,HEIGHT:PROMPT");
    let run = generate(&out, &with(&wide, &["--region", "176,0,32,32:a cat"]));
    assert_clean_error(&run, &out, "inside the 192x64 canvas");
}

#[test]
fn a_region_prompt_adds_its_windows_and_changes_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.png");
    let wide = [
        "--width", "192", "--height", "64", "--window", "8", "--stride", "4",
    ];
    let run = generate(&plain, &wide);
    assert!(run.status.success(), "{}", stderr(&run));
    let out = dir.path().join("region.png");
    let region = ["--region", "96,0,64,64:a blue whale: in a sea"];
    let run = generate(&out, &[&wide[..], &region].concat());
    assert!(run.status.success(), "{}", stderr(&run));
    // 3 windows touch the box (left 96..160 px = cells 12..20: windows at 8, 12 and 16),
    // 5 + 3 jobs of 5 steps.
    assert!(
        stderr(&run).contains("stride 4, 40 model evaluations"),
        "{}",
        stderr(&run)
    );
    let (a, b) = (
        image::open(&plain).unwrap().to_rgb8(),
        image::open(&out).unwrap().to_rgb8(),
    );
    assert!(
        max_diff(a.as_raw(), b.as_raw()) > 2,
        "--region changed nothing"
    );
}
