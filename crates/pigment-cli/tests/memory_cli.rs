//! `pigment generate --low-memory` and `--vae-tiling` on tiny-sd1.

use std::path::{Path, PathBuf};
use std::process::Command;

fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/tiny-sd1")
}

fn generate(out: &Path, extra: &[&str]) -> std::process::Output {
    let model = model();
    let mut args = vec![
        "generate",
        "a red circle",
        "--model",
        model.to_str().unwrap(),
        "--steps",
        "2",
        "--seed",
        "3",
        "--sampler",
        "euler",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_pigment"))
        .args(&args)
        .output()
        .unwrap()
}

fn pixels(path: &Path) -> Vec<u8> {
    image::open(path).unwrap().to_rgb8().into_raw()
}

#[test]
fn low_memory_gives_the_same_image() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.png"), dir.path().join("b.png"));
    assert!(generate(&a, &[]).status.success());
    let out = generate(&b, &["--low-memory"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pixels(&a), pixels(&b));
}

#[test]
fn vae_tiling_on_tiles_a_large_image_and_bad_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (off, on) = (dir.path().join("off.png"), dir.path().join("on.png"));
    let size = ["--width", "192", "--height", "128"];
    assert!(
        generate(&off, &[&size[..], &["--vae-tiling", "off"]].concat())
            .status
            .success()
    );
    let out = generate(&on, &[&size[..], &["--vae-tiling", "on"]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (a, b) = (pixels(&off), pixels(&on));
    assert_eq!(a.len(), 192 * 128 * 3);
    assert_ne!(a, b, "tiles of 64 px must change a 192x128 decode");

    let out = generate(&dir.path().join("x.png"), &["--vae-tiling", "maybe"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("use auto, on or off"));
}
