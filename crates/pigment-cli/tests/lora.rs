//! `pigment generate --lora FILE:SCALE` as a user runs it: the PNG matches the reference of
//! tests/fixtures/lora (diffusers' pipeline with the LoRA merged by its definition in torch),
//! unmatched keys get a warning line, and a LoRA for another model is a clear error.

mod common;
use common::*;

/// `pigment generate` on tiny-sd1 as the fixtures ran it, with `extra` flags.
fn generate(out: &Path, extra: &[&str]) -> Output {
    generate_on_tiny_sd1(
        out,
        &[&["--steps", "4", "--sampler", "euler"][..], extra].concat(),
    )
}

use std::path::Path;
use std::process::Output;

fn lora_arg(file: &str, scale: &str) -> String {
    format!("{}:{scale}", fixtures().join("lora").join(file).display())
}

#[test]
fn lora_flag_png_matches_the_reference_and_warns_about_unmatched_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lora.png");
    let lora = lora_arg("kohya.safetensors", "0.8");
    let run = generate(&out, &["--lora", &lora]);
    let err = stderr(&run);
    assert!(run.status.success(), "{err}");
    assert!(err.contains("at scale 0.8: 18 weights updated"), "{err}");
    assert!(
        err.contains("warning:")
            && err.contains("lora_unet_input_blocks_1_1_proj_in.lora_down.weight"),
        "no warning about the unmatched keys: {err}"
    );
    let got = image::open(&out).unwrap().to_rgb8();
    let want = fixture_u8_tensor("lora", "kohya.image");
    assert_eq!(got.as_raw().len(), want.len());
    // The library parity test's bar: within 2/255 per pixel.
    let worst = got
        .as_raw()
        .iter()
        .zip(&want)
        .map(|(&a, &b)| a.abs_diff(b))
        .max()
        .unwrap();
    assert!(
        worst <= 2,
        "pixels differ from the reference by up to {worst}"
    );
}

#[test]
fn a_lora_for_another_model_or_a_bad_scale_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let sd2 = lora_arg("sd2_shaped.safetensors", "1");
    let nan = lora_arg("kohya.safetensors", "NaN");
    for (flag, needle) in [
        (sd2.as_str(), "has shape [4, 1024]"),
        (nan.as_str(), "finite number"),
    ] {
        let run = generate(&out, &["--lora", flag]);
        let err = stderr(&run);
        assert_eq!(run.status.code(), Some(1), "expected exit 1: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.contains(needle), "`{needle}` missing from: {err}");
        assert!(!out.exists());
    }
}
