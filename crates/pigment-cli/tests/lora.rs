//! `pigment generate --lora FILE:SCALE` as a user runs it: the PNG matches the reference of
//! tests/fixtures/lora (diffusers' pipeline with the LoRA merged by its definition in torch),
//! unmatched keys get a warning line, and a LoRA for another model is a clear error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn lora_arg(file: &str, scale: &str) -> String {
    format!("{}:{scale}", fixtures().join("lora").join(file).display())
}

/// The lora fixtures' request (Euler, 4 steps, seed 42, 64x64) on tiny-sd1 with `extra` flags.
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
        "4",
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

/// The raw bytes of one tensor of tests/fixtures/lora/outputs.safetensors (u64 LE header
/// length, JSON header with `data_offsets`, data), without a tensor crate.
fn fixture_tensor_bytes(name: &str) -> Vec<u8> {
    let file = std::fs::read(fixtures().join("lora/outputs.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&file[8..8 + header_len]).unwrap();
    let entry = &header[name];
    assert_eq!(entry["dtype"], "U8", "{name}");
    let offsets = entry["data_offsets"].as_array().unwrap();
    let (start, end) = (offsets[0].as_u64().unwrap(), offsets[1].as_u64().unwrap());
    file[8 + header_len + start as usize..8 + header_len + end as usize].to_vec()
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
    let want = fixture_tensor_bytes("kohya.image");
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
