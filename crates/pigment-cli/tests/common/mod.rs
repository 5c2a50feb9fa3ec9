//! Helpers shared by the CLI integration tests: running the binary, reading fixtures, and the
//! one assertion every bad-input test makes (exit code 1, no panic, the message, no output).
// Each test file uses a different subset of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// Runs `pigment ARGS` with no model from the environment.
pub fn pigment(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pigment"))
        .args(args)
        .env_remove("PIGMENT_MODEL")
        .output()
        .expect("run pigment")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `pigment generate` of the fixtures' prompt on tiny-sd1 with seed 42, writing to `out`, with
/// `flags` after the fixed ones.
pub fn generate_on_tiny_sd1(out: &Path, flags: &[&str]) -> Output {
    let model = fixtures().join("models/tiny-sd1").display().to_string();
    let out = out.display().to_string();
    let mut args = vec![
        "generate",
        "a red star above a small green square",
        "--model",
        &model,
        "--out",
        &out,
        "--seed",
        "42",
    ];
    args.extend_from_slice(flags);
    pigment(&args)
}

/// A refused run: exit code 1, no panic, `needle` in the message, and `out` not written.
pub fn assert_clean_error(run: &Output, out: &Path, needle: &str) {
    let err = stderr(run);
    assert_eq!(run.status.code(), Some(1), "expected exit 1, stderr: {err}");
    assert!(!err.contains("panicked"), "panic on bad input: {err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
    assert!(!out.exists(), "an output was written despite the error");
}

/// The raw bytes of one U8 tensor of tests/fixtures/AREA/outputs.safetensors (u64 LE header
/// length, JSON header with `data_offsets`, data), read without a tensor crate.
pub fn fixture_u8_tensor(area: &str, name: &str) -> Vec<u8> {
    let file = std::fs::read(fixtures().join(area).join("outputs.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&file[8..8 + header_len]).unwrap();
    let entry = &header[name];
    assert_eq!(entry["dtype"], "U8", "{name}");
    let offsets = entry["data_offsets"].as_array().unwrap();
    let (start, end) = (offsets[0].as_u64().unwrap(), offsets[1].as_u64().unwrap());
    file[8 + header_len + start as usize..8 + header_len + end as usize].to_vec()
}

/// Largest per-byte difference of two equally long images.
pub fn max_diff(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, &y)| x.abs_diff(y)).max().unwrap()
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
