//! `pigment eval` as a user runs it, on the tiny random SD1 model (scores near 0: this checks
//! the command, not a model).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CATEGORIES: [&str; 6] = [
    "single",
    "sized",
    "relation",
    "count",
    "background",
    "composition",
];

fn tiny_sd1() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models/tiny-sd1")
        .display()
        .to_string()
}

fn eval(extra: &[&str]) -> Output {
    let model = tiny_sd1();
    let mut args = vec![
        "eval",
        "--model",
        &model,
        "--prompts-per-category",
        "1",
        "--seeds",
        "0",
        "--steps",
        "1",
    ];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_pigment"))
        .args(&args)
        .env_remove("PIGMENT_MODEL")
        .output()
        .expect("run pigment")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn prints_a_table_with_every_category() {
    let out = eval(&[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stderr: {stderr}");
    for category in CATEGORIES {
        let rows = stdout.lines().filter(|l| l.starts_with(category)).count();
        assert_eq!(rows, 2, "{category} seen + held-out rows in:\n{stdout}");
    }
    assert!(
        stdout.contains("all-ok") && stdout.contains("held-out"),
        "{stdout}"
    );
    assert!(stdout.contains("12 images"), "{stdout}");
}

#[test]
fn json_and_saved_images() {
    let dir = tempfile::tempdir().unwrap();
    let images: PathBuf = dir.path().join("images");
    let images_arg = images.display().to_string();
    let out = eval(&[
        "--json",
        "--save-images",
        &images_arg,
        "--sampler",
        "ddim",
        "--guidance-rescale",
        "0.5",
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(json["overall"]["images"], 12);
    assert_eq!(json["groups"].as_array().unwrap().len(), 12);
    let mut saved: Vec<String> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    saved.sort();
    assert_eq!(saved.len(), 12, "{saved:?}");
    assert_eq!(saved[0], "0001-single-seen-seed0.png");
    let first = image::open(images.join(&saved[0])).unwrap();
    assert_eq!((first.width(), first.height()), (64, 64));
    // Each image records the request that made it, guidance rescale included.
    let params = pigment::image::read_png_parameters(&images.join(&saved[0]))
        .unwrap()
        .unwrap();
    assert!(params.contains("CFG Rescale phi: 0.5"), "{params}");
}

#[test]
fn bad_input_is_a_clean_error() {
    for (args, needle) in [
        (&["--sampler", "nope"][..], "nope"),
        (&["--clip", "/nonexistent/clip"][..], "config.json"),
        (
            &["--prompts-per-category", "0"][..],
            "--prompts-per-category",
        ),
        (&["--seeds", "x"][..], "--seeds"),
        (&["--guidance-rescale", "2"][..], "--guidance-rescale 2"),
    ] {
        let out = eval(args);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!stderr.contains("panicked"), "panic on {args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: expected `{needle}` in {stderr}"
        );
    }
}
