//! `pigment generate --controlnet ...` as a user runs it: a photo turned into edges by
//! `--preprocess canny` reproduces diffusers' StableDiffusionControlNetPipeline run on OpenCV's
//! edges of it (case0 of tests/fixtures/controlnet, from make_controlnet_fixtures.py), the
//! original single-file layout gives the same image, the PNG records each unit, and bad input
//! gets a clear error (exit code 1, no panic, no output file).

mod common;
use common::*;

use std::path::Path;
use std::process::Output;

fn fixture(name: &str) -> String {
    fixtures()
        .join("controlnet")
        .join(name)
        .display()
        .to_string()
}

/// `pigment generate` on tiny-sd1 as case0 ran it (seed 42, Euler, 5 steps), with `extra` flags.
fn generate(out: &Path, extra: &[&str]) -> Output {
    generate_on_tiny_sd1(
        out,
        &[&["--steps", "5", "--sampler", "euler"][..], extra].concat(),
    )
}

fn max_pixel_diff_to(out: &Path, case: &str) -> u8 {
    let got = image::open(out).unwrap().to_rgb8();
    let want = fixture_u8_tensor("controlnet", &format!("{case}.image"));
    max_diff(got.as_raw(), &want)
}

#[test]
fn canny_preprocessed_photo_matches_diffusers_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cn.png");
    let (net, photo) = (fixture("tiny-controlnet"), fixture("photo.png"));
    let run = generate(
        &out,
        &[
            "--controlnet",
            &net,
            "--control-image",
            &photo,
            "--preprocess",
            "canny",
            "--canny-low",
            "100",
            "--canny-high",
            "200",
        ],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    // Same bar as the library's parity test: within 2/255 per pixel.
    let worst = max_pixel_diff_to(&out, "case0");
    assert!(worst <= 2, "pixels differ from diffusers by up to {worst}");

    let params = pigment::image::read_png_parameters(&out).unwrap().unwrap();
    for field in [
        "ControlNet 0: \"Module: canny, Model: tiny-controlnet, Weight: 1",
        "Threshold A: 100",
        "Guidance End: 1",
        "Size: 64x64",
    ] {
        assert!(params.contains(field), "`{field}` missing from {params}");
    }

    // The original layout of the same weights, given the edges directly.
    let out2 = dir.path().join("single.png");
    let (file, edges) = (
        fixture("tiny-controlnet.safetensors"),
        fixture("control_a.png"),
    );
    let run = generate(&out2, &["--controlnet", &file, "--control-image", &edges]);
    assert!(run.status.success(), "{}", stderr(&run));
    let worst = max_pixel_diff_to(&out2, "case0");
    assert!(worst <= 2, "single file: pixels differ by up to {worst}");
}

/// case4: StableDiffusionControlNetImg2ImgPipeline, photo.png at strength 0.75, scale 0.8 from
/// 10% to 90% of the steps run.
#[test]
fn img2img_with_a_controlnet_matches_diffusers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cn.png");
    let (net, photo, edges) = (
        fixture("tiny-controlnet"),
        fixture("photo.png"),
        fixture("control_a.png"),
    );
    let run = generate(
        &out,
        &[
            "--init-image",
            &photo,
            "--controlnet",
            &net,
            "--control-image",
            &edges,
            "--control-scale",
            "0.8",
            "--control-start",
            "0.1",
            "--control-end",
            "0.9",
        ],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let worst = max_pixel_diff_to(&out, "case4");
    assert!(worst <= 2, "pixels differ from diffusers by up to {worst}");
}

#[test]
fn bad_controlnet_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let (net, edges) = (fixture("tiny-controlnet"), fixture("control_a.png"));
    let unit = [
        "--controlnet",
        net.as_str(),
        "--control-image",
        edges.as_str(),
    ];
    let with = |extra: &[&str]| generate(&out, &[&unit[..], extra].concat());

    let run = with(&["--width", "128"]);
    assert_clean_error(
        &run,
        &out,
        "control image 0 is 64x64 but the output is 128x64",
    );
    for (flags, needle) in [
        (
            &["--control-start", "0.5", "--control-end", "0.5"][..],
            "need 0 <= start < end <= 1",
        ),
        (&["--control-end", "1.5"][..], "need 0 <= start < end <= 1"),
        (&["--control-start=-0.1"][..], "need 0 <= start < end <= 1"),
        (
            &["--preprocess", "depth"][..],
            "--preprocess depth: unknown",
        ),
        (&["--control-scale", "NaN"][..], "finite"),
        (
            &["--controlnet", &net][..],
            "2 --controlnet but 1 --control-image",
        ),
        (&["--canny-low", "300"][..], "need 0 <= low <= high"),
    ] {
        assert_clean_error(&with(flags), &out, needle);
    }
    let photo = fixture("photo.png");
    let run = with(&["--init-image", &photo, "--mask", &photo]);
    assert_clean_error(&run, &out, "not with --mask");
    let run = generate(&out, &["--control-image", &edges]);
    assert_clean_error(&run, &out, "need a ControlNet: pass --controlnet PATH");
    let run = generate(
        &out,
        &[
            "--controlnet",
            "no/such/controlnet",
            "--control-image",
            &edges,
        ],
    );
    assert_clean_error(&run, &out, "no such file or folder");

    // A ControlNet made for another UNet (tiny-sd2 has one resnet per block, this has two).
    let sd2 = fixtures().join("models/tiny-sd2").display().to_string();
    let out_s = out.display().to_string();
    let run = pigment(&[
        "generate",
        "x",
        "--model",
        &sd2,
        "--out",
        &out_s,
        "--steps",
        "2",
        "--controlnet",
        &net,
        "--control-image",
        &edges,
    ]);
    assert_clean_error(&run, &out, "does not fit the model's UNet");
}
